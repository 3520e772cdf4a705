//! The HTTP policy end to end: timeouts, TLS and proxy failures against
//! misbehaving listeners (`apimail_test_http::stalling`) and the fakes.
//! Every test asserts the exit code, the first error line and, where the
//! message must survive, the queue.

use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, service_account_key_json};
use apimail_tests::fake_microsoft::{self, FakeMicrosoft};
use apimail_tests::http::stalling::{Behaviour, SlowLink, Stalling};
use apimail_tests::http::tls::TlsServer;
use apimail_tests::sandbox::{MS_CLIENT_ID, Sandbox};
use apimail_tests::{Run, run, run_with_stdin};

const ACCOUNT: &str = "user@example.com";

/// Short timeouts and one retry, so that a stall ends in seconds.
const QUICK: [(&str, &str); 4] = [
    ("APIMAIL_CONNECT_TIMEOUT_SECONDS", "2"),
    ("APIMAIL_STALL_TIMEOUT_SECONDS", "2"),
    ("APIMAIL_RETRY_ATTEMPTS", "2"),
    ("APIMAIL_RETRY_MAX_SECONDS", "20"),
];

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let out = sandbox.login(&fake, &[]);
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    (fake, sandbox)
}

fn send(sandbox: &Sandbox, env: &[(&str, &str)]) -> Run {
    run(sandbox.cmd().envs(QUICK).envs(env.iter().copied()).args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "network",
        "--text",
        "hello",
    ]))
}

/// The first `error:` line.
fn first_error(out: &Run) -> &str {
    out.stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{}", out.stderr))
}

fn hint(out: &Run) -> &str {
    out.stderr
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_else(|| panic!("no hint in:\n{}", out.stderr))
}

/// The message is still queued, and a later flush (against the working
/// fake) takes the claim and delivers it.
fn still_queued_then_flushed(fake: &FakeGoogle, sandbox: &Sandbox) {
    let queued = sandbox.outbox_entries("queue");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(sandbox.outbox_entries("failed").is_empty());
    // --all: the entry is scheduled for a later retry.
    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert_eq!(fake.messages().len(), 1);
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn a_send_to_a_server_that_never_answers_ends_75_and_stays_queued() {
    let (fake, sandbox) = logged_in();
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let started = Instant::now();
    let out = send(&sandbox, &[("APIMAIL_GMAIL_API_URL", &silent.base_url())]);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let line = first_error(&out);
    assert!(line.contains(&silent.addr().to_string()), "{line}");
    assert!(line.contains("waiting for the answer"), "{line}");
    assert!(line.contains("2 s"), "{line}");
    assert!(silent.accepted() >= 1 && silent.received() > 0);
    still_queued_then_flushed(&fake, &sandbox);
}

#[test]
fn a_token_refresh_that_never_answers_ends_75_and_stays_queued() {
    let (fake, sandbox) = logged_in();
    sandbox.expire_stored_token(ACCOUNT);
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let out = send(
        &sandbox,
        &[(
            "APIMAIL_GOOGLE_TOKEN_URL",
            &format!("{}/token", silent.base_url()),
        )],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    let line = first_error(&out);
    assert!(line.contains(&silent.addr().to_string()), "{line}");
    assert!(line.contains("waiting for the answer"), "{line}");
    assert!(fake.messages().is_empty());
    still_queued_then_flushed(&fake, &sandbox);
}

#[test]
fn an_upload_the_server_stops_reading_ends_75_while_sending() {
    let (fake, sandbox) = logged_in();
    let wedged = Stalling::start(Behaviour::StopsReadingAfter(64 * 1024)).unwrap();
    // 5 MB of attachment (6.8 MB as base64): one multipart request (under
    // 8 MiB), more than the socket buffers hold once the server stops
    // reading.
    let file = sandbox.path().join("big.bin");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, data).unwrap();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_GMAIL_API_URL", wedged.base_url())
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "big",
            "--text",
            "see attached",
            "--attach",
        ])
        .arg(&file));
    assert_eq!(out.code, 75, "{}", out.stderr);
    let line = first_error(&out);
    assert!(line.contains(&wedged.addr().to_string()), "{line}");
    assert!(line.contains("while sending"), "{line}");
    still_queued_then_flushed(&fake, &sandbox);
}

