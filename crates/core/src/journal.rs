//! The delivery journal: one JSON line per settled outcome (sent, queued,
//! held, failed, …), so that every message apimail handled leaves a trace.
//!
//! # Layout
//!
//! Under the journal directory (the CLI uses `<data dir>/journal`, mode
//! 0700), every file is private to its owner (0600):
//!
//! - `journal.jsonl`: the current file, appended to;
//! - `journal.1.jsonl` … `journal.N.jsonl`: older files, `N` the oldest
//!   ([`ROTATED_FILES_KEPT`] by default);
//! - `lock`: held while appending or rotating (never deleted).
//!
//! # Bounded
//!
//! When a line would take the current file past [`ROTATE_AT_BYTES`], the
//! files shift by one (`journal.jsonl` becomes `journal.1.jsonl`, the
//! oldest is deleted) and a new current file starts. The journal never
//! holds much more than `(ROTATED_FILES_KEPT + 1) × ROTATE_AT_BYTES`.
//!
//! Records also age out ([`DEFAULT_KEEP_DAYS`], `[journal] keep_days`):
//! [`Journal::read`] skips records older than that, and an append (at most
//! once an hour per process) deletes rotated files last written before
//! then, and rotates the current file once its first record is that old,
//! so a file outlives its newest record by at most the same time again.
//!
//! # What a record carries
//!
//! The first record of a message (the relay's `queued`, or the first
//! outcome) carries its Subject and, for relayed mail, the client's address
//! and SMTP user; [`Journal::read`] gives them to the message's later
//! records too, so every reader sees them on every row. With
//! [`Journal::with_subjects`]`(false)` no Subject is written.
//!
//! # Concurrency and crashes
//!
//! Appends and rotations happen under an exclusive lock on `lock`, which
//! the kernel releases if the process dies; the lock is held for one short
//! write, never while sending. Lines are written with `O_APPEND`, one
//! `write` per line. A crash mid-write leaves a torn last line; the next
//! append first ends it with a newline, so it spoils no other record, and
//! [`Journal::read`] skips it. Readers take the lock only to open the
//! files, and then read from the open files: a rotation meanwhile neither
//! hides nor repeats a record.
//!
//! # Secrets
//!
//! Records hold addresses and the error text callers give them. Callers
//! pass a redacted [`TransportError`](crate::TransportError) text (its
//! `Display` and sources never include a token or secret).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use crate::files;
use crate::outbox::Entry;
use crate::token::now_unix;

/// The current file is rotated before it would grow past this: 10 MiB.
pub const ROTATE_AT_BYTES: u64 = 10 << 20;

/// How many rotated files are kept next to the current one.
pub const ROTATED_FILES_KEPT: usize = 5;

/// How long records are kept, in days, unless configured otherwise.
pub const DEFAULT_KEEP_DAYS: u32 = 400;

/// How often (seconds) an appending process looks for aged-out files.
const AGE_CHECK_EVERY: i64 = 3600;

const CURRENT: &str = "journal.jsonl";
const LOCK: &str = "lock";

