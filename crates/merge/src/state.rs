//! The record of one merge: a JSON line per change of a row's state, in
//! `<dir>/<name>.jsonl`, synced as it is written. It is what makes a merge
//! resumable: a row is written down as `accepting` before its message goes
//! into the outbox, with the outbox entry once it is in, and as `sent` once
//! the provider took it, so a second run never composes a row twice.
//! One process at a time works on a merge (`<name>.lock`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// About to be written into the outbox (or written, if a crash came
    /// before `queued`).
    Accepting,
    /// In the outbox, as `entry`.
    Queued,
    /// In the outbox, held (a login, a person's decision).
    Held,
    /// Accepted by the provider.
    Sent,
    /// Failed for good (or refused by the check).
    Failed,
}

impl Status {
    /// The word used in summaries and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepting => "accepting",
            Status::Queued => "queued",
            Status::Held => "held",
            Status::Sent => "sent",
            Status::Failed => "failed",
        }
    }
}

/// One line of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowState {
    /// When (Unix seconds).
    pub at: i64,
    /// The row number when it was written.
    pub row: usize,
    /// The row's key.
    pub key: String,
    /// Its Message-ID.
    pub message_id: String,
    /// Where it is.
    pub status: Status,
    /// Its outbox entry, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Whether a copy may have gone out twice (an attempt a kill cut off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
    /// Why it failed or waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A merge name apimail cannot use as a file name.
    #[error("the merge name `{0}` may hold only letters, digits, `.`, `-` and `_`")]
    Name(String),
    /// Reading or writing failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What it was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process runs the same merge.
    #[error("another apimail process is running the merge `{0}`")]
    Busy(String),
}

/// A merge's record, opened and locked.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    file: File,
    rows: HashMap<String, RowState>,
    _lock: File,
}

impl State {
    /// Whether `name` can name a merge.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    }

    /// The record's file for merge `name` in `dir`.
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.jsonl"))
    }

    /// Reads the record without locking it (`merge status`); `None` when
    /// the merge never ran.
    pub fn read(dir: &Path, name: &str) -> Result<Option<Vec<RowState>>, StateError> {
        if !State::valid_name(name) {
            return Err(StateError::Name(name.to_owned()));
        }
        let path = State::path(dir, name);
        match File::open(&path) {
            Ok(file) => Ok(Some(latest(read_lines(&path, file)?))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Opens (creating) the record of merge `name` in `dir`, locked.
    pub fn open(dir: &Path, name: &str) -> Result<State, StateError> {
        if !State::valid_name(name) {
            return Err(StateError::Name(name.to_owned()));
        }
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        apimail_core::files::create_private_dir(dir).map_err(|e| {
            let (apimail_core::files::DirError::Create(source)
            | apimail_core::files::DirError::Permissions(source)) = e;
            StateError::Io {
                action: "create",
                path: dir.to_owned(),
                source,
            }
        })?;
        let lock_path = dir.join(format!("{name}.lock"));
        let lock =
            apimail_core::files::open_lock_file(&lock_path).map_err(io("open", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StateError::Busy(name.to_owned()));
        }
        let path = State::path(dir, name);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io("open", &path))?;
        let lines = read_lines(&path, file.try_clone().map_err(io("open", &path))?)?;
        // A line a crash cut short is ended, so the next one stands alone.
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        if bytes.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n").map_err(io("write", &path))?;
        }
        let rows = lines.into_iter().map(|r| (r.key.clone(), r)).collect();
        Ok(State {
            path,
            file,
            rows,
            _lock: lock,
        })
    }

    /// The latest state of the row keyed `key`.
    pub fn get(&self, key: &str) -> Option<&RowState> {
        self.rows.get(key)
    }

    /// Every row's latest state.
    pub fn rows(&self) -> impl Iterator<Item = &RowState> {
        self.rows.values()
    }

    /// Rows sent at or after `since` (Unix seconds).
    pub fn sent_since(&self, since: i64) -> usize {
        self.rows
            .values()
            .filter(|r| r.status == Status::Sent && r.at >= since)
            .count()
    }

    /// Writes `state` down (synced) as the row's latest.
    pub fn record(&mut self, state: RowState) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(&state).map_err(|e| StateError::Io {
            action: "write",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| StateError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            })?;
        self.rows.insert(state.key.clone(), state);
        Ok(())
    }
}

fn read_lines(path: &Path, file: File) -> Result<Vec<RowState>, StateError> {
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| StateError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        // A line a crash cut short is skipped: its row is redone from the
        // line before, which the outbox check makes safe.
        if let Ok(state) = serde_json::from_str::<RowState>(&line) {
            out.push(state);
        }
    }
    Ok(out)
}

/// The last state of each key, in the order rows were first written.
fn latest(lines: Vec<RowState>) -> Vec<RowState> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, RowState> = HashMap::new();
    for line in lines {
        if !by_key.contains_key(&line.key) {
            order.push(line.key.clone());
        }
        by_key.insert(line.key.clone(), line);
    }
    let mut out: Vec<RowState> = order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .collect();
    out.sort_by_key(|r| r.row);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str, status: Status) -> RowState {
        RowState {
            at: 100,
            row: 2,
            key: key.into(),
            message_id: "<m@x>".into(),
            status,
            entry: None,
            uncertain: false,
            error: None,
        }
    }

    #[test]
    fn the_last_line_of_a_row_wins_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = State::open(dir.path(), "m").unwrap();
            state.record(line("a", Status::Accepting)).unwrap();
            state.record(line("a", Status::Sent)).unwrap();
            state.record(line("b", Status::Queued)).unwrap();
        }
        let path = State::path(dir.path(), "m");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"at\":1,\"row\":3,\"key\":\"b\",\"mess")
            .unwrap();
        let mut state = State::open(dir.path(), "m").unwrap();
        state.record(line("c", Status::Sent)).unwrap();
        drop(state);
        let state = State::open(dir.path(), "m").unwrap();
        assert_eq!(
            state.get("c").unwrap().status,
            Status::Sent,
            "written after the torn line"
        );
        assert_eq!(state.get("a").unwrap().status, Status::Sent);
        assert_eq!(state.get("b").unwrap().status, Status::Queued);
        assert_eq!(state.sent_since(0), 2);
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = State::open(dir.path(), "m").unwrap();
        assert!(matches!(
            State::open(dir.path(), "m"),
            Err(StateError::Busy(_))
        ));
        assert!(matches!(
            State::open(dir.path(), "../x"),
            Err(StateError::Name(_))
        ));
    }
}
