//! Sessions driven over in-memory pipes (and a few over TCP), with the
//! outbox in a temporary directory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::*;
use apimail_core::outbox::{Entry, Outbox};

const LOOPBACK: &str = "127.0.0.1:40000";
const LAN: &str = "192.0.2.10:40000";

mod security;

struct TestDirectory {
    users: Vec<(&'static str, &'static str, Principal)>,
    /// For `for_client`.
    network: Option<Principal>,
    accounts: HashMap<String, AccountInfo>,
    /// Password checks: how long each takes, how many ran.
    checks: Arc<security::Checks>,
}

impl Directory for TestDirectory {
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal> {
        let _running = self.checks.run();
        self.users
            .iter()
            .find(|(u, p, _)| *u == user && *p == password)
            .map(|(_, _, principal)| principal.clone())
    }

    fn for_client(&self, _listener: &str, _ip: IpAddr) -> Option<Principal> {
        self.network.clone()
    }

    fn account(&self, account: &str) -> Option<AccountInfo> {
        self.accounts.get(account).cloned()
    }

    fn largest_message_bytes(&self) -> Option<u64> {
        self.accounts.values().map(|a| a.max_message_bytes).max()
    }
}

fn principal(name: &str, allowed_from: &[&str]) -> Principal {
    Principal {
        name: name.into(),
        account: "work".into(),
        allowed_from: allowed_from.iter().map(|p| p.to_string()).collect(),
        rewrite_from: false,
        messages_per_minute: None,
    }
}

fn directory(network: Option<Principal>) -> TestDirectory {
    let mut accounts = HashMap::new();
    accounts.insert(
        "work".to_owned(),
        AccountInfo {
            identity: apimail_core::SenderIdentity::account("work"),
            address: Some("me@example.com".into()),
            max_message_bytes: 10_000,
            provider: Some("gmail".into()),
            max_age_secs: 2 * 86_400,
        },
    );
    TestDirectory {
        users: vec![(
            "printer",
            "s3cret",
            principal("printer", &["*@example.com"]),
        )],
        network,
        accounts,
        checks: Arc::default(),
    }
}

fn quick_limits() -> Limits {
    Limits {
        timeouts: SmtpTimeouts {
            command: Duration::from_secs(5),
            data_block: Duration::from_millis(300),
        },
        auth_failures: BackoffSettings {
            free_failures: 1,
            delay: Duration::from_millis(300),
            max_delay: Duration::from_secs(1),
            lock_after: 3,
            lock_for: Duration::from_secs(60),
        },
        ..Limits::default()
    }
}

struct Relay {
    server: Server,
    accepted: UnboundedReceiver<Accepted>,
    outbox: Outbox,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn new(directory: TestDirectory, limits: Limits) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let (server, accepted) = Server::new(
            outbox.clone(),
            Arc::new(directory),
            limits,
            "relay.test".into(),
        );
        Relay {
            server,
            accepted,
            outbox,
            _dir: dir,
        }
    }

    /// A loopback relay for the network principal `local` (any sender).
    fn local() -> Relay {
        Relay::new(directory(Some(principal("local", &["*"]))), quick_limits())
    }

    /// Connects a client from `peer`; the greeting is read.
    async fn connect(&self, peer: &str, listener: Listener) -> Client {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let server = self.server.clone();
        let listener_tls = listener.tls.clone();
        let peer: SocketAddr = peer.parse().unwrap();
        let session = tokio::spawn(async move {
            server.serve_stream(server_side, peer, &listener).await;
        });
        let mut client = Client {
            stream: Box::new(client),
            input: Vec::new(),
            session,
        };
        if matches!(listener_tls, ListenerTls::Implicit(_)) {
            client.start_tls().await;
        }
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }

    fn entries(&self) -> Vec<Entry> {
        self.outbox.list().unwrap()
    }

    fn message(&self, entry: &Entry) -> Vec<u8> {
        self.outbox
            .read_message(entry.id.as_str())
            .unwrap()
            .unwrap()
    }
}