/// Why the journal could not be written or read. Messages name the file,
/// never a record's content.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the delivery journal {}", .path.display())]
pub struct JournalError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl JournalError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        JournalError {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// The file or directory at fault.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying I/O error's kind (e.g. `StorageFull`).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// How a delivery attempt (or an acceptance) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider accepted the message.
    Sent,
    /// Waiting in the outbox for a later attempt (a temporary failure, or
    /// queued on purpose).
    Queued,
    /// Kept in the outbox until a login or `queue retry`.
    Held,
    /// Given up on: refused for good, or too old.
    Failed,
    /// The request went out but no answer came back: it may have been sent.
    Uncertain,
    /// An uncertain message that the mailbox shows as sent.
    VerifiedSent,
    /// Removed from the outbox by a person (`apimail queue drop`, the
    /// console) before it was sent.
    Dropped,
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Outcome; 7] = [
        Outcome::Sent,
        Outcome::Queued,
        Outcome::Held,
        Outcome::Failed,
        Outcome::Uncertain,
        Outcome::VerifiedSent,
        Outcome::Dropped,
    ];

    /// The name in the journal and on the command line: `sent`, …,
    /// `verified_sent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Queued => "queued",
            Outcome::Held => "held",
            Outcome::Failed => "failed",
            Outcome::Uncertain => "uncertain",
            Outcome::VerifiedSent => "verified_sent",
            Outcome::Dropped => "dropped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a delivery outcome (sent, queued, held, failed, uncertain, verified_sent, dropped)"
)]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    /// The names of [`Outcome::as_str`], also with `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('-', "_");
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == wanted)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the outcome was settled, in Unix seconds
    /// ([`time_rfc3339`](Self::time_rfc3339) for people).
    pub time: i64,
    /// The outbox entry's id.
    pub queue_id: Option<String>,
    /// The message's `Message-ID`, angle brackets included.
    pub message_id: String,
    /// The account's name, or for environment credentials a label naming
    /// them (e.g. `service account acting as ops@example.com`).
    pub account: Option<String>,
    /// For relayed mail, the client's address (`192.0.2.7`), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// For relayed mail, the SMTP AUTH user, if the client logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_user: Option<String>,
    /// The provider (`gmail`, `graph`), if known.
    pub provider: Option<String>,
    /// The envelope sender's address.
    pub from: String,
    /// The recipients' addresses.
    pub recipients: Vec<String>,
    /// The message's Subject, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message's size in bytes.
    pub size: u64,
    /// Attempts made so far, the one that led to this outcome included;
    /// every retry counts, in one process or across several.
    pub attempts: u32,
    /// A copy may already have arrived before this one: the message was
    /// sent again after an attempt whose outcome was unknown (an
    /// `uncertain` record before it says which) and could not be checked.
    /// `false` in records written before apimail recorded it.
    #[serde(default)]
    pub possible_duplicate: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// The provider's id for the message, when it returned one.
    pub provider_id: Option<String>,
    /// Why it was not sent: redacted error text (see the module docs).
    pub error: Option<String>,
    /// The authors' addresses before the relay's sender policy rewrote
    /// From to the account's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_from: Option<String>,
}

impl Record {
    /// A record of `entry` (as it was claimed) after one more attempt that
    /// ended as `outcome`, at the current time.
    pub fn attempted(entry: &Entry, outcome: Outcome) -> Record {
        Record {
            attempts: entry.attempts.saturating_add(1),
            ..Record::without_attempt(entry, outcome)
        }
    }

    /// A record of `entry` settled without an attempt (queued by `send
    /// --queue`, held for its sender), at the current time.
    pub fn without_attempt(entry: &Entry, outcome: Outcome) -> Record {
        Record {
            time: now_unix(),
            queue_id: Some(entry.id.to_string()),
            message_id: entry.message_id.clone(),
            account: entry.account.clone(),
            client: None,
            smtp_user: None,
            provider: entry.provider.clone(),
            from: entry.from.clone(),
            recipients: entry.recipients.clone(),
            subject: None,
            size: entry.size,
            attempts: entry.attempts,
            possible_duplicate: false,
            outcome,
            provider_id: None,
            error: None,
            original_from: entry.original_from.clone(),
        }
    }

    /// Sets the account label (for environment credentials, which have no
    /// account name), unless the record already names an account.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        if self.account.is_none() {
            self.account = Some(label.into());
        }
        self
    }

    /// Sets the number of attempts made so far.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Marks the record as a possible second copy.
    pub fn possible_duplicate(mut self, possible: bool) -> Self {
        self.possible_duplicate = possible;
        self
    }

    /// Sets the provider's message id.
    pub fn provider_id(mut self, id: Option<String>) -> Self {
        self.provider_id = id;
        self
    }

    /// Sets the error text; pass redacted text only.
    pub fn error(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }

    /// Sets the Subject, the client's address and the SMTP user, where
    /// `details` has them.
    pub fn details(mut self, details: &Details) -> Self {
        let fill = |field: &mut Option<String>, value: &Option<String>| {
            if value.is_some() {
                field.clone_from(value);
            }
        };
        fill(&mut self.subject, &details.subject);
        fill(&mut self.client, &details.client);
        fill(&mut self.smtp_user, &details.smtp_user);
        self
    }

    /// Whether the message's story ends here (sent, verified sent, failed
    /// or dropped): no record of it follows, unless someone retries it.
    pub fn is_final(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Sent | Outcome::VerifiedSent | Outcome::Failed | Outcome::Dropped
        )
    }

    /// [`time`](Self::time) as RFC 3339 in UTC, e.g.
    /// `2026-11-29T08:15:00Z`.
    pub fn time_rfc3339(&self) -> String {
        rfc3339(self.time)
    }
}

/// What the first record of a message carries for the ones after it:
/// the Subject and, for relayed mail, the client's address and SMTP user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The message's Subject.
    pub subject: Option<String>,
    /// The relay client's address (`192.0.2.7`).
    pub client: Option<String>,
    /// The SMTP AUTH user, if the client logged in.
    pub smtp_user: Option<String>,
}

