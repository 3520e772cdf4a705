//! `apimail admin` end to end: the real binary's users and tokens, the
//! refusal to serve off loopback without TLS, and the served console's CSV
//! against `apimail log --csv` over the same journal.

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::{Sandbox, console, free_port, http, run, run_with_stdin};

fn sandbox() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    (fake, sandbox)
}

/// A GET of the console on loopback: status and body (chunked bodies
/// joined), with the API token when given.
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let answer = http::request(
        "GET",
        &format!("http://127.0.0.1:{port}{path}"),
        &headers,
        b"",
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (answer.status, answer.body)
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
    let _served = console::serve(sandbox.cmd(), port);
    let (status, _) = http_get(port, "/api/v1/messages.csv", None);
    assert_eq!(status, 401);
    let (status, body) = http_get(port, "/api/v1/messages.csv", Some(&token));
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    let (status, _) = http_get(port, "/log", None);
    assert_eq!(status, 303, "pages want a session");
}
