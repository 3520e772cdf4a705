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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::outbox::Entry;
use crate::token::now_unix;

/// The current file is rotated before it would grow past this: 10 MiB.
pub const ROTATE_AT_BYTES: u64 = 10 << 20;

/// How many rotated files are kept next to the current one.
pub const ROTATED_FILES_KEPT: usize = 5;

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
}

impl Outcome {
    /// Every outcome, in the order above.
    pub const ALL: [Outcome; 6] = [
        Outcome::Sent,
        Outcome::Queued,
        Outcome::Held,
        Outcome::Failed,
        Outcome::Uncertain,
        Outcome::VerifiedSent,
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
#[error("`{0}` is not a delivery outcome (sent, queued, held, failed, uncertain, verified_sent)")]
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
    /// The provider (`gmail`, `graph`), if known.
    pub provider: Option<String>,
    /// The envelope sender's address.
    pub from: String,
    /// The recipients' addresses.
    pub recipients: Vec<String>,
    /// The message's size in bytes.
    pub size: u64,
    /// Attempts made so far, the one that led to this outcome included.
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The provider's id for the message, when it returned one.
    pub provider_id: Option<String>,
    /// Why it was not sent: redacted error text (see the module docs).
    pub error: Option<String>,
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
            provider: entry.provider.clone(),
            from: entry.from.clone(),
            recipients: entry.recipients.clone(),
            size: entry.size,
            attempts: entry.attempts,
            outcome,
            provider_id: None,
            error: None,
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

    /// [`time`](Self::time) as RFC 3339 in UTC, e.g.
    /// `2026-11-29T08:15:00Z`.
    pub fn time_rfc3339(&self) -> String {
        rfc3339(self.time)
    }
}

/// `unix` as RFC 3339 in UTC (`1970-01-01T00:00:00Z` if out of range).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
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
        })
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
    /// the current file past the limit, and syncs it to disk. Waits for
    /// other appenders (they hold the lock for one write).
    pub fn append(&self, record: &Record) -> Result<(), JournalError> {
        let current = self.file(0);
        let mut line = serde_json::to_vec(record)
            .map_err(|e| JournalError::new("encode a record for", &current, e.into()))?;
        line.push(b'\n');

        let _lock = self.lock(LockKind::Exclusive)?;
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
            .and_then(|()| file.sync_data())
            .map_err(|e| JournalError::new("append to", &current, e))
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

    /// The records that pass `filter`, oldest first across the rotated
    /// files. The files are opened now; the records are read as the
    /// iterator goes, so a long read never blocks appenders.
    pub fn read(&self, filter: &Filter) -> Result<Records, JournalError> {
        let mut files = Vec::new();
        {
            let _lock = self.lock(LockKind::Shared)?;
            for n in (0..=self.keep).rev() {
                let path = self.file(n);
                match File::open(&path) {
                    Ok(file) => files.push((path, BufReader::new(file))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(JournalError::new("read", &path, e)),
                }
            }
        }
        files.reverse(); // popped from the back: oldest first
        Ok(Records {
            files,
            filter: filter.clone(),
            skipped: 0,
            line: Vec::new(),
        })
    }

    fn lock(&self, kind: LockKind) -> Result<File, JournalError> {
        let path = self.dir.join(LOCK);
        let file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::new("lock", &path, e))?;
        match kind {
            LockKind::Exclusive => file.lock(),
            LockKind::Shared => file.lock_shared(),
        }
        .map_err(|e| JournalError::new("lock", &path, e))?;
        Ok(file)
    }
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
    skipped: usize,
    line: Vec<u8>,
}

impl Records {
    /// How many complete lines so far were not records (torn by a crash,
    /// or edited by hand).
    pub fn skipped(&self) -> usize {
        self.skipped
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
                    match serde_json::from_slice::<Record>(&self.line) {
                        Ok(record) if self.filter.matches(&record) => return Some(Ok(record)),
                        Ok(_) => {}
                        // A last line without its newline may still be
                        // being written, or torn by a crash: not counted.
                        Err(_) if complete => self.skipped += 1,
                        Err(_) => {}
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

/// Creates `dir` (and missing parents) with mode 0700 and makes sure it is
/// private even if it existed.
fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| JournalError::new("create", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| JournalError::new("make private", dir, e))?;
    }
    Ok(())
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
            provider: Some("gmail".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec!["a@example.net".to_owned(), "b@example.net".to_owned()],
            size: 1234,
            attempts: 1,
            outcome: if n.is_multiple_of(3) {
                Outcome::Failed
            } else {
                Outcome::Sent
            },
            provider_id: Some(format!("id{n}")),
            error: n
                .is_multiple_of(3)
                .then(|| "rejected: \"quoted\", with comma\nand line".to_owned()),
        }
    }

    /// Records of one length for three-digit `n`.
    fn plain(n: u32) -> Record {
        Record {
            outcome: Outcome::Sent,
            error: None,
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
}