#[test]
fn a_graph_upload_chunk_that_never_answers_ends_75_and_stays_queued() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(
        &fake,
        &["--login-hint", "user@contoso.com", "--large-messages"],
    );
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    fake.set_upload_base(&silent.base_url());
    let file = sandbox.path().join("big.pdf");
    std::fs::write(&file, vec![7u8; 4 << 20]).unwrap();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_RETRY_ATTEMPTS", "1")
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "big",
            "--text",
            "attached",
            "--attach",
        ])
        .arg(&file));
    assert_eq!(out.code, 75, "{}", out.stderr);
    let line = first_error(&out);
    assert!(line.contains(&silent.addr().to_string()), "{line}");
    assert!(line.contains("waiting for the answer"), "{line}");
    assert!(
        !out.stderr.contains("authtoken"),
        "upload URLs are never shown"
    );
    assert!(fake.delivered().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);
}

#[test]
fn doctor_names_the_endpoint_that_never_answers() {
    let (_fake, sandbox) = logged_in();
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_GMAIL_API_URL", silent.base_url())
        .arg("doctor"));
    assert_eq!(
        out.code,
        75,
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.stderr
    );
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    let failed = report
        .lines()
        .find(|l| l.contains(&silent.addr().to_string()))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(failed.contains("waiting for the answer"), "{report}");
    // The token endpoint, checked through its own stack, answers, and the
    // ok line says which endpoint it was.
    assert!(
        report
            .lines()
            .any(|l| l.contains("ok") && l.contains("network") && l.contains("answers (HTTP")),
        "{report}"
    );
}

#[test]
fn a_proxy_that_stalls_after_connect_ends_75_while_connecting() {
    let (fake, sandbox) = logged_in();
    let proxy = Stalling::start(Behaviour::ConnectThenStall).unwrap();
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GMAIL_API_URL", "https://gmail.example.com/"),
            ("HTTPS_PROXY", &proxy.base_url()),
        ],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    let line = first_error(&out);
    assert!(line.contains("gmail.example.com:443"), "{line}");
    assert!(line.contains("connecting"), "{line}");
    assert!(proxy.accepted() >= 1);
    still_queued_then_flushed(&fake, &sandbox);
}

#[test]
fn a_proxy_that_refuses_connect_is_a_configuration_problem() {
    let (_fake, sandbox) = logged_in();
    let proxy = Stalling::start(Behaviour::RefusesConnect).unwrap();
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GMAIL_API_URL", "https://gmail.example.com/"),
            ("HTTPS_PROXY", &proxy.base_url()),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains(&format!(
            "the proxy at HTTPS_PROXY={} refused the connection",
            proxy.base_url()
        )),
        "{line}"
    );
    assert!(hint(&out).contains("HTTPS_PROXY"), "{}", out.stderr);
    assert_eq!(proxy.accepted(), 1, "no retries");
}

#[test]
fn a_dead_proxy_is_a_configuration_problem() {
    let (_fake, sandbox) = logged_in();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = format!("http://127.0.0.1:{port}");
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GMAIL_API_URL", "https://gmail.example.com/"),
            ("HTTPS_PROXY", &proxy),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains(&format!(
            "the proxy at HTTPS_PROXY={proxy} refused the connection"
        )),
        "{line}"
    );
    assert!(hint(&out).contains("HTTPS_PROXY"), "{}", out.stderr);
}

