//! Helpers for apimail's end-to-end tests: run the real `apimail` binary,
//! and check its output with independent parsers.

pub mod console;
pub mod fake_common;
pub mod fake_google;
pub mod fake_microsoft;
pub mod process;
pub mod quota;
pub mod sandbox;
pub mod store_node;

pub use apimail_test_http as http;
pub use apimail_test_postgres as postgres;
pub use process::{Process, free_port};
pub use sandbox::Sandbox;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `apimail` binary built by this `cargo test` run (or `$APIMAIL_BIN`).
///
/// `cargo test --workspace` builds it; running only this package's tests
/// after changing the CLI needs `cargo build -p apimail` first.
pub fn apimail_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("APIMAIL_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/apimail
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("apimail{}", std::env::consts::EXE_SUFFIX)))
        .expect("test binaries live in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build -p apimail` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A command for the binary with a clean environment: no inherited
/// APIMAIL_* or SOURCE_DATE_EPOCH, standard input closed.
pub fn apimail() -> Command {
    apimail_at(&apimail_bin())
}

/// [`apimail`], for the binary at `bin`.
pub fn apimail_at(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let inherited = key.starts_with("APIMAIL_")
            || key.starts_with("AZURE_")
            || key.to_ascii_uppercase().ends_with("_PROXY")
            || [
                "SOURCE_DATE_EPOCH",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "DISPLAY",
                "WAYLAND_DISPLAY",
            ]
            .contains(&&*key);
        if inherited {
            command.env_remove(&*key);
        }
    }
    command.stdin(Stdio::null());
    command
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Raw standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `command` to completion.
pub fn run(command: &mut Command) -> Run {
    command.output().expect("the apimail binary starts").into()
}

/// Runs `command` to completion with `input` on standard input.
pub fn run_with_stdin(command: &mut Command, input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().into()
}

/// Parses `message` with Python's `email` package under `policy.strict`
/// (see `scripts/parse_message.py`) and returns the fields it found.
///
/// Panics with Python's complaint if the message has any defect.
pub fn python_parse(message: &[u8]) -> serde_json::Value {
    let dir = tempfile_dir();
    let path = dir.join("message.eml");
    std::fs::write(&path, message).expect("temp file is writable");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/parse_message.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .output()
        .expect("python3 is needed for these tests (Debian: apt-get install python3)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "Python's strict email parser rejected the message: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "apimail-tests-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// `len` bytes that look random and are the same on every run.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Splits a shell line with single quotes only (all the README uses).
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