trait ClientStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientStream for T {}

struct Client {
    stream: Box<dyn ClientStream>,
    input: Vec<u8>,
    session: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// One whole reply (all its lines), without the last CRLF; empty when
    /// the server closed the connection.
    async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = reply_end(&self.input) {
                let reply: Vec<u8> = self.input.drain(..end).collect();
                return String::from_utf8(reply).unwrap().trim_end().to_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("the server answers within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return String::from_utf8_lossy(&std::mem::take(&mut self.input)).into_owned();
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// The TLS handshake, trusting the test certificate.
    async fn start_tls(&mut self) {
        assert!(self.input.is_empty());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(test_cert()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let tls = connector.connect(name, plain).await.unwrap();
        self.stream = Box::new(tls);
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Whether the server closed the connection (after any replies).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest));
        matches!(read.await, Ok(Ok(_))) && rest.is_empty()
    }

    async fn ehlo(&mut self) -> String {
        let reply = self.command("EHLO client.test").await;
        assert!(reply.starts_with("250-relay.test"), "{reply}");
        reply
    }
}

/// The end of the first complete reply: the line whose code is followed
/// by a space.
fn reply_end(input: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(len) = input[start..].iter().position(|&b| b == b'\n') {
        let line = &input[start..start + len + 1];
        start += len + 1;
        if line.get(3) != Some(&b'-') {
            return Some(start);
        }
    }
    None
}

/// What follows the header section.
fn body(message: &[u8]) -> &[u8] {
    let at = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &message[at + 4..]
}

/// `250 2.0.0`: the code and the enhanced status code.
fn code(reply: &str) -> &str {
    let end = reply
        .match_indices(' ')
        .nth(1)
        .map_or(reply.len(), |(at, _)| at);
    &reply[..end]
}

const MESSAGE: &[u8] = b"From: Scanner <scanner@example.com>\r\n\
To: boss@example.org\r\n\
Subject: scan\r\n\
\r\n\
Gr\xc3\xbc\xc3\x9fe, 8-bit \xff\xfe and a tab\t.\r\n";

async fn send_message(client: &mut Client, from: &str, to: &[&str], message: &[u8]) -> String {
    let reply = client.command(&format!("MAIL FROM:<{from}>")).await;
    assert_eq!(code(&reply), "250 2.1.0", "{reply}");
    for rcpt in to {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await;
        assert_eq!(code(&reply), "250 2.1.5", "{reply}");
    }
    let reply = client.command("DATA").await;
    assert!(reply.starts_with("354"), "{reply}");
    client.send(message).await;
    client.send(b".\r\n").await;
    client.reply().await
}

#[tokio::test]
async fn ehlo_lists_the_extensions() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    let ehlo = client.ehlo().await;
    for capability in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "SIZE 10000",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(
            ehlo.contains(&format!("250-{capability}\r\n"))
                || ehlo.ends_with(&format!("250 {capability}")),
            "{capability} in {ehlo}"
        );
    }
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("CHUNKING"), "{ehlo}");

    // From the network, without TLS: no AUTH; SIZE is the largest any
    // account takes until the client is known.
    let mut client = relay.connect(LAN, Listener::plain("lan")).await;
    let ehlo = client.ehlo().await;
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert!(ehlo.contains("SIZE 10000"), "{ehlo}");
    assert_eq!(code(&client.command("VRFY root").await), "252 2.1.5");
    assert!(client.command("HELP").await.starts_with("214"));
    assert_eq!(code(&client.command("NOOP").await), "250 2.0.0");
    assert_eq!(code(&client.command("QUIT").await), "221 2.0.0");
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_transaction_lands_in_the_outbox_with_its_envelope_and_exact_bytes() {
    let mut relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org", "archive@example.net"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    // 250 means on disk: the entry is there the moment the client sees it.
    let entries = relay.entries();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert!(reply.contains(entry.id.as_str()), "{reply}");
    assert_eq!(entry.from, "scanner@example.com");
    assert_eq!(
        entry.recipients,
        ["boss@example.org", "archive@example.net"]
    );
    assert_eq!(entry.account.as_deref(), Some("work"));
    // The journal's `provider` comes from the entry.
    assert_eq!(entry.provider.as_deref(), Some("gmail"));
    // The queue age is the account's, not the outbox default.
    assert_eq!(entry.max_age_secs, 2 * 86_400);
    assert_eq!(
        entry.identity,
        Some(apimail_core::SenderIdentity::account("work"))
    );
    let accepted = relay.accepted.try_recv().unwrap();
    assert_eq!(accepted.id, entry.id);
    // For the journal's first record: no AUTH, so no SMTP user.
    assert_eq!(accepted.details.subject.as_deref(), Some("scan"));
    assert_eq!(accepted.details.client.as_deref(), Some("127.0.0.1"));
    assert_eq!(accepted.details.smtp_user, None);

    let stored = relay.message(entry);
    let text = String::from_utf8_lossy(&stored);
    // The RCPT-only recipient is a Bcc; nobody else was added.
    assert!(text.contains("Bcc: <archive@example.net>\r\n"), "{text}");
    assert!(text.contains("To: boss@example.org\r\n"), "{text}");
    assert!(text.contains("Message-ID: <"), "{text}");
    assert!(text.contains("Date: "), "{text}");
    assert_eq!(body(&stored), body(MESSAGE));
    assert_eq!(code(&client.command("QUIT").await), "221 2.0.0");
}

