//! Messages too large for the provider are refused while they are read
//! or composed, leaving nothing in the outbox; large messages that fit
//! arrive byte-exact on both fakes.

use std::io::Write;
use std::process::{Command, Stdio};

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::fake_microsoft::FakeMicrosoft;
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, pseudo_random, run};

fn gmail() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn graph() -> (FakeMicrosoft, Sandbox) {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(
        &fake,
        &["--login-hint", "user@contoso.com", "--large-messages"],
    );
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    (fake, sandbox)
}

/// Runs `command` with `chunks × chunk` on standard input, written from a
/// thread that stops quietly when apimail stops reading (exits early).
fn run_feeding(command: &mut Command, chunk: &[u8], chunks: usize) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut stdin = child.stdin.take().unwrap();
    let chunk = chunk.to_vec();
    let feeder = std::thread::spawn(move || {
        for _ in 0..chunks {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out.into()
}

/// Every file under the outbox's queue/, failed/ and tmp/ folders.
fn outbox_files(sandbox: &Sandbox) -> Vec<String> {
    let outbox = sandbox.path().join("data/outbox");
    ["queue", "failed", "tmp"]
        .iter()
        .flat_map(|folder| std::fs::read_dir(outbox.join(folder)).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .collect()
}

fn assert_refused_and_nothing_left(out: &Run, sandbox: &Sandbox, limit: &str) {
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains(limit),
        "names the limit {limit}: {}",
        out.stderr
    );
    assert_eq!(
        outbox_files(sandbox),
        Vec::<String>::new(),
        "nothing is left"
    );
}

// 1. sendmail

#[test]
fn sendmail_header_line_over_998_is_65_and_nothing_is_left() {
    let (fake, sandbox) = gmail();
    let long = format!("To: a@example.net\nSubject: {}\n\nbody\n", "x".repeat(990));
    let out = run_feeding(
        sandbox.cmd().args(["sendmail", "-i", "a@example.net"]),
        long.as_bytes(),
        1,
    );
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains("header line 2 is over 998"),
        "names the line and RFC 5322's limit: {}",
        out.stderr
    );
    assert_eq!(outbox_files(&sandbox), Vec::<String>::new());
    assert_eq!(fake.send_requests(), 0);

    // 998 characters is still a line.
    let fits = format!("To: a@example.net\nSubject: {}\n\nbody\n", "x".repeat(989));
    let out = run_feeding(
        sandbox.cmd().args(["sendmail", "-i", "a@example.net"]),
        fits.as_bytes(),
        1,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.send_requests(), 1);
}

#[test]
fn sendmail_endless_first_line_stops_at_once() {
    let (_fake, sandbox) = gmail();
    // 64 MB with no line break: refused after the first kilobyte.
    let out = run_feeding(
        sandbox.cmd().args(["sendmail", "-i", "a@example.net"]),
        &[b'x'; 1 << 20],
        64,
    );
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.contains("over 998"), "{}", out.stderr);
    assert_eq!(outbox_files(&sandbox), Vec::<String>::new());
}

#[test]
fn sendmail_over_the_mailbox_limit_is_65_and_nothing_is_left() {
    let (fake, sandbox) = graph();
    let limit = (1 << 20).to_string();
    // A body of one 3 MB line, then of many short lines.
    for chunk in [vec![b'y'; 64 * 1024], b"a line of the body\n".repeat(4096)] {
        let mut cmd = sandbox.cmd();
        cmd.env("APIMAIL_GRAPH_MAX_MESSAGE_MB", "1")
            .args(["sendmail", "-i", "a@example.net"]);
        let mut input = b"To: a@example.net\nSubject: big\n\n".to_vec();
        while input.len() < 3 << 20 {
            input.extend_from_slice(&chunk);
        }
        let out = run_feeding(&mut cmd, &input, 1);
        assert_refused_and_nothing_left(&out, &sandbox, &limit);
    }
    assert_eq!(fake.graph_requests(), 0);
}

// 2. send

#[test]
fn send_with_a_too_big_body_on_stdin_is_65_and_nothing_is_left() {
    let (fake, sandbox) = gmail();
    // 40 MB of text: over Gmail's 35 MiB.
    let out = run_feeding(
        sandbox
            .cmd()
            .args(["send", "--to", "a@example.net", "--subject", "big"]),
        &b"a line of the body on standard input\n".repeat(1 << 14),
        70,
    );
    assert_refused_and_nothing_left(&out, &sandbox, "36700160");
    assert_eq!(fake.send_requests(), 0);
}

#[test]
fn send_with_a_too_big_attachment_is_refused_before_reading_it() {
    let (fake, sandbox) = graph();
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(900 << 10)).unwrap(); // 1.2 MB as base64
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GRAPH_MAX_MESSAGE_MB", "1")
        .args([
            "send",
            "--to",
            "a@example.net",
            "--text",
            "hi",
            "--attach",
            file.to_str().unwrap(),
        ]));
    assert_refused_and_nothing_left(&out, &sandbox, &(1 << 20).to_string());
    assert_eq!(fake.graph_requests(), 0);
}

#[test]
fn send_stops_composing_at_the_limit() {
    let (_fake, sandbox) = graph();
    // 770,000 bytes are 1,026,668 as bare base64 (under 1 MiB, so the
    // check before reading passes) and over 1 MiB with base64's line
    // breaks and the headers: the writer stops.
    let file = sandbox.path().join("near.bin");
    std::fs::write(&file, pseudo_random(770_000)).unwrap();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GRAPH_MAX_MESSAGE_MB", "1")
        .args([
            "send",
            "--to",
            "a@example.net",
            "--text",
            "hi",
            "--attach",
            file.to_str().unwrap(),
        ]));
    assert_refused_and_nothing_left(&out, &sandbox, &(1 << 20).to_string());
    assert!(out.stderr.contains("at least"), "{}", out.stderr);
}

// 3. Large messages that fit

/// A 5 MB binary attachment and a text body on standard input.
fn large_send(sandbox: &Sandbox, data: &[u8], dry_run: bool) -> Run {
    let file = sandbox.path().join("large.bin");
    std::fs::write(&file, data).unwrap();
    let mut cmd = sandbox.cmd();
    cmd.env("SOURCE_DATE_EPOCH", "1767225600").args([
        "send",
        "--to",
        "a@example.net",
        "--subject",
        "large",
        "--message-id",
        "<large.1@example.com>",
        "--attach",
        file.to_str().unwrap(),
    ]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    run_feeding(&mut cmd, &b"body line\n".repeat(200_000), 1)
}

#[test]
fn a_large_message_arrives_byte_exact_on_gmail() {
    let (fake, sandbox) = gmail();
    let data = pseudo_random(5 << 20);
    let dry = large_send(&sandbox, &data, true);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let sent = large_send(&sandbox, &data, false);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let delivered = fake.messages();
    assert!(
        delivered[0].raw == dry.stdout,
        "the bytes Gmail received differ from --dry-run"
    );
    assert_eq!(outbox_files(&sandbox), Vec::<String>::new());
}

#[test]
fn a_large_message_arrives_byte_exact_on_graph() {
    let (fake, sandbox) = graph();
    let data = pseudo_random(5 << 20);
    let sent = large_send(&sandbox, &data, false);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let delivered = fake.delivered();
    assert_eq!(delivered[0].via, "draft");
    assert_eq!(delivered[0].attachments[0].name, "large.bin");
    assert!(
        delivered[0].attachments[0].bytes == data,
        "the attachment arrives intact"
    );
    assert_eq!(outbox_files(&sandbox), Vec::<String>::new());
}
