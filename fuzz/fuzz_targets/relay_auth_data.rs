//! The AUTH and DATA state machine, driven by a script of client steps:
//! SASL exchanges (PLAIN, LOGIN, refused mechanisms, cancels, lines after
//! a refusal), transactions whose DATA or BDAT may grow past the in-memory
//! buffer and go to the outbox's tmp/. A session never panics or hangs,
//! answers with reply lines only, queues exactly what it answers 250 for,
//! and leaves no temporary file behind.
#![no_main]

mod relay_common;

use std::sync::OnceLock;

use apimail_relay::Limits;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use relay_common::{Fixture, FuzzDirectory, client, quick_limits};

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

/// One user (`user`, `pass`); loopback may send without AUTH.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let directory = FuzzDirectory {
            max_message_bytes: 1024 * 1024,
            rewrite_without_auth: false,
        };
        let limits = Limits {
            max_line_bytes: 1024,
            ..quick_limits()
        };
        Fixture::new(directory, limits)
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
    let (peer, listener) = client(mode);
    let input = script(&steps);
    let replies = fixture.session(peer, listener, &input, 64 * 1024);
    fixture.check_and_clear(&replies);
    let tmp = std::fs::read_dir(fixture.outbox.dir().join("tmp")).unwrap();
    let left: Vec<_> = tmp.filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
});