#[test]
fn https_on_a_plain_http_port_is_a_configuration_problem() {
    let (fake, sandbox) = logged_in();
    let plain = fake.gmail_url().replacen("http://", "https://", 1);
    let address = plain
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let out = send(&sandbox, &[("APIMAIL_GMAIL_API_URL", &plain)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains(&format!("{address} does not speak TLS")),
        "{line}"
    );
    assert!(hint(&out).contains("plain HTTP"), "{}", out.stderr);
    assert!(fake.messages().is_empty());
}

#[test]
fn sendmail_accepts_and_holds_when_the_proxy_refuses() {
    let (_fake, sandbox) = logged_in();
    let proxy = Stalling::start(Behaviour::RefusesConnect).unwrap();
    let out = run_with_stdin(
        sandbox
            .cmd()
            .envs(QUICK)
            .env("APIMAIL_GMAIL_API_URL", "https://gmail.example.com/")
            .env("HTTPS_PROXY", proxy.base_url())
            .args(["sendmail", "-t"]),
        b"From: user@example.com\nTo: rcpt@example.net\nSubject: held\n\nbody\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);
    let list = run(sandbox.cmd().args(["queue", "list"]));
    let shown = String::from_utf8_lossy(&list.stdout);
    assert!(shown.contains("refused the connection"), "{shown}");
    let doctor = run(sandbox.cmd().arg("doctor"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        doctor.stderr
    );
    let queue = report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("queue"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        queue.contains("held") && queue.contains("refused the connection"),
        "{report}"
    );
}

#[test]
fn graph_names_the_proxy_that_refuses() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(&fake, &["--login-hint", "user@contoso.com"]);
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    let proxy = Stalling::start(Behaviour::RefusesConnect).unwrap();
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GRAPH_API_URL", "https://graph.example.com"),
            ("HTTPS_PROXY", &proxy.base_url()),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(line.contains("proxy"), "{line}");
    assert!(line.contains(&proxy.base_url()), "{line}");
    assert_eq!(proxy.accepted(), 1, "no retries");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn tls_server(pem: &str) -> TlsServer {
    TlsServer::start(&fixture(pem)).unwrap()
}

#[test]
fn an_untrusted_certificate_is_a_configuration_problem() {
    let (fake, sandbox) = logged_in();
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}/", server.port());
    let out = send(&sandbox, &[("APIMAIL_GMAIL_API_URL", &url)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
    let hint = hint(&out);
    assert!(
        hint.contains("set SSL_CERT_FILE to your CA bundle"),
        "{hint}"
    );
    assert!(hint.contains("TLS-inspecting proxy"), "{hint}");
    assert!(fake.messages().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1, "held, not lost");
}

#[test]
fn an_untrusted_token_endpoint_is_a_configuration_problem() {
    let (_fake, sandbox) = logged_in();
    sandbox.expire_stored_token(ACCOUNT);
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}/token", server.port());
    let out = send(&sandbox, &[("APIMAIL_GOOGLE_TOKEN_URL", &url)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
    assert!(hint(&out).contains("SSL_CERT_FILE"), "{}", out.stderr);
}

#[test]
fn a_certificate_for_another_name_says_which() {
    let (_fake, sandbox) = logged_in();
    let server = tls_server("tls-other.pem");
    let url = format!("https://localhost:{}/", server.port());
    let ca = fixture("tls-ca.pem").display().to_string();
    let out = send(
        &sandbox,
        &[("APIMAIL_GMAIL_API_URL", &url), ("SSL_CERT_FILE", &ca)],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("the certificate of localhost is for other.example"),
        "{line}"
    );
    assert!(!line.contains("does not trust"), "{line}");
}

/// `SSL_CERT_FILE` holding one certificate that is not the test CA, and
/// `SSL_CERT_DIR` a directory holding the test CA: the directory must not
/// be read beside the bundle (it only duplicates a system bundle), so the
/// test server's certificate is not trusted.
fn bundle_and_a_directory(sandbox: &Sandbox) -> (String, String) {
    let dir = sandbox.path().join("cert-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tls-ca.pem"), dir.join("tls-ca.pem")).unwrap();
    let bundle = fixture("tls-other.pem").display().to_string();
    (bundle, dir.display().to_string())
}

#[test]
fn ssl_cert_dir_is_not_read_beside_ssl_cert_file() {
    let (_fake, sandbox) = logged_in();
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}/", server.port());
    let (bundle, dir) = bundle_and_a_directory(&sandbox);
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GMAIL_API_URL", &url),
            ("SSL_CERT_FILE", &bundle),
            ("SSL_CERT_DIR", &dir),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
}

#[test]
fn graph_reads_the_same_roots_and_not_ssl_cert_dir_beside_ssl_cert_file() {
    let (fake, sandbox) = graph_logged_in(&[]);
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}", server.port());
    let (bundle, dir) = bundle_and_a_directory(&sandbox);
    let out = send(
        &sandbox,
        &[
            ("APIMAIL_GRAPH_API_URL", &url),
            ("SSL_CERT_FILE", &bundle),
            ("SSL_CERT_DIR", &dir),
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
    assert!(fake.delivered().is_empty());
}

#[test]
fn doctor_trusts_ssl_cert_file_and_names_the_endpoint() {
    let (_fake, sandbox) = logged_in();
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}/", server.port());
    let ca = fixture("tls-ca.pem").display().to_string();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GMAIL_API_URL", &url)
        .env("SSL_CERT_FILE", &ca)
        .arg("doctor"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    assert_eq!(out.code, 0, "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("network") && l.contains(&format!("{url} answers (HTTP 404)"))),
        "{report}"
    );
    assert!(report.contains(&format!("SSL_CERT_FILE={ca}")), "{report}");
}

#[test]
fn doctor_names_an_empty_ssl_cert_file() {
    let (_fake, sandbox) = logged_in();
    let empty = sandbox.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = run(sandbox.cmd().env("SSL_CERT_FILE", &empty).arg("doctor"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    assert_eq!(out.code, 78, "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("certificates"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains(&format!("SSL_CERT_FILE={}", empty.display())),
        "{report}"
    );
}

#[test]
fn doctor_says_a_plain_http_port_does_not_speak_tls_and_nothing_else() {
    let (fake, sandbox) = logged_in();
    let plain = fake.gmail_url().replacen("http://", "https://", 1);
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GMAIL_API_URL", &plain)
        .arg("doctor"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    assert_eq!(out.code, 78, "{report}");
    let port = plain
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // The token endpoint (plain http on the same port) answers; the API
    // endpoint gets one verdict, the right one.
    let network: Vec<&str> = report
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("network"))
        .collect();
    assert_eq!(network.len(), 2, "{report}");
    assert!(
        network
            .iter()
            .any(|l| l.contains(&format!("{port} does not speak TLS"))),
        "{report}"
    );
    assert!(!report.contains("nothing answers"), "{report}");
    assert!(
        !report.contains(&format!("https://{port}/ answers")),
        "{report}"
    );
}

#[test]
fn the_retry_bound_ends_a_send_even_inside_an_attempt() {
    let (fake, sandbox) = logged_in();
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let started = Instant::now();
    // Default connect and stall limits (10 s, 60 s); the whole send may
    // take 3 s.
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_MAX_SECONDS", "3")
        .env("APIMAIL_GMAIL_API_URL", silent.base_url())
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "x",
            "--text",
            "y",
        ]));
    let took = started.elapsed();
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let line = first_error(&out);
    assert!(line.contains("overall limit of 3 s"), "{line}");
    still_queued_then_flushed(&fake, &sandbox);
}

#[test]
fn auth_login_with_an_untrusted_token_endpoint_is_a_configuration_problem() {
    let fake = FakeGoogle::start();
    let mut sandbox = Sandbox::new(&fake);
    let server = tls_server("tls-localhost.pem");
    sandbox.set_env(
        "APIMAIL_GOOGLE_TOKEN_URL",
        &format!("https://localhost:{}/token", server.port()),
    );
    let out = sandbox.login_with(&fake, &[], |url| url);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
    assert!(hint(&out).contains("SSL_CERT_FILE"), "{}", out.stderr);
}

const GRAPH_USER: &str = "user@contoso.com";

fn graph_logged_in(extra: &[&str]) -> (FakeMicrosoft, Sandbox) {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let mut args = vec!["--login-hint", GRAPH_USER];
    args.extend_from_slice(extra);
    let out = sandbox.login_graph(&fake, &args);
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    (fake, sandbox)
}

/// Asserts that `line` names `silent`'s address, the phase and the 2 s of
/// [`QUICK`].
fn names_stall(line: &str, silent: &Stalling, phase: &str) {
    assert!(line.contains(&silent.addr().to_string()), "{line}");
    assert!(line.contains(phase), "{line}");
    assert!(line.contains(" s "), "{line}");
}

fn within(started: Instant, limit: u64) {
    let took = started.elapsed();
    assert!(took < Duration::from_secs(limit), "took {took:?}");
}

#[test]
fn a_graph_upload_on_a_slow_but_steady_link_finishes() {
    let (fake, sandbox) = graph_logged_in(&["--large-messages"]);
    let upstream = fake.base_url();
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
    // 1 MB/s: a 3.2 MB chunk takes over 3 s, longer than a 3 s stall
    // limit, but something moves every 100 ms. (3 s, not QUICK's 2: the
    // ~1.5 MB the kernel buffers must drain within the limit, with room
    // for a loaded machine.)
    let link = SlowLink::start(upstream.parse().unwrap(), 1_000_000).unwrap();
    fake.set_upload_base(&link.base_url());
    let file = sandbox.path().join("big.pdf");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_STALL_TIMEOUT_SECONDS", "3")
        .env("APIMAIL_RETRY_ATTEMPTS", "1")
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "slow",
            "--text",
            "attached",
            "--attach",
        ])
        .arg(&file));
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(took > Duration::from_secs(4), "not slow enough: {took:?}");
    assert!(link.relayed() >= 4 << 20);
    // Each chunk went once: no chunk was cut off and resumed.
    let chunks = fake.chunks();
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[0].len, 3_276_800);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn device_code_polling_that_never_answers_ends_75() {
    // The device code comes; the token endpoint, polled, never answers:
    // the login ends after three polls in a row failed, not when the code
    // expires (15 minutes).
    let authority = apimail_tests::http::Server::start("authority", |request| {
        if request.path.ends_with("/devicecode") {
            return apimail_tests::http::Response::json(
                200,
                &serde_json::json!({
                    "device_code": "dc-1",
                    "user_code": fake_microsoft::USER_CODE,
                    "verification_uri": fake_microsoft::VERIFICATION_URI,
                    "expires_in": 900,
                    "interval": 1,
                    "message": "To sign in, use a web browser.",
                }),
            )
            .into();
        }
        std::thread::sleep(Duration::from_secs(30));
        apimail_tests::http::Reply::Drop
    })
    .unwrap();
    let fake = FakeMicrosoft::start();
    let mut sandbox = Sandbox::microsoft(&fake);
    sandbox.set_env("APIMAIL_MS_AUTHORITY_URL", &authority.base_url());
    let started = Instant::now();
    let out = run(sandbox.cmd().envs(QUICK).args([
        "auth",
        "login",
        "graph",
        "--device-code",
        "--client-id",
        MS_CLIENT_ID,
    ]));
    assert_eq!(out.code, 75, "{}", out.stderr);
    // Three polls of 2 s each, with oauth2's backoff (2 s, 4 s) between.
    within(started, 25);
    let line = first_error(&out);
    assert!(line.contains(&authority.addr().to_string()), "{line}");
    assert!(line.contains("waiting for the answer"), "{line}");
    assert!(
        out.stderr.contains(fake_microsoft::USER_CODE),
        "{}",
        out.stderr
    );
    assert_eq!(authority.traffic().requests(), 4, "the code, three polls");
}

