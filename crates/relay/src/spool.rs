//! A message arriving in DATA or BDAT: in memory while it is small, then in
//! a temporary file of the outbox (`tmp/`, through [`Outbox::begin`]), so a
//! session holds at most [`MEMORY_BYTES`] of it whatever its size. At the
//! end, only the header section is read back: the message's file becomes
//! the entry, or, when the headers were edited, the new header section
//! followed by the rest of that file.

use std::io::{self, Seek, SeekFrom, Write};

use apimail_core::outbox::{EntryId, Incoming, NewEntry, Outbox, OutboxError};
use tokio::io::AsyncReadExt;

use super::intake::{COPY_BYTES, Intake};
use super::reply::Reply;

/// The most of a message kept in memory; past it, the message goes to a
/// file. Its header section must end within it.
pub(super) const MEMORY_BYTES: usize = 256 * 1024;

/// Once in a file, the bytes are written in pieces of about this size.
const WRITE_BYTES: usize = 64 * 1024;

/// The message received so far.
#[derive(Default)]
pub(super) struct Spool {
    /// Received and not yet in the file (the whole message while it is in
    /// memory). DATA and BDAT receivers write here.
    pub(super) pending: Vec<u8>,
    file: Option<Spilled>,
    /// Bytes already in the file.
    written: u64,
    /// Why the message cannot be queued (the rest is read and dropped).
    failed: Option<Reply>,
}

struct Spilled {
    incoming: Incoming,
    /// The header section, blank line included, as received.
    head: Vec<u8>,
}

/// A whole message, ready for [`super::accept`].
pub(super) enum Received {
    Memory(Vec<u8>),
    File { incoming: Incoming, head: Vec<u8> },
}

impl Spool {
    /// Bytes received.
    pub(super) fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the pending bytes to the file once the message outgrows
    /// memory (the file is made then), in pieces of [`WRITE_BYTES`]; with
    /// `all`, everything pending. File work runs off the async runtime.
    pub(super) async fn settle(&mut self, outbox: &Outbox, all: bool) {
        if self.failed.is_some() {
            self.pending.clear();
            return;
        }
        let due = match &self.file {
            None => self.pending.len() > MEMORY_BYTES,
            Some(_) => self.pending.len() >= WRITE_BYTES || (all && !self.pending.is_empty()),
        };
        if !due {
            return;
        }
        let (file, head) = match self.file.take() {
            Some(spilled) => (Some(spilled.incoming), spilled.head),
            None => match header_section(&self.pending) {
                Some(head) => (None, head.to_vec()),
                None => {
                    self.fail(Reply::new(
                        552,
                        [5, 3, 4],
                        format!("the header section is over {} KiB", MEMORY_BYTES / 1024),
                    ));
                    return;
                }
            },
        };
        let outbox = outbox.clone();
        let pending = std::mem::take(&mut self.pending);
        let first = file.is_none();
        let task = tokio::task::spawn_blocking(move || {
            let written = match file {
                Some(incoming) => Ok(incoming),
                None => outbox.begin(),
            }
            .and_then(|mut incoming| {
                let path = incoming.path().to_owned();
                incoming
                    .write_all(&pending)
                    .map(|()| incoming)
                    .map_err(|source| OutboxError::Write { path, source })
            });
            (written, pending)
        });
        let (written, mut pending) = match task.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("cannot keep a message being received: {e}");
                return self.fail(Reply::new(
                    451,
                    [4, 3, 0],
                    "cannot queue the message now, try again later",
                ));
            }
        };
        match written {
            Ok(incoming) => {
                self.written += pending.len() as u64;
                pending.clear();
                if first {
                    // The memory buffer is not needed at its full size again.
                    pending.shrink_to(WRITE_BYTES * 2);
                }
                self.pending = pending;
                self.file = Some(Spilled { incoming, head });
            }
            Err(e) => {
                tracing::error!("cannot keep a message being received: {e}");
                self.fail(storage_reply(&e));
            }
        }
    }

    fn fail(&mut self, reply: Reply) {
        self.failed = Some(reply);
        self.file = None;
        self.pending = Vec::new();
    }

    /// The whole message, or why it cannot be queued.
    pub(super) async fn finish(mut self, outbox: &Outbox) -> Result<Received, Reply> {
        if self.file.is_some() {
            self.settle(outbox, true).await;
        }
        if let Some(reply) = self.failed {
            return Err(reply);
        }
        Ok(match self.file {
            None => Received::Memory(self.pending),
            Some(Spilled { incoming, head }) => Received::File { incoming, head },
        })
    }
}

