//! The AUTH and DATA state machine, driven by a script of client steps:
//! SASL exchanges (PLAIN, LOGIN, refused mechanisms, cancels, lines after
//! a refusal), transactions whose DATA or BDAT may grow past the in-memory
//! buffer and go to the outbox's tmp/. A session never panics or hangs,
//! answers with reply lines only, queues exactly what it answers 250 for,
//! and leaves no temporary file behind.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apimail_core::SenderIdentity;
use apimail_core::outbox::Outbox;
use apimail_relay::{
    AccountInfo, BackoffSettings, Directory, Limits, Listener, Principal, Server, SmtpTimeouts,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One user (`user`, `pass`); loopback may send without AUTH.
struct FuzzDirectory;

impl Directory for FuzzDirectory {
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal> {
        (user == "user" && password == "pass").then(principal)
    }

    fn for_client(&self, _listener: &str, _ip: IpAddr) -> Option<Principal> {
        Some(principal())
    }

    fn account(&self, _account: &str) -> Option<AccountInfo> {
        Some(AccountInfo {
            identity: SenderIdentity::account("work"),
            address: Some("me@example.com".into()),
            max_message_bytes: 1024 * 1024,
            provider: Some("gmail".into()),
            max_age_secs: apimail_core::outbox::DEFAULT_MAX_AGE_SECS,
        })
    }
}

fn principal() -> Principal {
    Principal {
        name: "fuzz".into(),
        account: "work".into(),
        allowed_from: vec!["*@example.com".into()],
        rewrite_from: false,
        messages_per_minute: None,
    }
}

/// One thing the client does.
#[derive(Debug)]
enum Step {
    /// `AUTH PLAIN` with the initial response, or in a continuation.
    Plain {
        user: bool,
        password: bool,
        continuation: bool,
    },
    /// `AUTH LOGIN`, then the user and the password lines.
    Login {
        user: bool,
        password: bool,
    },
    /// `AUTH <mechanism>` that is refused, then what looks like a secret.
    Refused {
        mechanism: u8,
        then: Vec<u8>,
    },
    /// `*`: cancels an exchange (or is a bad command).
    Cancel,
    /// Any line.
    Line(Vec<u8>),
    /// MAIL, RCPT, DATA, the message, then maybe the final dot.
    Data {
        header: Vec<u8>,
        body: Vec<u8>,
        /// The body repeated this many times (up to 512: past 256 KiB).
        repeat: u16,
        end: bool,
    },
    /// MAIL, RCPT, then BDAT chunks of the body.
    Bdat {
        body: Vec<u8>,
        chunks: u8,
    },
    Rset,
}

/// The fuzzer's bytes, read as steps: a kind byte, flag bytes, and
/// length-prefixed byte strings.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn flag(&mut self) -> bool {
        self.byte().is_some_and(|b| b & 1 == 1)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }

    fn step(&mut self) -> Option<Step> {
        Some(match self.byte()? % 8 {
            0 => Step::Plain {
                user: self.flag(),
                password: self.flag(),
                continuation: self.flag(),
            },
            1 => Step::Login {
                user: self.flag(),
                password: self.flag(),
            },
            2 => Step::Refused {
                mechanism: self.byte().unwrap_or(0),
                then: self.bytes(),
            },
            3 => Step::Cancel,
            4 => Step::Line(self.bytes()),
            5 => Step::Data {
                header: self.bytes(),
                body: self.bytes(),
                repeat: u16::from_le_bytes([self.byte().unwrap_or(0), self.byte().unwrap_or(0)]),
                end: self.flag(),
            },
            6 => Step::Bdat {
                body: self.bytes(),
                chunks: self.byte().unwrap_or(0),
            },
            _ => Step::Rset,
        })
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
            max_line_bytes: 1024,
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

fn b64(bytes: &[u8]) -> Vec<u8> {
    BASE64.encode(bytes).into_bytes()
}

fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// The client's bytes for `steps`.
fn script(steps: &[Step]) -> Vec<u8> {
    let mut out = b"EHLO fuzz.client\r\n".to_vec();
    for step in steps {
        match step {
            Step::Plain {
                user,
                password,
                continuation,
            } => {
                let user: &[u8] = if *user { b"user" } else { b"nobody" };
                let password: &[u8] = if *password { b"pass" } else { b"wrong" };
                let response = b64(&[b"\0", user, b"\0", password].concat());
                if *continuation {
                    line(&mut out, &[b"AUTH PLAIN"]);
                    line(&mut out, &[&response]);
                } else {
                    line(&mut out, &[b"AUTH PLAIN ", &response]);
                }
            }
            Step::Login { user, password } => {
                line(&mut out, &[b"AUTH LOGIN"]);
                line(&mut out, &[&b64(if *user { b"user" } else { b"x" })]);
                line(&mut out, &[&b64(if *password { b"pass" } else { b"y" })]);
            }
            Step::Refused { mechanism, then } => {
                let name: &[u8] = match mechanism % 4 {
                    0 => b"CRAM-MD5",
                    1 => b"XOAUTH2",
                    2 => b"GSSAPI",
                    _ => b"",
                };
                line(&mut out, &[b"AUTH ", name]);
                line(&mut out, &[&b64(then)]);
            }
            Step::Cancel => line(&mut out, &[b"*"]),
            Step::Line(bytes) => {
                let bytes: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\n').collect();
                line(&mut out, &[&bytes]);
            }
            Step::Data {
                header,
                body,
                repeat,
                end,
            } => {
                line(&mut out, &[b"MAIL FROM:<a@example.com>"]);
                line(&mut out, &[b"RCPT TO:<b@example.org>"]);
                line(&mut out, &[b"DATA"]);
                out.extend_from_slice(b"From: a@example.com\r\n");
                out.extend_from_slice(header);
                out.extend_from_slice(b"\r\n\r\n");
                let times = usize::from(*repeat % 513).max(1);
                for _ in 0..times {
                    out.extend_from_slice(body);
                }
                if *end {
                    out.extend_from_slice(b"\r\n.\r\n");
                }
            }
            Step::Bdat { body, chunks } => {
                line(&mut out, &[b"MAIL FROM:<a@example.com>"]);
                line(&mut out, &[b"RCPT TO:<b@example.org>"]);
                let message = [b"From: a@example.com\r\n\r\n".as_slice(), body].concat();
                let pieces = usize::from(*chunks % 4) + 1;
                let size = message.len().div_ceil(pieces).max(1);
                let parts: Vec<&[u8]> = message.chunks(size).collect();
                for (n, part) in parts.iter().enumerate() {
                    let last = if n + 1 == parts.len() { " LAST" } else { "" };
                    out.extend_from_slice(format!("BDAT {}{last}\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                }
            }
            Step::Rset => line(&mut out, &[b"RSET"]),
        }
    }
    out.extend_from_slice(b"QUIT\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else {
        return;
    };
    let steps: Vec<Step> = std::iter::from_fn(|| input.step()).take(64).collect();
    let fixture = fixture();
    let peer: SocketAddr = if mode & 1 == 0 {
        "127.0.0.1:2000".parse().unwrap()
    } else {
        "192.0.2.1:2000".parse().unwrap()
    };
    let mut listener = Listener::plain("fuzz");
    listener.require_auth = mode & 2 != 0;
    listener.allow_plaintext_auth = mode & 4 != 0;
    let input = script(&steps);

    let replies = fixture.runtime.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let server = fixture.server.clone();
        let session = tokio::spawn(async move {
            server.serve_stream(server_side, peer, &listener).await;
        });
        let (mut read, mut write) = tokio::io::split(&mut client);
        let send = async {
            let _ = write.write_all(&input).await;
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
    for reply in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            reply.len() >= 4 && reply[..3].iter().all(u8::is_ascii_digit),
            "not a reply line: {:?}",
            String::from_utf8_lossy(reply)
        );
    }
    let queued = replies
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"250 2.0.0 queued as "))
        .count();
    let entries = fixture.outbox.list().unwrap();
    assert_eq!(queued, entries.len());
    for entry in entries {
        fixture.outbox.drop_entry(entry.id.as_str()).unwrap();
    }
    let tmp = std::fs::read_dir(fixture.outbox.dir().join("tmp")).unwrap();
    let left: Vec<_> = tmp.filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
});
