//! Split envelopes: one message over several transactions.
//!
//! An MTA past its recipient limit (or after our own `452` at
//! `max_recipients`) sends the same message again, with the same
//! Message-ID, to the remaining recipients. The APIs deliver to the
//! headers, so each transaction would reach every To and Cc recipient
//! once more. [`Splits`] remembers, per account, client-given Message-ID
//! and body (a device that gives every message the same Message-ID still
//! has each delivered), everyone a message already goes to (for
//! [`WINDOW`]); a later transaction is sent only to the recipients who are
//! new, as Bcc, with its To and Cc renamed Original-To and Original-Cc
//! (as a resent message is), so no header recipient gets a second copy.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimail_core::Mailbox;
use apimail_core::ReadyMessage;
use apimail_core::outbox::EntryId;

/// How long the transactions of one message are grouped.
pub(super) const WINDOW: Duration = Duration::from_secs(10 * 60);

/// The most messages remembered; the oldest are forgotten first.
const MAX_GROUPS: usize = 10_000;

/// One message's recipients so far.
#[derive(Debug)]
struct Group {
    /// The first transaction's entry.
    first: Option<EntryId>,
    /// Everyone it goes to: their lowercase addresses, hashed.
    recipients: Vec<u64>,
    /// Its place in [`Remembered::order`].
    seq: u64,
}

/// A group's account and message key, hashed.
type Key = u64;

/// The groups, and their keys oldest first, so that forgetting the old
/// ones costs the same however many are remembered. Keys and addresses
/// are kept as hashes with this process's random keys (a few bytes each,
/// and no client can make two collide on purpose).
#[derive(Debug, Default)]
struct Remembered {
    hasher: RandomState,
    groups: HashMap<Key, Group>,
    /// (when it began, seq, key) of each group in the order they began; a
    /// key whose group was taken back stays until it comes up.
    order: VecDeque<(Instant, u64, Key)>,
    next_seq: u64,
}

impl Remembered {
    fn key(&self, account: &str, message_id: &str) -> Key {
        self.hasher.hash_one((account, message_id))
    }

    fn address(&self, mailbox: &Mailbox) -> u64 {
        self.hasher.hash_one(mailbox.email().to_ascii_lowercase())
    }

    /// Forgets the oldest group (or a taken-back key); false when there
    /// is nothing left.
    fn forget_oldest(&mut self) -> bool {
        let Some((_, seq, key)) = self.order.pop_front() else {
            return false;
        };
        if self.groups.get(&key).is_some_and(|g| g.seq == seq) {
            self.groups.remove(&key);
        }
        true
    }
}

/// The messages accepted lately, by account and Message-ID.
#[derive(Debug, Clone, Default)]
pub(super) struct Splits(Arc<Mutex<Remembered>>);

/// The key of a message for [`Splits`]: its Message-ID and a hash of its
/// body (what follows the header section of `message`).
pub(super) fn key(message_id: &str, message: &[u8]) -> String {
    let body = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2)
        .or_else(|| {
            message
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| at + 4)
        })
        .map_or(&message[..0], |at| &message[at..]);
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    format!("{message_id} {:016x}", hasher.finish())
}

/// What a transaction is, given the ones before it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The first (or only) transaction of its message.
    First,
    /// A later one: only `new` are not sent to yet (possibly nobody);
    /// `first` is the entry of the first, when it was queued.
    Later {
        new: Vec<Mailbox>,
        first: Option<EntryId>,
    },
}

impl Splits {
    /// Records that the message `message_id` of `account` goes to
    /// `recipients`, and says whether an earlier transaction already
    /// covers some of them. [`Splits::undo`] takes it back if the
    /// transaction is not queued after all.
    pub(super) fn join(&self, account: &str, message_id: &str, recipients: &[Mailbox]) -> Part {
        let mut remembered = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while remembered
            .order
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) >= WINDOW)
        {
            remembered.forget_oldest();
        }
        let key = remembered.key(account, message_id);
        let addresses: Vec<u64> = recipients.iter().map(|m| remembered.address(m)).collect();
        if let Some(group) = remembered.groups.get_mut(&key) {
            let mut new = Vec::new();
            for (mailbox, address) in recipients.iter().zip(addresses) {
                if !group.recipients.contains(&address) {
                    group.recipients.push(address);
                    new.push(mailbox.clone());
                }
            }
            return Part::Later {
                new,
                first: group.first.clone(),
            };
        }
        while (remembered.groups.len() >= MAX_GROUPS || remembered.order.len() >= 2 * MAX_GROUPS)
            && remembered.forget_oldest()
        {}
        let seq = remembered.next_seq;
        remembered.next_seq += 1;
        remembered.order.push_back((now, seq, key));
        remembered.groups.insert(
            key,
            Group {
                first: None,
                recipients: addresses,
                seq,
            },
        );
        Part::First
    }

    /// The first transaction of `message_id` is queued as `id`.
    pub(super) fn queued(&self, account: &str, message_id: &str, id: &EntryId) {
        let mut remembered = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = remembered.key(account, message_id);
        if let Some(group) = remembered.groups.get_mut(&key) {
            group.first.get_or_insert_with(|| id.clone());
        }
    }

    /// Takes back a [`Splits::join`] whose transaction was refused.
    pub(super) fn undo(&self, account: &str, message_id: &str, part: &Part) {
        let mut remembered = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = remembered.key(account, message_id);
        match part {
            Part::First => {
                if let Some(group) = remembered.groups.remove(&key)
                    && remembered
                        .order
                        .back()
                        .is_some_and(|(_, seq, _)| *seq == group.seq)
                {
                    remembered.order.pop_back();
                }
            }
            Part::Later { new, .. } => {
                let taken_back: Vec<u64> = new.iter().map(|m| remembered.address(m)).collect();
                if let Some(group) = remembered.groups.get_mut(&key) {
                    group.recipients.retain(|r| !taken_back.contains(r));
                }
            }
        }
    }
}

