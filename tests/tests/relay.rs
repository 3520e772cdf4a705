//! `apimail relay` end to end: the real binary listening on a free port
//! with the sandbox's configuration, real SMTP clients (Python's smtplib,
//! swaks, msmtp, lettre) in front of it, and the fake Gmail (or, once,
//! the fake Graph) behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::fake_microsoft::FakeMicrosoft;
use apimail_tests::{Process, Run, Sandbox, free_port, run, run_with_stdin};

const ACCOUNT: &str = "user@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

/// Appends `[relay]` settings and one listener `main` on `addr` to the
/// sandbox's configuration.
fn configure(sandbox: &Sandbox, relay: &str, addr: &str, listener: &str) {
    let path = sandbox.path().join("config/config.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[relay]\n{relay}\n[relay.listeners.main]\nlisten = \"{addr}\"\n{listener}\n"
    ));
    std::fs::write(&path, text).unwrap();
}

fn add_user(sandbox: &Sandbox, name: &str, extra: &[&str]) -> Run {
    run_with_stdin(
        sandbox
            .cmd()
            .args(["relay", "user", "add", name])
            .args(extra),
        format!("{PASSWORD}\n").as_bytes(),
    )
}

/// Starts a relay on a free loopback port; its address.
fn relay_on_loopback(sandbox: &Sandbox, relay: &str, listener: &str) -> (Process, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    configure(sandbox, relay, &addr, listener);
    (Process::relay(sandbox.cmd(), &[]), addr)
}

fn wait_delivered(fake: &FakeGoogle, count: usize) -> Vec<Vec<u8>> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let messages = fake.messages();
        if messages.len() >= count {
            return messages.into_iter().map(|m| m.raw).collect();
        }
        assert!(
            Instant::now() < until,
            "{} of {count} delivered",
            messages.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a Python script with `argv[1:] = args`; its output.
fn python(script: &str, args: &[&str]) -> Run {
    run(Command::new("python3").arg("-c").arg(script).args(args))
}

/// Python's smtplib: sends argv[4] (a file) from argv[2] to argv[3]
/// (comma-separated) through argv[1]; argv[5] = "starttls", argv[6:8] =
/// user and password when given. Prints the final reply or the error.
const SMTPLIB: &str = r#"
import smtplib, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
sender, rcpts, path = sys.argv[2], sys.argv[3].split(","), sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else ""
data = open(path, "rb").read()
try:
    s = smtplib.SMTP(host, int(port), timeout=30)
    s.ehlo("python.test")
    if mode == "starttls":
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("python.test")
    if len(sys.argv) > 7:
        s.login(sys.argv[6], sys.argv[7])
    refused = s.sendmail(sender, rcpts, data)
    print("sent", refused)
    s.quit()
except smtplib.SMTPResponseException as e:
    print("reply", e.smtp_code, e.smtp_error.decode(errors="replace"))
except smtplib.SMTPRecipientsRefused as e:
    print("refused", e.recipients)
except smtplib.SMTPSenderRefused as e:
    print("reply", e.smtp_code, e.smtp_error.decode(errors="replace"))
"#;

fn smtplib(
    sandbox: &Sandbox,
    addr: &str,
    from: &str,
    to: &str,
    message: &[u8],
    extra: &[&str],
) -> String {
    let path = sandbox.path().join(format!("message-{}.eml", free_port()));
    std::fs::write(&path, message).unwrap();
    let out = python(
        SMTPLIB,
        &[&[addr, from, to, path.to_str().unwrap()], extra].concat(),
    );
    assert_eq!(out.code, 0, "python3: {}", out.stderr);
    String::from_utf8(out.stdout).unwrap()
}

/// A raw SMTP conversation: writes `input` at once (pipelined), then reads
/// until the server closes or `until` appears.
fn converse(addr: &str, input: &[u8], until: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap();
    head.split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

// 1. Python's smtplib without AUTH from loopback; what arrives

#[test]
fn loopback_mail_arrives_byte_exact_with_rcpt_only_recipients_as_bcc_and_is_logged() {
    let (fake, sandbox) = logged_in();
    let (relay, addr) = relay_on_loopback(&sandbox, "", "");
    // 8-bit UTF-8 in a header and the body, a lone dot line, long lines.
    let body = "Grüße aus Köln — 日本語のテキスト\r\n.\r\n..two dots\r\nend\r\n";
    let message = format!(
        "From: {ACCOUNT}\r\nTo: to@example.net\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <relay-8bit@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    );
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "to@example.net,hidden@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");

    let raw = wait_delivered(&fake, 1).remove(0);
    let text = String::from_utf8(raw.clone()).expect("the 8-bit UTF-8 arrives as sent");
    assert!(
        raw.ends_with(body.as_bytes()),
        "the body arrives byte-exact (dots unstuffed):\n{text}"
    );
    assert_eq!(header(&text, "To"), Some("to@example.net"));
    assert!(
        header(&text, "Bcc")
            .is_some_and(|b| b.contains("hidden@example.net") && !b.contains("to@")),
        "the RCPT-only recipient arrives as Bcc:\n{text}"
    );

    relay.wait_log("delivered", Duration::from_secs(20));
    let log = run(sandbox.cmd().args(["log", "--csv"]));
    let csv = String::from_utf8(log.stdout).unwrap();
    for outcome in [",queued,", ",sent,"] {
        assert!(
            csv.lines()
                .any(|l| l.contains("<relay-8bit@example.com>") && l.contains(outcome)),
            "accepted, then sent: {csv}"
        );
    }
    assert!(relay.log().contains("accepted "), "{}", relay.log());
}

#[test]
fn graph_account_relays_with_rcpt_only_recipients_as_bcc() {
    const USER: &str = "user@contoso.com";
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--login-hint", USER]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let (relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message = format!(
        "From: {USER}\r\nTo: to@example.net\r\nSubject: scan\r\nMessage-ID: <relay-graph@example.com>\r\n\r\nscanned page\r\n"
    );
    let out = smtplib(
        &sandbox,
        &addr,
        USER,
        "to@example.net,hidden@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");

    relay.wait_log("delivered", Duration::from_secs(30));
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let text = String::from_utf8(delivered[0].mime.clone()).unwrap();
    assert!(text.ends_with("scanned page\r\n"), "{text}");
    assert!(
        header(&text, "Bcc").is_some_and(|b| b.contains("hidden@example.net")),
        "the RCPT-only recipient reaches Graph as Bcc:\n{text}"
    );
    let seen_by_to = String::from_utf8(fake.inbox("to@example.net").remove(0)).unwrap();
    assert!(header(&seen_by_to, "Bcc").is_none(), "{seen_by_to}");
}

// 2. AUTH, STARTTLS, wrong passwords, the back-off

#[test]
fn auth_is_required_where_configured_and_works_over_starttls() {
    let (fake, sandbox) = logged_in();
    let added = add_user(&sandbox, "scanner", &[]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(!added.stderr.contains(PASSWORD));
    let users = std::fs::read_to_string(sandbox.path().join("data/relay/users.json")).unwrap();
    assert!(!users.contains(PASSWORD) && users.contains("$argon2id$"));
    let list = run(sandbox.cmd().args(["relay", "user", "list"]));
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("scanner  account {ACCOUNT}")));

    let (relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    assert!(relay.log().contains("AUTH required"), "{}", relay.log());
    let message = format!("From: {ACCOUNT}\r\nTo: a@example.net\r\nSubject: scan\r\n\r\nscan\r\n");

    let without = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(without.starts_with("reply 530"), "{without}");

    let wrong = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &["starttls", "scanner", "not the password"],
    );
    assert!(wrong.starts_with("reply 535"), "{wrong}");

    let right = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &["starttls", "scanner", PASSWORD],
    );
    assert!(right.starts_with("sent {}"), "{right}");
    wait_delivered(&fake, 1);
    assert!(!relay.log().contains(PASSWORD), "{}", relay.log());
}

