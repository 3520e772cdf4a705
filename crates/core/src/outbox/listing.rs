//! Listing and paging the queue, and the reads the schedule needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::Ordering;

use super::entry::{Entry, EntryId, EntryState, Summary, for_account};
use super::error::OutboxError;
use super::store::{Outbox, Place};
use crate::transport::StoredMessage;

impl Outbox {
    /// The queued and held entries, oldest first. Entries that cannot be
    /// read are logged and left out (see [`Summary::unreadable`]).
    pub fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        Ok(self.scan(Place::Queue)?.0)
    }

    /// The failed entries, oldest first.
    pub fn list_failed(&self) -> Result<Vec<Entry>, OutboxError> {
        Ok(self.scan(Place::Failed)?.0)
    }

    /// A page of [`list`](Self::list): at most `limit` queued and held
    /// entries from the `offset`th on, in id order (the order of
    /// acceptance), and how many there are in all. Lists the directory
    /// once and reads only the page's entries.
    pub fn list_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), OutboxError> {
        self.page(Place::Queue, offset, limit)
    }

    /// A page of [`list_failed`](Self::list_failed), like
    /// [`list_page`](Self::list_page).
    pub fn list_failed_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), OutboxError> {
        self.page(Place::Failed, offset, limit)
    }

    pub(super) fn page(
        &self,
        place: Place,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), OutboxError> {
        let ids = self.ids(place)?;
        let mut entries = Vec::new();
        for id in ids.iter().skip(offset).take(limit) {
            match self.read_entry(place, id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {} // sent, moved or dropped meanwhile
                Err(error) => tracing::warn!("skipping outbox entry: {error}"),
            }
        }
        Ok((entries, ids.len()))
    }

    /// The entry `id`, queued, held or failed; `None` if there is none.
    /// Fails with [`OutboxError::InvalidId`] if `id` is not an id.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, OutboxError> {
        let id = EntryId::parse(id)?;
        if let Some(entry) = self.read_entry(Place::Queue, &id)? {
            return Ok(Some(entry));
        }
        self.read_entry(Place::Failed, &id)
    }

    /// The message of entry `id` (queued, held or failed), as it will be
    /// or would have been sent; `None` if there is no such entry.
    pub fn read_message(&self, id: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let id = EntryId::parse(id)?;
        for place in [Place::Queue, Place::Failed] {
            let Some(found) = self.read_entry_file(place, &id)? else {
                continue;
            };
            let (path, len) = self.message_file(place, &id, found.format);
            let read = fs::File::open(&path).and_then(|file| {
                let mut bytes = Vec::new();
                file.take(len.unwrap_or(u64::MAX)).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
            match read {
                Ok(bytes) => return Ok(Some(bytes)),
                // Moved or removed meanwhile: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(OutboxError::Read { path, source }),
            }
        }
        Ok(None)
    }

    /// Where the message of entry `id` (queued, held or failed) is, for
    /// streaming it; `None` if there is no such entry.
    pub fn stored_message(&self, id: &str) -> Result<Option<StoredMessage>, OutboxError> {
        let id = EntryId::parse(id)?;
        for place in [Place::Queue, Place::Failed] {
            let Some(found) = self.read_entry_file(place, &id)? else {
                continue;
            };
            let (path, len) = self.message_file(place, &id, found.format);
            return Ok(Some(match len {
                Some(len) => StoredMessage::section(path, 0, len),
                None => StoredMessage::new(&path)
                    .map_err(|source| OutboxError::Read { path, source })?,
            }));
        }
        Ok(None)
    }

    /// The entries due at `now` (queued, `next_attempt_at <= now`), oldest
    /// first; with `account`, only that account's.
    pub fn due(&self, now: i64, account: Option<&str>) -> Result<Vec<Entry>, OutboxError> {
        let mut entries = self.list()?;
        entries.retain(|e| e.is_due(now) && for_account(e, account));
        Ok(entries)
    }

    /// The entries a sender may take at `now`, oldest first: the due ones,
    /// and those held for a sender that may resolve again
    /// ([`Entry::waits_for_identity`]).
    pub fn sendable(&self, now: i64) -> Result<Vec<Entry>, OutboxError> {
        let mut entries = self.list()?;
        entries.retain(|e| e.is_due(now) || e.waits_for_identity());
        Ok(entries)
    }

    /// Counts for `status` and `doctor`.
    pub fn summary(&self) -> Result<Summary, OutboxError> {
        let (queue, unreadable_queue) = self.scan(Place::Queue)?;
        let (failed, unreadable_failed) = self.scan(Place::Failed)?;
        let held = queue.iter().filter(|e| e.state == EntryState::Held).count();
        Ok(Summary {
            queued: queue.len() - held,
            held,
            failed: failed.len(),
            oldest_created_at: queue.iter().map(|e| e.created_at).min(),
            unreadable: unreadable_queue + unreadable_failed,
        })
    }

    /// A queued or held entry and its token, which changes with every
    /// write (see [`Outbox::read_entry_file`]); `None` if there is no such
    /// entry. For [`crate::schedule::Schedule`].
    pub(crate) fn read_queued(&self, id: &EntryId) -> Result<Option<(Entry, u64)>, OutboxError> {
        Ok(self
            .read_entry_file(Place::Queue, id)?
            .map(|found| (found.entry, found.token)))
    }

    /// The entries in `queue/`: each one's id and token (the inode of its
    /// `.state`, else its `.msg`; of its `.json` in the two-file format),
    /// one directory listing, no file read. For
    /// [`crate::schedule::Schedule`].
    pub(crate) fn queue_index(&self) -> Result<Vec<(EntryId, u64)>, OutboxError> {
        #[cfg(any(test, feature = "test-util"))]
        self.io.listings.fetch_add(1, Ordering::Relaxed);
        let dir = self.queue_dir();
        let error = |source| OutboxError::ReadDir {
            path: dir.clone(),
            source,
        };
        // Per id: the inode of its .msg, .state and .json, if listed.
        let mut files: BTreeMap<EntryId, [Option<u64>; 3]> = BTreeMap::new();
        for item in fs::read_dir(&dir).map_err(error)? {
            let item = item.map_err(error)?;
            let name = item.file_name();
            let Some((stem, slot)) = name.to_str().and_then(|n| {
                [".msg", ".state", ".json"]
                    .iter()
                    .enumerate()
                    .find_map(|(slot, suffix)| Some((n.strip_suffix(suffix)?, slot)))
            }) else {
                continue;
            };
            let Ok(id) = EntryId::parse(stem) else {
                continue;
            };
            #[cfg(unix)]
            let ino = std::os::unix::fs::DirEntryExt::ino(&item);
            #[cfg(not(unix))]
            let ino = 0;
            files.entry(id).or_default()[slot] = Some(ino);
        }
        Ok(files
            .into_iter()
            .filter_map(|(id, [msg, state, json])| match msg {
                Some(msg) => Some((id, state.unwrap_or(msg))),
                None => json.map(|json| (id, json)),
            })
            .collect())
    }

    /// The ids of the entries in `place`, sorted: one listing, no read.
    /// An entry is a `.msg`, or a `.json` (two files).
    pub(super) fn ids(&self, place: Place) -> Result<Vec<EntryId>, OutboxError> {
        let ids: BTreeSet<EntryId> = self
            .names(&self.place_dir(place))?
            .iter()
            .filter_map(|n| n.strip_suffix(".msg").or_else(|| n.strip_suffix(".json")))
            .filter_map(|n| EntryId::parse(n).ok())
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// Every readable entry in `place`, oldest first, and how many were
    /// unreadable.
    pub(super) fn scan(&self, place: Place) -> Result<(Vec<Entry>, usize), OutboxError> {
        let mut entries = Vec::new();
        let mut unreadable = 0;
        for id in self.ids(place)? {
            match self.read_entry(place, &id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {} // sent, moved or dropped meanwhile
                Err(error) => {
                    tracing::warn!("skipping outbox entry: {error}");
                    unreadable += 1;
                }
            }
        }
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok((entries, unreadable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing::*;

    #[test]
    fn accept_list_get_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(outbox.summary().unwrap(), Summary::default());

        let now = now_unix();
        let second = outbox
            .accept_at(b"second", meta(Some("work")), now)
            .unwrap();
        let first = outbox.accept_at(MESSAGE, meta(None), now - 100).unwrap();
        let list = outbox.list().unwrap();
        let ids: Vec<&EntryId> = list.iter().map(|e| &e.id).collect();
        assert_eq!(ids, [&first, &second], "oldest first");

        let entry = outbox.get(first.as_str()).unwrap().unwrap();
        assert_eq!(entry, list[0]);
        assert_eq!(entry.state, EntryState::Queued);
        assert_eq!(entry.account, None);
        assert_eq!(entry.provider.as_deref(), Some("some-provider"));
        assert_eq!(entry.from, "ops@example.com");
        assert_eq!(entry.recipients, ["oncall@example.com"]);
        assert_eq!(entry.message_id, "<1.abc@example.com>");
        assert_eq!(entry.size, MESSAGE.len() as u64);
        assert_eq!(entry.created_at, now - 100);
        assert_eq!(entry.next_attempt_at, now - 100, "due at once");
        assert_eq!(entry.attempts, 0);
        assert_eq!(entry.max_age_secs, DEFAULT_MAX_AGE_SECS);
        assert!(entry.is_due(now) && !entry.is_failed());
        assert_eq!(entry.expires_at(), now - 100 + DEFAULT_MAX_AGE_SECS);
        assert_eq!(
            outbox.read_message(first.as_str()).unwrap().unwrap(),
            MESSAGE
        );

        assert_eq!(
            outbox.summary().unwrap(),
            Summary {
                queued: 2,
                held: 0,
                failed: 0,
                oldest_created_at: Some(now - 100),
                unreadable: 0,
            }
        );
        let due: Vec<EntryId> = outbox
            .due(now, Some("work"))
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(due, std::slice::from_ref(&second));
        assert_eq!(outbox.due(now, None).unwrap().len(), 2);
        assert!(outbox.due(now - 101, None).unwrap().is_empty());

        let unknown = EntryId::generate(now);
        assert!(outbox.get(unknown.as_str()).unwrap().is_none());
        assert!(outbox.read_message(unknown.as_str()).unwrap().is_none());
        let error = outbox.get("../queue/x").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`../queue/x` is not an outbox entry id")
        );

        let mut files = vec![format!("{first}.msg"), format!("{second}.msg")];
        files.sort();
        assert_eq!(names(&outbox.dir().join("queue")), files);
        assert!(names(&outbox.dir().join("tmp")).is_empty());
        assert!(names(&outbox.dir().join("locks")).is_empty());
        assert_eq!(names(outbox.dir()), ["failed", "locks", "queue", "tmp"]);

        // Small, human-readable metadata after the message.
        let file = fs::read(outbox.msg_path(Place::Queue, &first)).unwrap();
        let text = String::from_utf8_lossy(&file[MESSAGE.len()..]);
        assert!(text.starts_with("{\n  \"id\""), "{text}");
        assert!(text.contains(&format!("\"id\": \"{first}\"")), "{text}");
        assert!(text.contains("\n  \"state\": \"queued\",\n"), "{text}");
        assert!(text.contains("}\n\napimail-queue v1 "), "{text}");
    }

    #[test]
    fn errors_name_the_file_but_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(&dir);
        let id = outbox
            .accept(
                MESSAGE,
                NewEntry {
                    recipients: vec!["private-person@example.com".to_owned()],
                    ..meta(None)
                },
            )
            .unwrap();
        let good = outbox.accept(MESSAGE, meta(None)).unwrap();
        // Its state after a change, in the sidecar.
        outbox.retry(id.as_str()).unwrap();
        let path = outbox.state_path(Place::Queue, &id);
        let json = fs::read_to_string(&path).unwrap();
        // A type error serde_json would describe by quoting the value, and
        // a truncation right after it.
        let bad_type = json.replace(
            "\"attempts\": 0",
            "\"attempts\": \"private-person@example.com\"",
        );
        assert_ne!(bad_type, json);
        let cut = &json[..json.find("private-person").unwrap() + 10];
        for broken in [bad_type.as_str(), cut] {
            fs::write(&path, broken).unwrap();
            let error = outbox.get(id.as_str()).unwrap_err();
            assert!(matches!(error, OutboxError::Parse { .. }), "{error}");
            let said = format!("{error} {error:?}");
            assert!(said.contains(&format!("{id}.state")), "{said}");
            assert!(!said.contains("private-person"), "{said}");
            assert!(outbox.claim(&id).is_err());

            // The rest of the queue is unaffected.
            let listed: Vec<EntryId> = outbox.list().unwrap().into_iter().map(|e| e.id).collect();
            assert_eq!(listed, std::slice::from_ref(&good));
            assert_eq!(outbox.summary().unwrap().unreadable, 1);
        }
        // `drop` still removes it.
        assert!(outbox.drop_entry(id.as_str()).unwrap());
        assert_eq!(outbox.summary().unwrap().unreadable, 0);
    }
}
