//! A long-running `apimail` process (`relay`, `admin serve`) for a test:
//! started, its standard error collected as it comes, waited for, and
//! killed when the test ends.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound once, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running child process, killed when dropped; its standard error is
/// collected line by line in [`log`](Process::log).
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    /// Starts `command` (standard output discarded) without waiting for
    /// anything.
    pub fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the process starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// Starts `command` and waits up to `timeout` for `ready` in its
    /// standard error.
    pub fn start(command: &mut Command, ready: &str, timeout: Duration) -> Process {
        let process = Process::spawn(command);
        process.wait_log(ready, timeout);
        process
    }

    /// `apimail relay ARGS`, from `apimail` (a command for the binary with
    /// the test's environment, such as `Sandbox::cmd`), once its listeners'
    /// startup lines are out.
    pub fn relay(mut apimail: Command, args: &[&str]) -> Process {
        Process::start(
            apimail.arg("relay").args(args),
            "relay listener",
            Duration::from_secs(30),
        )
    }

    /// Its standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` in its standard error; panics
    /// with the log if it does not come.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < until,
                "no `{needle}` in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends it the signal `name` (`TERM`, `HUP`...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for it to exit, and for the rest of its
    /// standard error; its exit code (-1 if killed by a signal).
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let until = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "the process did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Its standard error ends with it, unless a child of its own
        // still holds it: then only what came by the deadline.
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.reader.as_ref().is_some_and(JoinHandle::is_finished) {
            let _ = self.reader.take().map(JoinHandle::join);
        }
        code
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