#[test]
fn a_revocation_that_never_answers_still_logs_out_and_says_why() {
    let (_fake, sandbox) = logged_in();
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env(
            "APIMAIL_GOOGLE_REVOKE_URL",
            format!("{}/revoke", silent.base_url()),
        )
        .args(["auth", "logout", "--account", ACCOUNT]));
    // Logging out is local; the revocation is reported, not fatal.
    assert_eq!(out.code, 0, "{}", out.stderr);
    within(started, 8);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
    let line = said
        .lines()
        .find(|l| l.contains("revoking them at Google failed"))
        .unwrap_or_else(|| panic!("{said}"));
    names_stall(line, &silent, "waiting for the answer");
    assert!(!sandbox.token_file(ACCOUNT).exists());
    assert!(silent.accepted() >= 1);
}

#[test]
fn graph_app_only_tokens_that_never_answer_end_75_and_stay_queued() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_MS_AUTHORITY_URL", silent.base_url())
        .env("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
        .env("AZURE_CLIENT_ID", "0a0b0c0d-1111-2222-3333-444455556666")
        .env("AZURE_CLIENT_SECRET", "app~secret~value~for~tests")
        .env("APIMAIL_GRAPH_USER", "alerts@contoso.com")
        .args([
            "send",
            "--provider",
            "graph",
            "--to",
            "rcpt@example.net",
            "--subject",
            "app",
            "--text",
            "hello",
        ]));
    assert_eq!(out.code, 75, "{}", out.stderr);
    within(started, 15);
    names_stall(first_error(&out), &silent, "waiting for the answer");
    assert!(!out.stderr.contains("app~secret"), "{}", out.stderr);
    assert!(fake.delivered().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);
}

