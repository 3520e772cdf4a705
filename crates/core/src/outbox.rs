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
//! - `queue/<id>.eml` + `queue/<id>.json`: a waiting message and its
//!   metadata ([`Entry`], pretty JSON). **An entry exists iff its `.json`
//!   exists**, and a `.json` is only ever placed next to a complete, synced
//!   `.eml`.
//! - `failed/<id>.eml` + `failed/<id>.json`: messages given up on, with the
//!   reason ([`Entry::failed_reason`]).
//! - `locks/<id>.lock`: the lock of an entry, held while it is being
//!   written, sent, moved or deleted. The kernel releases a lock when its
//!   process dies, so a crash never leaves an entry locked; the file itself
//!   is removed by its holder (and a leftover one by [`Outbox::open`]).
//!
//! Every metadata write is atomic: a temporary file in `tmp/` is written,
//! synced and renamed over the target, and the target directory is synced.
//!
//! # Crash safety
//!
//! A `kill -9` (or a power loss) at any point leaves one of:
//!
//! - no entry, and the caller never got an answer: [`Incoming::commit`]
//!   syncs the message and renames it to `queue/<id>.eml`, syncs the
//!   metadata and renames it to `queue/<id>.json`, and answers only after
//!   one sync of `queue/` has made both renames durable. A `.eml` without
//!   its `.json` is not an entry; [`Outbox::open`] removes it. A `.json`
//!   without its `.eml` (a crash before that sync, on a file system that
//!   does not keep the renames in order) is an entry never attempted nor
//!   acknowledged; `open` removes it too.
//! - a complete entry, queued or failed. Moves between `queue/` and
//!   `failed/` hard-link (or copy) the message first, then rename the
//!   `.json` (atomic), then remove the old message, so the `.json` is never
//!   without its `.eml`.
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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::{self, PrivateFile, WriteError};
use crate::identity::SenderIdentity;
use crate::token::now_unix;
use crate::transport::DeliveryNotes;

/// How long an entry is retried before it is moved to `failed/`: five days.
pub const DEFAULT_MAX_AGE_SECS: i64 = 5 * 24 * 3600;

/// Temporary files older than this are junk from a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The retry schedule in minutes, by attempt; the last step repeats.
const SCHEDULE_MINUTES: [i64; 7] = [1, 2, 4, 8, 15, 30, 60];

/// How often to start over when a lock file is replaced under us.
const LOCK_RETRIES: usize = 64;

/// How often to draw a new id if one is taken.
const ID_RETRIES: usize = 16;

/// The delay before the next attempt after `attempts` failed ones: 1, 2,
/// 4, 8, 15, 30 and 60 minutes, then hourly. Attempts count from 1 (0 is
/// treated as 1).
pub fn next_delay_secs(attempts: u32) -> i64 {
    let step = (attempts.max(1) as usize - 1).min(SCHEDULE_MINUTES.len() - 1);
    SCHEDULE_MINUTES[step] * 60
}

/// Why the outbox could not be read or written.
///
/// Messages name the file or directory and the operation, never the
/// content of a message or its metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A directory could not be created.
    #[error("cannot create outbox directory {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be restricted to its owner.
    #[error("cannot make {} private to its owner (mode 0600/0700)", .path.display())]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory could not be listed.
    #[error("cannot list outbox directory {}", .path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read outbox file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry's metadata is not valid JSON or lacks required fields.
    #[error(
        "outbox file {} is not a valid entry (line {line}, column {column}); fix or delete it",
        .path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where parsing failed.
        line: usize,
        /// Where parsing failed.
        column: usize,
    },
    /// A file could not be written or synced.
    #[error("cannot write outbox file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be renamed.
    #[error("cannot move outbox file {} to {}", .from.display(), .to.display())]
    Move {
        /// Where the file is.
        from: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be deleted.
    #[error("cannot delete outbox file {}", .path.display())]
    Delete {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory could not be synced, so a change may not survive a
    /// power loss.
    #[error("cannot sync outbox directory {}", .path.display())]
    Sync {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A lock file could not be opened or locked.
    #[error("cannot lock {}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the entry's lock: it is being sent (or
    /// changed) right now.
    #[error(
        "outbox entry {id} is being sent by another apimail process; try again when it has finished"
    )]
    Busy {
        /// The entry.
        id: EntryId,
    },
    /// Text that is not an entry id.
    #[error(
        "`{id}` is not an outbox entry id (expected something like 20261121T101500-3f9a0c1b2d4e)"
    )]
    InvalidId {
        /// The text as given.
        id: String,
    },
}

impl OutboxError {
    /// Whether the disk (or the user's quota) is full: worth retrying once
    /// space is freed, unlike a permission problem.
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            OutboxError::CreateDir { source, .. }
            | OutboxError::Write { source, .. }
            | OutboxError::Move { source, .. }
            | OutboxError::Sync { source, .. }
            | OutboxError::Lock { source, .. } => source,
            _ => return false,
        };
        source.kind() == io::ErrorKind::StorageFull || source.kind() == io::ErrorKind::QuotaExceeded
    }
}

/// An entry's name: the UTC time it was accepted and 12 random hex digits,
/// e.g. `20261121T101500-3f9a0c1b2d4e`. Ids sort by acceptance time (to
/// the second; within a second their order is arbitrary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryId(String);

impl EntryId {
    /// Checks `id`'s format (the [`FromStr`] implementation does the same).
    pub fn parse(id: &str) -> Result<Self, OutboxError> {
        if is_valid_id(id) {
            Ok(EntryId(id.to_owned()))
        } else {
            Err(OutboxError::InvalidId { id: id.to_owned() })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new id for an entry accepted at `now` (Unix seconds).
    fn generate(now: i64) -> Self {
        EntryId(format!("{}-{}", utc_stamp(now), random_hex(6)))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EntryId {
    type Err = OutboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryId::parse(s)
    }
}

impl TryFrom<String> for EntryId {
    type Error = OutboxError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        if is_valid_id(&id) {
            Ok(EntryId(id))
        } else {
            Err(OutboxError::InvalidId { id })
        }
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> Self {
        id.0
    }
}

impl AsRef<str> for EntryId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `YYYYMMDDTHHMMSS-` followed by 12 lowercase hex digits.
fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 28
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
        && b[16..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `YYYYMMDDTHHMMSS` in UTC, for times from 1970 to 9999.
fn utc_stamp(unix: i64) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let at = time::OffsetDateTime::from_unix_timestamp(unix.clamp(0, 253_402_300_799))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&format).unwrap_or_default()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // Without the OS generator, time, process id and a counter still make
    // a collision unlikely; `commit` also checks that the id is free.
    if getrandom::fill(&mut buf).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mixed = (u64::from(nanos) << 20)
            ^ (u64::from(std::process::id()) << 40)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (mixed >> ((i % 8) * 8)) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an entry is waiting to be sent or waiting for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting for its next attempt.
    Queued,
    /// Not sent until [`Outbox::release_held`] (after a login) or
    /// [`Outbox::retry`]: the provider refused the credentials, the
    /// sender cannot be resolved, or an unknown outcome waits for the user.
    /// Held entries do not expire.
    Held,
}

/// What the caller knows about a message it hands to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Who to send it as; a flush never sends it as anyone else.
    pub identity: Option<SenderIdentity>,
    /// The account to send with, if one was chosen.
    pub account: Option<String>,
    /// The provider (`gmail`, `graph`), if known.
    pub provider: Option<String>,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The message's `Message-ID`, kept across attempts.
    pub message_id: String,
    /// How long to keep retrying, in seconds (see [`DEFAULT_MAX_AGE_SECS`]).
    pub max_age_secs: i64,
}

impl Default for NewEntry {
    /// Empty fields and the default maximum age.
    fn default() -> Self {
        NewEntry {
            identity: None,
            account: None,
            provider: None,
            from: String::new(),
            recipients: Vec::new(),
            message_id: String::new(),
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        }
    }
}

/// An entry's metadata, stored as `<id>.json` next to `<id>.eml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's id, also its file name.
    pub id: EntryId,
    /// Queued or held.
    pub state: EntryState,
    /// The account to send with, if one was chosen.
    pub account: Option<String>,
    /// The provider, if known.
    pub provider: Option<String>,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The message's `Message-ID`.
    pub message_id: String,
    /// The message's size in bytes.
    pub size: u64,
    /// When the outbox accepted it, in Unix seconds.
    pub created_at: i64,
    /// How many attempts failed.
    pub attempts: u32,
    /// When it is due next, in Unix seconds.
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// How long to keep retrying, in seconds from `created_at` (or from
    /// `retried_at`).
    pub max_age_secs: i64,
    /// When [`Outbox::retry`] last moved it back from `failed/`; the
    /// maximum age then counts from here.
    #[serde(default)]
    pub retried_at: Option<i64>,
    /// Why it was given up on: set for entries in `failed/` only.
    #[serde(default)]
    pub failed_reason: Option<String>,
    /// Who to send it as. `None` only for entries queued before apimail
    /// recorded it; those are sent with `account`.
    #[serde(default)]
    pub identity: Option<SenderIdentity>,
    /// When the attempt under way began (Unix seconds). Still set when a
    /// claim finds the entry, it means a process died mid-attempt.
    #[serde(default)]
    pub in_flight_since: Option<i64>,
    /// The provider may already have accepted it: an attempt's answer was
    /// lost. Cleared by [`Outbox::retry`] (the user chose to resend).
    #[serde(default)]
    pub outcome_unknown: bool,
    /// What the transport keeps across attempts (a Graph draft's id, say):
    /// see [`DeliveryNotes`], which a [`Claim`] implements.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl Entry {
    /// Whether it should be attempted at `now`: queued, not failed, and
    /// `next_attempt_at <= now`.
    pub fn is_due(&self, now: i64) -> bool {
        self.state == EntryState::Queued
            && self.failed_reason.is_none()
            && self.next_attempt_at <= now
    }

    /// Whether it was given up on (it is in `failed/`).
    pub fn is_failed(&self) -> bool {
        self.failed_reason.is_some()
    }

    /// Whether an earlier attempt may have been accepted by the provider:
    /// its answer was lost, or its process died mid-attempt.
    pub fn is_uncertain(&self) -> bool {
        self.outcome_unknown || self.in_flight_since.is_some()
    }

