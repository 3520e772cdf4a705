//! The console's own small files (`admin/users.json`, `admin/tokens.json`):
//! JSON, owner-only, written atomically with [`files::write_private`].

use std::io;
use std::path::{Path, PathBuf};

use apimail_core::files;
use serde::Serialize;

/// A file of the console's that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing failed.
    #[error("cannot {action} {path}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file does not hold what it should.
    #[error("{path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `path` parsed as JSON; `None` if it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| FileError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` as pretty JSON to `path`, owner-only, atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| FileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    let write = || -> io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        files::write_private(path, text.as_bytes()).map_err(files::WriteError::into_io_error)
    };
    write().map_err(|source| FileError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` and missing parents, mode 0700 on Unix.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
