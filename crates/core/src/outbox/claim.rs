//! Claims: an entry's lock, and every change of an entry made under it
//! (settling an attempt, holds and their release, retry, drop, moves
//! between `queue/` and `failed/`).

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::entry::{Entry, EntryId, EntryState, HoldKind, Outcome, for_account};
use super::error::OutboxError;
use super::store::{
    Format, Outbox, Place, remove_if_exists, remove_leftover, rename, sync_dir, write_error,
};
use crate::files::{self, PrivateFile};
use crate::token::now_unix;
use crate::transport::{DeliveryNotes, NoteWrite, StoredMessage};

/// How often to start over when a lock file is replaced under us.
pub(super) const LOCK_RETRIES: usize = 64;

impl Outbox {
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
    pub fn claim(&self, id: &EntryId) -> Result<Option<Claim>, OutboxError> {
        Ok(match self.try_claim(id)? {
            Claimed::Yes(claim) => Some(claim),
            Claimed::Busy | Claimed::Gone => None,
        })
    }

    /// Like [`claim`](Self::claim), but also `None` if the entry, read
    /// again under the lock, is not due at `now` (another process
    /// rescheduled or held it meanwhile). What a flush should use.
    pub fn claim_due(&self, id: &EntryId, now: i64) -> Result<Option<Claim>, OutboxError> {
        Ok(self.claim(id)?.filter(|claim| claim.entry.is_due(now)))
    }

