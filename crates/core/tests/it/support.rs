use apimail_core::{Mailbox, Message, MessageBuilder};

pub(crate) const DATE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

pub(crate) fn mailbox(s: &str) -> Mailbox {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A builder with Date, Message-ID and boundaries pinned.
pub(crate) fn pinned() -> MessageBuilder {
    MessageBuilder::new()
        .date(DATE)
        .message_id("<pinned.1@example.com>")
        .boundary_prefix("BOUNDARY")
}

/// Every physical line, checked for length and for bare CR or LF.
pub(crate) fn assert_wire_clean(message: &Message) {
    let bytes = message.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at byte {i}");
        }
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at byte {i}");
        }
    }
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let len = line.strip_suffix(b"\r").unwrap_or(line).len();
        assert!(len <= 998, "line {} is {len} octets", n + 1);
    }
}