impl Received {
    /// The bytes to parse as the message: the header section, or the whole
    /// message when it is in memory.
    pub(super) fn head(&mut self) -> Vec<u8> {
        match self {
            Received::Memory(bytes) => std::mem::take(bytes),
            Received::File { head, .. } => head.clone(),
        }
    }

    /// Commits the entry: `head` (what [`head`](Self::head) gave, edited)
    /// and, for a message in a file, the rest of it. Blocking: file I/O.
    pub(super) fn commit(
        self,
        outbox: &Outbox,
        head: &[u8],
        meta: NewEntry,
    ) -> Result<EntryId, OutboxError> {
        let (mut incoming, original) = match self {
            Received::Memory(_) => return outbox.accept(head, meta),
            Received::File { incoming, head } => (incoming, head),
        };
        if head == original.as_slice() {
            return incoming.commit(meta);
        }
        // The edited header section, then the body from the first file.
        let mut edited = outbox.begin()?;
        let copied = incoming.flush().and_then(|()| {
            let mut file = std::fs::File::open(incoming.path())?;
            file.seek(SeekFrom::Start(original.len() as u64))?;
            edited.write_all(head)?;
            io::copy(&mut file, &mut edited)
        });
        if let Err(source) = copied {
            return Err(OutboxError::Write {
                path: edited.path().to_owned(),
                source,
            });
        }
        drop(incoming);
        edited.commit(meta)
    }
}

impl Received {
    /// Commits the entry into a shared store, as [`commit`](Self::commit)
    /// does into the outbox: `head`, then, for a message in a file, the
    /// rest of that file, read and written [`COPY_BYTES`] at a time
    /// (constant memory whatever the size). Accepted when this returns
    /// `Ok`; the temporary file goes either way.
    pub(super) async fn commit_to(
        self,
        store: &dyn Intake,
        head: &[u8],
        meta: NewEntry,
    ) -> Result<EntryId, String> {
        let (mut incoming, original) = match self {
            Received::Memory(_) => return store.accept(head, meta).await,
            Received::File { incoming, head } => (incoming, head),
        };
        let opened = incoming.flush().and_then(|()| {
            let mut file = std::fs::File::open(incoming.path())?;
            file.seek(SeekFrom::Start(original.len() as u64))?;
            Ok(file)
        });
        let mut file = tokio::fs::File::from_std(
            opened.map_err(|e| format!("cannot read the message received: {e}"))?,
        );
        let mut writing = store.begin().await?;
        writing.write(head).await?;
        let mut buffer = vec![0; COPY_BYTES];
        loop {
            let n = file
                .read(&mut buffer)
                .await
                .map_err(|e| format!("cannot read the message received: {e}"))?;
            if n == 0 {
                break;
            }
            writing.write(&buffer[..n]).await?;
        }
        drop((file, incoming));
        writing.commit(meta).await
    }
}

/// The header section of `bytes`, up to and including the blank line that
/// ends it; `None` if no blank line is in `bytes`.
fn header_section(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        at += line.len();
        if !line.ends_with(b"\n") {
            return None;
        }
        if line == b"\n" || line == b"\r\n" {
            return Some(&bytes[..at]);
        }
    }
    None
}