    pub(super) fn try_claim(&self, id: &EntryId) -> Result<Claimed, OutboxError> {
        let Some(lock) = self.lock(id)? else {
            return Ok(Claimed::Busy);
        };
        let Some(found) = self.read_entry_file(Place::Queue, id)? else {
            return Ok(Claimed::Gone);
        };
        let entry = found.entry;
        if entry.failed_reason.is_some() {
            // A crash interrupted a move to failed/ (see `move_to_failed`):
            // finish it.
            self.move_to_failed(&lock, &entry)?;
            return Ok(Claimed::Gone);
        }
        Ok(Claimed::Yes(Claim {
            outbox: self.clone(),
            notes: Mutex::new(entry.notes.clone()),
            entry,
            format: found.format,
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
                claim.entry.hold = None;
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
            entry.settle_retry(now, false);
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
            // The .msg first: from then on it is no longer an entry.
            if remove_if_exists(&self.msg_path(place, &id))? {
                dropped = true;
                remove_if_exists(&self.state_path(place, &id))?;
                sync_dir(&self.place_dir(place))?;
            }
            // Two files: the .json first.
            if remove_if_exists(&self.json_path(place, &id))? {
                dropped = true;
                remove_if_exists(&self.eml_path(place, &id))?;
                sync_dir(&self.place_dir(place))?;
            }
        }
        Ok(dropped)
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
    pub(super) fn move_to_failed(&self, lock: &IdLock, entry: &Entry) -> Result<(), OutboxError> {
        let id = &entry.id;
        if self.msg_path(Place::Queue, id).exists() {
            return self.move_one_file(lock, Place::Queue, Place::Failed, entry);
        }
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
    pub(super) fn move_to_queue(
        &self,
        lock: &IdLock,
        mut entry: Entry,
        now: i64,
    ) -> Result<(), OutboxError> {
        let id = entry.id.clone();
        let one_file = self.msg_path(Place::Failed, &id).exists();
        if !one_file {
            self.copy_message(Place::Failed, Place::Queue, &id)?;
        }
        entry.settle_retry(now, true);
        if one_file {
            return self.move_one_file(lock, Place::Failed, Place::Queue, &entry);
        }
        self.write_entry(Place::Failed, &entry)?;
        self.move_json(Place::Failed, Place::Queue, &id)?;
        remove_leftover(&self.eml_path(Place::Failed, &id), &self.failed_dir());
        Ok(())
    }

    /// Moves a one-file entry from `from` to `to`, `entry` its new state:
    ///
    /// 1. write `entry` to `<to>/<id>.state`;
    /// 2. rename `<from>/<id>.msg` to `<to>/<id>.msg` (atomic: the entry is
    ///    in one place at any moment), sync `<to>/`, then `<from>/`;
    /// 3. remove `<from>/<id>.state`.
    ///
    /// A crash after 1 leaves the entry where it was, as it was, and a
    /// `.state` without its `.msg` in `<to>/`; after 2, the entry moved and
    /// such a `.state` in `<from>/`. [`Outbox::open`] removes those.
    pub(super) fn move_one_file(
        &self,
        _lock: &IdLock,
        from: Place,
        to: Place,
        entry: &Entry,
    ) -> Result<(), OutboxError> {
        let id = &entry.id;
        self.write_state(to, entry, &self.state_path(to, id))?;
        rename(&self.msg_path(from, id), &self.msg_path(to, id))?;
        sync_dir(&self.place_dir(to))?;
        sync_dir(&self.place_dir(from))?;
        remove_leftover(&self.state_path(from, id), &self.place_dir(from));
        Ok(())
    }

    /// Puts a copy of `<from>/<id>.eml` at `<to>/<id>.eml` (a hard link if
    /// the file system allows), durably. A missing source is logged and
    /// skipped: the entry is moved anyway rather than stuck.
    pub(super) fn copy_message(
        &self,
        from: Place,
        to: Place,
        id: &EntryId,
    ) -> Result<(), OutboxError> {
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
    pub(super) fn move_json(
        &self,
        from: Place,
        to: Place,
        id: &EntryId,
    ) -> Result<(), OutboxError> {
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
    pub(super) fn lock(&self, id: &EntryId) -> Result<Option<IdLock>, OutboxError> {
        let path = self.locks_dir().join(format!("{id}.lock"));
        for _ in 0..LOCK_RETRIES {
            let file = files::open_lock_file(&path).map_err(|source| OutboxError::Lock {
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
}

/// The result of one claim attempt.
#[allow(clippy::large_enum_variant)] // short-lived, never stored
pub(super) enum Claimed {
    Yes(Claim),
    Busy,
    Gone,
}

/// An entry's lock, held until dropped. Dropping removes the lock file,
/// then releases the lock (by closing the file); the kernel releases it if
/// the process dies.
#[derive(Debug)]
pub(super) struct IdLock {
    pub(super) _file: File,
    pub(super) path: PathBuf,
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
pub(super) fn is_file_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn is_file_at(_file: &File, _path: &Path) -> bool {
    true
}

/// A claimed entry: nobody else can claim, retry or drop it until this is
/// resolved or dropped. Dropping it unresolved leaves the entry as it was
/// (due again at once).
#[derive(Debug)]
pub struct Claim {
    pub(super) outbox: Outbox,
    pub(super) entry: Entry,
    /// The entry's notes as they are now; written with every update.
    pub(super) notes: Mutex<BTreeMap<String, String>>,
    /// How it is stored, so where its message is.
    pub(super) format: Format,
    pub(super) lock: IdLock,
}

impl Claim {
    /// The entry, as read under the lock.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The file the message is in: `queue/<id>.msg`, of which it is the
    /// first [`stored_message`](Self::stored_message)`().len()` bytes (or
    /// the whole `queue/<id>.eml` of an entry queued before that format).
    pub fn message_path(&self) -> PathBuf {
        self.outbox
            .message_file(Place::Queue, &self.entry.id, self.format)
            .0
    }

    /// The message as the transports stream it: its file, offset and
    /// length.
    pub fn stored_message(&self) -> io::Result<StoredMessage> {
        match self
            .outbox
            .message_file(Place::Queue, &self.entry.id, self.format)
        {
            (path, Some(len)) => Ok(StoredMessage::section(path, 0, len)),
            (path, None) => StoredMessage::new(path),
        }
    }

    /// The message, exactly as accepted.
    pub fn message(&self) -> io::Result<Vec<u8>> {
        self.stored_message()?.read().map_err(io::Error::other)
    }

    /// Counts `n` more attempts made under this claim (retries within one
    /// delivery) than the one the settling call counts.
    pub fn add_attempts(&mut self, n: u32) {
        self.entry.attempts = self.entry.attempts.saturating_add(n);
    }

    /// Durably marks the entry in flight before an attempt, so that a
    /// process dying mid-attempt leaves it [uncertain](Entry::is_uncertain).
    pub fn begin_attempt(&mut self, now: i64) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.in_flight_since = Some(now);
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// The provider accepted the message: removes the `.msg` (from then
    /// on it is no longer an entry), then its `.state`, and syncs the
    /// directory (two files: the `.json`, then the `.eml`).
    ///
    /// An error means the entry could not be removed, so the message
    /// will be sent again by the next flush. A crash before the removal
    /// reaches the disk has the same effect: the one at-least-once window
    /// (see the [module documentation](super)). A leftover that cannot be
    /// removed, or a directory that cannot be synced, is only logged: the
    /// message is no longer an entry, and [`Outbox::open`] removes the
    /// leftover later.
    pub fn delivered(self) -> Result<(), OutboxError> {
        let id = &self.entry.id;
        let (first, second) = match self.format {
            Format::OneFile { .. } => (
                self.outbox.msg_path(Place::Queue, id),
                self.outbox.state_path(Place::Queue, id),
            ),
            Format::TwoFiles => (
                self.outbox.json_path(Place::Queue, id),
                self.outbox.eml_path(Place::Queue, id),
            ),
        };
        remove_if_exists(&first)?;
        let removed = remove_if_exists(&second);
        // Synced even if the second stays, so the first's removal is
        // durable.
        let synced = sync_dir(&self.outbox.queue_dir());
        for error in [removed.err(), synced.err()].into_iter().flatten() {
            tracing::warn!("{error}");
        }
        Ok(())
    }

    /// A temporary failure at `now`: counts the attempt, records `error`
    /// and schedules the next attempt per [`next_delay_secs`](super::next_delay_secs), or, if the
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
        let outcome = self.entry.settle_retry_later(error, now, retry_after);
        if outcome == Outcome::Expired {
            self.outbox.move_to_failed(&self.lock, &self.entry)?;
        } else {
            self.outbox.write_entry(Place::Queue, &self.entry)?;
        }
        Ok(outcome)
    }

    /// An authorization failure: counts the attempt, records `error` and
    /// holds the entry (it stays in the queue but is not due) until
    /// [`Outbox::release_held`] or [`Outbox::retry`].
    pub fn hold(mut self, error: &str) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.settle_login_hold(error);
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// Holds the entry, waiting for `kind`, with `error` as its last
    /// error; counts no attempt.
    pub(super) fn hold_as(mut self, kind: HoldKind, error: &str) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.settle_hold(kind, error);
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// An attempt whose outcome is unknown (`error`): records it, marks the
    /// entry [uncertain](Entry::is_uncertain), and holds it for the user
    /// (`hold`) or schedules it like [`retry_later`](Self::retry_later).
    pub fn uncertain(mut self, error: &str, now: i64, hold: bool) -> Result<Outcome, OutboxError> {
        self.take_notes();
        let outcome = self.entry.settle_uncertain(error, now, hold);
        if outcome == Outcome::Expired {
            self.outbox.move_to_failed(&self.lock, &self.entry)?;
        } else {
            self.outbox.write_entry(Place::Queue, &self.entry)?;
        }
        Ok(outcome)
    }

    /// Holds an uncertain entry for the user without an attempt now (the
    /// rule said hold before sending); counts no attempt.
    pub fn hold_uncertain(mut self, error: &str) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.settle_hold_uncertain(error);
        self.outbox.write_entry(Place::Queue, &self.entry)
    }

    /// Holds an entry without counting an attempt: its sender cannot be
    /// resolved now (`reason` says why). Whoever can resolve it later sends
    /// it ([`HoldKind::Identity`]).
    pub fn hold_unsent(self, reason: &str) -> Result<(), OutboxError> {
        self.hold_as(HoldKind::Identity, reason)
    }

    /// A permanent failure: counts the attempt and moves the entry to
    /// `failed/` with `reason`.
    pub fn fail(mut self, reason: &str) -> Result<(), OutboxError> {
        self.take_notes();
        self.entry.settle_fail(reason);
        self.outbox.move_to_failed(&self.lock, &self.entry)
    }

    /// The notes as they are now, into the entry about to be written.
    pub(super) fn take_notes(&mut self) {
        if let Ok(notes) = self.notes.get_mut() {
            self.entry.notes = notes.clone();
        }
    }
}

/// The transport's notes live in the entry's `.json`; each change rewrites
/// it atomically (fsync, rename) before returning.
impl DeliveryNotes for Claim {
    fn get(&self, key: &str) -> Option<String> {
        self.notes.lock().ok()?.get(key).cloned()
    }

    fn set<'a>(&'a self, key: &'a str, value: Option<&'a str>) -> NoteWrite<'a> {
        Box::pin(std::future::ready(self.write_note(key, value)))
    }
}

impl Claim {
    /// [`DeliveryNotes::set`]: the entry rewritten with the note changed.
    fn write_note(&self, key: &str, value: Option<&str>) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing::*;

    #[test]
    fn a_claim_is_exclusive_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir);
        let id = a.accept(MESSAGE, meta(None)).unwrap();
        let claim = a.claim(&id).unwrap().unwrap();
        assert_eq!(claim.entry().id, id);
        assert_eq!(claim.message().unwrap(), MESSAGE);
        assert_eq!(claim.message_path(), a.msg_path(Place::Queue, &id));

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
    fn each_hold_says_what_it_waits_for_also_in_entries_written_before() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let kind = |id: &EntryId| outbox.get(id.as_str()).unwrap().unwrap().hold_kind();
        let [login, identity, uncertain] =
            [(); 3].map(|()| outbox.accept(MESSAGE, meta(Some("work"))).unwrap());
        assert_eq!(kind(&login), None, "queued: not held");
        outbox.claim(&login).unwrap().unwrap().hold("401").unwrap();
        let gone = "the credentials are no longer in the environment";
        outbox
            .claim(&identity)
            .unwrap()
            .unwrap()
            .hold_unsent(gone)
            .unwrap();
        let claim = outbox.claim(&uncertain).unwrap().unwrap();
        claim
            .uncertain("connection reset", now_unix(), true)
            .unwrap();
        assert_eq!(kind(&login), Some(HoldKind::Login));
        assert_eq!(kind(&identity), Some(HoldKind::Identity));
        assert_eq!(kind(&uncertain), Some(HoldKind::Uncertain));
        let json = fs::read_to_string(outbox.state_path(Place::Queue, &identity)).unwrap();
        assert!(json.contains(r#""hold": "identity""#), "{json}");

        // Written before the kind was stored: inferred.
        for id in [&login, &identity, &uncertain] {
            let path = outbox.state_path(Place::Queue, id);
            let mut value: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
            value.as_object_mut().unwrap().remove("hold");
            fs::write(&path, value.to_string()).unwrap();
        }
        assert_eq!(kind(&login), Some(HoldKind::Login));
        assert_eq!(kind(&identity), Some(HoldKind::Identity));
        assert_eq!(kind(&uncertain), Some(HoldKind::Uncertain));

        // A login releases the login and identity holds, never the
        // uncertain one; `queue retry` does, and remembers it.
        assert_eq!(outbox.release_held(None).unwrap(), 2);
        assert_eq!(kind(&login), None);
        assert_eq!(kind(&uncertain), Some(HoldKind::Uncertain));
        assert!(outbox.retry(uncertain.as_str()).unwrap());
        let entry = outbox.get(uncertain.as_str()).unwrap().unwrap();
        assert_eq!(entry.hold_kind(), None);
        assert!(!entry.outcome_unknown && entry.retried_unknown);
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
    fn notes_are_written_at_once_and_kept_through_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        let msg = fs::read(outbox.msg_path(Place::Queue, &id)).unwrap();
        assert!(
            !String::from_utf8_lossy(&msg).contains("notes"),
            "no notes, no field"
        );

        let claim = outbox.claim(&id).unwrap().unwrap();
        claim.write_note("graph.draft_id", Some("AAMk=")).unwrap();
        // On disk before `set` returns, while the claim is still held.
        assert_eq!(
            open(&dir).get(id.as_str()).unwrap().unwrap().notes["graph.draft_id"],
            "AAMk="
        );
        assert_eq!(claim.get("graph.draft_id").as_deref(), Some("AAMk="));
        claim
            .write_note("graph.draft_complete", Some("true"))
            .unwrap();
        claim.write_note("graph.draft_complete", None).unwrap();
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
        let id = accept_two_files(&outbox, MESSAGE, meta(None));
        let json = outbox.json_path(Place::Queue, &id);
        let text = fs::read_to_string(&json).unwrap();
        assert!(!text.contains("notes"));
        assert!(outbox.get(id.as_str()).unwrap().unwrap().notes.is_empty());
    }
}
