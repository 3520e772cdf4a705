//! Opening the outbox, and the clean-up after crashes that comes with it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::PathBuf;
use std::time::Duration;

use super::entry::{Entry, EntryId};
use super::error::OutboxError;
use super::store::{Outbox, Place, create_private_dir, remove_leftover};

/// Temporary files older than this are junk from a crash.
pub(super) const STALE_TMP: Duration = Duration::from_secs(3600);

impl Outbox {
    /// Opens the outbox at `dir`, creating it and its subdirectories
    /// (mode 0700, also fixed if they exist with other modes), and cleans
    /// up after crashes: temporary files older than an hour and not in
    /// use, messages without metadata, moves to `failed/` that were cut
    /// short, and unused lock files. Cleaning is best effort: what cannot
    /// be removed is logged and left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OutboxError> {
        let outbox = Outbox {
            dir: dir.into(),
            #[cfg(any(test, feature = "test-util"))]
            io: Default::default(),
        };
        create_private_dir(&outbox.dir)?;
        for sub in [
            outbox.tmp_dir(),
            outbox.queue_dir(),
            outbox.failed_dir(),
            outbox.locks_dir(),
        ] {
            create_private_dir(&sub)?;
        }
        outbox.clean_up();
        Ok(outbox)
    }

    /// Best-effort cleanup after crashes; see [`open`](Self::open).
    pub(super) fn clean_up(&self) {
        let tmp = self.tmp_dir();
        for name in self.names(&tmp).unwrap_or_default() {
            let path = tmp.join(&name);
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            let old = metadata
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if !old || !metadata.is_file() {
                continue;
            }
            // An `Incoming` still being written holds a lock on its file.
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                remove_leftover(&path, &tmp);
            }
        }

        // One listing per directory; files are looked at one by one only
        // where the names show a crash's leftovers, so opening costs the
        // same whatever the queue's depth (no entry is parsed otherwise).
        let queue = self.queue_dir();
        let queue_names: HashSet<String> =
            self.names(&queue).unwrap_or_default().into_iter().collect();
        let failed_names: HashSet<String> = self
            .names(&self.failed_dir())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ids = |names: &HashSet<String>, suffix: &str| -> Vec<EntryId> {
            names
                .iter()
                .filter_map(|n| n.strip_suffix(suffix))
                .filter_map(|n| EntryId::parse(n).ok())
                .collect()
        };
        let has = |names: &HashSet<String>, id: &EntryId, suffix: &str| {
            names.contains(&format!("{id}{suffix}"))
        };
        // A move to failed/ cut short (see `move_to_failed`) leaves
        // queue/<id>.json next to failed/<id>.eml, or without its message
        // when that was missing: only these can carry a failed_reason.
        let moving: Vec<EntryId> = ids(&queue_names, ".json")
            .into_iter()
            .filter(|id| has(&failed_names, id, ".eml") || !has(&queue_names, id, ".eml"))
            .collect();

        for (place, names) in [(Place::Queue, &queue_names), (Place::Failed, &failed_names)] {
            let dir = self.place_dir(place);
            for id in ids(names, ".eml") {
                if has(names, &id, ".json")
                    || (place == Place::Failed && has(&queue_names, &id, ".json"))
                {
                    continue; // an entry, or a move to failed/ (below)
                }
                // Busy: being committed or moved right now.
                let Ok(Some(_lock)) = self.lock(&id) else {
                    continue;
                };
                if !self.json_path(place, &id).exists() {
                    remove_leftover(&self.eml_path(place, &id), &dir);
                }
            }
        }

        // A commit renames the message, then the metadata, and syncs
        // queue/ once; a crash before that sync may keep the metadata
        // alone. Such an entry was never acknowledged, nor attempted.
        for id in ids(&queue_names, ".json") {
            if has(&queue_names, &id, ".eml") {
                continue;
            }
            let Ok(Some(_lock)) = self.lock(&id) else {
                continue;
            };
            let cut_short = |e: &Entry| {
                e.attempts == 0
                    && e.in_flight_since.is_none()
                    && e.retried_at.is_none()
                    && e.failed_reason.is_none()
            };
            if !self.eml_path(Place::Queue, &id).exists()
                && let Ok(Some(entry)) = self.read_entry(Place::Queue, &id)
                && cut_short(&entry)
            {
                tracing::warn!("removing outbox entry {id}: a crash cut its commit short");
                remove_leftover(&self.json_path(Place::Queue, &id), &queue);
            }
        }

        // A queued entry with a failed_reason is a move to failed/ that a
        // crash interrupted; claiming it finishes the move. Without one, a
        // failed/<id>.eml beside it is a leftover.
        for id in moving {
            match self.read_entry(Place::Queue, &id) {
                Ok(Some(entry)) if entry.failed_reason.is_some() => {
                    if let Err(error) = self.try_claim(&id) {
                        tracing::warn!("{error}");
                    }
                }
                Ok(Some(_)) if has(&failed_names, &id, ".eml") => {
                    if let Ok(Some(_lock)) = self.lock(&id)
                        && !self.json_path(Place::Failed, &id).exists()
                        && let Ok(Some(entry)) = self.read_entry(Place::Queue, &id)
                        && entry.failed_reason.is_none()
                    {
                        remove_leftover(&self.eml_path(Place::Failed, &id), &self.failed_dir());
                    }
                }
                _ => {}
            }
        }

        // One file: a .state without its .msg is what a crash left of a
        // move (in either folder) or of a delivery; the entry is wherever
        // its .msg is, or delivered.
        for (place, names) in [(Place::Queue, &queue_names), (Place::Failed, &failed_names)] {
            for id in ids(names, ".state") {
                if has(names, &id, ".msg") {
                    continue;
                }
                let Ok(Some(_lock)) = self.lock(&id) else {
                    continue;
                };
                if !self.msg_path(place, &id).exists() {
                    remove_leftover(&self.state_path(place, &id), &self.place_dir(place));
                }
            }
        }

        // Lock files outlive their holder only after a crash; taking and
        // dropping the lock removes them.
        for name in self.names(&self.locks_dir()).unwrap_or_default() {
            if let Some(id) = name
                .strip_suffix(".lock")
                .and_then(|n| EntryId::parse(n).ok())
            {
                let _ = self.lock(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing::*;

    const CRASH_CHILD_VAR: &str = "APIMAIL_OUTBOX_CRASH_CHILD";

    #[cfg(unix)]
    #[test]
    fn files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data/outbox");
        fs::create_dir_all(root.join("queue")).unwrap();
        for path in [&root, &root.join("queue")] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let outbox = Outbox::open(&root).unwrap();
        Outbox::open(dir.path().join("fresh/outbox")).unwrap();
        assert_eq!(
            mode(&dir.path().join("fresh")),
            0o700,
            "created parents too"
        );
        for sub in ["", "tmp", "queue", "failed", "locks"] {
            assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
        }

        let incoming = outbox.begin().unwrap();
        assert_eq!(mode(incoming.path()), 0o600);
        drop(incoming);

        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        assert_eq!(mode(&outbox.msg_path(Place::Queue, &id)), 0o600);
        let claim = outbox.claim(&id).unwrap().unwrap();
        assert_eq!(mode(&root.join(format!("locks/{id}.lock"))), 0o600);
        claim.retry_later("503", now_unix()).unwrap();
        assert_eq!(mode(&outbox.state_path(Place::Queue, &id)), 0o600);
        outbox
            .claim(&id)
            .unwrap()
            .unwrap()
            .fail("rejected")
            .unwrap();
        assert_eq!(mode(&outbox.msg_path(Place::Failed, &id)), 0o600);
        assert_eq!(mode(&outbox.state_path(Place::Failed, &id)), 0o600);
    }

    #[test]
    fn open_cleans_up_after_crashes() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();
        let entry = outbox.accept(MESSAGE, meta(None)).unwrap();

        // Junk in tmp/: old goes, recent stays, an old one in use stays.
        fs::write(root.join("tmp/x.json.1-2-3.tmp"), b"{").unwrap();
        set_old(&root.join("tmp/x.json.1-2-3.tmp"));
        fs::write(root.join("tmp/y.json.1-2-3.tmp"), b"{").unwrap();
        let mut slow = outbox.begin().unwrap();
        slow.write_all(b"Subject: slow\r\n").unwrap();
        slow.flush().unwrap();
        set_old(slow.path());

        // A crash between the message's rename and the metadata's.
        let orphan = EntryId::generate(now_unix() - 10);
        fs::write(root.join(format!("queue/{orphan}.eml")), MESSAGE).unwrap();
        // A commit in progress: locked, so left alone.
        let committing = EntryId::generate(now_unix());
        fs::write(root.join(format!("queue/{committing}.eml")), MESSAGE).unwrap();
        let commit_lock = outbox.lock(&committing).unwrap().unwrap();
        // A crash after linking the message into failed/.
        let half_failed = EntryId::generate(now_unix() - 20);
        fs::write(root.join(format!("failed/{half_failed}.eml")), MESSAGE).unwrap();
        // One file: a crash mid-move or mid-delivery leaves a .state
        // without its .msg (in either folder); a locked one is busy.
        let moved = EntryId::generate(now_unix() - 40);
        fs::write(root.join(format!("queue/{moved}.state")), b"{}").unwrap();
        fs::write(root.join(format!("failed/{moved}.state")), b"{}").unwrap();
        let moving = EntryId::generate(now_unix() - 50);
        fs::write(root.join(format!("failed/{moving}.state")), b"{}").unwrap();
        let moving_lock = outbox.lock(&moving).unwrap().unwrap();
        // A crash's lock file, and strays that are not ours.
        let dead = EntryId::generate(now_unix() - 30);
        fs::write(root.join(format!("locks/{dead}.lock")), b"").unwrap();
        fs::write(root.join("queue/README"), b"not ours").unwrap();

        let reopened = open(&dir);
        let mut tmp = names(&root.join("tmp"));
        tmp.retain(|n| !n.starts_with(".incoming."));
        assert_eq!(tmp, ["y.json.1-2-3.tmp"]);
        assert!(slow.path().exists(), "in use");
        let mut queue = vec![format!("{entry}.msg")];
        queue.push(format!("{committing}.eml"));
        queue.push("README".to_owned());
        queue.sort();
        assert_eq!(names(&root.join("queue")), queue);
        assert_eq!(names(&root.join("failed")), [format!("{moving}.state")]);
        let mut locks = vec![format!("{committing}.lock"), format!("{moving}.lock")];
        locks.sort();
        assert_eq!(names(&root.join("locks")), locks);
        assert_eq!(reopened.list().unwrap().len(), 1);

        drop(commit_lock);
        drop(moving_lock);
        let slow_path = slow.path().to_owned();
        drop(slow);
        assert!(!slow_path.exists());
        open(&dir);
        assert_eq!(names(&root.join("queue")), {
            let mut files = vec![format!("{entry}.msg")];
            files.push("README".to_owned());
            files.sort();
            files
        });
        assert!(names(&root.join("failed")).is_empty());
    }

    /// A commit's renames are made durable by one directory sync; a crash
    /// before it may keep the metadata without the message. That entry was
    /// never acknowledged: `open` removes it. An entry that was attempted
    /// is kept, even without its message.
    #[test]
    fn open_removes_metadata_whose_commit_was_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();
        let kept = accept_two_files(&outbox, MESSAGE, meta(None));
        let cut_short = accept_two_files(&outbox, MESSAGE, meta(None));
        let attempted = accept_two_files(&outbox, MESSAGE, meta(None));
        outbox
            .claim(&attempted)
            .unwrap()
            .unwrap()
            .begin_attempt(now_unix())
            .unwrap();
        for id in [&cut_short, &attempted] {
            fs::remove_file(root.join(format!("queue/{id}.eml"))).unwrap();
        }
        // One being committed right now (locked) is left alone.
        let committing = accept_two_files(&outbox, MESSAGE, meta(None));
        fs::remove_file(root.join(format!("queue/{committing}.eml"))).unwrap();
        let commit_lock = outbox.lock(&committing).unwrap().unwrap();

        let reopened = open(&dir);
        let mut ids: Vec<EntryId> = reopened.list().unwrap().into_iter().map(|e| e.id).collect();
        ids.sort();
        let mut expected = vec![kept.clone(), attempted.clone(), committing.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        assert!(!root.join(format!("queue/{cut_short}.json")).exists());
        assert!(root.join(format!("queue/{kept}.eml")).exists());
        drop(commit_lock);
    }

    #[test]
    fn interrupted_two_file_moves_are_finished_or_visible() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();

        // fail() cut short after step 2: message linked into failed/,
        // reason written, .json not yet moved.
        let id = accept_two_files(&outbox, MESSAGE, meta(None));
        let mut entry = outbox.get(id.as_str()).unwrap().unwrap();
        entry.failed_reason = Some("rejected".to_owned());
        fs::hard_link(
            outbox.eml_path(Place::Queue, &id),
            outbox.eml_path(Place::Failed, &id),
        )
        .unwrap();
        outbox.write_entry(Place::Queue, &entry).unwrap();
        assert!(outbox.due(now_unix(), None).unwrap().is_empty(), "not sent");
        assert!(outbox.claim(&id).unwrap().is_none(), "claim finishes it");
        assert_eq!(names(&root.join("failed")), two_files(&id));
        assert!(names(&root.join("queue")).is_empty());

        // The same, finished by `open`.
        let id2 = accept_two_files(&outbox, MESSAGE, meta(None));
        let mut entry2 = outbox.get(id2.as_str()).unwrap().unwrap();
        entry2.failed_reason = Some("rejected".to_owned());
        fs::hard_link(
            outbox.eml_path(Place::Queue, &id2),
            outbox.eml_path(Place::Failed, &id2),
        )
        .unwrap();
        outbox.write_entry(Place::Queue, &entry2).unwrap();
        open(&dir);
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(outbox.list_failed().unwrap().len(), 2);
        assert_eq!(outbox.read_message(id2.as_str()).unwrap().unwrap(), MESSAGE);

        // retry() cut short after rewriting the failed .json.
        let mut entry = outbox.get(id.as_str()).unwrap().unwrap();
        entry.failed_reason = None;
        outbox.write_entry(Place::Failed, &entry).unwrap();
        let listed = outbox.get(id.as_str()).unwrap().unwrap();
        assert!(listed.is_failed(), "still shown as failed");
        assert!(outbox.retry(id.as_str()).unwrap());
        assert!(outbox.get(id.as_str()).unwrap().unwrap().is_due(now_unix()));
    }

    /// One file: a move renames the `.msg` after writing the new state
    /// beside its target, so a crash at any step leaves the entry in one
    /// place, as it was or as it is now.
    #[test]
    fn interrupted_one_file_moves_leave_the_entry_in_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let root = outbox.dir().to_owned();

        // fail() cut short after writing failed/<id>.state: still queued,
        // as it was.
        let id = outbox.accept(MESSAGE, meta(None)).unwrap();
        let mut entry = outbox.get(id.as_str()).unwrap().unwrap();
        entry.failed_reason = Some("rejected".to_owned());
        outbox
            .write_state(
                Place::Failed,
                &entry,
                &outbox.state_path(Place::Failed, &id),
            )
            .unwrap();
        assert!(outbox.list_failed().unwrap().is_empty());
        assert_eq!(outbox.due(now_unix(), None).unwrap().len(), 1);
        open(&dir);
        assert!(names(&root.join("failed")).is_empty(), "leftover removed");

        // fail() cut short after the rename: failed, with its reason; the
        // queue's old .state is a leftover.
        outbox.retry(id.as_str()).unwrap(); // a queue/<id>.state
        outbox
            .write_state(
                Place::Failed,
                &entry,
                &outbox.state_path(Place::Failed, &id),
            )
            .unwrap();
        fs::rename(
            outbox.msg_path(Place::Queue, &id),
            outbox.msg_path(Place::Failed, &id),
        )
        .unwrap();
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(
            outbox
                .get(id.as_str())
                .unwrap()
                .unwrap()
                .failed_reason
                .as_deref(),
            Some("rejected")
        );
        open(&dir);
        assert!(names(&root.join("queue")).is_empty());
        assert_eq!(names(&root.join("failed")), entry_files(&id));
        assert_eq!(outbox.read_message(id.as_str()).unwrap().unwrap(), MESSAGE);

        // delivered() cut short after removing the .msg: gone.
        assert!(outbox.retry(id.as_str()).unwrap());
        fs::remove_file(outbox.msg_path(Place::Queue, &id)).unwrap();
        assert!(outbox.get(id.as_str()).unwrap().is_none());
        open(&dir);
        assert!(names(&root.join("queue")).is_empty());
    }

    fn big_message() -> Vec<u8> {
        let mut message = b"Subject: big\r\n\r\n".to_vec();
        message.extend((0..200_000u32).map(|i| b'a' + (i % 26) as u8));
        message
    }

    /// Run by `survives_kill_9`: works the outbox in a loop until killed,
    /// logging ids it was told are accepted and ids it is about to mark
    /// delivered.
    #[test]
    #[ignore = "run by survives_kill_9"]
    fn crash_child() {
        let Some(root) = std::env::var_os(CRASH_CHILD_VAR) else {
            return;
        };
        let root = PathBuf::from(root);
        let outbox = Outbox::open(root.join("outbox")).unwrap();
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("log"))
            .unwrap();
        let message = big_message();
        for n in 0u64.. {
            let id = outbox.accept(&message, meta(Some("work"))).unwrap();
            log.write_all(format!("accepted {id}\n").as_bytes())
                .unwrap();
            let claim = outbox.claim(&id).unwrap().unwrap();
            match n % 4 {
                0 => {
                    log.write_all(format!("delivering {id}\n").as_bytes())
                        .unwrap();
                    claim.delivered().unwrap();
                }
                1 => {
                    claim.retry_later("503", now_unix()).unwrap();
                }
                2 => {
                    claim.fail("rejected").unwrap();
                    outbox.retry(id.as_str()).unwrap();
                    let claim = outbox.claim(&id).unwrap().unwrap();
                    claim.fail("rejected again").unwrap();
                }
                _ => {
                    claim.hold("401").unwrap();
                    outbox.release_held(None).unwrap();
                }
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn survives_kill_9() {
        let message = big_message();
        for round in 0..6u64 {
            let dir = tempfile::tempdir().unwrap();
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "outbox::recovery::tests::crash_child",
                    "--ignored",
                    "-q",
                ])
                .env(CRASH_CHILD_VAR, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Killed at a random moment once it got going (on a busy
            // machine, starting can take longer than the jitter).
            let going = std::time::Instant::now();
            while !fs::read_to_string(dir.path().join("log")).is_ok_and(|l| l.contains("accepted"))
                && going.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let jitter = getrandom::u64().unwrap_or(round) % 150;
            std::thread::sleep(Duration::from_millis(jitter));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();

            let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
            let log = fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            let mut accepted = HashSet::new();
            let mut delivering = HashSet::new();
            for line in log.lines() {
                match line.split_once(' ') {
                    Some(("accepted", id)) => accepted.insert(id.to_owned()),
                    Some(("delivering", id)) => delivering.insert(id.to_owned()),
                    _ => panic!("torn log line {line:?}"),
                };
            }
            assert!(!accepted.is_empty(), "the child got going");

            let queued = outbox.list().unwrap();
            let failed = outbox.list_failed().unwrap();
            assert_eq!(outbox.summary().unwrap().unreadable, 0);
            for entry in queued.iter().chain(&failed) {
                let id = entry.id.as_str();
                assert_eq!(entry.size, message.len() as u64, "{id}");
                assert_eq!(outbox.read_message(id).unwrap().unwrap(), message, "{id}");
            }
            assert!(queued.iter().all(|e| e.failed_reason.is_none()));
            // Every accepted message is still there, unless delivered.
            let present: HashSet<String> = queued
                .iter()
                .chain(&failed)
                .map(|e| e.id.to_string())
                .collect();
            for id in &accepted {
                assert!(present.contains(id) || delivering.contains(id), "{id} lost");
            }
            for id in &present {
                assert!(
                    !(queued.iter().any(|e| e.id.as_str() == id)
                        && failed.iter().any(|e| e.id.as_str() == id))
                );
            }
            // No message without metadata, no stale lock.
            for sub in ["queue", "failed"] {
                for name in names(&outbox.dir().join(sub)) {
                    let stem = name.strip_suffix(".msg").or(name.strip_suffix(".state"));
                    let stem = stem.unwrap_or_else(|| panic!("stray {sub}/{name}"));
                    assert!(present.contains(stem), "orphan {sub}/{name}");
                }
            }
            assert!(names(&outbox.dir().join("locks")).is_empty());
        }
    }
}