#[tokio::test]
async fn dots_are_unstuffed_and_lone_dots_in_lines_kept() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let message = b"From: me@example.com\r\nTo: you@example.org\r\n\r\n..leading\r\n...\r\nmid . dot\r\n.\r\n";
    // The last ".\r\n" of `message` ends the data; send_message's own
    // final dot then is a bad command.
    let reply = client.command("MAIL FROM:<me@example.com>").await;
    assert_eq!(code(&reply), "250 2.1.0");
    client.command("RCPT TO:<you@example.org>").await;
    assert!(client.command("DATA").await.starts_with("354"));
    client.send(message).await;
    let reply = client.reply().await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let entries = relay.entries();
    let stored = relay.message(&entries[0]);
    assert_eq!(body(&stored), b".leading\r\n..\r\nmid . dot\r\n");
}

#[tokio::test]
async fn a_bare_lf_final_dot_ends_data_and_bare_lfs_are_kept() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    for (end, body) in [
        (&b"\n.\n"[..], &b"line one\n..two\r\nthree\n"[..]),
        (b"\n.\r\n", b"line one\nthree\n"),
    ] {
        client.command("MAIL FROM:<me@example.com>").await;
        client.command("RCPT TO:<you@example.org>").await;
        assert!(client.command("DATA").await.starts_with("354"));
        let mut message = b"From: me@example.com\nTo: you@example.org\n\n".to_vec();
        message.extend_from_slice(&body[..body.len() - 1]);
        message.extend_from_slice(end);
        client.send(&message).await;
        let reply = client.reply().await;
        assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    }
    let mut bodies: Vec<Vec<u8>> = relay
        .entries()
        .iter()
        .map(|e| {
            let stored = relay.message(e);
            let at = stored.windows(2).position(|w| w == b"\n\n").unwrap();
            stored[at + 2..].to_vec()
        })
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            b"line one\n.two\r\nthree\n".to_vec(),
            b"line one\nthree\n".to_vec()
        ]
    );
    assert_eq!(code(&client.command("QUIT").await), "221 2.0.0");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client
        .send(
            b"EHLO c\r\nMAIL FROM:<me@example.com>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<bad address>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<j\xc3\xb6rg@b\xc3\xbccher.example>\r\nDATA\r\n",
        )
        .await;
    let ehlo = client.reply().await;
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    let replies = [
        client.reply().await,
        client.reply().await,
        client.reply().await,
        client.reply().await,
        client.reply().await,
        client.reply().await,
    ];
    let codes: Vec<&str> = replies.iter().map(|r| code(r)).collect();
    assert_eq!(
        codes,
        [
            "250 2.1.0",
            "250 2.1.5",
            "501 5.1.3",
            "250 2.1.5",
            "553 5.6.7",
            "354 end"
        ],
        "{replies:?}"
    );
    client
        .send(b"From: me@example.com\r\nTo: a@example.org\r\n\r\nhi\r\n.\r\nRSET\r\nQUIT\r\n")
        .await;
    assert_eq!(code(&client.reply().await), "250 2.0.0");
    assert_eq!(code(&client.reply().await), "250 2.0.0");
    assert_eq!(code(&client.reply().await), "221 2.0.0");
    let entries = relay.entries();
    assert_eq!(entries[0].recipients, ["a@example.org", "b@example.org"]);
}

