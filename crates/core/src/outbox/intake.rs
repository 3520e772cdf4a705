//! Intake: a new message streamed (or handed) in and committed as an
//! entry.

use std::fs;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::claim::Claim;
use super::entry::{Entry, EntryId, NewEntry};
use super::error::OutboxError;
use super::store::{Format, Outbox, Place, one_file_tail, sync_dir, write_error};
use crate::files::PrivateFile;
use crate::token::now_unix;

/// How often to draw a new id if one is taken.
pub(super) const ID_RETRIES: usize = 16;

impl Outbox {
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

    /// Like [`accept`](Self::accept), and the new entry stays claimed by
    /// the caller (see [`Incoming::commit_claimed`]).
    pub fn accept_claimed(&self, message: &[u8], meta: NewEntry) -> Result<Claim, OutboxError> {
        let mut incoming = self.begin()?;
        incoming.replace_contents(message)?;
        incoming.commit_claimed(meta)
    }

    pub(super) fn accept_at(
        &self,
        message: &[u8],
        meta: NewEntry,
        now: i64,
    ) -> Result<EntryId, OutboxError> {
        let mut incoming = self.begin()?;
        incoming.replace_contents(message)?;
        Ok(incoming.commit_at(meta, now)?.entry.id)
    }
}

/// A message being written into the outbox; see [`Outbox::begin`].
///
/// Write the message through [`Write`], then [`commit`](Self::commit).
/// Dropping it without committing removes the temporary file.
#[derive(Debug)]
pub struct Incoming {
    pub(super) outbox: Outbox,
    pub(super) path: PathBuf,
    /// `None` once committed.
    pub(super) file: Option<BufWriter<PrivateFile>>,
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

    pub(super) fn writer(&mut self) -> Result<&mut BufWriter<PrivateFile>, OutboxError> {
        self.file.as_mut().ok_or_else(|| OutboxError::Write {
            path: self.path.clone(),
            source: io::Error::other("already committed"),
        })
    }

    /// The temporary file with everything written so far, for committing.
    pub(super) fn take_file(&mut self) -> Result<PrivateFile, OutboxError> {
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
    /// Steps: take the new id's lock; append the metadata and the footer
    /// to the temporary file (see the [module documentation](super)), sync
    /// it and rename it to `queue/<id>.msg`; sync `queue/` once (a sync
    /// shared with concurrent commits in this process, see
    /// [`crate::files::sync_dir`]). Two syncs in all, one of them shared.
    /// On any error nothing is left behind.
    pub fn commit(self, meta: NewEntry) -> Result<EntryId, OutboxError> {
        Ok(self.commit_at(meta, now_unix())?.entry.id)
    }

    /// Like [`commit`](Self::commit), and the new entry stays claimed by
    /// the caller, so that no other process's flush can take it before
    /// the caller's own first attempt.
    pub fn commit_claimed(self, meta: NewEntry) -> Result<Claim, OutboxError> {
        self.commit_at(meta, now_unix())
    }

    pub(super) fn commit_at(mut self, meta: NewEntry, now: i64) -> Result<Claim, OutboxError> {
        let outbox = self.outbox.clone();
        // Dropped on any error below, the temporary file is removed.
        let mut file = self.take_file()?;
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
                && !outbox.msg_path(Place::Queue, &id).exists()
                && !outbox.state_path(Place::Queue, &id).exists()
                && !outbox.msg_path(Place::Failed, &id).exists()
                && !outbox.eml_path(Place::Queue, &id).exists()
                && !outbox.json_path(Place::Queue, &id).exists()
                && !outbox.json_path(Place::Failed, &id).exists()
            {
                claimed = Some((id, lock));
                break;
            }
        }
        let Some((id, lock)) = claimed else {
            return Err(OutboxError::Write {
                path: outbox.queue_dir(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "no free entry id"),
            });
        };

        let entry = Entry::accepted(id.clone(), meta, size, now);
        // One file: the message as written, then the metadata and the
        // footer; synced, renamed into queue/, then one sync of queue/
        // (shared with concurrent commits) makes the rename durable.
        let msg = outbox.msg_path(Place::Queue, &id);
        let placed = file
            .write_all(&one_file_tail(&entry))
            .map_err(|source| OutboxError::Write {
                path: self.path.clone(),
                source,
            })
            .and_then(|()| file.persist_unsynced_dir(&msg).map_err(write_error))
            .and_then(|()| sync_dir(&outbox.queue_dir()));
        if let Err(e) = placed {
            // Not durable, so not accepted: remove what was placed.
            let _ = fs::remove_file(&msg);
            let _ = sync_dir(&outbox.queue_dir());
            return Err(e);
        }
        Ok(Claim {
            outbox,
            notes: Mutex::new(entry.notes.clone()),
            entry,
            format: Format::OneFile { message_len: size },
            lock,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing::*;

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
        // One file: the message, then the metadata and the footer.
        assert_eq!(names(&outbox.dir().join("queue")), [format!("{id}.msg")]);
        let file = fs::read(outbox.msg_path(Place::Queue, &id)).unwrap();
        assert!(file.starts_with(expected));
        assert!(String::from_utf8_lossy(&file).contains(&format!("\"id\": \"{id}\"")));
        assert!(file.ends_with(&crate::outbox::format::footer(
            expected.len() as u64,
            (file.len() - expected.len() - 60) as u64
        )));
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
}