/// Makes a later transaction's message go only to `new`: To and Cc become
/// Original-To and Original-Cc, and `new` the one Bcc.
pub(super) fn only_to(message: &mut ReadyMessage, new: &[Mailbox]) {
    message.rename_header("To", "Original-To");
    message.rename_header("Cc", "Original-Cc");
    message.set_addresses("Bcc", new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(list: &[&str]) -> Vec<Mailbox> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_later_transaction_gets_only_the_new_recipients() {
        let splits = Splits::default();
        let first = boxes(&["to@example.net", "a@example.net"]);
        assert_eq!(splits.join("work", "<m@x>", &first), Part::First);
        let id = EntryId::parse("20260101T000000-0123456789ab").unwrap();
        splits.queued("work", "<m@x>", &id);
        let later = boxes(&["TO@example.net", "b@example.net"]);
        assert_eq!(
            splits.join("work", "<m@x>", &later),
            Part::Later {
                new: boxes(&["b@example.net"]),
                first: Some(id.clone()),
            }
        );
        // Another account, or another message: unrelated.
        assert_eq!(splits.join("home", "<m@x>", &later), Part::First);
        assert_eq!(splits.join("work", "<n@x>", &later), Part::First);
        // A refused transaction is taken back.
        let part = splits.join("work", "<m@x>", &boxes(&["c@example.net"]));
        splits.undo("work", "<m@x>", &part);
        assert_eq!(
            splits.join("work", "<m@x>", &boxes(&["c@example.net"])),
            Part::Later {
                new: boxes(&["c@example.net"]),
                first: Some(id),
            }
        );
    }

    #[test]
    fn the_oldest_are_forgotten_first_and_the_memory_stays_bounded() {
        let splits = Splits::default();
        let to = boxes(&["to@example.net"]);
        for n in 0..MAX_GROUPS + 5 {
            assert_eq!(splits.join("work", &format!("<{n}@x>"), &to), Part::First);
        }
        // The first five were forgotten; the sixth is still remembered.
        assert_eq!(splits.join("work", "<0@x>", &to), Part::First);
        assert!(matches!(
            splits.join("work", "<6@x>", &to),
            Part::Later { .. }
        ));
        // First transactions taken back, over and over: they leave no key
        // behind to push out the groups remembered.
        for _ in 0..3 * MAX_GROUPS {
            let part = splits.join("work", "<again@x>", &to);
            splits.undo("work", "<again@x>", &part);
        }
        let remembered = splits.0.lock().unwrap();
        assert!(remembered.groups.len() <= MAX_GROUPS);
        assert!(remembered.order.len() <= 2 * MAX_GROUPS);
        let newest = remembered.key("work", &format!("<{}@x>", MAX_GROUPS + 4));
        assert!(remembered.groups.contains_key(&newest));
    }

    #[test]
    fn the_key_is_the_message_id_and_the_body() {
        let a = key("<m@x>", b"To: a@example.net\r\n\r\nscan 1\r\n");
        assert_eq!(a, key("<m@x>", b"To: b@example.net\r\n\r\nscan 1\r\n"));
        assert_ne!(a, key("<m@x>", b"To: a@example.net\r\n\r\nscan 2\r\n"));
        assert_ne!(a, key("<n@x>", b"To: a@example.net\r\n\r\nscan 1\r\n"));
    }

    #[test]
    fn only_to_moves_the_header_recipients_aside() {
        let mut message = ReadyMessage::parse(
            b"From: a@example.com\r\nTo: to@example.net\r\nCc: cc@example.net\r\nBcc: old@example.net\r\n\r\nhi\r\n".to_vec(),
        )
        .unwrap();
        only_to(&mut message, &boxes(&["b@example.net"]));
        let text = String::from_utf8(message.as_bytes().to_vec()).unwrap();
        assert!(text.contains("Original-To: to@example.net\r\n"), "{text}");
        assert!(text.contains("Original-Cc: cc@example.net\r\n"), "{text}");
        assert!(text.contains("Bcc: <b@example.net>\r\n"), "{text}");
        assert!(
            !text.contains("old@") && !text.contains("\r\nTo:"),
            "{text}"
        );
    }
}