fn plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn an_authenticated_client_is_named_for_the_journal() {
    let mut relay = Relay::new(directory(None), quick_limits());
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    listener.allow_plaintext_auth = true;
    let mut client = relay.connect(LAN, listener).await;
    client.ehlo().await;
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(code(&reply), "235 2.7.0", "{reply}");
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let accepted = relay.accepted.try_recv().unwrap();
    assert_eq!(accepted.details.smtp_user.as_deref(), Some("printer"));
    assert_eq!(accepted.details.client.as_deref(), Some("192.0.2.10"));
    assert_eq!(accepted.details.subject.as_deref(), Some("scan"));
}

#[tokio::test]
async fn auth_plain_and_login_with_the_back_off() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    listener.allow_plaintext_auth = true;
    let mut client = relay.connect(LAN, listener.clone()).await;
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com>").await),
        "530 5.7.0"
    );

    // First failure: at once. Then each waits longer. Then locked.
    let started = Instant::now();
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "wrong")))
        .await;
    assert_eq!(code(&reply), "535 5.7.8", "{reply}");
    assert!(started.elapsed() < Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(client.command("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert!(
        client
            .command(&b64("printer"))
            .await
            .starts_with("334 UGFzc3dvcmQ6")
    );
    assert_eq!(code(&client.command(&b64("nope")).await), "535 5.7.8");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(
        code(
            &client
                .command(&format!("AUTH PLAIN {}", plain("printer", "x")))
                .await
        ),
        "535 5.7.8"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(
        code(&reply),
        "454 4.7.0",
        "locked out even with the right password: {reply}"
    );

    // Another address is not locked; LOGIN with the right password works,
    // and the user's allowed_from applies.
    let mut client = relay.connect("192.0.2.11:1", listener).await;
    client.ehlo().await;
    assert!(client.command("AUTH LOGIN").await.starts_with("334"));
    assert!(client.command(&b64("printer")).await.starts_with("334"));
    assert_eq!(code(&client.command(&b64("s3cret")).await), "235 2.7.0");
    assert_eq!(
        code(&client.command("MAIL FROM:<x@elsewhere.org>").await),
        "553 5.7.1"
    );
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    assert_eq!(relay.entries().len(), 1);
}

#[tokio::test]
async fn auth_plain_with_a_continuation_and_cancel() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    assert_eq!(client.command("AUTH PLAIN").await, "334");
    assert_eq!(code(&client.command("*").await), "501 5.0.0");
    assert_eq!(client.command("AUTH PLAIN").await, "334");
    assert_eq!(
        code(&client.command(&plain("printer", "s3cret")).await),
        "235 2.7.0"
    );
    assert_eq!(code(&client.command("AUTH PLAIN").await), "503 5.5.1");
}

#[tokio::test]
async fn auth_over_plain_text_from_the_network_is_refused() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    let mut client = relay.connect(LAN, listener).await;
    client.ehlo().await;
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(code(&reply), "538 5.7.11", "{reply}");
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com>").await),
        "530 5.7.0"
    );
}

