//! Any bytes: parsing never panics, and an accepted message keeps its
//! original bytes, gaining at most Date and Message-ID.
#![no_main]

use apimail_core::ReadyMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ReadyMessage::parse(data.to_vec()) else {
        return;
    };
    let missing = usize::from(!message.has_date()) + usize::from(message.message_id().is_none());
    let out = message.into_bytes_with("Thu, 1 Jan 2026 00:00:00 +0000", "<fuzz@example.com>");
    assert!(out.len() >= data.len());
    if missing == 0 {
        assert_eq!(out, data);
    }
});
