//! The outbox directory and how an entry is stored in it: paths, reading
//! and writing an entry's files, and the file helpers the rest share.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::Ordering;

use super::entry::{Entry, EntryId};
use super::error::OutboxError;
use super::format::{self, Layout};
use crate::files::{self, PrivateFile, WriteError};

/// Where an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Queue,
    Failed,
}

/// How an entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Before format 1: `<id>.eml` (the message) and `<id>.json` (the
    /// entry); still read, changed and sent.
    TwoFiles,
    /// `<id>.msg` (message, metadata at acceptance, footer; see
    /// [`super::format`]) and, once the entry changed, `<id>.state`.
    OneFile {
        /// The message's length: bytes `0..message_len` of the file.
        message_len: u64,
    },
}

/// An entry as read from its files.
#[derive(Debug)]
pub(super) struct Found {
    pub entry: Entry,
    /// Changes with every write of the entry (see [`Outbox::read_entry_file`]).
    pub token: u64,
    pub format: Format,
}

/// The outbox directory. Cheap to clone; any number of values, in any
/// number of processes, may use the same directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub(super) dir: PathBuf,
    /// How often it listed a directory and read an entry (tests only).
    #[cfg(any(test, feature = "test-util"))]
    pub(super) io: std::sync::Arc<IoCounts>,
}

/// Directory listings and entry reads of one outbox (and its clones), for
/// tests that check a cost does not grow with the queue.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub(crate) struct IoCounts {
    pub listings: std::sync::atomic::AtomicUsize,
    pub reads: std::sync::atomic::AtomicUsize,
}

impl Outbox {
    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The listings and entry reads so far (tests only).
    #[cfg(any(test, feature = "test-util"))]
    pub fn io_counts(&self) -> (usize, usize) {
        (
            self.io.listings.load(Ordering::Relaxed),
            self.io.reads.load(Ordering::Relaxed),
        )
    }

    /// Writes `n` small queued entries of account `work` straight into
    /// `queue/`, due at `due_at`, unsynced: a deep queue in seconds, for
    /// tests. Their ids are accepted now.
    #[cfg(any(test, feature = "test-util"))]
    pub fn fill_for_test(&self, n: usize, due_at: i64) -> Vec<EntryId> {
        use super::entry::{DEFAULT_MAX_AGE_SECS, EntryState, utc_stamp};
        use crate::identity::SenderIdentity;
        use std::collections::BTreeMap;
        let now = crate::token::now_unix();
        (0..n)
            .map(|i| {
                let id = EntryId(format!("{}-{:012x}", utc_stamp(now), i));
                let message = format!("Message-ID: <fill{i}@example.com>\r\n\r\nfill\r\n");
                let entry = Entry {
                    id: id.clone(),
                    state: EntryState::Queued,
                    account: Some("work".into()),
                    provider: Some("graph".into()),
                    from: "scanner@example.com".into(),
                    recipients: vec!["a@example.com".into()],
                    message_id: format!("<fill{i}@example.com>"),
                    size: message.len() as u64,
                    created_at: now,
                    attempts: 0,
                    next_attempt_at: due_at,
                    last_error: None,
                    max_age_secs: DEFAULT_MAX_AGE_SECS,
                    retried_at: None,
                    failed_reason: None,
                    identity: Some(SenderIdentity::account("work")),
                    in_flight_since: None,
                    outcome_unknown: false,
                    retried_unknown: false,
                    hold: None,
                    original_from: None,
                    notes: BTreeMap::new(),
                };
                let mut file = message.into_bytes();
                file.extend(one_file_tail(&entry));
                fs::write(self.msg_path(Place::Queue, &id), file).unwrap();
                id
            })
            .collect()
    }

    /// [`file_names`], counted in tests.
    pub(super) fn names(&self, dir: &Path) -> Result<Vec<String>, OutboxError> {
        #[cfg(any(test, feature = "test-util"))]
        self.io.listings.fetch_add(1, Ordering::Relaxed);
        file_names(dir)
    }

