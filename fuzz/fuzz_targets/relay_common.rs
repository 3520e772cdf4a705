//! What the relay's fuzz targets share (`mod relay_common;` in each): a
//! directory with one user, a server over a fresh outbox with quick
//! timeouts and no AUTH back-off, and one session run to its end.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use apimail_core::SenderIdentity;
use apimail_core::outbox::Outbox;
use apimail_relay::{
    AccountInfo, BackoffSettings, Directory, Limits, Listener, Principal, Server, SmtpTimeouts,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One user (`user`, `pass`) and one account; any client may send
/// without AUTH.
pub struct FuzzDirectory {
    /// The account's message size limit.
    pub max_message_bytes: u64,
    /// Whether a client sending without AUTH has foreign authors
    /// rewritten (else refused).
    pub rewrite_without_auth: bool,
}

impl Directory for FuzzDirectory {
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal> {
        (user == "user" && password == "pass").then(|| principal(false))
    }

    fn for_client(&self, _listener: &str, _ip: IpAddr) -> Option<Principal> {
        Some(principal(self.rewrite_without_auth))
    }

    fn account(&self, _account: &str) -> Option<AccountInfo> {
        Some(AccountInfo {
            identity: SenderIdentity::account("work"),
            address: Some("me@example.com".into()),
            max_message_bytes: self.max_message_bytes,
            provider: Some("gmail".into()),
            max_age_secs: apimail_core::outbox::DEFAULT_MAX_AGE_SECS,
        })
    }
}

fn principal(rewrite_from: bool) -> Principal {
    Principal {
        name: "fuzz".into(),
        account: "work".into(),
        allowed_from: vec!["*@example.com".into()],
        rewrite_from,
        messages_per_minute: None,
    }
}

/// The default limits with 5 s timeouts and AUTH failures never slowed
/// nor locked out.
pub fn quick_limits() -> Limits {
    let defaults = Limits::default();
    Limits {
        timeouts: SmtpTimeouts {
            command: Duration::from_secs(5),
            data_block: Duration::from_secs(5),
        },
        auth_failures: BackoffSettings {
            delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            lock_after: u32::MAX,
            ..defaults.auth_failures
        },
        ..defaults
    }
}

/// The client's address by bit 0 of `mode` (loopback, or a documentation
/// address), and a plain listener: AUTH required by bit 1, plaintext AUTH
/// allowed by bit 2.
pub fn client(mode: u8) -> (SocketAddr, Listener) {
    let peer: SocketAddr = if mode & 1 == 0 {
        "127.0.0.1:2000".parse().unwrap()
    } else {
        "192.0.2.1:2000".parse().unwrap()
    };
    let mut listener = Listener::plain("fuzz");
    listener.require_auth = mode & 2 != 0;
    listener.allow_plaintext_auth = mode & 4 != 0;
    (peer, listener)
}

/// A server over a fresh outbox, kept for every run of a target.
pub struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Server,
    /// The server's outbox.
    pub outbox: Outbox,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A server with `directory` and `limits`.
    pub fn new(directory: FuzzDirectory, limits: Limits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        // Accepted messages are also announced; nobody listens here.
        let (server, _accepted) = Server::new(
            outbox.clone(),
            Arc::new(directory),
            limits,
            "relay.fuzz".into(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Fixture {
            runtime,
            server,
            outbox,
            _dir: dir,
        }
    }

    /// One session from `peer` on `listener` over a pipe of `buffer`
    /// bytes: the client sends `input` and closes; everything the server
    /// answered.
    pub fn session(
        &self,
        peer: SocketAddr,
        listener: Listener,
        input: &[u8],
        buffer: usize,
    ) -> Vec<u8> {
        self.runtime.block_on(async {
            let (mut client, server_side) = tokio::io::duplex(buffer);
            let server = self.server.clone();
            let session = tokio::spawn(async move {
                server.serve_stream(server_side, peer, &listener).await;
            });
            let (mut read, mut write) = tokio::io::split(&mut client);
            let send = async {
                let _ = write.write_all(input).await;
                let _ = write.shutdown().await;
            };
            let mut replies = Vec::new();
            let receive = read.read_to_end(&mut replies);
            let (_, received) = tokio::time::timeout(Duration::from_secs(30), async {
                tokio::join!(send, receive)
            })
            .await
            .expect("the session ends once the client has sent everything");
            received.unwrap();
            session.await.unwrap();
            replies
        })
    }

    /// Checks a session's `replies`: a greeting, reply lines only, and
    /// one outbox entry for each message answered `queued as`; then drops
    /// the entries for the next run.
    pub fn check_and_clear(&self, replies: &[u8]) {
        assert!(replies.starts_with(b"220 "), "no greeting");
        for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
                "not a reply line: {:?}",
                String::from_utf8_lossy(line)
            );
        }
        let queued = replies
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"250 2.0.0 queued as "))
            .count();
        let entries = self.outbox.list().unwrap();
        assert_eq!(queued, entries.len());
        for entry in entries {
            self.outbox.drop_entry(entry.id.as_str()).unwrap();
        }
    }
}