    /// When a temporary failure stops being retried, in Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.retried_at
            .unwrap_or(self.created_at)
            .saturating_add(self.max_age_secs)
    }
}

/// What [`Claim::retry_later`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still queued, due again at `next_attempt_at` (Unix seconds).
    Rescheduled {
        /// When it is due again.
        next_attempt_at: i64,
    },
    /// Too old to retry: moved to `failed/`.
    Expired,
    /// Held for the user.
    Held,
}

/// Counts for `status` and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Entries waiting for their next attempt.
    pub queued: usize,
    /// Entries waiting for a login.
    pub held: usize,
    /// Entries given up on.
    pub failed: usize,
    /// When the oldest queued or held entry was accepted (Unix seconds).
    pub oldest_created_at: Option<i64>,
    /// `.json` files in `queue/` or `failed/` that cannot be read or
    /// parsed; [`Outbox::get`] on their id says why.
    pub unreadable: usize,
}

/// Where an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Queue,
    Failed,
}

/// The outbox directory. Cheap to clone; any number of values, in any
/// number of processes, may use the same directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Opens the outbox at `dir`, creating it and its subdirectories
    /// (mode 0700, also fixed if they exist with other modes), and cleans
    /// up after crashes: temporary files older than an hour and not in
    /// use, messages without metadata, moves to `failed/` that were cut
    /// short, and unused lock files. Cleaning is best effort: what cannot
    /// be removed is logged and left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OutboxError> {
        let outbox = Outbox { dir: dir.into() };
        create_private_dir(&outbox.dir)?;
        for sub in [
            outbox.tmp_dir(),
            outbox.queue_dir(),
            outbox.failed_dir(),
            outbox.locks_dir(),
        ] {
            create_private_dir(&sub)?;
        }
        outbox.clean_up();
        Ok(outbox)
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    fn failed_dir(&self) -> PathBuf {
        self.dir.join("failed")
    }

    fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }

    fn place_dir(&self, place: Place) -> PathBuf {
        match place {
            Place::Queue => self.queue_dir(),
            Place::Failed => self.failed_dir(),
        }
    }

    fn json_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.json"))
    }

    fn eml_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.eml"))
    }

    /// Starts an entry whose message is streamed in: write it to the
    /// returned [`Incoming`] (a new file in `tmp/`, mode 0600), then
    /// [`commit`](Incoming::commit). Dropping it uncommitted removes the
    /// file.
    pub fn begin(&self) -> Result<Incoming, OutboxError> {
        let file = PrivateFile::new_in(&self.tmp_dir(), "incoming").map_err(write_error)?;
        // Marks the file as in use, so `open` elsewhere leaves it alone
        // however long the message takes to arrive. A fresh file cannot be
        // locked by anyone else, and if locking is unsupported the age
        // rule still protects it.
        let _ = file.as_file().try_lock();
        Ok(Incoming {
            outbox: self.clone(),
            path: file.path().to_owned(),
            file: Some(BufWriter::new(file)),
        })
    }

    /// Accepts a message already in memory: [`begin`](Self::begin), write,
    /// [`commit`](Incoming::commit).
    pub fn accept(&self, message: &[u8], meta: NewEntry) -> Result<EntryId, OutboxError> {
        self.accept_at(message, meta, now_unix())
    }

    fn accept_at(&self, message: &[u8], meta: NewEntry, now: i64) -> Result<EntryId, OutboxError> {
        let mut incoming = self.begin()?;
        incoming.replace_contents(message)?;
        incoming.commit_at(meta, now)
    }

    /// The queued and held entries, oldest first. Entries that cannot be
    /// read are logged and left out (see [`Summary::unreadable`]).
    pub fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        Ok(self.scan(Place::Queue)?.0)
    }

    /// The failed entries, oldest first.
    pub fn list_failed(&self) -> Result<Vec<Entry>, OutboxError> {
        Ok(self.scan(Place::Failed)?.0)
    }

    /// The entry `id`, queued, held or failed; `None` if there is none.
    /// Fails with [`OutboxError::InvalidId`] if `id` is not an id.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, OutboxError> {
        let id = EntryId::parse(id)?;
        if let Some(entry) = self.read_entry(Place::Queue, &id)? {
            return Ok(Some(entry));
        }
        self.read_entry(Place::Failed, &id)
    }

    /// The message of entry `id` (queued, held or failed), as it will be
    /// or would have been sent; `None` if there is no such entry.
    pub fn read_message(&self, id: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let id = EntryId::parse(id)?;
        for place in [Place::Queue, Place::Failed] {
            if !self.json_path(place, &id).exists() {
                continue;
            }
            let path = self.eml_path(place, &id);
            match fs::read(&path) {
                Ok(bytes) => return Ok(Some(bytes)),
                // Moved or removed meanwhile: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(OutboxError::Read { path, source }),
            }
        }
        Ok(None)
    }

    /// The entries due at `now` (queued, `next_attempt_at <= now`), oldest
    /// first; with `account`, only that account's.
    pub fn due(&self, now: i64, account: Option<&str>) -> Result<Vec<Entry>, OutboxError> {
        let mut entries = self.list()?;
        entries.retain(|e| e.is_due(now) && for_account(e, account));
        Ok(entries)
    }

    /// Claims entry `id` for sending: takes its lock without waiting, then
    /// reads the entry again (it may have been sent and removed, or
    /// rescheduled, since it was listed). `None` if another process holds
    /// the lock or the entry is no longer queued.
    ///
    /// The claim does not check that the entry is due; see
    /// [`claim_due`](Self::claim_due). Until the claim is resolved
    /// ([`Claim::delivered`], [`retry_later`](Claim::retry_later),
    /// [`hold`](Claim::hold), [`fail`](Claim::fail)) or dropped (which
    /// leaves the entry as it was), nobody else can claim, retry or drop it.
    pub fn claim(&self, id: &EntryId) -> Result<Option<Claim<'_>>, OutboxError> {
        Ok(match self.try_claim(id)? {
            Claimed::Yes(claim) => Some(claim),
            Claimed::Busy | Claimed::Gone => None,
        })
    }

    /// Like [`claim`](Self::claim), but also `None` if the entry, read
    /// again under the lock, is not due at `now` (another process
    /// rescheduled or held it meanwhile). What a flush should use.
    pub fn claim_due(&self, id: &EntryId, now: i64) -> Result<Option<Claim<'_>>, OutboxError> {
        Ok(self.claim(id)?.filter(|claim| claim.entry.is_due(now)))
    }

    fn try_claim(&self, id: &EntryId) -> Result<Claimed<'_>, OutboxError> {
        let Some(lock) = self.lock(id)? else {
            return Ok(Claimed::Busy);
        };
        let Some(entry) = self.read_entry(Place::Queue, id)? else {
            return Ok(Claimed::Gone);
        };
        if entry.failed_reason.is_some() {
            // A crash interrupted a move to failed/ (see `move_to_failed`):
            // finish it.
            self.move_to_failed(&lock, &entry)?;
            return Ok(Claimed::Gone);
        }
        Ok(Claimed::Yes(Claim {
            outbox: self,
            notes: Mutex::new(entry.notes.clone()),
            entry,
            lock,
        }))
    }

    /// Makes the held entries of `account` (or all held entries) due now;
    /// for after a successful login. Entries another process is busy with
    /// are skipped. Returns how many were released.
    pub fn release_held(&self, account: Option<&str>) -> Result<usize, OutboxError> {
        let now = now_unix();
        let mut released = 0;
        for listed in self.list()? {
            if listed.state != EntryState::Held || !for_account(&listed, account) {
                continue;
            }
            let Some(mut claim) = self.claim(&listed.id)? else {
                continue;
            };
            if claim.entry.state == EntryState::Held && !claim.entry.is_uncertain() {
                claim.entry.state = EntryState::Queued;
                claim.entry.next_attempt_at = now;
                self.write_entry(Place::Queue, &claim.entry)?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// `queue retry ID`: makes a queued or held entry due now, or moves a
    /// failed one back to the queue, due now, with its attempts reset and
    /// its maximum age counted from now. `false` if there is no such
    /// entry; [`OutboxError::Busy`] if another process is sending it.
    pub fn retry(&self, id: &str) -> Result<bool, OutboxError> {
        let id = EntryId::parse(id)?;
        let Some(lock) = self.lock(&id)? else {
            return Err(OutboxError::Busy { id });
        };
        let now = now_unix();
        if let Some(mut entry) = self.read_entry(Place::Queue, &id)? {
            entry.state = EntryState::Queued;
            entry.next_attempt_at = now;
            entry.failed_reason = None;
            entry.outcome_unknown = false;
            entry.in_flight_since = None;
            self.write_entry(Place::Queue, &entry)?;
            return Ok(true);
        }
        if let Some(entry) = self.read_entry(Place::Failed, &id)? {
            self.move_to_queue(&lock, entry, now)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `queue drop ID`: deletes the entry, queued, held or failed. `false`
    /// if there is no such entry. Refuses with [`OutboxError::Busy`] while
    /// another process holds the entry's lock (is sending it), so a message
    /// is never deleted mid-send.
    pub fn drop_entry(&self, id: &str) -> Result<bool, OutboxError> {
        let id = EntryId::parse(id)?;
        let Some(_lock) = self.lock(&id)? else {
            return Err(OutboxError::Busy { id });
        };
        let mut dropped = false;
        for place in [Place::Queue, Place::Failed] {
            // The .json first: from then on it is no longer an entry.
            if remove_if_exists(&self.json_path(place, &id))? {
                dropped = true;
                remove_if_exists(&self.eml_path(place, &id))?;
                sync_dir(&self.place_dir(place))?;
            }
        }
        Ok(dropped)
    }

    /// Counts for `status` and `doctor`.
    pub fn summary(&self) -> Result<Summary, OutboxError> {
        let (queue, unreadable_queue) = self.scan(Place::Queue)?;
        let (failed, unreadable_failed) = self.scan(Place::Failed)?;
        let held = queue.iter().filter(|e| e.state == EntryState::Held).count();
        Ok(Summary {
            queued: queue.len() - held,
            held,
            failed: failed.len(),
            oldest_created_at: queue.iter().map(|e| e.created_at).min(),
            unreadable: unreadable_queue + unreadable_failed,
        })
    }

    /// Reads `<place>/<id>.json`; `None` if it does not exist.
    fn read_entry(&self, place: Place, id: &EntryId) -> Result<Option<Entry>, OutboxError> {
        let path = self.json_path(place, id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(OutboxError::Read { path, source }),
        };
        // serde_json's messages may quote values (addresses): keep only
        // the position.
        let mut entry: Entry = serde_json::from_slice(&bytes).map_err(|e| OutboxError::Parse {
            path,
            line: e.line(),
            column: e.column(),
        })?;
        // The file name is what identifies the entry.
        entry.id = id.clone();
        if place == Place::Failed && entry.failed_reason.is_none() {
            // Only a crash while moving it back to the queue leaves this.
            entry.failed_reason = Some("interrupted while being retried; retry it again".into());
        }
        Ok(Some(entry))
    }

    /// Every readable entry in `place`, oldest first, and how many were
    /// unreadable.
    fn scan(&self, place: Place) -> Result<(Vec<Entry>, usize), OutboxError> {
        let dir = self.place_dir(place);
        let mut entries = Vec::new();
        let mut unreadable = 0;
        for name in file_names(&dir)? {
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|n| EntryId::parse(n).ok())
            else {
                continue;
            };
            match self.read_entry(place, &id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {} // sent, moved or dropped meanwhile
                Err(error) => {
                    tracing::warn!("skipping outbox entry: {error}");
                    unreadable += 1;
                }
            }
        }
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok((entries, unreadable))
    }

    /// Writes `entry` to `<place>/<id>.json` atomically; the caller holds
    /// the entry's lock.
    fn write_entry(&self, place: Place, entry: &Entry) -> Result<(), OutboxError> {
        self.entry_file(place, entry)?
            .persist(&self.json_path(place, &entry.id))
            .map_err(write_error)
    }

    /// `entry` as pretty JSON in a new temporary file in `tmp/`, written
    /// but not yet synced or in place.
    fn entry_file(&self, place: Place, entry: &Entry) -> Result<PrivateFile, OutboxError> {
        let mut json = serde_json::to_vec_pretty(entry).map_err(|_| OutboxError::Write {
            path: self.json_path(place, &entry.id),
            source: io::Error::other("cannot serialize the entry"),
        })?;
        json.push(b'\n');
        let mut file = PrivateFile::new_in(&self.tmp_dir(), &format!("{}.json", entry.id))
            .map_err(write_error)?;
        file.write_all(&json).map_err(|source| OutboxError::Write {
            path: file.path().to_owned(),
            source,
        })?;
        Ok(file)
    }

    /// Moves a queued entry to `failed/`; `entry` is its new metadata (with
    /// `failed_reason` set).
    ///
    /// 1. link (or copy) `queue/<id>.eml` to `failed/<id>.eml`;
    /// 2. write `entry` to `queue/<id>.json`;
    /// 3. rename `queue/<id>.json` to `failed/<id>.json`;
    /// 4. remove `queue/<id>.eml`.
    ///
    /// A crash after 1 leaves a `.eml` without `.json` in `failed/`
    /// (removed by `open`); after 2, a queued entry with `failed_reason`
    /// set, which `claim` finishes moving; after 3, a `.eml` without
    /// `.json` in `queue/`.
    fn move_to_failed(&self, _lock: &IdLock, entry: &Entry) -> Result<(), OutboxError> {
        let id = &entry.id;
        self.copy_message(Place::Queue, Place::Failed, id)?;
        self.write_entry(Place::Queue, entry)?;
        self.move_json(Place::Queue, Place::Failed, id)?;
        remove_leftover(&self.eml_path(Place::Queue, id), &self.queue_dir());
        Ok(())
    }

    /// Moves a failed entry back to the queue, due at `now`, like
    /// [`move_to_failed`](Self::move_to_failed) the other way. The new
    /// metadata is written (with `failed_reason` cleared) before the
    /// `.json` moves, so a queued entry never has a `failed_reason`
    /// unless it is being moved to `failed/`.
    fn move_to_queue(&self, _lock: &IdLock, mut entry: Entry, now: i64) -> Result<(), OutboxError> {
        let id = entry.id.clone();
        self.copy_message(Place::Failed, Place::Queue, &id)?;
        entry.state = EntryState::Queued;
        entry.attempts = 0;
        entry.next_attempt_at = now;
        entry.retried_at = Some(now);
        entry.failed_reason = None;
        entry.outcome_unknown = false;
        entry.in_flight_since = None;
        self.write_entry(Place::Failed, &entry)?;
        self.move_json(Place::Failed, Place::Queue, &id)?;
        remove_leftover(&self.eml_path(Place::Failed, &id), &self.failed_dir());
        Ok(())
    }

    /// Puts a copy of `<from>/<id>.eml` at `<to>/<id>.eml` (a hard link if
    /// the file system allows), durably. A missing source is logged and
    /// skipped: the entry is moved anyway rather than stuck.
    fn copy_message(&self, from: Place, to: Place, id: &EntryId) -> Result<(), OutboxError> {
        let source = self.eml_path(from, id);
        let target = self.eml_path(to, id);
        remove_if_exists(&target)?; // a leftover from an interrupted move
        match fs::hard_link(&source, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !source.exists() => {
                tracing::warn!(
                    "outbox message {} is missing; moving its entry anyway",
                    source.display()
                );
                return Ok(());
            }
            Err(_) => {
                let mut file = PrivateFile::new_in(&self.tmp_dir(), &format!("{id}.eml"))
                    .map_err(write_error)?;
                File::open(&source)
                    .and_then(|mut from| io::copy(&mut from, &mut file))
                    .map_err(|e| OutboxError::Write {
                        path: file.path().to_owned(),
                        source: e,
                    })?;
                return file.persist(&target).map_err(write_error);
            }
        }
        sync_dir(&self.place_dir(to))
    }

    /// Renames `<from>/<id>.json` to `<to>/<id>.json` and syncs both
    /// directories, the target first.
    fn move_json(&self, from: Place, to: Place, id: &EntryId) -> Result<(), OutboxError> {
        rename(&self.json_path(from, id), &self.json_path(to, id))?;
        sync_dir(&self.place_dir(to))?;
        sync_dir(&self.place_dir(from))
    }

    /// Takes entry `id`'s lock without waiting: `None` if someone else
    /// holds it.
    ///
    /// Holders remove the lock file before releasing it, so a lock taken
    /// on a file that has since been removed (or replaced) protects
    /// nothing: it is checked to still be the file at the path, and
    /// otherwise the attempt starts over.
    fn lock(&self, id: &EntryId) -> Result<Option<IdLock>, OutboxError> {
        let path = self.locks_dir().join(format!("{id}.lock"));
        for _ in 0..LOCK_RETRIES {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options.open(&path).map_err(|source| OutboxError::Lock {
                path: path.clone(),
                source,
            })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(source)) => {
                    return Err(OutboxError::Lock { path, source });
                }
            }
            if is_file_at(&file, &path) {
                return Ok(Some(IdLock { _file: file, path }));
            }
        }
        Ok(None)
    }

    /// Best-effort cleanup after crashes; see [`open`](Self::open).
    fn clean_up(&self) {
        let tmp = self.tmp_dir();
        for name in file_names(&tmp).unwrap_or_default() {
            let path = tmp.join(&name);
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            let old = metadata
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if !old || !metadata.is_file() {
                continue;
            }
            // An `Incoming` still being written holds a lock on its file.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                remove_leftover(&path, &tmp);
            }
        }

        for place in [Place::Queue, Place::Failed] {
            let dir = self.place_dir(place);
            for name in file_names(&dir).unwrap_or_default() {
                let Some(id) = name
                    .strip_suffix(".eml")
                    .and_then(|n| EntryId::parse(n).ok())
                else {
                    continue;
                };
                if self.json_path(place, &id).exists() {
                    continue;
                }
                // Busy: being committed or moved right now.
                let Ok(Some(_lock)) = self.lock(&id) else {
                    continue;
                };
                if !self.json_path(place, &id).exists() {
                    remove_leftover(&self.eml_path(place, &id), &dir);
                }
            }
        }

        // A commit renames the message, then the metadata, and syncs
        // queue/ once; a crash before that sync may keep the metadata
        // alone. Such an entry was never acknowledged, nor attempted.
        let queue = self.queue_dir();
        for name in file_names(&queue).unwrap_or_default() {
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|n| EntryId::parse(n).ok())
            else {
                continue;
            };
            if self.eml_path(Place::Queue, &id).exists() {
                continue;
            }
            let Ok(Some(_lock)) = self.lock(&id) else {
                continue;
            };
            let cut_short = |e: &Entry| {
                e.attempts == 0
                    && e.in_flight_since.is_none()
                    && e.retried_at.is_none()
                    && e.failed_reason.is_none()
            };
            if !self.eml_path(Place::Queue, &id).exists()
                && let Ok(Some(entry)) = self.read_entry(Place::Queue, &id)
                && cut_short(&entry)
            {
                tracing::warn!("removing outbox entry {id}: a crash cut its commit short");
                remove_leftover(&self.json_path(Place::Queue, &id), &queue);
            }
        }

        // A queued entry with a failed_reason is a move to failed/ that a
        // crash interrupted; claiming it finishes the move.
        if let Ok((entries, _)) = self.scan(Place::Queue) {
            for entry in entries.iter().filter(|e| e.failed_reason.is_some()) {
                if let Err(error) = self.try_claim(&entry.id) {
                    tracing::warn!("{error}");
                }
            }
        }

        // Lock files outlive their holder only after a crash; taking and
        // dropping the lock removes them.
        for name in file_names(&self.locks_dir()).unwrap_or_default() {
            if let Some(id) = name
                .strip_suffix(".lock")
                .and_then(|n| EntryId::parse(n).ok())
            {
                let _ = self.lock(&id);
            }
        }
    }
}

