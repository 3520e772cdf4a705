//! The admin console in a real browser: headless Chromium (Debian's
//! `chromium`) driven by npm's `playwright-core` (`tests/browser/`, which
//! `cargo xtask ci`'s test tools step installs), against the real `apimail
//! relay` and `apimail admin serve` and the fake Gmail. The script
//! (`tests/browser/console.mjs`) logs in, submits a message through the
//! relay with smtplib and waits for its row, filters it, downloads the CSV,
//! opens its timeline, switches to Japanese, is refused a POST without a
//! CSRF token and is locked out after wrong passwords; this test then
//! compares the CSV with `apimail log --csv`.
//!
//! Without Chromium, node or playwright-core the test says so and skips.
//! Screenshots go to a temporary directory, or with `APIMAIL_BLESS=1` to
//! `docs/console/` (the README shows those).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::{Sandbox, run, run_with_stdin};

const ADMIN: &str = "ann";
const PASSWORD: &str = "correct horse battery";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the browser test needs, or why it cannot run here.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .ok_or("Chromium is not installed (Debian: apt-get install chromium)")?;
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|_| "node is not installed (Debian: apt-get install nodejs npm)")?;
    if !node.status.success() {
        return Err("node does not run".to_owned());
    }
    let script = root().join("tests/browser/console.mjs");
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Err(
            "playwright-core is not installed (cargo xtask ci's test tools step, or `npm ci` in tests/browser)"
                .to_owned(),
        );
    }
    Ok((chromium, script))
}

/// A child process killed when the test ends, its stderr kept.
struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    fn start(mut command: Command, ready: &str) -> Process {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("apimail starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let process = Process { child, log };
        let until = Instant::now() + Duration::from_secs(60);
        while !process.log().contains(ready) {
            assert!(
                Instant::now() < until,
                "no `{ready}` in the log:\n{}",
                process.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots_dir(scratch: &Path) -> PathBuf {
    if std::env::var_os("APIMAIL_BLESS").is_some() {
        root().join("docs/console")
    } else {
        scratch.join("shots")
    }
}

#[test]
#[allow(clippy::print_stderr)] // says why it is skipped
fn the_console_in_a_browser() {
    let (chromium, script) = match tools() {
        Ok(tools) => tools,
        Err(why) => {
            eprintln!("SKIPPED the admin console's browser test: {why}");
            return;
        }
    };
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    let relay_addr = format!("127.0.0.1:{}", free_port());
    let config = sandbox.path().join("config/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[relay]\n[relay.listeners.main]\nlisten = \"{relay_addr}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let added = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", ADMIN]),
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);

    let mut relay = sandbox.cmd();
    relay.arg("relay");
    let relay = Process::start(relay, "relay listener");
    let console_addr = format!("127.0.0.1:{}", free_port());
    let mut console = sandbox.cmd();
    console.args(["admin", "serve", "--listen", &console_addr]);
    let console = Process::start(console, "the admin console is at");

    let scratch = sandbox.path().join("browser");
    let shots = shots_dir(&scratch);
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let subject = "Scan <b>42</b> & 請求書";
    let out = Command::new("node")
        .arg(&script)
        .current_dir(root().join("tests/browser"))
        .env("CONSOLE_URL", format!("http://{console_addr}"))
        .env("ADMIN_USER", ADMIN)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("RELAY_ADDR", &relay_addr)
        .env("SUBJECT", subject)
        .env("CHROMIUM", &chromium)
        .env("OUT", &scratch)
        .env("SHOTS", &shots)
        .env("HOME", sandbox.path().join("home"))
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser script failed:\n{said}\n{}\nrelay:\n{}\nconsole:\n{}",
        String::from_utf8_lossy(&out.stderr),
        relay.log(),
        console.log()
    );
    assert!(said.contains("step: done"), "{said}");

    // The downloaded CSV (one message, its latest record: sent) is what
    // `apimail log --csv` gives for its sent record, byte for byte.
    let downloaded = std::fs::read(scratch.join("console.csv")).unwrap();
    let log = run(sandbox.cmd().args(["log", "--csv", "--status", "sent"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert_eq!(
        String::from_utf8_lossy(&downloaded),
        String::from_utf8_lossy(&log.stdout)
    );
    let csv = String::from_utf8_lossy(&downloaded);
    assert!(
        csv.contains(&format!("{subject},127.0.0.1,\r\n")),
        "subject and client in the CSV:\n{csv}"
    );
}
