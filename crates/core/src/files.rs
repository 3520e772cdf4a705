//! Owner-only files written atomically: a temporary file (mode 0600 from
//! its creation) on the target's file system is written and synced, then
//! renamed over the target, and the target's directory is synced. Readers
//! see the old file or the new one, never a part; a crash leaves at most a
//! temporary file.
//!
//! ```
//! # fn demo(dir: &std::path::Path) -> Result<(), apimail_core::files::WriteError> {
//! apimail_core::files::write_private(&dir.join("token.json"), b"{}\n")?;
//! # Ok(()) }
//! # demo(tempfile::tempdir().unwrap().path()).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// The step of an atomic write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The temporary file could not be created.
    #[error("cannot create a temporary file in {}", .dir.display())]
    Create {
        /// Where it was to be.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be written or synced.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be renamed over the target.
    #[error("cannot move {} to {}", .from.display(), .to.display())]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The target.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The target's directory could not be synced, so the new file may not
    /// survive a power loss.
    #[error("cannot sync directory {}", .dir.display())]
    Sync {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl WriteError {
    /// The underlying I/O error.
    pub fn into_io_error(self) -> io::Error {
        match self {
            WriteError::Create { source, .. }
            | WriteError::Write { source, .. }
            | WriteError::Rename { source, .. }
            | WriteError::Sync { source, .. } => source,
        }
    }
}

/// Writes `bytes` to `path` atomically, private to its owner (mode 0600).
/// The temporary file is in `path`'s directory, which must exist.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let mut file = PrivateFile::new_in(parent_dir(path), &name)?;
    file.write_all(bytes).map_err(|source| WriteError::Write {
        path: file.path().to_owned(),
        source,
    })?;
    file.persist(path)
}

/// A new, empty, owner-only temporary file, for content that is streamed
/// in or built up; [`persist`](Self::persist) puts it in place. Dropped
/// unpersisted, it is removed.
#[derive(Debug)]
pub struct PrivateFile(tempfile::NamedTempFile);

impl PrivateFile {
    /// Creates `.<name>.<random>.tmp` in `dir`, which must be on the file
    /// system of the file it will replace.
    pub fn new_in(dir: &Path, name: &str) -> Result<Self, WriteError> {
        let error = |source| WriteError::Create {
            dir: dir.to_owned(),
            source,
        };
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(owner_only());
        let file = builder.tempfile_in(dir).map_err(error)?;
        // The umask can take bits away from the mode at creation, never
        // add any; make it exactly 0600.
        #[cfg(unix)]
        file.as_file()
            .set_permissions(owner_only())
            .map_err(error)?;
        Ok(PrivateFile(file))
    }

    /// Where the temporary file is.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The open file, e.g. for locking or reading its metadata.
    pub fn as_file(&self) -> &File {
        self.0.as_file()
    }

    /// The open file, e.g. for truncating or seeking.
    pub fn as_file_mut(&mut self) -> &mut File {
        self.0.as_file_mut()
    }

    /// Syncs the file, renames it over `target` and syncs `target`'s
    /// directory. On an error before the rename, the file is removed.
    pub fn persist(self, target: &Path) -> Result<(), WriteError> {
        self.persist_unsynced_dir(target)?;
        let dir = parent_dir(target);
        sync_dir(dir).map_err(|source| WriteError::Sync {
            dir: dir.to_owned(),
            source,
        })
    }

    /// Like [`persist`](Self::persist) without the directory sync: the
    /// rename is not durable until the caller syncs `target`'s directory,
    /// once for any number of files renamed into it.
    pub fn persist_unsynced_dir(self, target: &Path) -> Result<(), WriteError> {
        let temp = self.path().to_owned();
        self.as_file()
            .sync_all()
            .map_err(|source| WriteError::Write {
                path: temp.clone(),
                source,
            })?;
        // On failure the returned file is dropped, which removes it.
        self.0.persist(target).map_err(|e| WriteError::Rename {
            from: temp,
            to: target.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }
}

impl Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Makes renames and removals in `dir` durable. File systems that cannot
/// sync a directory (`EINVAL`) are accepted; other failures are errors.
///
/// Concurrent calls for the same `dir` in this process share syncs (group
/// commit): a call returns the result of a sync that started after the
/// call did, so everything its caller changed before calling is covered,
/// and callers arriving while a sync runs share the next one.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    shared_sync(dir, || sync_dir_now(dir))
}

/// Runs `sync` as a group commit of the callers in this process that name
/// the same `key` (a path, or anything unique made to look like one):
/// like [`sync_dir`], a call returns the result of a run that started
/// after the call did, whoever's `sync` it was, so every caller's `sync`
/// must make the same writes durable (`File::sync_data` on the same file,
/// say). The journal's appenders share their syncs this way.
pub fn shared_sync(key: &Path, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    static GROUPS: Mutex<BTreeMap<PathBuf, Arc<SyncGroup>>> = Mutex::new(BTreeMap::new());
    let group = {
        let mut groups = GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(groups.entry(key.to_owned()).or_default())
    };
    group.sync(sync)
}

/// One directory sync, not shared.
fn sync_dir_now(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            return Err(e);
        }
        _ => {}
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The callers of one directory's syncs: at most one sync runs at a time,
/// and the callers that arrive meanwhile wait together for the next.
#[derive(Debug, Default)]
struct SyncGroup {
    state: Mutex<GroupState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Whether a sync is running now.
    running: bool,
    /// The callers waiting for the next sync (none yet if `None`).
    next: Option<Arc<Batch>>,
}

/// The callers served by one sync, and its result once it has run.
#[derive(Debug, Default)]
struct Batch {
    result: OnceLock<Result<(), (io::ErrorKind, String)>>,
}

impl SyncGroup {
    /// Joins the next batch, then either runs its sync (when none is
    /// running) or waits for whoever runs it.
    fn sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut sync = Some(sync);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = Arc::clone(state.next.get_or_insert_with(Default::default));
        loop {
            if let Some(result) = batch.result.get() {
                return result
                    .clone()
                    .map_err(|(kind, message)| io::Error::new(kind, message));
            }
            if !state.running {
                // No sync runs, so ours is still the next batch: run it.
                state.running = true;
                let ours = state.next.take().unwrap_or_default();
                drop(state);
                let run = sync.take().map_or(Ok(()), |sync| sync());
                let _ = ours.result.set(run.map_err(|e| (e.kind(), e.to_string())));
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.running = false;
                self.done.notify_all();
                continue;
            }
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// `path`'s directory; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(unix)]
fn owner_only() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o600)
}

/// What the crate's tests look at in a directory.
/// Which step of [`create_private_dir`] failed.
#[derive(Debug)]
pub enum DirError {
    /// The directory (or a parent) could not be created.
    Create(io::Error),
    /// It exists, but could not be made private (mode 0700).
    Permissions(io::Error),
}

/// Creates `dir` (and missing parents) with mode 0700, and makes it 0700
/// if it existed with another mode.
pub fn create_private_dir(dir: &Path) -> Result<(), DirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(DirError::Create)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(DirError::Permissions)?
            .permissions()
            .mode();
        if mode & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(DirError::Permissions)?;
        }
    }
    Ok(())
}

