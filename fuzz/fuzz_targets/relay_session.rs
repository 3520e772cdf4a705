//! Any bytes from an SMTP client: a relay session never panics or hangs,
//! always answers, and whatever it accepts lands in the outbox.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apimail_core::SenderIdentity;
use apimail_core::outbox::Outbox;
use apimail_relay::{
    AccountInfo, BackoffSettings, Directory, Limits, Listener, Principal, Server, SmtpTimeouts,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One user (`user`, `pass`), any sender from loopback, a 4 KB limit.
struct FuzzDirectory;

impl Directory for FuzzDirectory {
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal> {
        (user == "user" && password == "pass").then(|| principal(false))
    }

    fn for_client(&self, _listener: &str, _ip: IpAddr) -> Option<Principal> {
        Some(principal(true))
    }

    fn account(&self, _account: &str) -> Option<AccountInfo> {
        Some(AccountInfo {
            identity: SenderIdentity::account("work"),
            address: Some("me@example.com".into()),
            max_message_bytes: 4096,
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

struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Server,
    outbox: Outbox,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let limits = Limits {
            max_line_bytes: 512,
            max_recipients: 8,
            timeouts: SmtpTimeouts {
                command: Duration::from_secs(5),
                data_block: Duration::from_secs(5),
            },
            auth_failures: BackoffSettings {
                delay: Duration::ZERO,
                max_delay: Duration::ZERO,
                lock_after: u32::MAX,
                ..Limits::default().auth_failures
            },
            ..Limits::default()
        };
        // Accepted messages are also announced; nobody listens here.
        let (server, _accepted) = Server::new(
            outbox.clone(),
            Arc::new(FuzzDirectory),
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
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    // The first byte picks the client's address and the listener's rules.
    let peer: SocketAddr = if mode & 1 == 0 {
        "127.0.0.1:2000".parse().unwrap()
    } else {
        "192.0.2.1:2000".parse().unwrap()
    };
    let mut listener = Listener::plain("fuzz");
    listener.require_auth = mode & 2 != 0;
    listener.allow_plaintext_auth = mode & 4 != 0;
    if mode & 8 != 0 {
        listener.allowed_networks = vec!["192.0.2.0/24".parse().unwrap()];
    }

    let replies = fixture.runtime.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(8 * 1024);
        let server = fixture.server.clone();
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
    });
    assert!(replies.starts_with(b"220 "), "no greeting");
    assert!(replies.ends_with(b"\r\n"), "a reply was cut short");
    for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
            "not a reply line: {:?}",
            String::from_utf8_lossy(line)
        );
    }
    // Every 250 for a message is an entry; then clean up for the next run.
    let queued = replies
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"250 2.0.0 queued as "))
        .count();
    let entries = fixture.outbox.list().unwrap();
    assert_eq!(queued, entries.len());
    for entry in entries {
        fixture.outbox.drop_entry(entry.id.as_str()).unwrap();
    }
});