impl Details {
    fn of(record: &Record) -> Details {
        Details {
            subject: record.subject.clone(),
            client: record.client.clone(),
            smtp_user: record.smtp_user.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.subject.is_none() && self.client.is_none() && self.smtp_user.is_none()
    }

    /// Fills what `record` lacks.
    fn lend(&self, record: &mut Record) {
        let fill = |field: &mut Option<String>, value: &Option<String>| {
            if field.is_none() {
                field.clone_from(value);
            }
        };
        fill(&mut record.subject, &self.subject);
        fill(&mut record.client, &self.client);
        fill(&mut record.smtp_user, &self.smtp_user);
    }
}

/// `unix` as RFC 3339 in UTC (`1970-01-01T00:00:00Z` if out of range).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A span such as `90s`, `30m`, `2h`, `7d` or `2w`, in seconds: the
/// log's `--since` and the console's filters.
pub fn duration_secs(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    number.parse::<i64>().ok()?.checked_mul(unit)
}

/// Which records [`Journal::read`] returns. The default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only records at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only records of this account (name or label, exactly).
    pub account: Option<String>,
    /// Only records with one of these outcomes; empty means any.
    pub outcomes: Vec<Outcome>,
}

impl Filter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &Record) -> bool {
        self.since.is_none_or(|since| record.time >= since)
            && self
                .account
                .as_ref()
                .is_none_or(|a| record.account.as_ref() == Some(a))
            && (self.outcomes.is_empty() || self.outcomes.contains(&record.outcome))
    }
}

/// The journal directory. Cheap to clone; any number of values, in any
/// number of processes, may use the same directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    rotate_at: u64,
    keep: usize,
    keep_secs: i64,
    subjects: bool,
    /// When this process last looked for aged-out files (Unix seconds).
    age_checked: Arc<AtomicI64>,
}

