//! `apimail relay` end to end: the real binary listening on a free port
//! with the sandbox's configuration, real SMTP clients (Python's smtplib,
//! swaks, msmtp, lettre) in front of it, and the fake Gmail (or, once,
//! the fake Graph) behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::fake_microsoft::FakeMicrosoft;
use apimail_tests::{Run, Sandbox, run, run_with_stdin};

const ACCOUNT: &str = "user@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A running `apimail relay`, killed when dropped.
struct Relay {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Relay {
    /// Starts `apimail relay ARGS` and waits for its listeners' startup
    /// lines.
    fn start(sandbox: &Sandbox, args: &[&str]) -> Relay {
        let mut child = sandbox
            .cmd()
            .arg("relay")
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("apimail relay starts");
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
        let relay = Relay { child, log };
        relay.wait_log("relay listener", Duration::from_secs(30));
        relay
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < until,
                "no `{needle}` in the relay's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    fn wait(&mut self, timeout: Duration) -> i32 {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < until,
                "the relay did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a relay on a free loopback port; its address.
fn relay_on_loopback(sandbox: &Sandbox, relay: &str, listener: &str) -> (Relay, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    configure(sandbox, relay, &addr, listener);
    (Relay::start(sandbox, &[]), addr)
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

#[test]
fn a_sender_outside_allowed_from_is_refused_553() {
    let (fake, sandbox) = logged_in();
    let (_relay, addr) = relay_on_loopback(&sandbox, "", "");
    let message = b"From: boss@elsewhere.example\r\nTo: a@example.net\r\nSubject: x\r\n\r\nx\r\n";
    let out = smtplib(
        &sandbox,
        &addr,
        "boss@elsewhere.example",
        "a@example.net",
        message,
        &[],
    );
    assert!(out.starts_with("reply 553"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(fake.messages().is_empty());
}

#[test]
fn rewrite_from_sends_a_scanner_as_the_account_keeping_its_name() {
    let (fake, sandbox) = logged_in();
    let added = add_user(&sandbox, "scanner", &["--rewrite-from"]);
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
    let relay = Relay::start(&sandbox, &[]);
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

    let relay = Relay::start(&sandbox, &[]);
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