#[tokio::test]
async fn an_open_relay_attempt_is_refused() {
    let relay = Relay::local();
    // A network client on a listener with no networks and no AUTH to offer.
    let mut client = relay.connect(LAN, Listener::plain("lan")).await;
    client.ehlo().await;
    let reply = client.command("MAIL FROM:<spammer@example.com>").await;
    assert_eq!(code(&reply), "550 5.7.1", "{reply}");
    assert_eq!(
        code(&client.command("RCPT TO:<victim@example.org>").await),
        "503 5.5.1"
    );
    assert_eq!(code(&client.command("DATA").await), "503 5.5.1");
    assert!(relay.entries().is_empty());

    // The same address inside allowed_networks sends as the network's
    // principal.
    let mut listener = Listener::plain("lan");
    listener.allowed_networks = vec!["192.0.2.0/24".parse().unwrap()];
    let mut client = relay.connect(LAN, listener.clone()).await;
    client.ehlo().await;
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    // Outside them, refused.
    let mut client = relay.connect("198.51.100.1:25", listener).await;
    client.ehlo().await;
    assert_eq!(
        code(&client.command("MAIL FROM:<a@example.com>").await),
        "550 5.7.1"
    );
}

#[tokio::test]
async fn a_sender_not_allowed_gets_553_at_mail_and_at_the_from_header() {
    let relay = Relay::new(
        directory(Some(principal("lan", &["*@example.com"]))),
        quick_limits(),
    );
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let reply = client.command("MAIL FROM:<x@evil.example>").await;
    assert_eq!(code(&reply), "553 5.7.1", "{reply}");
    // An allowed envelope with a From header outside the patterns.
    let message = b"From: ceo@evil.example\r\nTo: boss@example.org\r\n\r\nhi\r\n";
    let reply = send_message(
        &mut client,
        "me@example.com",
        &["boss@example.org"],
        message,
    )
    .await;
    assert_eq!(code(&reply), "553 5.7.1", "{reply}");
    assert!(relay.entries().is_empty());
}

#[tokio::test]
async fn rewrite_from_keeps_the_device_name_with_the_accounts_address() {
    let mut lan = principal("scanners", &[]);
    lan.rewrite_from = true;
    let relay = Relay::new(directory(Some(lan)), quick_limits());
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let message =
        b"From: Lobby Scanner <scanner@printer.local>\r\nTo: boss@example.org\r\n\r\nscan\r\n";
    let reply = send_message(
        &mut client,
        "scanner@printer.local",
        &["boss@example.org"],
        message,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let entries = relay.entries();
    assert_eq!(entries[0].from, "me@example.com");
    let text = String::from_utf8(relay.message(&entries[0])).unwrap();
    assert!(
        text.contains("From: \"Lobby Scanner\" <me@example.com>\r\n")
            || text.contains("From: Lobby Scanner <me@example.com>\r\n"),
        "{text}"
    );
    assert!(!text.contains("printer.local>"), "{text}");

    // Without a display name, the device's address becomes the name.
    let message = b"From: scanner@printer.local\r\nTo: boss@example.org\r\n\r\nscan\r\n";
    let reply = send_message(&mut client, "", &["boss@example.org"], message).await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let second = relay
        .entries()
        .into_iter()
        .find(|e| e.id != entries[0].id)
        .unwrap();
    let text = String::from_utf8(relay.message(&second)).unwrap();
    assert!(
        text.contains("From: \"scanner@printer.local\" <me@example.com>\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn over_the_limit_gets_552_at_mail_and_in_data_and_nothing_is_queued() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let reply = client
        .command("MAIL FROM:<me@example.com> SIZE=10001")
        .await;
    assert_eq!(code(&reply), "552 5.3.4", "{reply}");
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com> SIZE=9000").await),
        "250 2.1.0"
    );
    client.command("RCPT TO:<you@example.org>").await;
    assert!(client.command("DATA").await.starts_with("354"));
    client
        .send(b"From: me@example.com\r\nTo: you@example.org\r\n\r\n")
        .await;
    for _ in 0..200 {
        client.send(&[b'x'; 98]).await;
        client.send(b"\r\n").await;
    }
    client.send(b".\r\n").await;
    let reply = client.reply().await;
    assert_eq!(code(&reply), "552 5.3.4", "{reply}");
    assert!(relay.entries().is_empty());
    // The session goes on.
    let reply = send_message(&mut client, "me@example.com", &["you@example.org"], MESSAGE).await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
}

#[tokio::test]
async fn size_is_the_largest_account_limit_before_auth_and_the_accounts_after() {
    let mut directory = directory(None);
    directory.accounts.insert(
        "big".to_owned(),
        AccountInfo {
            identity: apimail_core::SenderIdentity::account("big"),
            address: Some("big@example.com".into()),
            max_message_bytes: 50_000,
            provider: Some("graph".into()),
            max_age_secs: 2 * 86_400,
        },
    );
    let relay = Relay::new(directory, quick_limits());
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    listener.allow_plaintext_auth = true;
    let mut client = relay.connect(LAN, listener).await;
    // Not the relay's own ceiling: no account takes more than 50,000.
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("SIZE 50000"), "{ehlo}");
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(code(&reply), "235 2.7.0", "{reply}");
    // `printer` sends through `work`: EHLO again says so, MAIL enforces it.
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("SIZE 10000"), "{ehlo}");
    let reply = client
        .command("MAIL FROM:<scanner@example.com> SIZE=20000")
        .await;
    assert_eq!(code(&reply), "552 5.3.4", "{reply}");
}