impl Journal {
    /// Opens the journal at `dir`, creating it (mode 0700, also fixed if it
    /// exists with other modes).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Journal {
            dir,
            rotate_at: ROTATE_AT_BYTES,
            keep: ROTATED_FILES_KEPT,
            keep_secs: i64::from(DEFAULT_KEEP_DAYS) * 86_400,
            subjects: true,
            age_checked: Arc::new(AtomicI64::new(i64::MIN)),
        })
    }

    /// Keeps records for `days` days (at least one) instead of
    /// [`DEFAULT_KEEP_DAYS`]. Every process using the directory should
    /// agree.
    pub fn with_keep_days(mut self, days: u32) -> Self {
        self.keep_secs = i64::from(days.max(1)) * 86_400;
        self
    }

    /// With `false`, records are written without their Subject.
    pub fn with_subjects(mut self, subjects: bool) -> Self {
        self.subjects = subjects;
        self
    }

    /// Whether records are written with their Subject.
    pub fn records_subjects(&self) -> bool {
        self.subjects
    }

    /// The oldest time (Unix seconds) a record kept at `now` may have.
    pub fn cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(self.keep_secs)
    }

    /// Rotates at `rotate_at` bytes and keeps `keep` rotated files instead
    /// of the defaults. Every process using the directory should agree.
    pub fn with_rotation(mut self, rotate_at: u64, keep: usize) -> Self {
        self.rotate_at = rotate_at.max(1);
        self.keep = keep;
        self
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `journal.jsonl` for 0, `journal.N.jsonl` for N.
    fn file(&self, n: usize) -> PathBuf {
        match n {
            0 => self.dir.join(CURRENT),
            n => self.dir.join(format!("journal.{n}.jsonl")),
        }
    }

    /// Appends `record` as one line, rotating first if the line would take
    /// the current file past the limit, and syncs it to disk before
    /// returning. Waits for other appenders (they hold the lock for one
    /// write). The sync is a group commit: concurrent appenders in this
    /// process (the relay's workers) share one `fdatasync` of the file,
    /// taken after the lock is released (see [`files::shared_sync`]).
    pub fn append(&self, record: &Record) -> Result<(), JournalError> {
        self.append_all(std::slice::from_ref(record))
    }

    /// [`append`](Self::append) for several records, in order, with one
    /// write and one sync.
    pub fn append_all(&self, records: &[Record]) -> Result<(), JournalError> {
        let current = self.file(0);
        let mut line = Vec::new();
        for record in records {
            let encoded = if self.subjects || record.subject.is_none() {
                serde_json::to_vec(record)
            } else {
                serde_json::to_vec(&Record {
                    subject: None,
                    ..record.clone()
                })
            };
            line.extend(
                encoded
                    .map_err(|e| JournalError::new("encode a record for", &current, e.into()))?,
            );
            line.push(b'\n');
        }
        if line.is_empty() {
            return Ok(());
        }

        let lock = self.lock(LockKind::Exclusive)?;
        self.age_out(now_unix())?;
        let mut file = open_append(&current)?;
        let mut size = file_len(&file, &current)?;
        if size > 0 && size + line.len() as u64 > self.rotate_at {
            self.rotate()?;
            file = open_append(&current)?;
            size = file_len(&file, &current)?;
        }
        if size > 0 && !ends_with_newline(&current, size)? {
            // A torn line from a crash: end it so it spoils nothing else.
            line.insert(0, b'\n');
        }
        file.write_all(&line)
            .map_err(|e| JournalError::new("append to", &current, e))?;
        drop(lock);
        // Keyed by the file's inode: a rotation meanwhile renames the file
        // but not the inode its line went into, which a sync of any of its
        // descriptors makes durable. Without inodes, each syncs its own.
        let synced = match inode(&file) {
            0 => file.sync_data(),
            ino => files::shared_sync(&self.dir.join(format!("{CURRENT}#{ino}")), || {
                file.sync_data()
            }),
        };
        synced.map_err(|e| JournalError::new("append to", &current, e))
    }

    /// Shifts `journal.N-1` → `journal.N`, …, current → `journal.1`,
    /// dropping the oldest; the caller holds the lock. A crash in between
    /// leaves a gap in the numbers, which readers and the next rotation
    /// step over.
    fn rotate(&self) -> Result<(), JournalError> {
        if self.keep == 0 {
            return remove_if_exists(&self.file(0));
        }
        remove_if_exists(&self.file(self.keep))?;
        for n in (0..self.keep).rev() {
            let (from, to) = (self.file(n), self.file(n + 1));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::new("rotate", &from, e)),
            }
        }
        sync_dir(&self.dir)
    }

    /// At most once an hour per process: deletes rotated files last
    /// written before the cutoff (oldest first), and rotates the current
    /// file when its first record is older. The caller holds the lock.
    fn age_out(&self, now: i64) -> Result<(), JournalError> {
        let last = self.age_checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) < AGE_CHECK_EVERY {
            return Ok(());
        }
        self.age_checked.store(now, Ordering::Relaxed);
        let cutoff = self.cutoff(now);
        for n in (1..=self.keep).rev() {
            let path = self.file(n);
            let written = match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(JournalError::new("read", &path, e)),
            };
            let written = written
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if written >= cutoff {
                break; // newer files follow
            }
            remove_if_exists(&path)?;
        }
        let current = self.file(0);
        let first = match File::open(&current) {
            Ok(file) => {
                let mut line = Vec::new();
                BufReader::new(file)
                    .take(1 << 20)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| JournalError::new("read", &current, e))?;
                parse_line(&line)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(JournalError::new("read", &current, e)),
        };
        if first.is_some_and(|record| record.time < cutoff) {
            self.rotate()?;
        }
        Ok(())
    }

    /// The records that pass `filter`, oldest first across the rotated
    /// files, none older than the kept days, each with its message's
    /// [`Details`] (see the module docs). The files are opened now; the
    /// records are read as the iterator goes, so a long read never blocks
    /// appenders.
    pub fn read(&self, filter: &Filter) -> Result<Records, JournalError> {
        let mut files: Vec<_> = self
            .files()?
            .into_iter()
            .map(|f| (f.path, BufReader::new(f.file)))
            .collect();
        files.reverse(); // popped from the back: oldest first
        Ok(Records {
            files,
            filter: filter.clone(),
            cutoff: self.cutoff(now_unix()),
            details: HashMap::new(),
            skipped: 0,
            line: Vec::new(),
        })
    }

    /// The journal's files, oldest first, opened now under the lock (so a
    /// rotation meanwhile neither hides nor repeats a record), for readers
    /// that keep their own place, such as the console's index. Each line
    /// is a record for [`parse_line`].
    pub fn files(&self) -> Result<Vec<JournalFile>, JournalError> {
        let mut files = Vec::new();
        let _lock = self.lock(LockKind::Shared)?;
        for n in (0..=self.keep).rev() {
            let path = self.file(n);
            match File::open(&path) {
                Ok(file) => files.push(JournalFile { path, file }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::new("read", &path, e)),
            }
        }
        Ok(files)
    }

    fn lock(&self, kind: LockKind) -> Result<File, JournalError> {
        let path = self.dir.join(LOCK);
        let file = files::open_lock_file(&path).map_err(|e| JournalError::new("lock", &path, e))?;
        match kind {
            LockKind::Exclusive => file.lock(),
            LockKind::Shared => file.lock_shared(),
        }
        .map_err(|e| JournalError::new("lock", &path, e))?;
        Ok(file)
    }
}