#[test]
fn gmail_service_account_tokens_that_never_answer_end_75_and_stay_queued() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let key = sandbox.path().join("key.json");
    std::fs::write(
        &key,
        service_account_key_json(&format!("{}/token", silent.base_url())),
    )
    .unwrap();
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env(
            "APIMAIL_GOOGLE_TOKEN_URL",
            format!("{}/token", silent.base_url()),
        )
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .env("APIMAIL_GMAIL_USER", "boss@example.com")
        .args([
            "send",
            "--provider",
            "gmail",
            "--to",
            "rcpt@example.net",
            "--subject",
            "sa",
            "--text",
            "hello",
        ]));
    assert_eq!(out.code, 75, "{}", out.stderr);
    within(started, 15);
    names_stall(first_error(&out), &silent, "waiting for the answer");
    assert!(fake.messages().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);
}

#[test]
fn a_sent_items_check_that_never_answers_ends_75_and_stays_queued() {
    // Mail.ReadWrite: an unknown outcome is checked in Sent Items.
    let (fake, sandbox) = graph_logged_in(&["--large-messages"]);
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .envs(QUICK)
        .env("APIMAIL_RETRY_ATTEMPTS", "1")
        .env("APIMAIL_GRAPH_API_URL", silent.base_url())
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "lost",
            "--text",
            "hi",
            "--debug",
        ]));
    assert_eq!(out.code, 75, "{}", out.stderr);
    // The sendMail gets no answer (its outcome unknown), then neither does
    // the Sent Items check: each ends at graph-rs-sdk's whole-request limit
    // of connect + 2 × stall = 6 s.
    within(started, 20);
    let check = out
        .stderr
        .lines()
        .find(|l| l.contains("GET ") && l.contains("sentitems") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no Sent Items check: {}", out.stderr));
    names_stall(check, &silent, "waiting for the answer");
    assert!(check.contains("6 s"), "{check}");
    assert!(fake.delivered().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1);
}