fn for_account(entry: &Entry, account: Option<&str>) -> bool {
    account.is_none_or(|a| entry.account.as_deref() == Some(a))
}

/// The result of one claim attempt.
#[allow(clippy::large_enum_variant)] // short-lived, never stored
enum Claimed<'a> {
    Yes(Claim<'a>),
    Busy,
    Gone,
}

/// An entry's lock, held until dropped. Dropping removes the lock file,
/// then releases the lock (by closing the file); the kernel releases it if
/// the process dies.
#[derive(Debug)]
struct IdLock {
    _file: File,
    path: PathBuf,
}

impl Drop for IdLock {
    fn drop(&mut self) {
        // Others check that the file they locked is still at the path, so
        // removing it while holding the lock is safe. Where that check is
        // not possible, the file stays.
        #[cfg(unix)]
        let _ = fs::remove_file(&self.path);
        #[cfg(not(unix))]
        let _ = &self.path;
    }
}

/// Whether `file` is the file at `path` (the same inode).
#[cfg(unix)]
fn is_file_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_file_at(_file: &File, _path: &Path) -> bool {
    true
}

/// A message being written into the outbox; see [`Outbox::begin`].
///
/// Write the message through [`Write`], then [`commit`](Self::commit).
/// Dropping it without committing removes the temporary file.
#[derive(Debug)]
pub struct Incoming {
    outbox: Outbox,
    path: PathBuf,
    /// `None` once committed.
    file: Option<BufWriter<PrivateFile>>,
}

