//! Any bytes from an SMTP client: a relay session never panics or hangs,
//! always answers, and whatever it accepts lands in the outbox.
#![no_main]

mod relay_common;

use std::sync::OnceLock;

use apimail_relay::Limits;
use libfuzzer_sys::fuzz_target;
use relay_common::{Fixture, FuzzDirectory, client, quick_limits};

/// One user (`user`, `pass`), any sender from loopback, a 4 KB limit.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let directory = FuzzDirectory {
            max_message_bytes: 4096,
            rewrite_without_auth: true,
        };
        let limits = Limits {
            max_line_bytes: 512,
            max_recipients: 8,
            ..quick_limits()
        };
        Fixture::new(directory, limits)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    // The first byte picks the client's address and the listener's rules.
    let (peer, mut listener) = client(mode);
    if mode & 8 != 0 {
        listener.allowed_networks = vec!["192.0.2.0/24".parse().unwrap()];
    }
    let replies = fixture.session(peer, listener, input, 8 * 1024);
    // Every 250 for a message is an entry; then clean up for the next run.
    fixture.check_and_clear(&replies);
    assert!(replies.ends_with(b"\r\n"), "a reply was cut short");
});