/// The reply when the outbox cannot take a message.
fn storage_reply(error: &OutboxError) -> Reply {
    if error.is_disk_full() {
        Reply::new(
            452,
            [4, 3, 1],
            "insufficient system storage, try again later",
        )
    } else {
        Reply::new(
            451,
            [4, 3, 0],
            "cannot queue the message now, try again later",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_section_ends_at_the_first_blank_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"),
            Some(&b"A: 1\r\nB: 2\r\n\r\n"[..])
        );
        assert_eq!(header_section(b"A: 1\n\nbody"), Some(&b"A: 1\n\n"[..]));
        assert_eq!(header_section(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(header_section(b"A: 1\r\n\r"), None);
    }

    fn message(body_lines: usize) -> Vec<u8> {
        let mut m = b"From: a@example.com\r\nTo: b@example.com\r\n\r\n".to_vec();
        for i in 0..body_lines {
            m.extend_from_slice(format!("line {i:08} of the body, long enough\r\n").as_bytes());
        }
        m
    }

    async fn receive(outbox: &Outbox, bytes: &[u8]) -> Spool {
        let mut spool = Spool::default();
        for piece in bytes.chunks(16 * 1024) {
            spool.pending.extend_from_slice(piece);
            spool.settle(outbox, false).await;
            assert!(spool.pending.len() <= MEMORY_BYTES + 16 * 1024);
        }
        spool
    }

    fn meta() -> NewEntry {
        NewEntry {
            identity: None,
            account: None,
            provider: None,
            from: "a@example.com".into(),
            recipients: vec!["b@example.com".into()],
            message_id: "<x@example.com>".into(),
            max_age_secs: apimail_core::outbox::DEFAULT_MAX_AGE_SECS,
            original_from: None,
        }
    }

    #[tokio::test]
    async fn a_large_message_goes_to_a_file_and_comes_back_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let bytes = message(30_000); // about 1.2 MB
        let spool = receive(&outbox, &bytes).await;
        assert!(spool.file.is_some(), "spilled to a file");
        assert!(spool.pending.len() < MEMORY_BYTES);
        assert_eq!(spool.len(), bytes.len() as u64);
        let tmp = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(tmp, 1, "one temporary file in tmp/");

        // Unedited: the file itself becomes the entry.
        let mut received = spool.finish(&outbox).await.unwrap();
        let head = received.head();
        assert_eq!(head, b"From: a@example.com\r\nTo: b@example.com\r\n\r\n");
        let id = received.commit(&outbox, &head, meta()).unwrap();
        let stored = outbox.read_message(id.as_str()).unwrap().unwrap();
        assert!(stored == bytes, "the message is stored byte-exact");

        // Edited: the new header section, then the same body.
        let spool = receive(&outbox, &bytes).await;
        let mut received = spool.finish(&outbox).await.unwrap();
        let mut head = received.head();
        head.splice(0..0, b"Date: now\r\n".iter().copied());
        let id = received.commit(&outbox, &head, meta()).unwrap();
        let stored = outbox.read_message(id.as_str()).unwrap().unwrap();
        assert!(stored.starts_with(b"Date: now\r\nFrom: a@example.com\r\n"));
        assert!(stored[11..] == bytes[..]);
        let tmp = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "no temporary file is left");
    }

    #[tokio::test]
    async fn a_small_message_stays_in_memory_and_endless_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let bytes = message(10);
        let spool = receive(&outbox, &bytes).await;
        assert!(spool.file.is_none());
        let mut received = spool.finish(&outbox).await.unwrap();
        assert_eq!(received.head(), bytes);

        let endless = b"X-Long: yes\r\n".repeat(MEMORY_BYTES / 10);
        let spool = receive(&outbox, &endless).await;
        let Err(reply) = spool.finish(&outbox).await else {
            panic!("a header section over 256 KiB is refused");
        };
        assert!(reply.to_string().starts_with("552 5.3.4"), "{reply}");
    }
}