#[tokio::test]
async fn a_client_stalling_mid_data_is_timed_out_and_nothing_is_queued() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    client.command("MAIL FROM:<me@example.com>").await;
    client.command("RCPT TO:<you@example.org>").await;
    assert!(client.command("DATA").await.starts_with("354"));
    client
        .send(b"From: me@example.com\r\nTo: you@example.org\r\n\r\nhalf a mess")
        .await;
    let started = Instant::now();
    let reply = client.reply().await;
    assert_eq!(code(&reply), "421 4.4.2", "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(client.closed().await);
    assert!(relay.entries().is_empty());
}

#[tokio::test]
async fn bad_input_is_answered_and_too_much_of_it_ends_the_session() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com>").await),
        "503 5.5.1"
    );
    let long = "NOOP ".to_owned() + &"x".repeat(5000);
    assert_eq!(code(&client.command(&long).await), "500 5.5.2");
    assert_eq!(code(&client.command("NOOP").await), "250 2.0.0");
    for _ in 0..9 {
        assert_eq!(code(&client.command("FROB").await), "500 5.5.1");
    }
    assert_eq!(code(&client.command("FROB").await), "421 4.7.0");
    assert!(client.closed().await);
    client.session.await.unwrap();
}

#[tokio::test]
async fn the_rate_limit_answers_451_at_mail() {
    let mut lan = principal("lan", &["*"]);
    lan.messages_per_minute = Some(1);
    let relay = Relay::new(directory(Some(lan)), quick_limits());
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    let reply = send_message(&mut client, "me@example.com", &["you@example.org"], MESSAGE).await;
    assert_eq!(code(&reply), "250 2.0.0");
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com>").await),
        "451 4.7.0"
    );
}

#[tokio::test]
async fn the_server_refuses_an_open_listener_and_connections_over_the_limit() {
    let relay = Relay::new(
        directory(Some(principal("local", &["*"]))),
        Limits {
            max_connections: 1,
            ..quick_limits()
        },
    );
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = relay
        .server
        .run(
            vec![(Listener::plain("open"), open)],
            std::future::pending(),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("open relay"), "{error}");

    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = relay.server.clone();
    let running = tokio::spawn(async move {
        server
            .run(
                vec![(Listener::plain("local"), socket)],
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(5),
            )
            .await
    });
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 64];
    let n = first.read(&mut greeting).await.unwrap();
    assert!(greeting[..n].starts_with(b"220 "));
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut refused = Vec::new();
    second.read_to_end(&mut refused).await.unwrap();
    assert!(
        refused.starts_with(b"421 4.3.2"),
        "{}",
        String::from_utf8_lossy(&refused)
    );

    // Shutdown closes the idle session with 421, and run returns.
    stop.send(()).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.starts_with(b"421 4.3.2"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    running.await.unwrap().unwrap();
}