/// One of the journal's files, open for reading (see [`Journal::files`]).
#[derive(Debug)]
pub struct JournalFile {
    /// Where it was when opened; a rotation may rename it since.
    pub path: PathBuf,
    /// The open file.
    pub file: File,
}

/// One journal line (with or without its newline) as a record; `None` for
/// a line that is not one (torn by a crash, or edited).
pub fn parse_line(line: &[u8]) -> Option<Record> {
    serde_json::from_slice(line).ok()
}

enum LockKind {
    Exclusive,
    Shared,
}

/// The records of [`Journal::read`]. An I/O error ends the iteration with
/// that error; a line that is not a record is skipped and counted.
#[derive(Debug)]
pub struct Records {
    /// Open files, newest first (the next one is popped from the back).
    files: Vec<(PathBuf, BufReader<File>)>,
    filter: Filter,
    /// Older records are skipped (aged out).
    cutoff: i64,
    /// The details of messages whose story has not ended, by queue id.
    details: HashMap<String, Details>,
    skipped: usize,
    line: Vec<u8>,
}

impl Records {
    /// How many complete lines so far were not records (torn by a crash,
    /// or edited by hand).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Gives `record` its message's details from an earlier record, and
    /// remembers them until the message's final record (so memory follows
    /// the messages under way, not the journal's length).
    fn carry(&mut self, record: &mut Record) {
        let Some(id) = &record.queue_id else { return };
        if record.is_final() {
            if let Some(details) = self.details.remove(id) {
                details.lend(record);
            }
            return;
        }
        match self.details.get_mut(id) {
            Some(details) => {
                details.lend(record);
                *details = Details::of(record);
            }
            None => {
                let details = Details::of(record);
                if !details.is_empty() {
                    self.details.insert(id.clone(), details);
                }
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (path, reader) = self.files.last_mut()?;
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    self.files.pop();
                }
                Ok(_) => {
                    let complete = self.line.ends_with(b"\n");
                    match parse_line(&self.line) {
                        Some(mut record) => {
                            self.carry(&mut record);
                            if record.time >= self.cutoff && self.filter.matches(&record) {
                                return Some(Ok(record));
                            }
                        }
                        // A last line without its newline may still be
                        // being written, or torn by a crash: not counted.
                        None if complete => self.skipped += 1,
                        None => {}
                    }
                }
                Err(e) => {
                    let error = JournalError::new("read", path, e);
                    self.files.clear();
                    return Some(Err(error));
                }
            }
        }
    }
}

/// `file`'s inode number (0 where there is none).
fn inode(file: &File) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata().map_or(0, |m| m.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        0
    }
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    private_options()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| JournalError::new("open", path, e))
}

fn file_len(file: &File, path: &Path) -> Result<u64, JournalError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| JournalError::new("read", path, e))
}

/// Whether the file's byte at `size - 1` is a newline.
fn ends_with_newline(path: &Path, size: u64) -> Result<bool, JournalError> {
    let mut last = [0u8];
    File::open(path)
        .and_then(|mut file| {
            file.seek(SeekFrom::Start(size - 1))?;
            file.read_exact(&mut last)
        })
        .map_err(|e| JournalError::new("read", path, e))?;
    Ok(last[0] == b'\n')
}