#[test]
fn graph_with_an_untrusted_certificate_is_a_configuration_problem() {
    let (fake, sandbox) = graph_logged_in(&[]);
    let server = tls_server("tls-localhost.pem");
    let url = format!("https://localhost:{}", server.port());
    let out = send(&sandbox, &[("APIMAIL_GRAPH_API_URL", &url)]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    assert!(
        line.contains("this machine does not trust the certificate of localhost"),
        "{line}"
    );
    let hint = hint(&out);
    assert!(
        hint.contains("set SSL_CERT_FILE to your CA bundle"),
        "{hint}"
    );
    assert!(fake.delivered().is_empty());
    assert_eq!(sandbox.outbox_entries("queue").len(), 1, "held, not lost");
}

#[test]
fn graph_honours_ssl_cert_file_and_names_a_certificate_for_another_name() {
    let (_fake, sandbox) = graph_logged_in(&[]);
    let server = tls_server("tls-other.pem");
    let url = format!("https://localhost:{}", server.port());
    let ca = fixture("tls-ca.pem").display().to_string();
    let out = send(
        &sandbox,
        &[("APIMAIL_GRAPH_API_URL", &url), ("SSL_CERT_FILE", &ca)],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    let line = first_error(&out);
    // Trusted through SSL_CERT_FILE (else "does not trust"), refused for
    // its name.
    assert!(
        line.contains("the certificate of localhost is for other.example"),
        "{line}"
    );
    assert!(hint(&out).contains("host name"), "{}", out.stderr);
}