// A self-signed certificate for `relay.test` and its key, for these tests
// only (valid until 2126).
fn test_cert() -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(include_bytes!("testdata/cert.pem")).unwrap()
}

pub(super) fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(include_bytes!("testdata/key.pem"))
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![test_cert()], key)
    .unwrap();
    Arc::new(config)
}

#[tokio::test]
async fn starttls_then_auth_from_the_network() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut listener = Listener::plain("lan");
    listener.require_auth = true;
    listener.tls = ListenerTls::Plain {
        starttls: Some(tls_config()),
    };
    let mut client = relay.connect(LAN, listener).await;
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    // Commands pipelined after STARTTLS are not carried into TLS.
    client.send(b"STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(code(&client.reply().await), "220 2.0.0");
    client.input.clear();
    client.start_tls().await;
    // The state is reset: EHLO again; now AUTH, and no STARTTLS.
    assert_eq!(
        code(&client.command("MAIL FROM:<me@example.com>").await),
        "503 5.5.1"
    );
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain("printer", "s3cret")))
        .await;
    assert_eq!(code(&reply), "235 2.7.0", "{reply}");
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    assert_eq!(relay.entries().len(), 1);
}

#[tokio::test]
async fn implicit_tls_greets_inside_tls() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut listener = Listener::plain("tls");
    listener.require_auth = true;
    listener.tls = ListenerTls::Implicit(tls_config());
    let mut client = relay.connect(LAN, listener).await;
    let ehlo = client.ehlo().await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(client.command("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
}

#[tokio::test]
async fn bdat_chunks_arrive_byte_exact_and_refused_chunks_are_skipped() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    // Without MAIL: the chunk is read and dropped, then refused.
    client.send(b"BDAT 5\r\nNOOP\r").await;
    assert_eq!(code(&client.reply().await), "503 5.5.1");
    client.command("MAIL FROM:<me@example.com>").await;
    client.command("RCPT TO:<you@example.org>").await;
    // No dot-stuffing with BDAT: ".\r\n" is content.
    let (head, tail) = MESSAGE.split_at(40);
    client
        .send(format!("BDAT {}\r\n", head.len()).as_bytes())
        .await;
    client.send(head).await;
    let reply = client.reply().await;
    assert_eq!(reply, format!("250 2.0.0 {} octets received", head.len()));
    let mut last = tail.to_vec();
    last.extend_from_slice(b".\r\n");
    client
        .send(format!("BDAT {} LAST\r\n", last.len()).as_bytes())
        .await;
    client.send(&last).await;
    let reply = client.reply().await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    let entries = relay.entries();
    let stored = relay.message(&entries[0]);
    assert_eq!(body(&stored), &last[last.len() - body(MESSAGE).len() - 3..]);
    // Over the limit across chunks: 552 and nothing more queued.
    client.command("MAIL FROM:<me@example.com>").await;
    client.command("RCPT TO:<you@example.org>").await;
    client.send(b"BDAT 20000\r\n").await;
    client.send(&[b'x'; 20000]).await;
    assert_eq!(code(&client.reply().await), "552 5.3.4");
    client.send(b"BDAT 3 LAST\r\nabc").await;
    assert_eq!(code(&client.reply().await), "503 5.5.1");
    assert_eq!(relay.entries().len(), 1);
}