/// Opens the lock file at `path` for `File::lock`, creating it with mode
/// 0600 (an existing file keeps its bytes).
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
pub(crate) mod testing {
    use std::fs;
    use std::path::Path;

    /// The names in `dir`, sorted.
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The permission bits of `path`.
    #[cfg(unix)]
    pub(crate) fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[cfg(unix)]
    #[test]
    fn private_dirs_and_lock_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(testing::mode(&nested), 0o700);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        create_private_dir(&nested).unwrap();
        assert_eq!(testing::mode(&nested), 0o700);

        let lock = nested.join("x.lock");
        std::fs::write(&lock, b"kept").unwrap();
        drop(open_lock_file(&lock).unwrap());
        assert_eq!(std::fs::read(&lock).unwrap(), b"kept");
        let fresh = nested.join("y.lock");
        drop(open_lock_file(&fresh).unwrap());
        assert_eq!(testing::mode(&fresh), 0o600);
    }
    use super::*;
    use std::fs;

    #[test]
    fn writes_the_bytes_and_replaces_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_private(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_private(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["a.json"], "no temporary file is left");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_owner_only_from_its_creation() {
        let dir = tempfile::tempdir().unwrap();
        let temp = PrivateFile::new_in(dir.path(), "a.json").unwrap();
        assert_eq!(mode(temp.path()), 0o600, "before anything is written");
        let name = temp.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".a.json.") && name.ends_with(".tmp"),
            "{name}"
        );

        // Replacing a world-readable file leaves an owner-only one.
        let path = dir.path().join("a.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        temp.persist(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn streamed_content_is_persisted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let mut file = PrivateFile::new_in(&tmp, "incoming").unwrap();
        for _ in 0..1000 {
            file.write_all(b"0123456789").unwrap();
        }
        let target = dir.path().join("message.eml");
        file.persist(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap().len(), 10_000);
        assert!(names(&tmp).is_empty());
    }

    #[test]
    fn no_temporary_file_is_left_when_the_rename_fails() {
        let dir = tempfile::tempdir().unwrap();
        // A file cannot replace a non-empty directory.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "x").unwrap();
        let error = write_private(&target, b"data").unwrap_err();
        assert!(matches!(error, WriteError::Rename { .. }), "{error:?}");
        assert!(error.to_string().contains("occupied"), "{error}");
        assert_eq!(names(dir.path()), ["occupied"]);
    }

    #[test]
    fn a_dropped_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = PrivateFile::new_in(dir.path(), "x").unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_a_create_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/a.json");
        let error = write_private(&path, b"x").unwrap_err();
        assert!(matches!(error, WriteError::Create { .. }), "{error:?}");
        assert_eq!(error.into_io_error().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("a.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("d/a.json")), Path::new("d"));
    }

    /// Concurrent callers share syncs, and each returns only after a sync
    /// that started after it called (so its own changes are covered).
    #[test]
    fn concurrent_dir_syncs_are_shared_and_cover_every_caller() {
        use std::sync::Barrier;
        use std::time::{Duration, Instant};

        const CALLERS: usize = 8;
        let group = SyncGroup::default();
        let starts = Mutex::new(Vec::new());
        let barrier = Barrier::new(CALLERS);
        let calls: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..CALLERS)
                .map(|i| {
                    let (group, starts, barrier) = (&group, &starts, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        // The first caller is alone; the others arrive while
                        // its sync runs and must share the next one.
                        if i > 0 {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        let called = Instant::now();
                        group
                            .sync(|| {
                                starts.lock().unwrap().push(Instant::now());
                                std::thread::sleep(Duration::from_millis(100));
                                Ok(())
                            })
                            .unwrap();
                        (called, Instant::now())
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let starts = starts.into_inner().unwrap();
        assert!(
            starts.len() < CALLERS,
            "{} syncs for {CALLERS} callers",
            starts.len()
        );
        for (called, returned) in calls {
            assert!(
                starts.iter().any(|&s| s >= called && s < returned),
                "a caller returned without a sync that started after its call"
            );
        }
    }

    #[test]
    fn a_failed_shared_sync_fails_every_caller_it_served() {
        let group = SyncGroup::default();
        let error = group
            .sync(|| Err(io::Error::new(io::ErrorKind::StorageFull, "disk full")))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(group.sync(|| Ok(())).is_ok(), "the next batch syncs anew");
    }

    #[test]
    fn persist_unsynced_dir_puts_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = PrivateFile::new_in(dir.path(), "a.json").unwrap();
        file.write_all(b"x").unwrap();
        file.persist_unsynced_dir(&dir.path().join("a.json"))
            .unwrap();
        sync_dir(dir.path()).unwrap();
        assert_eq!(names(dir.path()), ["a.json"]);
    }
}