impl Incoming {
    /// The temporary file, for re-reading what was written. Writes are
    /// buffered: [`flush`](Write::flush) first.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces everything written so far with `bytes` (e.g. the message
    /// with a `Date`, `Message-ID` or `Bcc` header added).
    pub fn replace_contents(&mut self, bytes: &[u8]) -> Result<(), OutboxError> {
        let file = self.writer()?;
        let result = file.flush().and_then(|()| {
            let inner = file.get_mut().as_file_mut();
            inner.set_len(0)?;
            inner.seek(SeekFrom::Start(0))?;
            file.write_all(bytes)
        });
        result.map_err(|source| OutboxError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn writer(&mut self) -> Result<&mut BufWriter<PrivateFile>, OutboxError> {
        self.file.as_mut().ok_or_else(|| OutboxError::Write {
            path: self.path.clone(),
            source: io::Error::other("already committed"),
        })
    }

    /// The temporary file with everything written so far, for committing.
    fn take_file(&mut self) -> Result<PrivateFile, OutboxError> {
        let error = |source| OutboxError::Write {
            path: self.path.clone(),
            source,
        };
        match self.file.take() {
            Some(writer) => writer.into_inner().map_err(|e| error(e.into_error())),
            None => Err(error(io::Error::other("already committed"))),
        }
    }

    /// Makes the message an entry, queued and due now, and returns its id.
    /// When this returns `Ok`, the message and its metadata are on disk
    /// (synced): the message is accepted.
    ///
    /// Steps: take the new id's lock; sync the temporary file and rename it
    /// to `queue/<id>.eml`; write and sync the metadata in `tmp/` and
    /// rename it to `queue/<id>.json`; sync `queue/` once (a sync shared
    /// with concurrent commits in this process, see [`files::sync_dir`]).
    /// Three syncs in all. On any error nothing is left behind.
    pub fn commit(self, meta: NewEntry) -> Result<EntryId, OutboxError> {
        self.commit_at(meta, now_unix())
    }

    fn commit_at(mut self, meta: NewEntry, now: i64) -> Result<EntryId, OutboxError> {
        let outbox = self.outbox.clone();
        // Dropped on any error below, the temporary file is removed.
        let file = self.take_file()?;
        let size = file
            .as_file()
            .metadata()
            .map_err(|source| OutboxError::Write {
                path: self.path.clone(),
                source,
            })?
            .len();

        let mut claimed = None;
        for _ in 0..ID_RETRIES {
            let id = EntryId::generate(now);
            if let Some(lock) = outbox.lock(&id)?
                && !outbox.eml_path(Place::Queue, &id).exists()
                && !outbox.json_path(Place::Queue, &id).exists()
                && !outbox.json_path(Place::Failed, &id).exists()
            {
                claimed = Some((id, lock));
                break;
            }
        }
        let Some((id, _lock)) = claimed else {
            return Err(OutboxError::Write {
                path: outbox.queue_dir(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "no free entry id"),
            });
        };

        let entry = Entry {
            id: id.clone(),
            state: EntryState::Queued,
            identity: meta.identity,
            in_flight_since: None,
            outcome_unknown: false,
            account: meta.account,
            provider: meta.provider,
            from: meta.from,
            recipients: meta.recipients,
            message_id: meta.message_id,
            size,
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            max_age_secs: meta.max_age_secs,
            retried_at: None,
            failed_reason: None,
            notes: BTreeMap::new(),
        };
        // Both files synced and renamed, the message first, then one sync
        // of queue/ (shared with concurrent commits) makes both durable.
        let eml = outbox.eml_path(Place::Queue, &id);
        let json = outbox.json_path(Place::Queue, &id);
        let placed = file
            .persist_unsynced_dir(&eml)
            .map_err(write_error)
            .and_then(|()| outbox.entry_file(Place::Queue, &entry))
            .and_then(|file| file.persist_unsynced_dir(&json).map_err(write_error))
            .and_then(|()| sync_dir(&outbox.queue_dir()));
        if let Err(e) = placed {
            // Not durable, so not accepted: remove what was placed.
            let _ = fs::remove_file(&json);
            let _ = fs::remove_file(&eml);
            let _ = sync_dir(&outbox.queue_dir());
            return Err(e);
        }
        Ok(id)
    }
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Buffered bytes are moot; dropping the file removes it.
            drop(file.into_parts());
        }
    }
}

/// A claimed entry: nobody else can claim, retry or drop it until this is
/// resolved or dropped. Dropping it unresolved leaves the entry as it was
/// (due again at once).
#[derive(Debug)]
pub struct Claim<'a> {
    outbox: &'a Outbox,
    entry: Entry,
    /// The entry's notes as they are now; written with every update.
    notes: Mutex<BTreeMap<String, String>>,
    lock: IdLock,
}

impl Claim<'_> {
    /// The entry, as read under the lock.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The message file, `queue/<id>.eml`, for streaming it.
    pub fn message_path(&self) -> PathBuf {
        self.outbox.eml_path(Place::Queue, &self.entry.id)
    }

    /// The message, exactly as accepted.
    pub fn message(&self) -> io::Result<Vec<u8>> {
        fs::read(self.message_path())
    }

    /// Durably marks the entry in flight before an attempt, so that a
    /// process dying mid-attempt leaves it [uncertain](Entry::is_uncertain).
    pub fn begin_attempt(&mut self, now: i64) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.in_flight_since = Some(now);
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// The provider accepted the message: removes the `.json` first (from
    /// then on it is no longer an entry), then the `.eml`, and syncs the
    /// directory.
    ///
    /// An error means the `.json` could not be removed, so the message
    /// will be sent again by the next flush. A crash before the removal
    /// reaches the disk has the same effect: the one at-least-once window
    /// (see the [module documentation](self)). A `.eml` that cannot be
    /// removed, or a directory that cannot be synced, is only logged: the
    /// message is no longer an entry, and [`Outbox::open`] removes a
    /// leftover `.eml` later.
    pub fn delivered(self) -> Result<(), OutboxError> {
        let id = &self.entry.id;
        remove_if_exists(&self.outbox.json_path(Place::Queue, id))?;
        let removed = remove_if_exists(&self.outbox.eml_path(Place::Queue, id));
        // Synced even if the .eml stays, so the .json's removal is durable.
        let synced = sync_dir(&self.outbox.queue_dir());
        for error in [removed.err(), synced.err()].into_iter().flatten() {
            tracing::warn!("{error}");
        }
        Ok(())
    }

    /// A temporary failure at `now`: counts the attempt, records `error`
    /// and schedules the next attempt per [`next_delay_secs`], or, if the
    /// entry is older than its maximum age, moves it to `failed/` with the
    /// reason `expired after N days: <error>`.
    pub fn retry_later(self, error: &str, now: i64) -> Result<Outcome, OutboxError> {
        self.retry_later_after(error, now, None)
    }

    /// Like [`retry_later`](Self::retry_later), but not before
    /// `retry_after` from `now` when the provider asked for that.
    pub fn retry_later_after(
        mut self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> Result<Outcome, OutboxError> {
        self.take_notes();
        let entry = &mut self.entry;
        entry.in_flight_since = None;
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_error = Some(error.to_owned());
        let age = now.saturating_sub(entry.retried_at.unwrap_or(entry.created_at));
        if age > entry.max_age_secs {
            entry.failed_reason = Some(format!("expired after {}: {error}", human_age(age)));
            self.outbox.move_to_failed(&self.lock, &self.entry)?;
            return Ok(Outcome::Expired);
        }
        let asked = retry_after.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let next_attempt_at = now.saturating_add(next_delay_secs(entry.attempts).max(asked));
        entry.state = EntryState::Queued;
        entry.next_attempt_at = next_attempt_at;
        self.outbox.write_entry(Place::Queue, &self.entry)?;
        Ok(Outcome::Rescheduled { next_attempt_at })
    }

    /// An authorization failure: counts the attempt, records `error` and
    /// holds the entry (it stays in the queue but is not due) until
    /// [`Outbox::release_held`] or [`Outbox::retry`].
    pub fn hold(mut self, error: &str) -> Result<(), OutboxError> {
        self.entry.in_flight_since = None;
        self.take_notes();
        self.entry.attempts = self.entry.attempts.saturating_add(1);
        self.entry.last_error = Some(error.to_owned());
        self.entry.state = EntryState::Held;
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// An attempt whose outcome is unknown (`error`): records it, marks the
    /// entry [uncertain](Entry::is_uncertain), and holds it for the user
    /// (`hold`) or schedules it like [`retry_later`](Self::retry_later).
    pub fn uncertain(mut self, error: &str, now: i64, hold: bool) -> Result<Outcome, OutboxError> {
        self.entry.outcome_unknown = true;
        if !hold {
            return self.retry_later(error, now);
        }
        self.hold(error)?;
        Ok(Outcome::Held)
    }

    /// Holds an entry without counting an attempt: its sender cannot be
    /// resolved now (`reason` says why).
    pub fn hold_unsent(mut self, reason: &str) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.last_error = Some(reason.to_owned());
        self.entry.state = EntryState::Held;
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// A permanent failure: counts the attempt and moves the entry to
    /// `failed/` with `reason`.
    pub fn fail(mut self, reason: &str) -> Result<(), OutboxError> {
        self.entry.in_flight_since = None;
        self.take_notes();
        self.entry.attempts = self.entry.attempts.saturating_add(1);
        self.entry.failed_reason = Some(reason.to_owned());
        self.outbox.move_to_failed(&self.lock, &self.entry)
    }

    /// The notes as they are now, into the entry about to be written.
    fn take_notes(&mut self) {
        if let Ok(notes) = self.notes.get_mut() {
            self.entry.notes = notes.clone();
        }
    }
}

/// The transport's notes live in the entry's `.json`; each change rewrites
/// it atomically (fsync, rename) before returning.
impl DeliveryNotes for Claim<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.notes.lock().ok()?.get(key).cloned()
    }

    fn set(&self, key: &str, value: Option<&str>) -> io::Result<()> {
        let mut notes = self
            .notes
            .lock()
            .map_err(|_| io::Error::other("the notes' lock is poisoned"))?;
        let mut changed = notes.clone();
        match value {
            Some(value) => changed.insert(key.to_owned(), value.to_owned()),
            None => changed.remove(key),
        };
        let mut entry = self.entry.clone();
        entry.notes = changed.clone();
        self.outbox
            .write_entry(Place::Queue, &entry)
            .map_err(io::Error::other)?;
        *notes = changed;
        Ok(())
    }
}

