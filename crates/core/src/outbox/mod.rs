//! The outbox: messages waiting to be sent, kept on disk so that a message
//! handed to apimail is either accepted by the provider or kept with a
//! clear way to send it later, and nothing is sent twice by us.
//!
//! # Layout
//!
//! Under the outbox directory (the CLI uses `<data dir>/outbox`), every
//! directory is private to its owner (mode 0700) and every file too (0600):
//!
//! - `tmp/`: writes in progress. A crash leaves junk here;
//!   [`Outbox::open`] removes what is older than an hour and not in use.
//! - `queue/<id>.msg`: a waiting entry in one file (format version 1, see
//!   `format.rs`): the message exactly as it is sent, then the entry's
//!   metadata at acceptance ([`Entry`], JSON), then a 60-byte footer
//!   naming the version and both lengths. **An entry exists iff its
//!   `.msg` exists.** The file never changes once in place.
//! - `queue/<id>.state`: the entry's state since acceptance (in flight,
//!   attempts, held, uncertain, notes: the whole [`Entry`], JSON), written
//!   atomically at every change, never touching the message. It overrides
//!   the metadata in the `.msg`; without its `.msg` it is a leftover.
//! - `failed/<id>.msg` + `failed/<id>.state`: messages given up on, with
//!   the reason ([`Entry::failed_reason`]).
//! - Entries queued before one file per message, as `<id>.eml` (the
//!   message) and `<id>.json` (the entry; it exists iff its `.json` does),
//!   are read, changed in their own format and sent as before.
//! - `locks/<id>.lock`: the lock of an entry, held while it is being
//!   written, sent, moved or deleted. The kernel releases a lock when its
//!   process dies, so a crash never leaves an entry locked; the file itself
//!   is removed by its holder (and a leftover one by [`Outbox::open`]).
//!
//! Every state write is atomic: a temporary file in `tmp/` is written,
//! synced and renamed over the target, and the target directory is synced.
//!
//! # Crash safety
//!
//! A `kill -9` (or a power loss) at any point leaves one of:
//!
//! - no entry, and the caller never got an answer: [`Incoming::commit`]
//!   appends the metadata and footer to the message in `tmp/`, syncs the
//!   file, renames it to `queue/<id>.msg`, and answers only after a sync
//!   of `queue/` (shared with concurrent commits) made the rename durable.
//!   A half-written file is in `tmp/`, never in `queue/`.
//! - a complete entry, queued or failed. A move between `queue/` and
//!   `failed/` writes the new state beside the target, then renames the
//!   `.msg` (atomic: the entry is in one place at any moment), then
//!   removes the old `.state`; `open` removes a `.state` left without its
//!   `.msg`. (Two-file entries move as before: the message linked or
//!   copied first, then the `.json` renamed, then the old message removed.)
//!
//! Before an attempt, [`Claim::begin_attempt`] durably marks the entry in
//! flight. An entry found in flight by a later claim, or settled with
//! [`Claim::uncertain`], may have been accepted by the provider: the
//! delivery engine checks the mailbox where it can, and otherwise resends
//! it with the same `Message-ID` or holds it, as configured.
//!
//! # Concurrency
//!
//! Any number of apimail processes may use the outbox at once.
//! [`Outbox::claim`] takes an entry's lock without waiting and reads the
//! entry again under it, so an entry another process is sending, or has
//! just sent, is skipped. Writes and removals happen under the lock only.
//! Listing takes no lock: files are replaced atomically, so a reader sees
//! the old or the new state.
//!
//! All methods do blocking file I/O (including `fsync`); from async code,
//! call them through `spawn_blocking` or accept the short stalls. None of
//! them waits for a lock.
mod claim;
mod entry;
mod error;
mod format;
mod intake;
mod listing;
mod recovery;
mod store;
#[cfg(test)]
mod testing;

pub use claim::Claim;
pub use entry::{
    DEFAULT_MAX_AGE_SECS, Entry, EntryId, EntryState, HoldKind, NewEntry, Outcome, Summary,
    next_delay_secs,
};
pub use error::OutboxError;
pub use intake::Incoming;
pub use store::Outbox;