fn remove_if_exists(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JournalError::new("rotate", path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::new("sync", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// [`files::create_private_dir`], its failure named by step.
fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    files::create_private_dir(dir).map_err(|e| match e {
        files::DirError::Create(e) => JournalError::new("create", dir, e),
        files::DirError::Permissions(e) => JournalError::new("make private", dir, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn record(n: u32) -> Record {
        Record {
            time: 1_780_000_000 + i64::from(n),
            queue_id: Some(format!("20260528T000000-{n:012x}")),
            message_id: format!("<{n}@example.com>"),
            account: Some(if n.is_multiple_of(2) { "work" } else { "home" }.to_owned()),
            client: None,
            smtp_user: None,
            provider: Some("gmail".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec!["a@example.net".to_owned(), "b@example.net".to_owned()],
            subject: None,
            size: 1234,
            attempts: 1,
            possible_duplicate: n.is_multiple_of(5),
            outcome: if n.is_multiple_of(3) {
                Outcome::Failed
            } else {
                Outcome::Sent
            },
            provider_id: Some(format!("id{n}")),
            error: n
                .is_multiple_of(3)
                .then(|| "rejected: \"quoted\", with comma\nand line".to_owned()),
            original_from: None,
        }
    }

    /// Records of one length for three-digit `n`.
    fn plain(n: u32) -> Record {
        Record {
            outcome: Outcome::Sent,
            error: None,
            possible_duplicate: false,
            ..record(n)
        }
    }

    fn all(journal: &Journal) -> Vec<Record> {
        journal
            .read(&Filter::default())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn line_count(path: &Path) -> usize {
        fs::read_to_string(path).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn appends_and_reads_back_in_order_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        assert!(all(&journal).is_empty(), "no file yet");
        let written: Vec<Record> = (0..10).map(record).collect();
        for r in &written {
            journal.append(r).unwrap();
        }
        assert_eq!(all(&journal), written);
        let text = fs::read_to_string(journal.file(0)).unwrap();
        assert_eq!(text.lines().count(), 10, "one line per record");
        assert!(text.contains(r#""outcome":"failed""#), "{text}");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(journal.dir()), 0o700);
            assert_eq!(mode(&journal.file(0)), 0o600);
            assert_eq!(mode(&journal.dir().join(LOCK)), 0o600);
        }
    }

    #[test]
    fn filters_by_time_account_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        for n in 0..12 {
            journal.append(&record(n)).unwrap();
        }
        let ids = |filter: Filter| -> Vec<String> {
            journal
                .read(&filter)
                .unwrap()
                .map(|r| r.unwrap().message_id)
                .collect()
        };
        let since = Filter {
            since: Some(record(9).time),
            ..Filter::default()
        };
        assert_eq!(
            ids(since),
            ["<9@example.com>", "<10@example.com>", "<11@example.com>"]
        );
        let failed_at_work = Filter {
            account: Some("work".to_owned()),
            outcomes: vec![Outcome::Failed],
            ..Filter::default()
        };
        assert_eq!(ids(failed_at_work), ["<0@example.com>", "<6@example.com>"]);
        let two = Filter {
            outcomes: vec![Outcome::Failed, Outcome::Sent],
            ..Filter::default()
        };
        assert_eq!(ids(two).len(), 12);
        let held = Filter {
            outcomes: vec![Outcome::Held],
            ..Filter::default()
        };
        assert!(ids(held).is_empty());
    }

    #[test]
    fn records_without_possible_duplicate_still_read() {
        let mut old = serde_json::to_value(record(1)).unwrap();
        old.as_object_mut().unwrap().remove("possible_duplicate");
        let read: Record = serde_json::from_value(old).unwrap();
        assert!(!read.possible_duplicate);
        assert_eq!(
            read,
            Record {
                possible_duplicate: false,
                ..record(1)
            }
        );
    }

    #[test]
    fn outcome_names_round_trip() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>().unwrap(), outcome);
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{outcome}\""));
        }
        assert_eq!("verified-sent".parse(), Ok(Outcome::VerifiedSent));
        assert!("delivered".parse::<Outcome>().is_err());
        assert_eq!(rfc3339(1_780_000_000), "2026-05-28T20:26:40Z");
    }

    #[test]
    fn rotation_keeps_the_newest_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&plain(100)).unwrap().len() as u64 + 1;
        // Three lines per file, two rotated files: at most nine lines.
        let journal = Journal::open(dir.path())
            .unwrap()
            .with_rotation(3 * line_len, 2);
        for n in 100..120 {
            journal.append(&plain(n)).unwrap();
            for k in 0..=2 {
                let len = fs::metadata(journal.file(k)).map_or(0, |m| m.len());
                assert!(len <= 3 * line_len, "file {k} is {len} bytes");
            }
        }
        assert!(!journal.file(3).exists());
        let kept: Vec<u32> = all(&journal)
            .iter()
            .map(|r| r.message_id[1..4].parse().unwrap())
            .collect();
        // 20 lines: files of 3, the current one holds the last 2.
        assert_eq!(kept, (112..120).collect::<Vec<_>>());
        assert_eq!(line_count(&journal.file(0)), 2);
        assert_eq!(line_count(&journal.file(2)), 3);
    }

    #[test]
    fn a_gap_left_by_a_crashed_rotation_is_stepped_over() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap().with_rotation(1, 3);
        for n in 0..3 {
            journal.append(&record(n)).unwrap();
        }
        // journal.2 (record 0), .1 (record 1), current (record 2).
        fs::remove_file(journal.file(1)).unwrap();
        let ids: Vec<String> = all(&journal).into_iter().map(|r| r.message_id).collect();
        assert_eq!(ids, ["<0@example.com>", "<2@example.com>"]);
        journal.append(&record(3)).unwrap();
        let ids: Vec<String> = all(&journal).into_iter().map(|r| r.message_id).collect();
        assert_eq!(
            ids,
            ["<0@example.com>", "<2@example.com>", "<3@example.com>"]
        );
    }

    #[test]
    fn append_all_writes_the_records_in_order_and_nothing_for_none() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append_all(&[]).unwrap();
        assert!(all(&journal).is_empty());
        journal.append(&record(1)).unwrap();
        journal
            .append_all(&[record(2), record(3), record(4)])
            .unwrap();
        assert_eq!(all(&journal), [record(1), record(2), record(3), record(4)]);
    }

    #[test]
    fn torn_lines_are_skipped_and_spoil_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.append(&record(1)).unwrap();
        let full = serde_json::to_string(&record(2)).unwrap();
        let torn = &full[..full.len() / 2];
        let mut file = open_append(&journal.file(0)).unwrap();
        file.write_all(torn.as_bytes()).unwrap();

        // A reader now: the unfinished last line is left out, not counted.
        let mut records = journal.read(&Filter::default()).unwrap();
        assert_eq!(records.next().unwrap().unwrap(), record(1));
        assert!(records.next().is_none());
        assert_eq!(records.skipped(), 0);

        // The next append ends the torn line first.
        journal.append(&record(3)).unwrap();
        let mut records = journal.read(&Filter::default()).unwrap();
        let read: Vec<Record> = records.by_ref().map(Result::unwrap).collect();
        assert_eq!(read, [record(1), record(3)]);
        assert_eq!(records.skipped(), 1);

        // A complete record that lost only its newline is still read.
        file.write_all(full.as_bytes()).unwrap();
        assert_eq!(all(&journal), [record(1), record(3), record(2)]);
    }

    #[test]
    fn concurrent_appenders_across_rotations_lose_and_tear_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&record(1000)).unwrap().len() as u64 + 1;
        // Small files so that rotations race with appends; keep them all.
        const THREADS: u32 = 8;
        const EACH: u32 = 60;
        let keep = (THREADS * EACH) as usize;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let root = dir.path().to_owned();
                s.spawn(move || {
                    // Its own value, like another process.
                    let journal = Journal::open(root)
                        .unwrap()
                        .with_rotation(5 * line_len, keep);
                    for i in 0..EACH {
                        journal.append(&record(1000 + t * EACH + i)).unwrap();
                    }
                });
            }
            // A reader racing the writers sees whole records only.
            let root = dir.path().to_owned();
            s.spawn(move || {
                let journal = Journal::open(root)
                    .unwrap()
                    .with_rotation(5 * line_len, keep);
                for _ in 0..20 {
                    let mut records = journal.read(&Filter::default()).unwrap();
                    let mut seen = HashSet::new();
                    for r in records.by_ref() {
                        assert!(seen.insert(r.unwrap().message_id), "a record twice");
                    }
                    assert_eq!(records.skipped(), 0);
                }
            });
        });
        let journal = Journal::open(dir.path())
            .unwrap()
            .with_rotation(5 * line_len, keep);
        let mut records = journal.read(&Filter::default()).unwrap();
        let ids: Vec<String> = records.by_ref().map(|r| r.unwrap().message_id).collect();
        assert_eq!(records.skipped(), 0);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), (THREADS * EACH) as usize);
        assert_eq!(unique.len(), ids.len());
        // Each writer's records stay in its order.
        for t in 0..THREADS {
            let mine: Vec<u32> = ids
                .iter()
                .map(|id| id[1..id.find('@').unwrap()].parse().unwrap())
                .filter(|n| (n - 1000) / EACH == t)
                .collect();
            assert!(mine.is_sorted(), "thread {t}: {mine:?}");
        }
        for n in 0..=keep {
            let len = fs::metadata(journal.file(n)).map_or(0, |m| m.len());
            assert!(len <= 5 * line_len);
        }
    }

    const CHILD_VAR: &str = "APIMAIL_JOURNAL_CHILD";

    /// Run by `concurrent_processes_share_the_journal`: appends records
    /// numbered from `$APIMAIL_JOURNAL_CHILD`'s offset.
    #[test]
    #[ignore = "run by concurrent_processes_share_the_journal"]
    fn journal_child() {
        let Some(spec) = std::env::var_os(CHILD_VAR) else {
            return;
        };
        let spec = spec.into_string().unwrap();
        let (root, first) = spec.rsplit_once('|').unwrap();
        let first: u32 = first.parse().unwrap();
        let journal = Journal::open(root).unwrap().with_rotation(4096, 1000);
        for n in first..first + 100 {
            journal.append(&record(n)).unwrap();
        }
    }

    #[test]
    fn concurrent_processes_share_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = (0..4u32)
            .map(|c| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "journal::tests::journal_child",
                        "--ignored",
                        "-q",
                    ])
                    .env(
                        CHILD_VAR,
                        format!("{}|{}", dir.path().display(), 1000 * (c + 1)),
                    )
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let journal = Journal::open(dir.path()).unwrap().with_rotation(4096, 1000);
        let mut records = journal.read(&Filter::default()).unwrap();
        let ids: HashSet<String> = records.by_ref().map(|r| r.unwrap().message_id).collect();
        assert_eq!(records.skipped(), 0);
        assert_eq!(ids.len(), 400);
        assert!(journal.file(2).exists(), "it rotated");
    }

    #[test]
    fn later_records_carry_the_details_of_the_first_until_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let queued = Record {
            outcome: Outcome::Queued,
            subject: Some("Scan 12".to_owned()),
            client: Some("192.0.2.7".to_owned()),
            smtp_user: Some("scanner".to_owned()),
            ..plain(100)
        };
        journal.append(&queued).unwrap();
        journal.append(&record(200)).unwrap();
        journal.append(&plain(100)).unwrap(); // sent: the story ends
        // Retried later by hand: no details left to lend.
        journal.append(&plain(100)).unwrap();
        let read = all(&journal);
        let details: Vec<_> = read
            .iter()
            .map(|r| {
                (
                    r.subject.as_deref(),
                    r.client.as_deref(),
                    r.smtp_user.as_deref(),
                )
            })
            .collect();
        let lent = (Some("Scan 12"), Some("192.0.2.7"), Some("scanner"));
        assert_eq!(
            details,
            [lent, (None, None, None), lent, (None, None, None)]
        );
        // The file itself holds them once.
        let text = fs::read_to_string(journal.file(0)).unwrap();
        assert_eq!(text.matches("Scan 12").count(), 1, "{text}");
    }

    #[test]
    fn subjects_false_leaves_the_subject_out() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap().with_subjects(false);
        assert!(!journal.records_subjects());
        let with_subject = Record {
            subject: Some("Salary review".to_owned()),
            client: Some("192.0.2.7".to_owned()),
            ..plain(100)
        };
        journal.append(&with_subject).unwrap();
        let text = fs::read_to_string(journal.file(0)).unwrap();
        assert!(
            !text.contains("Salary") && !text.contains("subject"),
            "{text}"
        );
        assert!(text.contains("192.0.2.7"), "{text}");
        assert_eq!(all(&journal)[0].subject, None);
    }

    #[test]
    fn records_age_out_after_keep_days() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let day = 86_400;
        let journal = Journal::open(dir.path())
            .unwrap()
            .with_rotation(1, 3) // one record per file
            .with_keep_days(30);
        let at = |n: u32, time: i64| Record { time, ..plain(n) };
        journal.append(&at(100, now - 40 * day)).unwrap();
        journal.append(&at(101, now - 35 * day)).unwrap();
        journal.append(&at(102, now - 2 * day)).unwrap();
        // Files written long ago look so to the next check.
        for (n, days) in [(2, 40), (1, 35)] {
            let file = OpenOptions::new()
                .write(true)
                .open(journal.file(n))
                .unwrap();
            file.set_modified(
                std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400),
            )
            .unwrap();
        }
        let times: Vec<i64> = all(&journal).iter().map(|r| r.time).collect();
        assert_eq!(times, [now - 2 * day], "older records are not read");

        // A fresh process (its first append checks): both old files go.
        let journal = Journal::open(dir.path())
            .unwrap()
            .with_rotation(1 << 20, 3)
            .with_keep_days(30);
        journal.append(&at(103, now)).unwrap();
        assert!(!journal.file(2).exists() && !journal.file(1).exists());
        assert_eq!(
            line_count(&journal.file(0)),
            2,
            "the file begun 2 days ago stays current"
        );
        assert_eq!(all(&journal).len(), 2);

        // A current file whose first record aged out is rotated.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap().with_keep_days(30);
        let old = Journal::open(dir.path()).unwrap().with_keep_days(400);
        old.append(&at(104, now - 31 * day)).unwrap();
        journal.append(&at(105, now)).unwrap();
        assert_eq!(line_count(&journal.file(0)), 1, "a new current file");
        assert_eq!(line_count(&journal.file(1)), 1);
        assert_eq!(all(&journal).len(), 1);
    }
}