/// `5 days`, `1 hour`, `30 minutes`.
fn human_age(secs: i64) -> String {
    let (n, unit) = match secs {
        86_400.. => (secs / 86_400, "day"),
        3600.. => (secs / 3600, "hour"),
        60.. => (secs / 60, "minute"),
        _ => (secs.max(0), "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Creates `dir` (and missing parents) with mode 0700 and makes sure it is
/// private even if it existed.
fn create_private_dir(dir: &Path) -> Result<(), OutboxError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|source| OutboxError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    make_private(dir, 0o700)
}

/// Sets `path`'s mode to `mode` unless it already is.
#[cfg(unix)]
fn make_private(path: &Path, mode: u32) -> Result<(), OutboxError> {
    use std::os::unix::fs::PermissionsExt;
    let error = |source| OutboxError::Permissions {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(error)?;
    if metadata.permissions().mode() & 0o777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(error)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path, _mode: u32) -> Result<(), OutboxError> {
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), OutboxError> {
    fs::rename(from, to).map_err(|source| OutboxError::Move {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

/// Removes `path`; `false` if it did not exist.
fn remove_if_exists(path: &Path) -> Result<bool, OutboxError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(OutboxError::Delete {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a file that is no longer part of any entry, and syncs `dir`;
/// failures are only logged (`open` tries again later).
fn remove_leftover(path: &Path, dir: &Path) {
    if let Err(error) = remove_if_exists(path).and_then(|_| sync_dir(dir)) {
        tracing::warn!("{error}");
    }
}

/// The names of the files in `dir` (empty if it does not exist).
fn file_names(dir: &Path) -> Result<Vec<String>, OutboxError> {
    let error = |source| OutboxError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(error(source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry.map_err(error)?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// [`files::sync_dir`] with the outbox's error.
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    files::sync_dir(dir).map_err(|source| OutboxError::Sync {
        path: dir.to_owned(),
        source,
    })
}

/// A failed atomic write as the outbox reports it.
fn write_error(error: WriteError) -> OutboxError {
    match error {
        WriteError::Create { dir: path, source } | WriteError::Write { path, source } => {
            OutboxError::Write { path, source }
        }
        WriteError::Rename { from, to, source } => OutboxError::Move { from, to, source },
        WriteError::Sync { dir, source } => OutboxError::Sync { path: dir, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::testing::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier, Mutex};

    const MESSAGE: &[u8] =
        b"From: ops@example.com\r\nTo: oncall@example.com\r\nSubject: disk\r\n\r\n/var is at 93%\r\n";

    fn meta(account: Option<&str>) -> NewEntry {
        NewEntry {
            identity: account.map(SenderIdentity::account),
            account: account.map(str::to_owned),
            provider: Some("graph".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec!["oncall@example.com".to_owned()],
            message_id: "<1.abc@example.com>".to_owned(),
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Outbox {
        Outbox::open(dir.path().join("outbox")).unwrap()
    }

    fn entry_files(id: &EntryId) -> Vec<String> {
        vec![format!("{id}.eml"), format!("{id}.json")]
    }

    fn set_old(path: &Path) {
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }

    #[test]
    fn the_retry_schedule() {
        let minutes: Vec<i64> = (0..=9).map(|a| next_delay_secs(a) / 60).collect();
        assert_eq!(minutes, [1, 1, 2, 4, 8, 15, 30, 60, 60, 60]);
        assert_eq!(next_delay_secs(u32::MAX), 3600);
    }

    #[test]
    fn ids_are_valid_and_sort_by_creation_time() {
        let id = EntryId::generate(1_795_256_100);
        assert!(id.as_str().starts_with("20261121T101500-"), "{id}");
        assert_eq!(id.as_str().len(), 28);
        assert_eq!(id.to_string().parse::<EntryId>().unwrap(), id);
        assert!(
            EntryId::generate(0)
                .as_str()
                .starts_with("19700101T000000-")
        );
        assert!(
            EntryId::generate(951_868_799)
                .as_str()
                .starts_with("20000229T235959-")
        );
        assert!(
            EntryId::generate(-5)
                .as_str()
                .starts_with("19700101T000000-")
        );
        assert!(
            EntryId::generate(i64::MAX)
                .as_str()
                .starts_with("99991231T235959-")
        );
        assert_ne!(EntryId::generate(0), EntryId::generate(0), "random part");

        let times = [
            0,
            59,
            60,
            3600,
            86_399,
            86_400,
            951_868_799,
            951_868_800,
            1_795_256_100,
            4_102_444_799,
            4_102_444_800,
        ];
        let ids: Vec<EntryId> = times.iter().map(|&t| EntryId::generate(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);

        for bad in [
            "",
            "20261121T101500-3f9a0c1b2d4",
            "20261121T101500-3f9a0c1b2d4e0",
            "20261121T101500-3F9A0C1B2D4E",
            "20261121t101500-3f9a0c1b2d4e",
            "20261121T101500_3f9a0c1b2d4e",
            "2026112xT101500-3f9a0c1b2d4e",
            "../../../../etc/passwd-aaaaa",
            "20261121T101500-3f9a0c1b2d/e",
        ] {
            let error = bad.parse::<EntryId>().unwrap_err();
            assert!(matches!(error, OutboxError::InvalidId { .. }), "{bad:?}");
        }
        assert!("20261121T101500-3f9a0c1b2d4e".parse::<EntryId>().is_ok());
        assert!(serde_json::from_str::<EntryId>("\"../x\"").is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{id}\""),
            "serialized as a plain string"
        );
    }

    #[test]
    fn accept_list_get_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(outbox.summary().unwrap(), Summary::default());

        let now = now_unix();
        let second = outbox
            .accept_at(b"second", meta(Some("work")), now)
            .unwrap();
        let first = outbox.accept_at(MESSAGE, meta(None), now - 100).unwrap();
        let list = outbox.list().unwrap();
        let ids: Vec<&EntryId> = list.iter().map(|e| &e.id).collect();
        assert_eq!(ids, [&first, &second], "oldest first");

        let entry = outbox.get(first.as_str()).unwrap().unwrap();
        assert_eq!(entry, list[0]);
        assert_eq!(entry.state, EntryState::Queued);
        assert_eq!(entry.account, None);
        assert_eq!(entry.provider.as_deref(), Some("graph"));
        assert_eq!(entry.from, "ops@example.com");
        assert_eq!(entry.recipients, ["oncall@example.com"]);
        assert_eq!(entry.message_id, "<1.abc@example.com>");
        assert_eq!(entry.size, MESSAGE.len() as u64);
        assert_eq!(entry.created_at, now - 100);
        assert_eq!(entry.next_attempt_at, now - 100, "due at once");
        assert_eq!(entry.attempts, 0);
        assert_eq!(entry.max_age_secs, DEFAULT_MAX_AGE_SECS);
        assert!(entry.is_due(now) && !entry.is_failed());
        assert_eq!(entry.expires_at(), now - 100 + DEFAULT_MAX_AGE_SECS);
        assert_eq!(
            outbox.read_message(first.as_str()).unwrap().unwrap(),
            MESSAGE
        );

        assert_eq!(
            outbox.summary().unwrap(),
            Summary {
                queued: 2,
                held: 0,
                failed: 0,
                oldest_created_at: Some(now - 100),
                unreadable: 0,
            }
        );
        let due: Vec<EntryId> = outbox
            .due(now, Some("work"))
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(due, std::slice::from_ref(&second));
        assert_eq!(outbox.due(now, None).unwrap().len(), 2);
        assert!(outbox.due(now - 101, None).unwrap().is_empty());

        let unknown = EntryId::generate(now);
        assert!(outbox.get(unknown.as_str()).unwrap().is_none());
        assert!(outbox.read_message(unknown.as_str()).unwrap().is_none());
        let error = outbox.get("../queue/x").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`../queue/x` is not an outbox entry id")
        );

        let mut files = entry_files(&first);
        files.extend(entry_files(&second));
        files.sort();
        assert_eq!(names(&outbox.dir().join("queue")), files);
        assert!(names(&outbox.dir().join("tmp")).is_empty());
        assert!(names(&outbox.dir().join("locks")).is_empty());
        assert_eq!(names(outbox.dir()), ["failed", "locks", "queue", "tmp"]);

        // Small, human-readable metadata.
        let json = fs::read_to_string(outbox.json_path(Place::Queue, &first)).unwrap();
        assert!(json.contains("\n  \"state\": \"queued\",\n"), "{json}");
        assert!(json.contains(&format!("\"id\": \"{first}\"")), "{json}");
        assert!(json.ends_with("}\n"));
    }

    #[test]
    fn a_streamed_message_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let mut incoming = outbox.begin().unwrap();
        let temp = incoming.path().to_owned();
        assert!(temp.starts_with(outbox.dir().join("tmp")));
        incoming.write_all(b"Subject: x\r\n").unwrap();
        incoming.write_all(b"\r\nbody\r\n").unwrap();
        incoming.flush().unwrap();
        assert_eq!(fs::read(&temp).unwrap(), b"Subject: x\r\n\r\nbody\r\n");

        // The caller patches the headers, then keeps streaming.
        incoming
            .replace_contents(b"Date: Sat, 21 Nov 2026 10:15:00 +0000\r\nSubject: x\r\n\r\n")
            .unwrap();
        write!(incoming, "body {}\r\n", 2).unwrap();
        let id = incoming.commit(meta(Some("work"))).unwrap();

        let expected: &[u8] =
            b"Date: Sat, 21 Nov 2026 10:15:00 +0000\r\nSubject: x\r\n\r\nbody 2\r\n";
        assert_eq!(outbox.read_message(id.as_str()).unwrap().unwrap(), expected);
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        assert_eq!(entry.size, expected.len() as u64);
        assert!(!temp.exists());
        assert!(names(&outbox.dir().join("tmp")).is_empty());
        assert!(names(&outbox.dir().join("locks")).is_empty());
        assert_eq!(names(&outbox.dir().join("queue")), entry_files(&id));
    }

    #[test]
    fn an_uncommitted_incoming_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let mut incoming = outbox.begin().unwrap();
        incoming.write_all(&[b'x'; 100_000]).unwrap();
        let temp = incoming.path().to_owned();
        assert!(temp.exists());
        drop(incoming);
        assert!(!temp.exists());
        for sub in ["tmp", "queue", "failed", "locks"] {
            assert!(names(&outbox.dir().join(sub)).is_empty(), "{sub}");
        }
        assert_eq!(outbox.summary().unwrap(), Summary::default());
    }

    #[test]
    fn a_claim_is_exclusive_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        let id = a.accept(MESSAGE, meta(None)).unwrap();
        let claim = a.claim(&id).unwrap().unwrap();
        assert_eq!(claim.entry().id, id);
        assert_eq!(claim.message().unwrap(), MESSAGE);
        assert_eq!(claim.message_path(), a.eml_path(Place::Queue, &id));

        // Another `Outbox` value on another thread: its own lock file
        // handle, like another process.
        std::thread::scope(|s| {
            s.spawn(|| {
                let b = open(&dir);
                assert!(b.claim(&id).unwrap().is_none(), "held by a");
                assert!(b.claim(&id).unwrap().is_none(), "still held by a");
                let busy = b.drop_entry(id.as_str()).unwrap_err();
                assert!(matches!(busy, OutboxError::Busy { .. }), "{busy}");
                assert!(busy.to_string().contains("is being sent"), "{busy}");
                let busy = b.retry(id.as_str()).unwrap_err();
                assert!(matches!(busy, OutboxError::Busy { .. }), "{busy}");
            })
            .join()
            .unwrap();
        });

        // Dropping a claim leaves the entry as it was.
        drop(claim);
        assert!(names(&a.dir().join("locks")).is_empty());
        let b = open(&dir);
        let claim = b.claim(&id).unwrap().unwrap();
        assert_eq!(claim.entry().attempts, 0);
        assert!(a.claim(&id).unwrap().is_none());
    }

    #[test]
    fn a_claimer_that_waited_finds_the_entry_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        let id = a.accept(MESSAGE, meta(None)).unwrap();
        let b = open(&dir);
        let stale = b.due(now_unix(), None).unwrap();
        assert_eq!(stale.len(), 1);

        let claim = a.claim(&id).unwrap().unwrap();
        let started = Barrier::new(2);
        let result = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let b = open(&dir);
                started.wait();
                loop {
                    match b.try_claim(&id).unwrap() {
                        Claimed::Busy => std::thread::sleep(Duration::from_millis(2)),
                        Claimed::Gone => return "gone",
                        Claimed::Yes(_) => return "claimed",
                    }
                }
            });
            started.wait();
            std::thread::sleep(Duration::from_millis(100));
            claim.delivered().unwrap();
            waiter.join().unwrap()
        });
        assert_eq!(result, "gone", "re-read under the lock");
        assert!(b.claim(&stale[0].id).unwrap().is_none());
        assert!(a.get(id.as_str()).unwrap().is_none());
        for sub in ["tmp", "queue", "failed", "locks"] {
            assert!(names(&a.dir().join(sub)).is_empty(), "{sub}");
        }
    }

    #[test]
    fn retry_later_follows_the_schedule_then_expires() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let t0 = 1_795_256_100;
        let id = outbox.accept_at(MESSAGE, meta(None), t0).unwrap();

        let claim = outbox.claim_due(&id, t0 + 10).unwrap().unwrap();
        let outcome = claim.retry_later("server busy (503)", t0 + 10).unwrap();
        assert_eq!(
            outcome,
            Outcome::Rescheduled {
                next_attempt_at: t0 + 70
            }
        );
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        assert_eq!(entry.attempts, 1);
        assert_eq!(entry.next_attempt_at, t0 + 70);
        assert_eq!(entry.last_error.as_deref(), Some("server busy (503)"));
        assert!(outbox.due(t0 + 69, None).unwrap().is_empty());
        assert!(outbox.claim_due(&id, t0 + 69).unwrap().is_none(), "not due");
        assert_eq!(outbox.due(t0 + 70, None).unwrap().len(), 1);

        let claim = outbox.claim_due(&id, t0 + 70).unwrap().unwrap();
        let outcome = claim.retry_later("timeout", t0 + 70).unwrap();
        assert_eq!(
            outcome,
            Outcome::Rescheduled {
                next_attempt_at: t0 + 70 + 120
            }
        );

        // Past the maximum age: moved to failed/.
        let late = t0 + DEFAULT_MAX_AGE_SECS + 1;
        let claim = outbox.claim_due(&id, late).unwrap().unwrap();
        assert_eq!(
            claim.retry_later("still busy", late).unwrap(),
            Outcome::Expired
        );
        assert!(outbox.list().unwrap().is_empty());
        let failed = outbox.list_failed().unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].failed_reason.as_deref(),
            Some("expired after 5 days: still busy")
        );
        assert_eq!(failed[0].last_error.as_deref(), Some("still busy"));
        assert_eq!(failed[0].attempts, 3);
        assert!(failed[0].is_failed() && !failed[0].is_due(late));
        assert!(names(&outbox.dir().join("queue")).is_empty());
        assert_eq!(names(&outbox.dir().join("failed")), entry_files(&id));
        assert!(names(&outbox.dir().join("tmp")).is_empty());
        assert!(names(&outbox.dir().join("locks")).is_empty());
        assert_eq!(outbox.read_message(id.as_str()).unwrap().unwrap(), MESSAGE);
        assert_eq!(outbox.summary().unwrap().failed, 1);
        assert!(
            outbox.claim(&id).unwrap().is_none(),
            "failed is not claimable"
        );

        // A short maximum age reads in hours.
        let short = NewEntry {
            max_age_secs: 3600,
            ..meta(None)
        };
        let id = outbox.accept_at(MESSAGE, short, t0).unwrap();
        let claim = outbox.claim(&id).unwrap().unwrap();
        assert_eq!(
            claim.retry_later("503", t0 + 7300).unwrap(),
            Outcome::Expired
        );
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        assert_eq!(
            entry.failed_reason.as_deref(),
            Some("expired after 2 hours: 503")
        );
    }

    #[test]
    fn held_entries_wait_for_release() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let now = now_unix();
        let work = outbox
            .accept_at(MESSAGE, meta(Some("work")), now - 10)
            .unwrap();
        let home = outbox
            .accept_at(MESSAGE, meta(Some("home")), now - 5)
            .unwrap();

        let claim = outbox.claim(&work).unwrap().unwrap();
        claim
            .hold("the authorization has expired (invalid_grant)")
            .unwrap();
        let entry = outbox.get(work.as_str()).unwrap().unwrap();
        assert_eq!(entry.state, EntryState::Held);
        assert_eq!(entry.attempts, 1);
        assert!(!entry.is_due(now + 1_000_000), "held is never due");
        let due: Vec<EntryId> = outbox
            .due(now, None)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(due, std::slice::from_ref(&home));
        let summary = outbox.summary().unwrap();
        assert_eq!((summary.queued, summary.held), (1, 1));
        assert_eq!(summary.oldest_created_at, Some(now - 10), "held counts");
        assert_eq!(outbox.list().unwrap().len(), 2, "held entries are listed");

        assert_eq!(outbox.release_held(Some("home")).unwrap(), 0);
        assert_eq!(outbox.release_held(Some("work")).unwrap(), 1);
        let entry = outbox.get(work.as_str()).unwrap().unwrap();
        assert_eq!(entry.state, EntryState::Queued);
        assert!(entry.is_due(now_unix()));
        assert_eq!(outbox.release_held(None).unwrap(), 0);

        // Held by another process's claim: skipped, not an error.
        outbox.claim(&home).unwrap().unwrap().hold("401").unwrap();
        let other = open(&dir);
        let busy = other.claim(&home).unwrap().unwrap();
        assert_eq!(outbox.release_held(None).unwrap(), 0);
        drop(busy);
        assert_eq!(outbox.release_held(None).unwrap(), 1);

        // `retry` releases a held entry too.
        outbox.claim(&home).unwrap().unwrap().hold("401").unwrap();
        assert!(outbox.retry(home.as_str()).unwrap());
        assert!(
            outbox
                .get(home.as_str())
                .unwrap()
                .unwrap()
                .is_due(now_unix())
        );
    }

    #[test]
    fn fail_then_retry_from_failed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let t0 = now_unix() - DEFAULT_MAX_AGE_SECS - 100;
        let id = outbox.accept_at(MESSAGE, meta(None), t0).unwrap();
        let claim = outbox.claim(&id).unwrap().unwrap();
        claim.fail("550 5.7.1 recipient rejected").unwrap();

        assert!(outbox.list().unwrap().is_empty());
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        assert!(entry.is_failed());
        assert_eq!(
            entry.failed_reason.as_deref(),
            Some("550 5.7.1 recipient rejected")
        );
        assert_eq!(entry.attempts, 1);
        assert_eq!(outbox.list_failed().unwrap(), [entry]);
        assert_eq!(names(&outbox.dir().join("failed")), entry_files(&id));
        assert!(names(&outbox.dir().join("queue")).is_empty());

        assert!(outbox.retry(id.as_str()).unwrap());
        assert!(outbox.list_failed().unwrap().is_empty());
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        let now = now_unix();
        assert_eq!(entry.state, EntryState::Queued);
        assert_eq!(entry.attempts, 0, "attempts reset");
        assert_eq!(entry.failed_reason, None);
        assert!(entry.retried_at.is_some_and(|at| at >= now - 5));
        assert!(entry.is_due(now));
        assert_eq!(entry.created_at, t0, "still the acceptance time");
        assert_eq!(names(&outbox.dir().join("queue")), entry_files(&id));
        assert!(names(&outbox.dir().join("failed")).is_empty());
        assert_eq!(outbox.read_message(id.as_str()).unwrap().unwrap(), MESSAGE);

        // The maximum age counts from the retry, so an old message gets
        // its retries again.
        let claim = outbox.claim_due(&id, now).unwrap().unwrap();
        assert!(matches!(
            claim.retry_later("503", now).unwrap(),
            Outcome::Rescheduled { .. }
        ));

        // A queued entry: due now.
        assert!(outbox.retry(id.as_str()).unwrap());
        assert!(outbox.get(id.as_str()).unwrap().unwrap().is_due(now_unix()));
        assert!(!outbox.retry(EntryId::generate(now).as_str()).unwrap());
        assert!(matches!(
            outbox.retry("nonsense"),
            Err(OutboxError::InvalidId { .. })
        ));
    }

    #[test]
    fn drop_entry_refuses_while_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let queued = outbox.accept(MESSAGE, meta(None)).unwrap();
        let failed = outbox.accept(MESSAGE, meta(None)).unwrap();
        outbox
            .claim(&failed)
            .unwrap()
            .unwrap()
            .fail("rejected")
            .unwrap();

        let claim = outbox.claim(&queued).unwrap().unwrap();
        let other = open(&dir);
        assert!(matches!(
            other.drop_entry(queued.as_str()),
            Err(OutboxError::Busy { .. })
        ));
        assert!(other.get(queued.as_str()).unwrap().is_some());
        drop(claim);

        assert!(other.drop_entry(queued.as_str()).unwrap());
        assert!(!other.drop_entry(queued.as_str()).unwrap());
        assert!(other.drop_entry(failed.as_str()).unwrap());
        assert!(!other.drop_entry(EntryId::generate(0).as_str()).unwrap());
        for sub in ["tmp", "queue", "failed", "locks"] {
            assert!(names(&outbox.dir().join(sub)).is_empty(), "{sub}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data/outbox");
        fs::create_dir_all(root.join("queue")).unwrap();
        for path in [&root, &root.join("queue")] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let outbox = Outbox::open(&root).unwrap();
        Outbox::open(dir.path().join("fresh/outbox")).unwrap();
        assert_eq!(
            mode(&dir.path().join("fresh")),
            0o700,
            "created parents too"
        );
        for sub in ["", "tmp", "queue", "failed", "locks"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
        }

        let incoming = outbox.begin().unwrap();
        assert_eq!(mode(incoming.path()), 0o600);
        drop(incoming);

        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        assert_eq!(mode(&outbox.eml_path(Place::Queue, &id)), 0o600);
        assert_eq!(mode(&outbox.json_path(Place::Queue, &id)), 0o600);
        let claim = outbox.claim(&id).unwrap().unwrap();
        assert_eq!(mode(&root.join(format!("locks/{id}.lock"))), 0o600);
        claim.retry_later("503", now_unix()).unwrap();
        assert_eq!(mode(&outbox.json_path(Place::Queue, &id)), 0o600);
        outbox
            .claim(&id)
            .unwrap()
            .unwrap()
            .fail("rejected")
            .unwrap();
        assert_eq!(mode(&outbox.eml_path(Place::Failed, &id)), 0o600);
        assert_eq!(mode(&outbox.json_path(Place::Failed, &id)), 0o600);
    }

    #[test]
    fn concurrent_flushes_deliver_each_entry_exactly_once() {
        const ENTRIES: usize = 20;
        const THREADS: usize = 4;
        for _round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("outbox");
            let outbox = Outbox::open(&root).unwrap();
            for _ in 0..ENTRIES {
                outbox.accept(MESSAGE, meta(None)).unwrap();
            }
            let delivered = Arc::new(Mutex::new(HashSet::new()));
            let barrier = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let root = root.clone();
                    let delivered = delivered.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        // Its own value and lock file handles, like a process.
                        let outbox = Outbox::open(root).unwrap();
                        barrier.wait();
                        let mut mine = 0;
                        loop {
                            let now = now_unix();
                            let due = outbox.due(now, None).unwrap();
                            if due.is_empty() {
                                return mine;
                            }
                            for entry in due {
                                let Some(claim) = outbox.claim_due(&entry.id, now).unwrap() else {
                                    continue;
                                };
                                assert_eq!(claim.message().unwrap(), MESSAGE);
                                let fresh = delivered.lock().unwrap().insert(entry.id.clone());
                                assert!(fresh, "{} sent twice", entry.id);
                                claim.delivered().unwrap();
                                mine += 1;
                            }
                        }
                    })
                })
                .collect();
            let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(total, ENTRIES);
            assert_eq!(delivered.lock().unwrap().len(), ENTRIES);
            for sub in ["tmp", "queue", "failed", "locks"] {
                assert!(names(&root.join(sub)).is_empty(), "{sub}");
            }
        }
    }

    #[test]
    fn concurrent_accepts_and_flushes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("outbox");
        Outbox::open(&root).unwrap();
        let delivered = Arc::new(Mutex::new(HashSet::new()));
        let accepted = Arc::new(Mutex::new(HashSet::new()));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..10 {
                        // `open` cleans up while others commit and send.
                        let outbox = Outbox::open(&root).unwrap();
                        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
                        accepted.lock().unwrap().insert(id);
                    }
                });
                s.spawn(|| {
                    let outbox = Outbox::open(&root).unwrap();
                    for _ in 0..50 {
                        for entry in outbox.due(now_unix(), None).unwrap() {
                            if let Some(claim) = outbox.claim(&entry.id).unwrap() {
                                assert_eq!(claim.message().unwrap(), MESSAGE);
                                assert!(delivered.lock().unwrap().insert(entry.id));
                                claim.delivered().unwrap();
                            }
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
            }
        });
        let outbox = Outbox::open(&root).unwrap();
        let delivered = delivered.lock().unwrap();
        let accepted = accepted.lock().unwrap();
        for entry in outbox.list().unwrap() {
            assert!(!delivered.contains(&entry.id), "delivered yet queued");
            assert!(accepted.contains(&entry.id));
        }
        assert_eq!(
            delivered.len() + outbox.list().unwrap().len(),
            accepted.len(),
            "every accepted message is delivered or queued"
        );
    }

    #[test]
    fn open_cleans_up_after_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();
        let entry = outbox.accept(MESSAGE, meta(None)).unwrap();

        // Junk in tmp/: old goes, recent stays, an old one in use stays.
        fs::write(root.join("tmp/x.json.1-2-3.tmp"), b"{").unwrap();
        set_old(&root.join("tmp/x.json.1-2-3.tmp"));
        fs::write(root.join("tmp/y.json.1-2-3.tmp"), b"{").unwrap();
        let mut slow = outbox.begin().unwrap();
        slow.write_all(b"Subject: slow\r\n").unwrap();
        slow.flush().unwrap();
        set_old(slow.path());

        // A crash between the message's rename and the metadata's.
        let orphan = EntryId::generate(now_unix() - 10);
        fs::write(root.join(format!("queue/{orphan}.eml")), MESSAGE).unwrap();
        // A commit in progress: locked, so left alone.
        let committing = EntryId::generate(now_unix());
        fs::write(root.join(format!("queue/{committing}.eml")), MESSAGE).unwrap();
        let commit_lock = outbox.lock(&committing).unwrap().unwrap();
        // A crash after linking the message into failed/.
        let half_failed = EntryId::generate(now_unix() - 20);
        fs::write(root.join(format!("failed/{half_failed}.eml")), MESSAGE).unwrap();
        // A crash's lock file, and strays that are not ours.
        let dead = EntryId::generate(now_unix() - 30);
        fs::write(root.join(format!("locks/{dead}.lock")), b"").unwrap();
        fs::write(root.join("queue/README"), b"not ours").unwrap();

        let reopened = open(&dir);
        let mut tmp = names(&root.join("tmp"));
        tmp.retain(|n| !n.starts_with(".incoming."));
        assert_eq!(tmp, ["y.json.1-2-3.tmp"]);
        assert!(slow.path().exists(), "in use");
        let mut queue = entry_files(&entry);
        queue.push(format!("{committing}.eml"));
        queue.push("README".to_owned());
        queue.sort();
        assert_eq!(names(&root.join("queue")), queue);
        assert!(names(&root.join("failed")).is_empty());
        assert_eq!(names(&root.join("locks")), [format!("{committing}.lock")]);
        assert_eq!(reopened.list().unwrap().len(), 1);

        drop(commit_lock);
        let slow_path = slow.path().to_owned();
        drop(slow);
        assert!(!slow_path.exists());
        open(&dir);
        assert_eq!(names(&root.join("queue")), {
            let mut files = entry_files(&entry);
            files.push("README".to_owned());
            files.sort();
            files
        });
    }

    /// A commit's renames are made durable by one directory sync; a crash
    /// before it may keep the metadata without the message. That entry was
    /// never acknowledged: `open` removes it. An entry that was attempted
    /// is kept, even without its message.
    #[test]
    fn open_removes_metadata_whose_commit_was_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();
        let kept = outbox.accept(MESSAGE, meta(None)).unwrap();
        let cut_short = outbox.accept(MESSAGE, meta(None)).unwrap();
        let attempted = outbox.accept(MESSAGE, meta(None)).unwrap();
        outbox
            .claim(&attempted)
            .unwrap()
            .unwrap()
            .begin_attempt(now_unix())
            .unwrap();
        for id in [&cut_short, &attempted] {
            fs::remove_file(root.join(format!("queue/{id}.eml"))).unwrap();
        }
        // One being committed right now (locked) is left alone.
        let committing = outbox.accept(MESSAGE, meta(None)).unwrap();
        fs::remove_file(root.join(format!("queue/{committing}.eml"))).unwrap();
        let commit_lock = outbox.lock(&committing).unwrap().unwrap();

        let reopened = open(&dir);
        let mut ids: Vec<EntryId> = reopened.list().unwrap().into_iter().map(|e| e.id).collect();
        ids.sort();
        let mut expected = vec![kept.clone(), attempted.clone(), committing.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        assert!(!root.join(format!("queue/{cut_short}.json")).exists());
        assert!(root.join(format!("queue/{kept}.eml")).exists());
        drop(commit_lock);
    }

    #[test]
    fn interrupted_moves_are_finished_or_visible() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();

        // fail() cut short after step 2: message linked into failed/,
        // reason written, .json not yet moved.
        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        let mut entry = outbox.get(id.as_str()).unwrap().unwrap();
        entry.failed_reason = Some("rejected".to_owned());
        fs::hard_link(
            outbox.eml_path(Place::Queue, &id),
            outbox.eml_path(Place::Failed, &id),
        )
        .unwrap();
        outbox.write_entry(Place::Queue, &entry).unwrap();
        assert!(outbox.due(now_unix(), None).unwrap().is_empty(), "not sent");
        assert!(outbox.claim(&id).unwrap().is_none(), "claim finishes it");
        assert_eq!(names(&root.join("failed")), entry_files(&id));
        assert!(names(&root.join("queue")).is_empty());

        // The same, finished by `open`.
        let id2 = outbox.accept(MESSAGE, meta(None)).unwrap();
        let mut entry2 = outbox.get(id2.as_str()).unwrap().unwrap();
        entry2.failed_reason = Some("rejected".to_owned());
        outbox.write_entry(Place::Queue, &entry2).unwrap();
        open(&dir);
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(outbox.list_failed().unwrap().len(), 2);
        assert_eq!(outbox.read_message(id2.as_str()).unwrap().unwrap(), MESSAGE);

        // retry() cut short after rewriting the failed .json.
        let mut entry = outbox.get(id.as_str()).unwrap().unwrap();
        entry.failed_reason = None;
        outbox.write_entry(Place::Failed, &entry).unwrap();
        let listed = outbox.get(id.as_str()).unwrap().unwrap();
        assert!(listed.is_failed(), "still shown as failed");
        assert!(outbox.retry(id.as_str()).unwrap());
        assert!(outbox.get(id.as_str()).unwrap().unwrap().is_due(now_unix()));
    }

    #[test]
    fn errors_name_the_file_but_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let id = outbox
            .accept(
                MESSAGE,
                NewEntry {
                    recipients: vec!["private-person@example.com".to_owned()],
                    ..meta(None)
                },
            )
            .unwrap();
        let good = outbox.accept(MESSAGE, meta(None)).unwrap();
        let path = outbox.json_path(Place::Queue, &id);
        let json = fs::read_to_string(&path).unwrap();
        // A type error serde_json would describe by quoting the value, and
        // a truncation right after it.
        let bad_type = json.replace(
            "\"attempts\": 0",
            "\"attempts\": \"private-person@example.com\"",
        );
        assert_ne!(bad_type, json);
        let cut = &json[..json.find("private-person").unwrap() + 10];
        for broken in [bad_type.as_str(), cut] {
            fs::write(&path, broken).unwrap();
            let error = outbox.get(id.as_str()).unwrap_err();
            assert!(matches!(error, OutboxError::Parse { .. }), "{error}");
            let said = format!("{error} {error:?}");
            assert!(said.contains(&format!("{id}.json")), "{said}");
            assert!(!said.contains("private-person"), "{said}");
            assert!(outbox.claim(&id).is_err());

            // The rest of the queue is unaffected.
            let listed: Vec<EntryId> = outbox.list().unwrap().into_iter().map(|e| e.id).collect();
            assert_eq!(listed, std::slice::from_ref(&good));
            assert_eq!(outbox.summary().unwrap().unreadable, 1);
        }
        // `drop` still removes it.
        assert!(outbox.drop_entry(id.as_str()).unwrap());
        assert_eq!(outbox.summary().unwrap().unreadable, 0);
    }

    const CRASH_CHILD_VAR: &str = "APIMAIL_OUTBOX_CRASH_CHILD";

    fn big_message() -> Vec<u8> {
        let mut message = b"Subject: big\r\n\r\n".to_vec();
        message.extend((0..200_000u32).map(|i| b'a' + (i % 26) as u8));
        message
    }

    /// Run by `survives_kill_9`: works the outbox in a loop until killed,
    /// logging ids it was told are accepted and ids it is about to mark
    /// delivered.
    #[test]
    #[ignore = "run by survives_kill_9"]
    fn crash_child() {
        let Some(root) = std::env::var_os(CRASH_CHILD_VAR) else {
            return;
        };
        let root = PathBuf::from(root);
        let outbox = Outbox::open(root.join("outbox")).unwrap();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("log"))
            .unwrap();
        let message = big_message();
        for n in 0u64.. {
            let id = outbox.accept(&message, meta(Some("work"))).unwrap();
            log.write_all(format!("accepted {id}\n").as_bytes())
                .unwrap();
            let claim = outbox.claim(&id).unwrap().unwrap();
            match n % 4 {
                0 => {
                    log.write_all(format!("delivering {id}\n").as_bytes())
                        .unwrap();
                    claim.delivered().unwrap();
                }
                1 => {
                    claim.retry_later("503", now_unix()).unwrap();
                }
                2 => {
                    claim.fail("rejected").unwrap();
                    outbox.retry(id.as_str()).unwrap();
                    let claim = outbox.claim(&id).unwrap().unwrap();
                    claim.fail("rejected again").unwrap();
                }
                _ => {
                    claim.hold("401").unwrap();
                    outbox.release_held(None).unwrap();
                }
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn survives_kill_9() {
        let message = big_message();
        for round in 0..6u64 {
            let dir = tempfile::tempdir().unwrap();
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "outbox::tests::crash_child", "--ignored", "-q"])
                .env(CRASH_CHILD_VAR, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let jitter = getrandom::u64().unwrap_or(round) % 150;
            std::thread::sleep(Duration::from_millis(100 + jitter));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();

            let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
            let log = fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            let mut accepted = HashSet::new();
            let mut delivering = HashSet::new();
            for line in log.lines() {
                match line.split_once(' ') {
                    Some(("accepted", id)) => accepted.insert(id.to_owned()),
                    Some(("delivering", id)) => delivering.insert(id.to_owned()),
                    _ => panic!("torn log line {line:?}"),
                };
            }
            assert!(!accepted.is_empty(), "the child got going");

            let queued = outbox.list().unwrap();
            let failed = outbox.list_failed().unwrap();
            assert_eq!(outbox.summary().unwrap().unreadable, 0);
            for entry in queued.iter().chain(&failed) {
                let id = entry.id.as_str();
                assert_eq!(entry.size, message.len() as u64, "{id}");
                assert_eq!(outbox.read_message(id).unwrap().unwrap(), message, "{id}");
            }
            assert!(queued.iter().all(|e| e.failed_reason.is_none()));
            // Every accepted message is still there, unless delivered.
            let present: HashSet<String> = queued
                .iter()
                .chain(&failed)
                .map(|e| e.id.to_string())
                .collect();
            for id in &accepted {
                assert!(present.contains(id) || delivering.contains(id), "{id} lost");
            }
            for id in &present {
                assert!(
                    !(queued.iter().any(|e| e.id.as_str() == id)
                        && failed.iter().any(|e| e.id.as_str() == id))
                );
            }
            // No message without metadata, no stale lock.
            for sub in ["queue", "failed"] {
                for name in names(&outbox.dir().join(sub)) {
                    let stem = name.strip_suffix(".eml").or(name.strip_suffix(".json"));
                    let stem = stem.unwrap_or_else(|| panic!("stray {sub}/{name}"));
                    assert!(present.contains(stem), "orphan {sub}/{name}");
                }
            }
            assert!(names(&outbox.dir().join("locks")).is_empty());
        }
    }

    #[test]
    fn notes_are_written_at_once_and_kept_through_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        let json = outbox.dir().join("queue").join(format!("{id}.json"));
        assert!(
            !fs::read_to_string(&json).unwrap().contains("notes"),
            "no notes, no field: older versions read the file as before"
        );

        let claim = outbox.claim(&id).unwrap().unwrap();
        claim.set("graph.draft_id", Some("AAMk=")).unwrap();
        // On disk before `set` returns, while the claim is still held.
        assert_eq!(
            open(&dir).get(id.as_str()).unwrap().unwrap().notes["graph.draft_id"],
            "AAMk="
        );
        assert_eq!(claim.get("graph.draft_id").as_deref(), Some("AAMk="));
        claim.set("graph.draft_complete", Some("true")).unwrap();
        claim.set("graph.draft_complete", None).unwrap();
        let now = now_unix();
        claim
            .retry_later_after("503", now, Some(Duration::from_secs(300)))
            .unwrap();

        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        assert_eq!(entry.notes.len(), 1, "{:?}", entry.notes);
        assert_eq!(entry.notes["graph.draft_id"], "AAMk=");
        assert!(
            entry.next_attempt_at >= now + 300,
            "Retry-After beats the schedule"
        );
        let claim = outbox.claim(&id).unwrap().unwrap();
        assert_eq!(claim.get("graph.draft_id").as_deref(), Some("AAMk="));
        claim.fail("refused").unwrap();
        let failed = outbox.get(id.as_str()).unwrap().unwrap();
        assert_eq!(
            failed.notes["graph.draft_id"], "AAMk=",
            "kept for `queue drop`"
        );

        // An entry written before notes existed still loads.
        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        let json = outbox.dir().join("queue").join(format!("{id}.json"));
        let text = fs::read_to_string(&json).unwrap();
        assert!(!text.contains("notes"));
        assert!(outbox.get(id.as_str()).unwrap().unwrap().notes.is_empty());
    }
}