    pub(super) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(super) fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    pub(super) fn failed_dir(&self) -> PathBuf {
        self.dir.join("failed")
    }

    pub(super) fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }

    pub(super) fn place_dir(&self, place: Place) -> PathBuf {
        match place {
            Place::Queue => self.queue_dir(),
            Place::Failed => self.failed_dir(),
        }
    }

    pub(super) fn json_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.json"))
    }

    pub(super) fn eml_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.eml"))
    }

    /// The one-file entry: message, metadata at acceptance, footer.
    pub(super) fn msg_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.msg"))
    }

    /// A one-file entry's state since acceptance (the whole entry).
    pub(super) fn state_path(&self, place: Place, id: &EntryId) -> PathBuf {
        self.place_dir(place).join(format!("{id}.state"))
    }

    /// The file holding entry `id`'s message, and the message's length
    /// when it is not the whole file.
    pub(super) fn message_file(
        &self,
        place: Place,
        id: &EntryId,
        format: Format,
    ) -> (PathBuf, Option<u64>) {
        match format {
            Format::TwoFiles => (self.eml_path(place, id), None),
            Format::OneFile { message_len } => (self.msg_path(place, id), Some(message_len)),
        }
    }

    /// Reads entry `id` in `place`; `None` if there is none.
    pub(super) fn read_entry(
        &self,
        place: Place,
        id: &EntryId,
    ) -> Result<Option<Entry>, OutboxError> {
        Ok(self.read_entry_file(place, id)?.map(|found| found.entry))
    }

    /// Reads entry `id` in `place`, in either format; `None` if there is
    /// none. Its token is the inode of the file its state was read from
    /// (`<id>.state`, else `<id>.msg`; `<id>.json` for two files), which
    /// changes with every write: writes rename a new file over the old.
    pub(super) fn read_entry_file(
        &self,
        place: Place,
        id: &EntryId,
    ) -> Result<Option<Found>, OutboxError> {
        #[cfg(any(test, feature = "test-util"))]
        self.io.reads.fetch_add(1, Ordering::Relaxed);
        let msg = self.msg_path(place, id);
        let found = match File::open(&msg) {
            Ok(file) => self.read_one_file(place, id, &msg, &file)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match read_json(&self.json_path(place, id))? {
                    Some((entry, token)) => Found {
                        entry,
                        token,
                        format: Format::TwoFiles,
                    },
                    None => return Ok(None),
                }
            }
            Err(source) => return Err(OutboxError::Read { path: msg, source }),
        };
        let mut found = found;
        // The file name is what identifies the entry.
        found.entry.id = id.clone();
        if place == Place::Failed && found.entry.failed_reason.is_none() {
            // Only a crash while moving it back to the queue leaves this.
            found.entry.failed_reason =
                Some("interrupted while being retried; retry it again".into());
        }
        Ok(Some(found))
    }

    /// A one-file entry: its layout from the footer, its state from
    /// `<id>.state` if it changed since acceptance, else from the file.
    fn read_one_file(
        &self,
        place: Place,
        id: &EntryId,
        msg: &Path,
        file: &File,
    ) -> Result<Found, OutboxError> {
        let read_error = |source| OutboxError::Read {
            path: msg.to_owned(),
            source,
        };
        let layout: Layout =
            format::layout(file)
                .map_err(read_error)?
                .map_err(|e| OutboxError::Format {
                    path: msg.to_owned(),
                    reason: e.reason(),
                })?;
        let format = Format::OneFile {
            message_len: layout.message_len,
        };
        if let Some((entry, token)) = read_json(&self.state_path(place, id))? {
            return Ok(Found {
                entry,
                token,
                format,
            });
        }
        let meta = format::read_meta(file, layout).map_err(read_error)?;
        let entry = parse_entry(&meta, msg)?;
        Ok(Found {
            entry,
            token: inode(file),
            format,
        })
    }

    /// Writes `entry`'s new state atomically, never touching its message:
    /// to `<place>/<id>.state` for a one-file entry, else to
    /// `<place>/<id>.json`. The caller holds the entry's lock.
    pub(super) fn write_entry(&self, place: Place, entry: &Entry) -> Result<(), OutboxError> {
        let target = if self.msg_path(place, &entry.id).exists() {
            self.state_path(place, &entry.id)
        } else {
            self.json_path(place, &entry.id)
        };
        self.write_state(place, entry, &target)
    }

    /// Writes `entry` to `target` atomically (synced, renamed, directory
    /// synced).
    pub(super) fn write_state(
        &self,
        place: Place,
        entry: &Entry,
        target: &Path,
    ) -> Result<(), OutboxError> {
        self.entry_file(place, entry)?
            .persist(target)
            .map_err(write_error)
    }

    /// `entry` as pretty JSON in a new temporary file in `tmp/`, written
    /// but not yet synced or in place.
    pub(super) fn entry_file(
        &self,
        place: Place,
        entry: &Entry,
    ) -> Result<PrivateFile, OutboxError> {
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
}