#[test]
fn wrong_passwords_are_refused_535_with_a_growing_delay_and_logged() {
    let (_fake, sandbox) = logged_in();
    add_user(&sandbox, "scanner", &[]);
    let (relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let try_login = |password: &str| -> (String, Duration) {
        let began = Instant::now();
        let auth = base64_plain("scanner", password);
        let out = converse(
            &addr,
            format!("EHLO t\r\nAUTH PLAIN {auth}\r\nQUIT\r\n").as_bytes(),
            "221",
        );
        (out, began.elapsed())
    };
    let mut replies = Vec::new();
    for _ in 0..5 {
        let (out, took) = try_login("wrong");
        replies.push((
            out.lines().rev().nth(1).unwrap_or_default().to_owned(),
            took,
        ));
    }
    assert!(replies[0].0.starts_with("535 5.7.8"), "{replies:?}");
    // After the free failures, each refusal waits longer.
    assert!(
        replies[4].1 >= Duration::from_millis(900),
        "the fifth wrong password is answered after a delay: {replies:?}"
    );
    assert!(
        relay
            .log()
            .contains("failed login for user `scanner` (5 in a row"),
        "{}",
        relay.log()
    );
    assert!(
        !relay.log().contains("wrong"),
        "no password in the log:\n{}",
        relay.log()
    );
}

fn base64_plain(user: &str, password: &str) -> String {
    let out = python(
        "import base64,sys; print(base64.b64encode(b'\\0'+sys.argv[1].encode()+b'\\0'+sys.argv[2].encode()).decode())",
        &[user, password],
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// 3. Who may send as whom

/// The journal's records with outcome `sent`, once there are `count`.
fn sent_records(sandbox: &Sandbox, count: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let log = run(sandbox.cmd().args(["log", "--json"]));
        let sent: Vec<String> = String::from_utf8(log.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.contains(r#""outcome":"sent""#))
            .map(str::to_owned)
            .collect();
        if sent.len() >= count {
            return sent;
        }
        assert!(Instant::now() < until, "{} of {count} sent", sent.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_scanner_without_sender_settings_is_sent_as_the_account_keeping_its_name() {
    let (fake, sandbox) = logged_in();
    let added = add_user(&sandbox, "scanner", &[]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message =
        b"From: scanner@printer.local\r\nTo: a@example.net\r\nSubject: scan\r\n\r\nscan\r\n";
    // On loopback without AUTH, then after AUTH: no sender settings at all.
    for extra in [&[][..], &["starttls", "scanner", PASSWORD][..]] {
        let out = smtplib(
            &sandbox,
            &addr,
            "scanner@printer.local",
            "a@example.net",
            message,
            extra,
        );
        assert!(out.starts_with("sent {}"), "{extra:?}: {out}");
    }
    for raw in wait_delivered(&fake, 2) {
        let text = String::from_utf8(raw).unwrap();
        let expected = format!("\"scanner@printer.local\" <{ACCOUNT}>");
        assert_eq!(header(&text, "From"), Some(expected.as_str()), "{text}");
    }
    // The original address is in the journal, not lost.
    for record in sent_records(&sandbox, 2) {
        assert!(
            record.contains(&format!(r#""from":"{ACCOUNT}""#))
                && record.contains(r#""original_from":"scanner@printer.local""#),
            "{record}"
        );
    }
    let lines = run(sandbox.cmd().arg("log"));
    assert!(
        String::from_utf8_lossy(&lines.stdout).contains("rewritten from scanner@printer.local"),
        "{}",
        String::from_utf8_lossy(&lines.stdout)
    );
    let csv = run(sandbox.cmd().args(["log", "--csv"]));
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",original_from,subject,client,smtp_user"),
        "{csv}"
    );
    // Each sent row: the original sender, the Subject, the client and,
    // after AUTH, the SMTP user.
    for user in ["", "scanner"] {
        let tail = format!(",scanner@printer.local,scan,127.0.0.1,{user}");
        assert!(
            csv.lines()
                .any(|l| l.contains(",sent,") && l.ends_with(&tail)),
            "{tail} in {csv}"
        );
    }
}

#[test]
fn every_from_mailbox_is_checked_and_several_authors_become_the_account() {
    let (fake, sandbox) = logged_in();
    let (_relay, addr) = relay_on_loopback(&sandbox, "", r#"allowed_from = ["*@printer.local"]"#);
    let message = b"From: Scanner <scanner@printer.local>, ceo@example.com\r\nTo: a@example.net\r\nSubject: scan\r\n\r\nscan\r\n";
    let out = smtplib(
        &sandbox,
        &addr,
        "scanner@printer.local",
        "a@example.net",
        message,
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    let from = header(&text, "From").unwrap();
    assert_eq!(
        from,
        format!("\"Scanner, ceo@example.com\" <{ACCOUNT}>"),
        "one author, the account, keeping the names:\n{text}"
    );
    let record = sent_records(&sandbox, 1).remove(0);
    assert!(
        record.contains(r#""original_from":"scanner@printer.local, ceo@example.com""#),
        "{record}"
    );
}

#[test]
fn rewrite_from_false_refuses_every_author_outside_allowed_from_with_553() {
    let (fake, sandbox) = logged_in();
    let added = add_user(&sandbox, "strict", &["--rewrite-from", "false"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let (_relay, addr) = relay_on_loopback(
        &sandbox,
        "",
        "allowed_from = [\"*@printer.local\"]\nrewrite_from = false",
    );
    let refused: [(&str, &[u8]); 3] = [
        (
            "boss@elsewhere.example",
            b"From: boss@elsewhere.example\r\nTo: a@example.net\r\nSubject: x\r\n\r\nx\r\n",
        ),
        (
            "scanner@printer.local",
            b"From: scanner@printer.local, ceo@example.com\r\nTo: a@example.net\r\nSubject: x\r\n\r\nx\r\n",
        ),
        (
            "scanner@printer.local",
            b"From: scanner@printer.local\r\nSender: ceo@example.com\r\nTo: a@example.net\r\nSubject: x\r\n\r\nx\r\n",
        ),
    ];
    for (mail_from, message) in refused {
        let out = smtplib(&sandbox, &addr, mail_from, "a@example.net", message, &[]);
        assert!(
            out.starts_with("reply 553"),
            "{}: {out}",
            String::from_utf8_lossy(message)
        );
    }
    // A user with `--rewrite-from false`, after AUTH: only the account.
    let out = smtplib(
        &sandbox,
        &addr,
        "scanner@printer.local",
        "a@example.net",
        b"From: scanner@printer.local\r\nTo: a@example.net\r\nSubject: x\r\n\r\nx\r\n",
        &["starttls", "strict", PASSWORD],
    );
    assert!(out.starts_with("reply 553"), "{out}");
    // An allowed author is sent as it is.
    let out = smtplib(
        &sandbox,
        &addr,
        "scanner@printer.local",
        "a@example.net",
        b"From: scanner@printer.local\r\nTo: a@example.net\r\nSubject: ok\r\n\r\nx\r\n",
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    assert_eq!(header(&text, "From"), Some("scanner@printer.local"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.messages().len(), 1, "nothing refused was sent");
}

#[test]
fn rewrite_from_sends_a_scanner_as_the_account_keeping_its_name() {
    let (fake, sandbox) = logged_in();
    let added = add_user(&sandbox, "scanner", &[]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let message =
        b"From: \"Scanner 2nd floor\" <scanner@printer.local>\r\nTo: a@example.net\r\nSubject: scan\r\n\r\nscan\r\n";
    let out = smtplib(
        &sandbox,
        &addr,
        "scanner@printer.local",
        "a@example.net",
        message,
        &["starttls", "scanner", PASSWORD],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    let from = header(&text, "From").unwrap();
    assert!(
        from.contains(ACCOUNT) && from.contains("Scanner 2nd floor"),
        "{text}"
    );
    assert!(!from.contains("printer.local"), "{text}");
}

/// A non-loopback address of this machine, if it has one.
fn lan_address() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

#[test]
#[allow(clippy::print_stderr)] // says why it is skipped
fn a_client_from_a_network_not_allowed_cannot_relay() {
    let Some(ip) = lan_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let (fake, sandbox) = logged_in();
    let addr = format!("{ip}:{}", free_port());
    // A documentation network this machine is not in.
    let allowed = ["198.51.100.0/24", "203.0.113.0/24"]
        .into_iter()
        .find(|net| !ip.starts_with(&net[..net.len() - 4]))
        .unwrap();
    configure(
        &sandbox,
        "",
        &addr,
        &format!("allowed_networks = [\"{allowed}\"]"),
    );
    let relay = Process::relay(sandbox.cmd(), &[]);
    assert!(
        relay
            .log()
            .contains(&format!("without AUTH from {allowed}")),
        "{}",
        relay.log()
    );
    let out = converse(
        &addr,
        format!("EHLO evil\r\nMAIL FROM:<{ACCOUNT}>\r\nRCPT TO:<victim@example.net>\r\nQUIT\r\n")
            .as_bytes(),
        "221",
    );
    assert!(
        out.contains("\r\n550 5.7.1") || out.contains("\r\n530 5.7.0"),
        "{out}"
    );
    assert!(!out.contains("250 2.1.5"), "no recipient accepted: {out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.messages().is_empty());
}

#[test]
#[allow(clippy::print_stderr)] // says why it is skipped
fn an_unrestricted_listener_on_the_network_does_not_start() {
    let Some(ip) = lan_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let (_fake, sandbox) = logged_in();
    configure(&sandbox, "", &format!("{ip}:{}", free_port()), "");
    let out = run(sandbox.cmd().arg("relay"));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("open relay"), "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
}

// 4. Limits and the protocol

#[test]
fn a_message_over_the_limit_gets_552_at_mail_and_at_data() {
    let (fake, sandbox) = logged_in();
    let (_relay, addr) = relay_on_loopback(&sandbox, "max_message_mb = 1", "");
    let out = converse(
        &addr,
        format!("EHLO t\r\nMAIL FROM:<{ACCOUNT}> SIZE=2000000\r\nQUIT\r\n").as_bytes(),
        "221",
    );
    assert!(out.contains("\r\n552"), "{out}");
    assert!(
        out.contains("SIZE 1048576"),
        "the limit is advertised: {out}"
    );

    // 15,000 lines of 78 bytes: over 1 MiB.
    let big = format!(
        "From: {ACCOUNT}\r\nTo: a@example.net\r\nSubject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(76)).repeat(15_000)
    );
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        big.as_bytes(),
        &[],
    );
    assert!(out.starts_with("reply 552"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.messages().is_empty());
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let (fake, sandbox) = logged_in();
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "");
    let out = converse(
        &addr,
        format!(
            "EHLO pipe\r\nMAIL FROM:<{ACCOUNT}>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
        )
        .as_bytes(),
        "354",
    );
    assert!(out.contains("PIPELINING"), "{out}");
    let codes: Vec<&str> = out
        .split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes, ["220", "250", "250", "250", "250", "354"], "{out}");
    drop(out);
    // The same, whole, with the message, in one write.
    let out = converse(
        &addr,
        format!(
            "EHLO pipe\r\nMAIL FROM:<{ACCOUNT}>\r\nRCPT TO:<a@example.net>\r\nDATA\r\nSubject: piped\r\n\r\nhi\r\n.\r\nQUIT\r\n"
        )
        .as_bytes(),
        "221",
    );
    assert!(out.contains("250 2.0.0"), "{out}");
    wait_delivered(&fake, 1);
}

#[test]
fn a_client_stalling_mid_data_holds_up_no_one_and_leaves_nothing() {
    let (fake, sandbox) = logged_in();
    let (mut relay, addr) = relay_on_loopback(&sandbox, "grace_seconds = 1", "");
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(
            format!("EHLO slow\r\nMAIL FROM:<{ACCOUNT}>\r\nRCPT TO:<a@example.net>\r\nDATA\r\nSubject: half\r\n\r\nhalf a mess")
                .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let message =
        format!("From: {ACCOUNT}\r\nTo: b@example.net\r\nSubject: whole\r\n\r\nwhole\r\n");
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "b@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    let delivered = wait_delivered(&fake, 1);
    assert!(String::from_utf8_lossy(&delivered[0]).contains("Subject: whole"));

    // SIGTERM: the stalled session is cut off after the grace period.
    relay.signal("TERM");
    assert_eq!(relay.wait(Duration::from_secs(20)), 0, "{}", relay.log());
    assert!(sandbox.outbox_entries("queue").is_empty());
    assert_eq!(fake.messages().len(), 1);
    drop(stalled);
}

// 5. Crashes

#[test]
fn kill_9_right_after_250_then_a_restart_delivers_the_message() {
    let (fake, sandbox) = logged_in();
    // The provider takes its time, so the kill lands mid-delivery.
    fake.inject(Fault::Slow(Duration::from_secs(3)));
    let (mut relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message = format!(
        "From: {ACCOUNT}\r\nTo: a@example.net\r\nMessage-ID: <crash@example.com>\r\nSubject: crash\r\n\r\nsurvives\r\n"
    );
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    relay.signal("KILL");
    relay.wait(Duration::from_secs(10));
    assert_eq!(
        sandbox.outbox_entries("queue").len(),
        1,
        "the accepted message waits"
    );

    let relay = Process::relay(sandbox.cmd(), &[]);
    let until = Instant::now() + Duration::from_secs(30);
    while !sandbox.outbox_entries("queue").is_empty() {
        assert!(Instant::now() < until, "{}", relay.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let copies: Vec<String> = fake
        .messages()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .filter(|m| m.contains("<crash@example.com>"))
        .collect();
    assert!(!copies.is_empty(), "delivered after the restart");
    assert!(copies.iter().all(|m| m.ends_with("survives\r\n")));
}

/// One SMTP session sending `count` messages one after another (MAIL,
/// RCPT, DATA, each reply awaited) with Message-IDs `<kill-{tag}-{n}@…>`;
/// pushes each Message-ID that got its 250 onto `acked` the moment it
/// arrives. Stops at the first broken connection or refusal (the relay is
/// killed under it).
fn load_session(addr: &str, tag: &str, count: usize, acked: &Mutex<Vec<String>>) {
    let Ok(stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // The reply's last line ("250 …", not "250-…"), or None if cut off.
    let reply = |reader: &mut BufReader<TcpStream>| -> Option<String> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(line);
            }
        }
    };
    let say = |writer: &mut TcpStream, text: &str| writer.write_all(text.as_bytes()).is_ok();
    if !reply(&mut reader).is_some_and(|r| r.starts_with("220")) {
        return;
    }
    if !say(&mut writer, "EHLO load.test\r\n")
        || !reply(&mut reader).is_some_and(|r| r.starts_with("250"))
    {
        return;
    }
    for n in 0..count {
        let id = format!("<kill-{tag}-{n}@example.com>");
        let message = format!(
            "From: {ACCOUNT}\r\nTo: a@example.net\r\nMessage-ID: {id}\r\nSubject: load {tag} {n}\r\n\r\n{}\r\n",
            "x".repeat(2000)
        );
        for command in [
            format!("MAIL FROM:<{ACCOUNT}>\r\n"),
            "RCPT TO:<a@example.net>\r\n".to_owned(),
            "DATA\r\n".to_owned(),
        ] {
            let want = if command == "DATA\r\n" { "354" } else { "250" };
            if !say(&mut writer, &command)
                || !reply(&mut reader).is_some_and(|r| r.starts_with(want))
            {
                return;
            }
        }
        if !say(&mut writer, &format!("{message}.\r\n")) {
            return;
        }
        match reply(&mut reader) {
            Some(r) if r.starts_with("250") => acked.lock().unwrap().push(id),
            _ => return,
        }
    }
}

/// Issue 23: `kill -9` at random moments while 10 connections send: every
/// message that got a 250 is delivered after restarts, and a message that
/// arrived twice has an `uncertain` record in the journal (the process died
/// mid-attempt), never a silent second copy.
#[test]
fn kill_9_at_random_moments_under_10_connections_loses_no_accepted_message() {
    let (fake, sandbox) = logged_in();
    // Slow answers, so kills also land mid-delivery.
    fake.inject(Fault::Slow(Duration::from_millis(300)));
    let (relay, addr) = relay_on_loopback(&sandbox, "", "");
    let mut relay = Some(relay);
    let acked = Mutex::new(Vec::new());
    for round in 0..3 {
        let before = acked.lock().unwrap().len();
        std::thread::scope(|s| {
            for session in 0..10 {
                let (addr, acked) = (&addr, &acked);
                s.spawn(move || load_session(addr, &format!("{round}.{session}"), 4, acked));
            }
            // Killed at a random moment once messages are being accepted.
            let until = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().len() < before + 3 {
                assert!(
                    Instant::now() < until,
                    "no message accepted in round {round}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let jitter = std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                round,
            ) % 250;
            std::thread::sleep(Duration::from_millis(jitter));
            let mut killed = relay.take().unwrap();
            killed.signal("KILL");
            killed.wait(Duration::from_secs(10));
        });
        relay = Some(Process::relay(sandbox.cmd(), &[]));
    }
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 9, "{} accepted", acked.len());

    // The last relay delivers what every earlier one accepted.
    let relay = relay.unwrap();
    let until = Instant::now() + Duration::from_secs(240);
    while !sandbox.outbox_entries("queue").is_empty() {
        assert!(
            Instant::now() < until,
            "{} still queued:\n{}",
            sandbox.outbox_entries("queue").len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut copies = std::collections::BTreeMap::<String, usize>::new();
    for message in fake.messages() {
        let text = String::from_utf8_lossy(&message.raw).into_owned();
        if let Some(id) = header(&text, "Message-ID") {
            *copies.entry(id.to_owned()).or_default() += 1;
        }
    }
    for id in &acked {
        assert!(
            copies.contains_key(id),
            "{id} got a 250 but was never delivered"
        );
    }
    let journal = std::fs::read_to_string(sandbox.path().join("data/journal/journal.jsonl"))
        .unwrap_or_default();
    let uncertain: std::collections::HashSet<String> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["outcome"] == "uncertain")
        .filter_map(|r| r["message_id"].as_str().map(str::to_owned))
        .collect();
    for (id, n) in &copies {
        assert!(
            *n == 1 || uncertain.contains(id),
            "{id} arrived {n} times without an uncertain record"
        );
    }
    assert!(sandbox.outbox_entries("failed").is_empty());
}

// 6. Other clients: swaks, msmtp, lettre

/// swaks over plain text: AUTH is offered to loopback clients (swaks's
/// TLS needs Net::SSLeay, which the test machines need not have).
#[test]
fn swaks_sends_with_auth_login() {
    let (fake, sandbox) = logged_in();
    add_user(&sandbox, "printer", &[]);
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let out = run(Command::new("swaks").args([
        "--server",
        &addr,
        "--from",
        ACCOUNT,
        "--to",
        "a@example.net",
        "--auth",
        "LOGIN",
        "--auth-user",
        "printer",
        "--auth-password",
        PASSWORD,
        "--header",
        "Subject: from swaks",
        "--body",
        "swaks body",
    ]));
    assert_eq!(out.code, 0, "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    assert!(text.contains("Subject: from swaks"), "{text}");
}

#[test]
fn msmtp_sends_as_a_configured_client() {
    let (fake, sandbox) = logged_in();
    add_user(&sandbox, "app", &[]);
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let rc = sandbox.path().join("msmtprc");
    std::fs::write(
        &rc,
        format!(
            "account relay\nhost {host}\nport {port}\nfrom {ACCOUNT}\ntls on\ntls_starttls on\ntls_certcheck off\nauth on\nuser app\npassword {PASSWORD}\naccount default : relay\n"
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = run_with_stdin(
        Command::new("msmtp")
            .arg("-C")
            .arg(&rc)
            .arg("a@example.net"),
        format!("From: {ACCOUNT}\nTo: a@example.net\nSubject: from msmtp\n\nmsmtp body\n")
            .as_bytes(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    assert!(text.contains("Subject: from msmtp"), "{text}");
}

#[test]
fn lettre_sends_over_starttls_with_auth() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{SmtpTransport, Transport};

    let (fake, sandbox) = logged_in();
    add_user(&sandbox, "app", &[]);
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let tls = TlsParameters::builder("localhost".to_owned())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .credentials(Credentials::new("app".to_owned(), PASSWORD.to_owned()))
        .build();
    let email = lettre::Message::builder()
        .from(ACCOUNT.parse().unwrap())
        .to("a@example.net".parse().unwrap())
        .subject("from lettre")
        .body("lettre body".to_owned())
        .unwrap();
    mailer.send(&email).expect("lettre's send succeeds");
    let text = String::from_utf8(wait_delivered(&fake, 1).remove(0)).unwrap();
    assert!(text.contains("Subject: from lettre"), "{text}");
}

// 7. Users and reload

#[test]
fn sighup_picks_up_a_new_user_and_user_remove_refuses_unknown_names() {
    let (fake, sandbox) = logged_in();
    let (relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    let message = format!("From: {ACCOUNT}\r\nTo: a@example.net\r\nSubject: late\r\n\r\nlate\r\n");
    add_user(&sandbox, "late", &[]);
    relay.signal("HUP");
    relay.wait_log("SIGHUP: reloaded", Duration::from_secs(10));
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &["starttls", "late", PASSWORD],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    wait_delivered(&fake, 1);

    let removed = run(sandbox.cmd().args(["relay", "user", "remove", "late"]));
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let again = run(sandbox.cmd().args(["relay", "user", "remove", "late"]));
    assert_eq!(again.code, 66, "{}", again.stderr);
    assert!(again.stderr.contains("hint: "), "{}", again.stderr);
}

// 8. apimail doctor

#[test]
fn doctor_checks_the_relay_listeners_tls_and_users() {
    let (_fake, sandbox) = logged_in();
    add_user(&sandbox, "scanner", &[]);
    let config = sandbox.path().join("config/config.toml");
    let before = std::fs::read_to_string(&config).unwrap();
    configure(&sandbox, "", "127.0.0.1:2525", "");
    let out = run(sandbox.cmd().arg("doctor"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        "ok    relay listeners `main` on 127.0.0.1:2525 (loopback only without AUTH)",
        "ok    relay TLS",
        "ok    relay users    1 user(s), each mapped to a configured account",
    ] {
        assert!(report.contains(line), "{line}\n{report}");
    }

    // An open listener, a certificate that is not there, a user whose
    // account is gone.
    std::fs::write(
        &config,
        before.replace(&format!("[accounts.\"{ACCOUNT}\"]"), "[accounts.renamed]"),
    )
    .unwrap();
    configure(
        &sandbox,
        "certificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"",
        "0.0.0.0:2525",
        "account = \"renamed\"",
    );
    let out = run(sandbox.cmd().arg("doctor"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(out.code, 0, "{report}");
    assert!(
        report.contains("FAIL  relay listeners") && report.contains("open relay"),
        "{report}"
    );
    assert!(
        report.contains("FAIL  relay TLS") && report.contains("/nonexistent/cert.pem"),
        "{report}"
    );
    assert!(
        report.contains("FAIL  relay users") && report.contains("not configured"),
        "{report}"
    );
}

// 9. What the journal, the log and the queue say

#[test]
fn a_provider_failure_names_the_provider_and_each_error_text_once() {
    let (fake, sandbox) = logged_in();
    fake.fail_forever(Fault::Status500);
    let (relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message = format!(
        "From: {ACCOUNT}\r\nTo: a@example.net\r\nSubject: scan\r\nMessage-ID: <relay-500@example.com>\r\n\r\nscan\r\n"
    );
    let out = smtplib(
        &sandbox,
        &addr,
        ACCOUNT,
        "a@example.net",
        message.as_bytes(),
        &[],
    );
    assert!(out.starts_with("sent {}"), "{out}");
    relay.wait_log("stays queued", Duration::from_secs(30));

    let error = "Backend Error";
    let once = |what: &str, text: &str| {
        let line = text
            .lines()
            .find(|l| l.contains(error))
            .unwrap_or_else(|| panic!("no `{error}` in the {what}:\n{text}"));
        assert_eq!(line.matches(error).count(), 1, "{what}: {line}");
    };
    once("relay log", &relay.log());
    let list = run(sandbox.cmd().args(["queue", "list"]));
    once("queue list", &String::from_utf8_lossy(&list.stdout));
    let log = run(sandbox.cmd().args(["log", "--json"]));
    let journal = String::from_utf8(log.stdout).unwrap();
    once("journal", &journal);
    let records: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records.len() >= 2,
        "queued, then the failed attempt: {journal}"
    );
    for record in &records {
        assert_eq!(record["provider"], "gmail", "{record}");
    }
}

/// smtplib past the relay's 500 recipients: the first transaction takes
/// 500 and gets 452 for the rest, which go in a second transaction of the
/// same message, as an MTA does. Prints the refused count and codes.
const SPLIT: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
sender, data = sys.argv[2], open(sys.argv[3], "rb").read()
rcpts = ["to@example.net", "cc@example.net"] + ["r%d@example.net" % i for i in range(1, 506)]
s = smtplib.SMTP(host, int(port), timeout=30)
s.ehlo("split.test")
refused = s.sendmail(sender, rcpts, data)
print(len(refused), sorted(set(code for code, _ in refused.values())))
print(s.sendmail(sender, ["to@example.net"] + list(refused), data))
s.quit()
"#;

#[test]
fn a_split_envelope_reaches_each_recipient_once() {
    let (fake, sandbox) = logged_in();
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message = format!(
        "From: {ACCOUNT}\r\nTo: to@example.net\r\nCc: cc@example.net\r\nSubject: to many\r\nMessage-ID: <relay-split@example.com>\r\n\r\nhello all\r\n"
    );
    let path = sandbox.path().join("split.eml");
    std::fs::write(&path, &message).unwrap();
    let out = python(SPLIT, &[&addr, ACCOUNT, path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "python3: {}", out.stderr);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with("7 [452]\n{}"), "{printed}");

    wait_delivered(&fake, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.messages().len(), 2);
    for address in [
        "to@example.net",
        "cc@example.net",
        "r1@example.net",
        "r498@example.net",
    ] {
        assert_eq!(fake.inbox(address).len(), 1, "{address}");
    }
    for n in 499..=505 {
        let copies = fake.inbox(&format!("r{n}@example.net"));
        assert_eq!(copies.len(), 1, "r{n}");
        // The later transaction's copy still shows who it was for.
        let text = String::from_utf8(copies[0].clone()).unwrap();
        assert_eq!(
            header(&text, "Original-To"),
            Some("to@example.net"),
            "{text}"
        );
        assert!(text.ends_with("hello all\r\n"), "{text}");
    }
}

// 7. Hostile clients: memory, connection slots, logs, networks

/// Python: `count` sessions at once against argv[1], the n-th (from 0)
/// from the loopback address `argv[3]` + (n + 2) (bound before
/// connecting). Mode `auth`:
/// EHLO, a wrong AUTH PLAIN. Mode `data`: EHLO, MAIL, RCPT, DATA and a
/// message of argv[5] bytes. Prints each session's last reply code, one a
/// line.
const SESSIONS: &str = r#"
import base64, socket, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
mode, count, prefix = sys.argv[2], int(sys.argv[4]), sys.argv[3]
size = int(sys.argv[5]) if len(sys.argv) > 5 else 0
codes = [None] * count
start = threading.Barrier(count)

def reply(f):
    while True:
        line = f.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line[:3].decode(errors="replace") or "closed"

def session(n):
    try:
        s = socket.create_connection((host, int(port)), timeout=60,
                                     source_address=(prefix + str(n + 2), 0))
        f = s.makefile("rb")
        if reply(f) != "220":
            codes[n] = "greeting"
            return
        s.sendall(b"EHLO hostile.test\r\n"); reply(f)
        start.wait()
        if mode == "auth":
            auth = base64.b64encode(b"\0scanner\0not the password " + str(n).encode())
            s.sendall(b"AUTH PLAIN " + auth + b"\r\n")
        else:
            s.sendall(b"MAIL FROM:<user@example.com>\r\n"); reply(f)
            s.sendall(b"RCPT TO:<big@example.net>\r\n"); reply(f)
            s.sendall(b"DATA\r\n"); reply(f)
            s.sendall(b"From: user@example.com\r\nTo: big@example.net\r\nSubject: big\r\n\r\n")
            line = b"x" * 998 + b"\r\n"
            block = line * 64
            sent = 0
            while sent < size:
                s.sendall(block); sent += len(block)
            s.sendall(b".\r\n")
        codes[n] = reply(f)
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:
        codes[n] = type(e).__name__
        try:
            start.abort()
        except Exception:
            pass

threads = [threading.Thread(target=session, args=(n,)) for n in range(count)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(str(c) for c in codes))
"#;

/// Runs [`SESSIONS`]; the reply codes.
fn sessions(addr: &str, mode: &str, prefix: &str, count: usize, size: usize) -> Vec<String> {
    let out = python(
        SESSIONS,
        &[addr, mode, prefix, &count.to_string(), &size.to_string()],
    );
    assert_eq!(out.code, 0, "python3: {}", out.stderr);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The relay's peak and current resident set, in MB, from /proc.
fn rss_mb(relay: &Process) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.id())).unwrap();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn a_hundred_wrong_passwords_at_once_keep_the_relay_under_100_mb() {
    let (_fake, sandbox) = logged_in();
    add_user(&sandbox, "scanner", &[]);
    let (relay, addr) = relay_on_loopback(&sandbox, "", "require_auth = true");
    // Each session from its own address: every password is checked.
    let codes = sessions(&addr, "auth", "127.0.1.", 100, 0);
    assert_eq!(codes.len(), 100);
    assert!(codes.iter().all(|c| c == "535"), "{codes:?}");
    let (peak, now) = rss_mb(&relay);
    assert!(
        peak < 100.0,
        "100 password checks at once: {peak:.1} MB peak RSS ({now:.1} MB now)"
    );
}

#[test]
fn a_hundred_large_messages_at_once_keep_the_relay_under_100_mb() {
    let (fake, sandbox) = logged_in();
    // Deliveries fail meanwhile: only the sessions' memory counts.
    fake.fail_forever(Fault::Status503);
    let (relay, addr) = relay_on_loopback(&sandbox, "max_connections_per_address = 100", "");
    // 100 sessions in DATA at once, 3 MB each: 300 MB in flight (the bench
    // sends 35 MB each).
    let codes = sessions(&addr, "data", "127.0.0.", 100, 3_000_000);
    assert!(codes.iter().all(|c| c == "250"), "{codes:?}");
    let (peak, now) = rss_mb(&relay);
    assert!(
        peak < 100.0,
        "100 sessions × 3 MB in DATA: {peak:.1} MB peak RSS ({now:.1} MB now)"
    );
}

#[test]
fn one_address_is_refused_past_its_limit_while_other_devices_are_served() {
    let (_fake, sandbox) = logged_in();
    let (relay, addr) = relay_on_loopback(
        &sandbox,
        "max_connections_per_address = 3",
        "require_auth = true",
    );
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut refused = TcpStream::connect(&addr).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    refused.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("421 4.7.0"), "{answer}");
    // Another device, 127.0.0.2, is still served.
    let other = sessions(&addr, "auth", "127.0.0.", 1, 0);
    assert_eq!(other, ["535"]);
    relay.wait_log("max_connections_per_address", Duration::from_secs(5));
    drop(held);
}

#[test]
fn after_a_refused_auth_the_credentials_are_not_logged() {
    let (_fake, sandbox) = logged_in();
    add_user(&sandbox, "scanner", &[]);
    let addr = format!("127.0.0.1:{}", free_port());
    configure(&sandbox, "", &addr, "");
    let relay = Process::relay(sandbox.cmd(), &["-v"]);
    let secret = base64_plain("scanner", PASSWORD);
    let login = python(
        "import base64,sys; print(base64.b64encode(sys.argv[1].encode()).decode())",
        &[PASSWORD],
    );
    let login = String::from_utf8(login.stdout).unwrap().trim().to_owned();
    let out = converse(
        &addr,
        format!("EHLO t\r\nAUTH CRAM-MD5\r\n{login}\r\n{secret}\r\nAUTH PLAIN {secret}\r\nNOOP\r\nNOOP\r\nQUIT\r\n")
            .as_bytes(),
        "221",
    );
    assert!(out.contains("504 5.5.4"), "{out}");
    relay.wait_log("< QUIT", Duration::from_secs(5));
    let log = relay.log();
    assert!(log.contains("< ****"), "{log}");
    for leaked in [PASSWORD, &login, &secret] {
        assert!(!log.contains(leaked), "`{leaked}` in the log:\n{log}");
    }
}

#[test]
fn a_network_wider_than_a_slash_8_needs_allow_any_network() {
    let (_fake, sandbox) = logged_in();
    let addr = format!("127.0.0.1:{}", free_port());
    configure(&sandbox, "", &addr, "allowed_networks = [\"0.0.0.0/0\"]");
    let mut refused = Process::spawn(sandbox.cmd().arg("relay"));
    // Not started: it exits at once (a relay that starts is killed).
    let code = refused.wait(Duration::from_secs(20));
    let stderr = refused.log();
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("0.0.0.0/0") && stderr.contains("allow_any_network = true"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");

    let path = sandbox.path().join("config/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}allow_any_network = true\n")).unwrap();
    let relay = Process::relay(sandbox.cmd(), &[]);
    assert!(
        relay.log().contains("WARNING") && relay.log().contains("0.0.0.0/0"),
        "{}",
        relay.log()
    );
}

#[test]
fn loopback_clients_follow_a_listeners_allowed_networks() {
    let (fake, sandbox) = logged_in();
    let addr = format!("127.0.0.2:{}", free_port());
    configure(&sandbox, "", &addr, "allowed_networks = [\"10.0.0.0/8\"]");
    let _relay = Process::relay(sandbox.cmd(), &[]);
    let out = converse(
        &addr,
        format!("EHLO t\r\nMAIL FROM:<{ACCOUNT}>\r\nRCPT TO:<victim@example.net>\r\nQUIT\r\n")
            .as_bytes(),
        "221",
    );
    assert!(
        !out.contains("250 2.1.0"),
        "loopback is not in 10.0.0.0/8: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.messages().is_empty());
}
