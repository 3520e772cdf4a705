//! The Subjects of the messages this node spooled or read lately, by entry
//! id: an entry's message never changes, so a Subject once read stays
//! true. `Claim::spooled` takes it from the chunks as it copies them, and
//! `Store::subject` answers from here, so that an attempt reads its message
//! from the database once (the journal's records want the Subject too).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The Subjects kept at most (the oldest go first).
const KEPT: usize = 1024;

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct Subjects {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    by_id: HashMap<String, Option<String>>,
    order: VecDeque<String>,
}

impl Subjects {
    /// The Subject of entry `id`'s message, if known: `Some(None)` when it
    /// has none.
    pub(crate) fn get(&self, id: &str) -> Option<Option<String>> {
        self.kept.lock().ok()?.by_id.get(id).cloned()
    }

    /// Keeps `subject` as entry `id`'s.
    pub(crate) fn put(&self, id: &str, subject: Option<String>) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.by_id.insert(id.to_owned(), subject).is_none() {
            kept.order.push_back(id.to_owned());
        }
        while kept.order.len() > KEPT {
            if let Some(old) = kept.order.pop_front() {
                kept.by_id.remove(&old);
            }
        }
    }
}

/// The most of a message's head kept to find its Subject in: 1 MiB.
const HEAD_LIMIT: usize = 1024 * 1024;

/// Collects a message's head as its chunks go by: the chunks up to the
/// end of the header section, at most [`HEAD_LIMIT`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Head {
    bytes: Vec<u8>,
}

impl Head {
    /// Whether more chunks are wanted.
    pub(crate) fn wants_more(&self) -> bool {
        self.bytes.len() < HEAD_LIMIT && !ends_headers(&self.bytes)
    }

    /// Takes `chunk` if more is wanted.
    pub(crate) fn take(&mut self, chunk: &[u8]) {
        if self.wants_more() {
            self.bytes.extend_from_slice(chunk);
        }
    }

    /// The Subject, decoded.
    pub(crate) fn subject(&self) -> Option<String> {
        apimail_core::read_subject(self.bytes.as_slice())
    }
}

/// Whether `head` holds a whole header section (up to its blank line).
fn ends_headers(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_subjects_go_first() {
        let subjects = Subjects::default();
        for n in 0..=KEPT {
            subjects.put(&format!("e{n}"), Some(n.to_string()));
        }
        assert_eq!(subjects.get("e0"), None);
        assert_eq!(subjects.get("e1"), Some(Some("1".to_owned())));
        subjects.put("none", None);
        assert_eq!(subjects.get("none"), Some(None));
    }

    #[test]
    fn the_head_stops_at_the_blank_line() {
        let mut head = Head::default();
        for chunk in [&b"Subject: hel"[..], b"lo\r\n\r\nbo", b"dy"] {
            head.take(chunk);
        }
        assert!(!head.wants_more());
        assert_eq!(head.bytes, b"Subject: hello\r\n\r\nbo");
        assert_eq!(head.subject().as_deref(), Some("hello"));
    }
}