#[tokio::test]
async fn reload_swaps_the_directory_for_new_sessions() {
    let relay = Relay::new(directory(None), quick_limits());
    let mut before = relay.connect(LOOPBACK, Listener::plain("local")).await;
    let mut reloaded = directory(None);
    reloaded.users = vec![("scanner", "n3w", principal("scanner", &["*"]))];
    relay.server.reload(Arc::new(reloaded));
    let mut after = relay.connect(LOOPBACK, Listener::plain("local")).await;
    before.ehlo().await;
    after.ehlo().await;
    let old = plain("printer", "s3cret");
    let new = plain("scanner", "n3w");
    // A session keeps the directory it started with.
    assert_eq!(
        code(&before.command(&format!("AUTH PLAIN {old}")).await),
        "235 2.7.0"
    );
    assert_eq!(
        code(&after.command(&format!("AUTH PLAIN {old}")).await),
        "535 5.7.8"
    );
    assert_eq!(
        code(&after.command(&format!("AUTH PLAIN {new}")).await),
        "235 2.7.0"
    );
}

#[tokio::test]
async fn an_outbox_that_cannot_take_the_message_gets_451_not_250() {
    let relay = Relay::local();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    std::fs::remove_dir_all(relay.outbox.dir()).unwrap();
    let reply = send_message(&mut client, "me@example.com", &["you@example.org"], MESSAGE).await;
    assert_eq!(code(&reply), "451 4.3.0", "{reply}");
    assert!(relay.accepted.is_empty());
}

/// A relay accepting into another store (here the local spool of a second
/// directory, through the same seam a database takes), the first outbox
/// only holding large messages during DATA.
fn over_store() -> (Relay, Outbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = Outbox::open(store_dir.path().join("store")).unwrap();
    let mut directory = directory(Some(principal("local", &["*"])));
    if let Some(work) = directory.accounts.get_mut("work") {
        work.max_message_bytes = 4 * 1024 * 1024;
    }
    let (server, accepted) = Server::over_store(
        outbox.clone(),
        apimail_core::store::LocalStore::new(store.clone(), None),
        Arc::new(directory),
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            timeouts: SmtpTimeouts {
                command: Duration::from_secs(30),
                data_block: Duration::from_secs(30),
            },
            ..quick_limits()
        },
        "relay.test".into(),
    );
    let relay = Relay {
        server,
        accepted,
        outbox,
        _dir: dir,
    };
    (relay, store, store_dir)
}

#[tokio::test]
async fn over_a_store_a_large_message_streams_in_and_a_failing_store_gets_451() {
    let (relay, store, store_dir) = over_store();
    let mut client = relay.connect(LOOPBACK, Listener::plain("local")).await;
    client.ehlo().await;
    // About 1.5 MB: past the memory buffer, so it waits in a file of the
    // first outbox, then streams into the store with its edited headers.
    let mut large =
        b"From: scanner@example.com\r\nTo: boss@example.org\r\nSubject: big\r\n\r\n".to_vec();
    for i in 0..25_000 {
        large.extend_from_slice(
            format!("line {i:08} of a large message, padded ..........\r\n").as_bytes(),
        );
    }
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        &large,
    )
    .await;
    assert_eq!(code(&reply), "250 2.0.0", "{reply}");
    assert!(relay.entries().is_empty(), "nothing in the first outbox");
    let entries = store.list().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(reply.contains(entries[0].id.as_str()), "{reply}");
    let stored = store.read_message(entries[0].id.as_str()).unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&stored).contains("Date: "),
        "headers edited"
    );
    assert_eq!(body(&stored), body(&large), "the body arrives byte-exact");
    let tmp = relay._dir.path().join("outbox/tmp");
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "no file is left"
    );

    // The store goes away: 451, never 250, and the session goes on.
    std::fs::remove_dir_all(store_dir.path().join("store")).unwrap();
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        MESSAGE,
    )
    .await;
    assert_eq!(code(&reply), "451 4.3.0", "{reply}");
    let reply = send_message(
        &mut client,
        "scanner@example.com",
        &["boss@example.org"],
        &large,
    )
    .await;
    assert_eq!(code(&reply), "451 4.3.0", "{reply}");
    assert_eq!(code(&client.command("NOOP").await), "250 2.0.0");
    assert_eq!(code(&client.command("QUIT").await), "221 2.0.0");
}
