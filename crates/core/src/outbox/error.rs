//! Why the outbox could not be read or written.

use std::io;
use std::path::PathBuf;

use super::entry::EntryId;

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
    /// An entry file (`<id>.msg`) whose layout this apimail cannot read.
    #[error("outbox file {} is not an entry this apimail can read: {reason}; fix or delete it", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
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
