//! The relay under hostile clients: bounded password checks, lockouts
//! across connections, large messages on disk, no credential in the log,
//! deadlines, per-address connection limits, `allowed_networks` for
//! loopback.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::*;

/// What the test directory's password checks did.
#[derive(Debug, Default)]
pub(super) struct Checks {
    /// How long each check takes, in ms.
    pub(super) slow_ms: AtomicU64,
    pub(super) calls: AtomicUsize,
    running: AtomicUsize,
    /// The most checks that ran at once.
    pub(super) most: AtomicUsize,
}

/// A check running; counted until dropped.
pub(super) struct Running<'a>(&'a Checks);

impl Checks {
    pub(super) fn run(&self) -> Running<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.slow_ms.load(Ordering::SeqCst)));
        Running(self)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A listener for network clients that must AUTH, over plain text.
fn auth_listener() -> Listener {
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    listener.allow_plaintext_auth = true;
    listener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_run_a_few_at_a_time_in_turn() {
    let directory = directory(None);
    directory.checks.slow_ms.store(40, Ordering::SeqCst);
    let checks = directory.checks.clone();
    let relay = Arc::new(Relay::new(directory, quick_limits()));
    let mut clients = Vec::new();
    for n in 0..20 {
        let relay = relay.clone();
        clients.push(tokio::spawn(async move {
            // Each from its own address: no lockout gets in the way.
            let peer = format!("192.0.2.{}:1000", 100 + n);
            let mut client = relay.connect(&peer, auth_listener()).await;
            client.ehlo().await;
            client
                .command(&format!("AUTH PLAIN {}", plain("printer", "wrong")))
                .await
        }));
    }
    for client in clients {
        let reply = client.await.unwrap();
        assert_eq!(code(&reply), "535 5.7.8", "{reply}");
    }
    assert_eq!(checks.calls.load(Ordering::SeqCst), 20);
    let most = checks.most.load(Ordering::SeqCst);
    assert!(
        most <= Limits::default().max_auth_checks,
        "{most} password checks ran at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_connections_get_no_more_checked_passwords_than_one() {
    let lock_after = quick_limits().auth_failures.lock_after as usize;
    // One connection, one wrong password after another.
    let directory = directory(None);
    let checks = directory.checks.clone();
    let relay = Relay::new(directory, quick_limits());
    let mut client = relay.connect("192.0.2.60:1", auth_listener()).await;
    client.ehlo().await;
    for _ in 0..lock_after + 2 {
        client
            .command(&format!("AUTH PLAIN {}", plain("printer", "wrong")))
            .await;
    }
    let alone = checks.calls.load(Ordering::SeqCst);
    assert_eq!(alone, lock_after);

    // Forty connections from one address at once, each checks slow.
    let directory = self::directory(None);
    directory.checks.slow_ms.store(100, Ordering::SeqCst);
    let checks = directory.checks.clone();
    let relay = Arc::new(Relay::new(directory, quick_limits()));
    let mut clients = Vec::new();
    for n in 0..40 {
        let relay = relay.clone();
        clients.push(tokio::spawn(async move {
            let mut client = relay
                .connect(&format!("192.0.2.50:{}", 1000 + n), auth_listener())
                .await;
            client.ehlo().await;
            let reply = client
                .command(&format!("AUTH PLAIN {}", plain("printer", "wrong")))
                .await;
            code(&reply).to_owned()
        }));
    }
    let mut codes = Vec::new();
    for client in clients {
        codes.push(client.await.unwrap());
    }
    let checked = codes.iter().filter(|c| *c == "535 5.7.8").count();
    let locked = codes.iter().filter(|c| *c == "454 4.7.0").count();
    assert_eq!(
        checks.calls.load(Ordering::SeqCst),
        alone,
        "as many checks as one connection gets: {codes:?}"
    );
    assert_eq!((checked, locked), (alone, 40 - alone), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_waits_in_tmp_not_in_memory_and_arrives_byte_exact() {
    let mut directory = directory(Some(principal("local", &["*"])));
    directory
        .accounts
        .get_mut("work")
        .unwrap()
        .max_message_bytes = 10 * 1024 * 1024;
    let relay = Relay::new(directory, quick_limits());
    let tmp = relay.outbox.dir().join("tmp");
    let files_in_tmp = || std::fs::read_dir(&tmp).unwrap().count();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    client.command("MAIL FROM:<me@example.com>").await;
    client.command("RCPT TO:<you@example.org>").await;
    assert!(client.command("DATA").await.starts_with("354"));
    let line = format!("{}\r\n", "y".repeat(998));
    let half = line.repeat(600); // 600 KB
    client.send(MESSAGE).await;
    client.send(half.as_bytes()).await;
    // The session reads it all, and it is in a file by now.
    let until = Instant::now() + Duration::from_secs(5);
    while files_in_tmp() == 0 {
        assert!(Instant::now() < until, "nothing was written to tmp/");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.send(half.as_bytes()).await;
    client.send(b".\r\n").await;
    let reply = client.reply().await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let entries = relay.entries();
    let stored = relay.message(&entries[0]);
    let mut sent = body(MESSAGE).to_vec();
    sent.extend_from_slice(half.as_bytes());
    sent.extend_from_slice(half.as_bytes());
    assert!(
        body(&stored) == sent.as_slice(),
        "the body arrives byte-exact"
    );
    // The header section read back was edited: Bcc, Date, Message-ID.
    let head = String::from_utf8_lossy(&stored[..stored.len() - sent.len()]).into_owned();
    for field in [
        "From: Scanner <scanner@example.com>\r\n",
        "Bcc: ",
        "Date: ",
        "Message-ID: ",
    ] {
        assert!(head.contains(field), "{field} in {head}");
    }
    assert_eq!(files_in_tmp(), 0, "the temporary file became the entry");
}

/// Everything logged while it is installed, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn no_credential_reaches_the_log_at_trace_level() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    // The sessions run on this thread (a current-thread runtime).
    let _logging = tracing::subscriber::set_default(subscriber);
    const SECRET: &str = "Secret-Password";
    let secrets = [
        SECRET.to_owned(),
        b64(SECRET),
        plain("printer", SECRET),
        "s3cret".to_owned(),
        b64("s3cret"),
        plain("printer", "s3cret"),
        b64("printer"),
    ];
    let relay = Relay::new(directory(None), quick_limits());

    // 504: an unknown mechanism, then the client sends its credentials.
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    assert_eq!(code(&client.command("AUTH CRAM-MD5").await), "504 5.5.4");
    assert_eq!(code(&client.command(&b64("printer")).await), "500 5.5.1");
    assert_eq!(code(&client.command(&b64(SECRET)).await), "500 5.5.1");
    // A command after them is logged again.
    client.command("NOOP").await;

    // 538: AUTH over plain text from the network, and a printer that sends
    // its credentials anyway.
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    let mut client = relay.connect(LAN, listener).await;
    client.ehlo().await;
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", SECRET)))
        .await;
    assert_eq!(code(&reply), "538 5.7.11");
    assert_eq!(code(&client.command("AUTH LOGIN").await), "538 5.7.11");
    client.command(&b64("printer")).await;
    client.command(&b64(SECRET)).await;
    client.command(&plain("printer", SECRET)).await;

    // 454: locked out, then the credentials.
    let mut client = relay.connect("192.0.2.77:1", auth_listener()).await;
    client.ehlo().await;
    for _ in 0..3 {
        client
            .command(&format!("AUTH PLAIN {}", plain("printer", SECRET)))
            .await;
    }
    assert_eq!(code(&client.command("AUTH LOGIN").await), "454 4.7.0");
    client.command(&b64("printer")).await;
    client.command(&b64(SECRET)).await;

    // A normal AUTH LOGIN and AUTH PLAIN (with a continuation).
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    assert!(client.command("AUTH LOGIN").await.starts_with("334"));
    assert!(client.command(&b64("printer")).await.starts_with("334"));
    assert_eq!(code(&client.command(&b64("s3cret")).await), "235 2.7.0");
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    assert_eq!(client.command("AUTH PLAIN").await, "334");
    let reply = client.command(&plain("printer", "s3cret")).await;
    assert_eq!(code(&reply), "235 2.7.0");
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(code(&reply), "235 2.7.0");
    client.command("QUIT").await;

    let log = captured.text();
    assert!(
        log.contains("< EHLO client.test"),
        "the exchange is logged:\n{log}"
    );
    assert!(
        log.contains("< AUTH ****") && log.contains("< ****"),
        "{log}"
    );
    assert!(log.contains("< NOOP"), "{log}");
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "`{secret}` in the log:\n{log}"
        );
    }
}

/// Sends `byte` every `every` until the server answers; what it answered
/// and when, from the first byte.
async fn trickle(client: &mut Client, byte: &[u8], every: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    for _ in 0..60 {
        if client.stream.write_all(byte).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
        let mut answer = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_millis(1), client.stream.read(&mut answer));
        if let Ok(Ok(n)) = read.await
            && n > 0
        {
            let text = String::from_utf8_lossy(&answer[..n]).into_owned();
            return Some((started.elapsed(), text));
        }
    }
    None
}

#[tokio::test]
async fn a_client_trickling_bytes_is_cut_off_at_the_deadlines() {
    let limits = Limits {
        timeouts: SmtpTimeouts {
            command: Duration::from_secs(1),
            data_block: Duration::from_millis(500),
        },
        ..quick_limits()
    };
    let relay = Relay::new(directory(Some(principal("local", &["*"]))), limits);
    // A command line one byte at a time: the whole line has 1 s.
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    let (after, reply) = trickle(&mut client, b"x", Duration::from_millis(100))
        .await
        .expect("the trickling client is cut off");
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(after < Duration::from_millis(1600), "{after:?}");

    // DATA one byte at a time: 500 ms, plus 1 s per KiB received.
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    client.command("MAIL FROM:<me@example.com>").await;
    client.command("RCPT TO:<you@example.org>").await;
    assert!(client.command("DATA").await.starts_with("354"));
    let (after, reply) = trickle(&mut client, b"x", Duration::from_millis(100))
        .await
        .expect("the trickling client is cut off in DATA");
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(after < Duration::from_millis(1200), "{after:?}");
    assert!(relay.entries().is_empty());
}

async fn connect_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

async fn first_reply(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let limits = Limits {
        max_connections_per_address: 2,
        ..quick_limits()
    };
    let relay = Relay::new(directory(Some(principal("local", &["*"]))), limits);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = relay.server.clone();
    let running = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        server
            .run(
                vec![(Listener::plain("local"), socket)],
                stopped,
                Duration::from_secs(1),
            )
            .await
    });
    let mut first = connect_from("127.0.0.1", addr).await;
    assert!(first_reply(&mut first).await.starts_with("220 "));
    let mut second = connect_from("127.0.0.1", addr).await;
    assert!(first_reply(&mut second).await.starts_with("220 "));
    let mut third = connect_from("127.0.0.1", addr).await;
    let mut refused = Vec::new();
    third.read_to_end(&mut refused).await.unwrap();
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    // Another device is still served.
    let mut other = connect_from("127.0.0.2", addr).await;
    assert!(first_reply(&mut other).await.starts_with("220 "));
    // A connection that ends frees its address's slot.
    first.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    let mut again = connect_from("127.0.0.1", addr).await;
    assert!(first_reply(&mut again).await.starts_with("220 "));
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn loopback_clients_follow_the_listeners_networks() {
    let relay = Relay::local();
    let mut lan = Listener::plain("lan");
    lan.allowed_networks = vec!["10.0.0.0/8".parse().unwrap()];
    let mut client = relay.connect(LOOPBACK, lan.clone()).await;
    client.ehlo().await;
    let reply = client.command("MAIL FROM:<me@example.com>").await;
    assert_eq!(
        code(&reply),
        "530 5.7.0",
        "loopback is not in 10.0.0.0/8: {reply}"
    );
    let mut client = relay.connect("10.1.2.3:1", lan.clone()).await;
    client.ehlo().await;
    let reply = client.command("MAIL FROM:<me@example.com>").await;
    assert_eq!(code(&reply), "250 2.1.0", "{reply}");
    // Named, loopback is allowed like any network.
    lan.allowed_networks.push("127.0.0.0/8".parse().unwrap());
    let mut client = relay.connect(LOOPBACK, lan).await;
    client.ehlo().await;
    let reply = client.command("MAIL FROM:<me@example.com>").await;
    assert_eq!(code(&reply), "250 2.1.0", "{reply}");
}

#[tokio::test]
async fn a_network_wider_than_a_slash_8_needs_allow_any_network() {
    let relay = Relay::local();
    for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0"] {
        let mut listener = Listener::plain("lan");
        listener.allowed_networks = vec![wide.parse().unwrap()];
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = relay
            .server
            .run(
                vec![(listener, socket)],
                std::future::pending(),
                Duration::ZERO,
            )
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(wide) && text.contains("allow_any_network = true"),
            "{text}"
        );
    }
    assert!(!Listener::is_wide(&"10.0.0.0/8".parse().unwrap()));
    assert!(!Listener::is_wide(&"2001:db8::/32".parse().unwrap()));
    // With the setting, it runs.
    let mut listener = Listener::plain("lan");
    listener.allowed_networks = vec!["0.0.0.0/0".parse().unwrap()];
    listener.allow_any_network = true;
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ran = relay
        .server
        .run(vec![(listener, socket)], async {}, Duration::ZERO)
        .await;
    assert!(ran.is_ok(), "{ran:?}");
}
