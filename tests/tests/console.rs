//! `apimail admin` end to end: the real binary's users and tokens, the
//! refusal to serve off loopback without TLS, and the served console's CSV
//! against `apimail log --csv` over the same journal.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::{Sandbox, free_port, run, run_with_stdin};

fn sandbox() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    (fake, sandbox)
}

/// Kills the console when the test ends, however it ends.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET over plain HTTP/1.1: status and body (chunked bodies joined).
fn http_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section");
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let mut body = answer[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut joined = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            joined.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = joined;
    }
    Ok((status, body))
}

#[test]
fn off_loopback_without_tls_the_console_refuses_to_start() {
    let (_fake, sandbox) = sandbox();
    let out = run(sandbox
        .cmd()
        .args(["admin", "serve", "--listen", "0.0.0.0:0"]));
    assert_eq!(out.code, 78, "{}", out.stderr);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: the admin console would listen on 0.0.0.0:0, which is not a loopback address, without TLS"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: set certificate and private_key in the [admin] table"),
        "{}",
        out.stderr
    );
}

#[test]
fn users_and_tokens_keep_only_hashes() {
    let (_fake, sandbox) = sandbox();
    let short = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", "ann"]),
        b"short\n",
    );
    assert_eq!(short.code, 64, "{}", short.stderr);
    let added = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", "ann"]),
        b"correct horse battery\n",
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let users = std::fs::read_to_string(sandbox.path().join("data/admin/users.json")).unwrap();
    assert!(
        users.contains("$argon2id$") && !users.contains("correct horse"),
        "{users}"
    );
    let list = run(sandbox.cmd().args(["admin", "user", "list"]));
    assert!(String::from_utf8_lossy(&list.stdout).starts_with("ann  added "));

    let created =
        run(sandbox
            .cmd()
            .args(["admin", "token", "create", "monitoring", "--read-only"]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("apimail_"), "{token}");
    assert!(
        !created.stderr.contains(&token),
        "the token only on standard output"
    );
    let tokens = std::fs::read_to_string(sandbox.path().join("data/admin/tokens.json")).unwrap();
    assert!(!tokens.contains(&token), "{tokens}");
    let list = run(sandbox.cmd().args(["admin", "token", "list"]));
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.starts_with("monitoring  read-only  created "),
        "{listed}"
    );
    assert!(!listed.contains(&token));
    let again = run(sandbox
        .cmd()
        .args(["admin", "token", "create", "monitoring"]));
    assert_eq!(again.code, 64);
    assert_eq!(
        run(sandbox
            .cmd()
            .args(["admin", "token", "revoke", "monitoring"]))
        .code,
        0
    );
    assert_eq!(
        run(sandbox
            .cmd()
            .args(["admin", "token", "revoke", "monitoring"]))
        .code,
        64
    );
    assert_eq!(
        run(sandbox.cmd().args(["admin", "user", "remove", "ann"])).code,
        0
    );
}

#[test]
fn the_consoles_csv_is_apimail_log_csv_newest_first() {
    let (fake, sandbox) = sandbox();
    sandbox.login(&fake, &[]);
    for subject in ["one", "two, with a comma", "three \"quoted\""] {
        let out = run(sandbox.cmd().args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            subject,
            "--text",
            "hi",
        ]));
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let queued = run(sandbox.cmd().args([
        "send",
        "--queue",
        "--to",
        "a@example.net",
        "--cc",
        "b@example.net",
        "--subject",
        "later",
        "--text",
        "hi",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let log = run(sandbox.cmd().args(["log", "--csv"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let log = String::from_utf8(log.stdout).unwrap();
    let mut rows: Vec<&str> = log.split_inclusive("\r\n").collect();
    assert_eq!(rows.len(), 5, "a header and four records: {log}");
    let header = rows.remove(0);
    let expected: String = std::iter::once(header)
        .chain(rows.into_iter().rev())
        .collect();

    let created = run(sandbox
        .cmd()
        .args(["admin", "token", "create", "ci", "--read-only"]));
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let port = free_port();
    let child = sandbox
        .cmd()
        .args(["admin", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _served = Served(child);
    let started = Instant::now();
    loop {
        match http_get(port, "/healthz", None) {
            Ok((200, body)) => {
                assert_eq!(body, b"ok");
                break;
            }
            _ if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("the console did not come up: {other:?}"),
        }
    }
    let (status, _) = http_get(port, "/api/v1/messages.csv", None).unwrap();
    assert_eq!(status, 401);
    let (status, body) = http_get(port, "/api/v1/messages.csv", Some(&token)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    let (status, _) = http_get(port, "/log", None).unwrap();
    assert_eq!(status, 303, "pages want a session");
}