/// `file`'s inode number (0 where there is none, or it cannot be read).
pub(super) fn inode(file: &File) -> u64 {
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

/// [`files::create_private_dir`], its failure named by step.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), OutboxError> {
    let path = dir.to_owned();
    files::create_private_dir(dir).map_err(|e| match e {
        files::DirError::Create(source) => OutboxError::CreateDir { path, source },
        files::DirError::Permissions(source) => OutboxError::Permissions { path, source },
    })
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<(), OutboxError> {
    fs::rename(from, to).map_err(|source| OutboxError::Move {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    })
}

/// Removes `path`; `false` if it did not exist.
pub(super) fn remove_if_exists(path: &Path) -> Result<bool, OutboxError> {
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
pub(super) fn remove_leftover(path: &Path, dir: &Path) {
    if let Err(error) = remove_if_exists(path).and_then(|_| sync_dir(dir)) {
        tracing::warn!("{error}");
    }
}

/// The names of the files in `dir` (empty if it does not exist).
pub(super) fn file_names(dir: &Path) -> Result<Vec<String>, OutboxError> {
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
pub(super) fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    files::sync_dir(dir).map_err(|source| OutboxError::Sync {
        path: dir.to_owned(),
        source,
    })
}

/// A failed atomic write as the outbox reports it.
pub(super) fn write_error(error: WriteError) -> OutboxError {
    match error {
        WriteError::Create { dir: path, source } | WriteError::Write { path, source } => {
            OutboxError::Write { path, source }
        }
        WriteError::Rename { from, to, source } => OutboxError::Move { from, to, source },
        WriteError::Sync { dir, source } => OutboxError::Sync { path: dir, source },
    }
}

/// `entry` as the one-file format's tail: metadata and footer, to follow
/// a message of `entry.size` bytes.
pub(super) fn one_file_tail(entry: &Entry) -> Vec<u8> {
    let mut tail = serde_json::to_vec_pretty(entry).unwrap_or_default();
    tail.push(b'\n');
    let meta_len = tail.len() as u64;
    tail.extend(format::footer(entry.size, meta_len));
    tail
}

/// Reads an entry's JSON file and its inode; `None` if it does not exist.
fn read_json(path: &Path) -> Result<Option<(Entry, u64)>, OutboxError> {
    let read = File::open(path).and_then(|mut file| {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok((bytes, inode(&file)))
    });
    match read {
        Ok((bytes, ino)) => Ok(Some((parse_entry(&bytes, path)?, ino))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(OutboxError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An entry's JSON, from the file at `path`.
fn parse_entry(bytes: &[u8], path: &Path) -> Result<Entry, OutboxError> {
    // serde_json's messages may quote values (addresses): keep only the
    // position.
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Parse {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
    })
}
