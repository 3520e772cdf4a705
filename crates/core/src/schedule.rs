//! Every queued entry's next attempt, in memory, ordered by due time per
//! mailbox: what the relay's workers pick due entries from, so that finding
//! the next one costs the same with 100,000 entries queued as with none.
//!
//! The outbox on disk stays the truth; the schedule is an index of it:
//!
//! - [`refresh`](Schedule::refresh) reads one entry again (one file read)
//!   and puts it where it belongs; the workers call it for each entry they
//!   accept, claim or settle.
//! - [`rescan`](Schedule::rescan) brings it in line with what other
//!   processes did (`queue retry`, a login releasing held entries, a
//!   `sendmail` that left its message queued): one listing of `queue/` with
//!   inode numbers, and a read only of the entries whose `.json` is new or
//!   was replaced (every write renames a new file over it, so a new inode
//!   is a changed entry). From an empty schedule that is the one full read
//!   at start-up.
//!
//! A claim reads the entry again under its lock, so a stale schedule can
//! delay a delivery, never make a wrong one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::SenderIdentity;
use crate::outbox::{Entry, EntryId, EntryState, Outbox, OutboxError};

/// A mailbox: an entry's sender identity and account.
pub type MailboxKey = (Option<SenderIdentity>, Option<String>);

/// Reads applied to the schedule at once during a rescan.
const BATCH: usize = 1024;

/// The schedule; see the [module documentation](self).
#[derive(Debug, Default)]
pub struct Schedule {
    slots: HashMap<EntryId, Slot>,
    /// Per mailbox, the waiting entries by (due time, id).
    lanes: HashMap<MailboxKey, BTreeSet<(i64, EntryId)>>,
    /// Bumped by every change; a slot keeps the value of its last one.
    clock: u64,
}

#[derive(Debug)]
struct Slot {
    key: MailboxKey,
    /// When it is due (Unix seconds); `None`: held, failed or unreadable.
    due: Option<i64>,
    /// The inode of the `.json` last read.
    ino: u64,
    /// Being delivered: out of its lane until [`Schedule::done`].
    busy: bool,
    stamp: u64,
}

impl Schedule {
    /// An empty schedule; [`rescan`](Self::rescan) fills it.
    pub fn new() -> Self {
        Schedule::default()
    }

    /// How many queued and held entries it knows.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it knows no entry.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The mailboxes with an entry waiting.
    pub fn mailboxes(&self) -> impl Iterator<Item = &MailboxKey> {
        self.lanes.keys()
    }

    /// When the earliest waiting entry of mailbox `key` is due.
    pub fn next_due(&self, key: &MailboxKey) -> Option<i64> {
        self.lanes.get(key)?.first().map(|(due, _)| *due)
    }

    /// Drops `id` from the schedule (it could not be read): the next
    /// rescan reads it again.
    pub fn forget(&mut self, id: &EntryId) {
        self.set(id, None);
    }

    /// The earliest waiting entry of mailbox `key`, if it is due at `now`.
    pub fn first_due(&self, key: &MailboxKey, now: i64) -> Option<EntryId> {
        let (due, id) = self.lanes.get(key)?.first()?;
        (*due <= now).then(|| id.clone())
    }

    /// Marks `id` as being delivered: it leaves its lane until
    /// [`done`](Self::done).
    pub fn take(&mut self, id: &EntryId) {
        if let Some(slot) = self.slots.get_mut(id) {
            if let (Some(due), false) = (slot.due, slot.busy) {
                remove_from_lane(&mut self.lanes, &slot.key, due, id);
            }
            slot.busy = true;
        }
    }

    /// `id`'s delivery ended: reads it again and puts it back where it now
    /// belongs (gone if it was sent or failed for good).
    pub fn done(&mut self, outbox: &Outbox, id: &EntryId) -> Result<(), OutboxError> {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.busy = false;
            if let Some(due) = slot.due {
                self.lanes
                    .entry(slot.key.clone())
                    .or_default()
                    .insert((due, id.clone()));
            }
        }
        self.refresh(outbox, id)
    }

    /// Reads entry `id` again (one file read) and puts it where it belongs.
    pub fn refresh(&mut self, outbox: &Outbox, id: &EntryId) -> Result<(), OutboxError> {
        let found = outbox.read_queued(id)?;
        self.set(id, found);
        Ok(())
    }

    /// Puts `id` where `found` (its entry and inode, or nothing) says.
    fn set(&mut self, id: &EntryId, found: Option<(Entry, u64)>) {
        self.clock += 1;
        let old = self.slots.remove(id);
        let busy = old.as_ref().is_some_and(|slot| slot.busy);
        if let Some(Slot {
            key,
            due: Some(due),
            busy: false,
            ..
        }) = &old
        {
            remove_from_lane(&mut self.lanes, key, *due, id);
        }
        let Some((entry, ino)) = found else { return };
        // Held for its sender: sendable once the sender resolves.
        let due = ((entry.state == EntryState::Queued && !entry.is_failed())
            || entry.waits_for_identity())
        .then_some(entry.next_attempt_at);
        let key = (entry.identity, entry.account);
        if let (Some(due), false) = (due, busy) {
            self.lanes
                .entry(key.clone())
                .or_default()
                .insert((due, id.clone()));
        }
        self.slots.insert(
            id.clone(),
            Slot {
                key,
                due,
                ino,
                busy,
                stamp: self.clock,
            },
        );
    }

    /// Keeps an unreadable entry known (not due) until its file changes,
    /// so it is not read (and warned about) at every rescan.
    fn set_unreadable(&mut self, id: &EntryId, ino: u64) {
        self.set(id, None);
        self.slots.insert(
            id.clone(),
            Slot {
                key: (None, None),
                due: None,
                ino,
                busy: false,
                stamp: self.clock,
            },
        );
    }

    /// Brings `schedule` in line with `outbox`'s `queue/`: one listing
    /// (names and inodes), then a read of each entry that is new or was
    /// rewritten since it was last read, and the removal of those no longer
    /// listed. The lock is held only to compare and to apply (in batches),
    /// never during file I/O, so deliveries go on meanwhile. Blocking: call
    /// it through `spawn_blocking`. Returns how many entries were read.
    pub fn rescan(schedule: &Mutex<Schedule>, outbox: &Outbox) -> Result<usize, OutboxError> {
        let started = lock(schedule).clock;
        let index = outbox.queue_index()?;
        let (to_read, gone) = {
            let schedule = lock(schedule);
            let mut listed = HashSet::with_capacity(index.len());
            let mut to_read = Vec::new();
            for (id, ino) in index {
                match schedule.slots.get(&id) {
                    Some(slot) if slot.busy || slot.ino == ino => {}
                    Some(slot) => to_read.push((id.clone(), ino, Some(slot.stamp))),
                    None => to_read.push((id.clone(), ino, None)),
                }
                listed.insert(id);
            }
            // Changed after the listing began: the listing may predate it.
            let gone: Vec<(EntryId, u64)> = schedule
                .slots
                .iter()
                .filter(|(id, slot)| !slot.busy && slot.stamp <= started && !listed.contains(*id))
                .map(|(id, slot)| (id.clone(), slot.stamp))
                .collect();
            (to_read, gone)
        };
        {
            let mut schedule = lock(schedule);
            for (id, stamp) in gone {
                if schedule.slots.get(&id).is_some_and(|s| s.stamp == stamp) {
                    schedule.set(&id, None);
                }
            }
        }
        let read = to_read.len();
        for batch in to_read.chunks(BATCH) {
            let found: Vec<_> = batch
                .iter()
                .map(|(id, ino, stamp)| (id, *ino, *stamp, outbox.read_queued(id)))
                .collect();
            let mut schedule = lock(schedule);
            for (id, ino, stamp, result) in found {
                // Changed by this process meanwhile: that is newer.
                let current = schedule.slots.get(id);
                if current.map(|s| s.stamp) != stamp || current.is_some_and(|s| s.busy) {
                    continue;
                }
                match result {
                    Ok(found) => schedule.set(id, found),
                    Err(error) => {
                        tracing::warn!("skipping outbox entry: {error}");
                        schedule.set_unreadable(id, ino);
                    }
                }
            }
        }
        Ok(read)
    }
}

fn remove_from_lane(
    lanes: &mut HashMap<MailboxKey, BTreeSet<(i64, EntryId)>>,
    key: &MailboxKey,
    due: i64,
    id: &EntryId,
) {
    if let Some(lane) = lanes.get_mut(key) {
        lane.remove(&(due, id.clone()));
        if lane.is_empty() {
            lanes.remove(key);
        }
    }
}

/// The schedule, whatever a panicking holder left (it is only an index).
pub fn lock(schedule: &Mutex<Schedule>) -> MutexGuard<'_, Schedule> {
    schedule.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::now_unix;
    use crate::outbox::NewEntry;

    fn key() -> MailboxKey {
        (Some(SenderIdentity::account("work")), Some("work".into()))
    }

    #[test]
    fn entries_come_out_by_due_time_and_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let now = now_unix();
        let later = outbox.fill_for_test(1, now + 600).remove(0);
        let schedule = Mutex::new(Schedule::new());
        assert_eq!(Schedule::rescan(&schedule, &outbox).unwrap(), 1);
        assert_eq!(lock(&schedule).first_due(&key(), now), None, "not due yet");

        let meta = NewEntry {
            identity: Some(SenderIdentity::account("work")),
            account: Some("work".into()),
            ..NewEntry::default()
        };
        let first = outbox.accept(b"Subject: a\r\n\r\na\r\n", meta).unwrap();
        let mut s = lock(&schedule);
        s.refresh(&outbox, &first).unwrap();
        assert_eq!(s.first_due(&key(), now), Some(first.clone()));
        assert_eq!(s.mailboxes().collect::<Vec<_>>(), [&key()]);
        assert_eq!(s.next_due(&key()), Some(now));
        s.take(&first);
        assert_eq!(s.first_due(&key(), now), None, "busy");
        // The delivery held it: it stays known, but is not due.
        let claim = outbox.claim(&first).unwrap().unwrap();
        claim.hold("no login").unwrap();
        s.done(&outbox, &first).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.first_due(&key(), now + 601), Some(later.clone()));
        drop(s);

        // Another process: releases the held one, sends the other.
        assert_eq!(outbox.release_held(None).unwrap(), 1);
        outbox.claim(&later).unwrap().unwrap().delivered().unwrap();
        assert_eq!(
            Schedule::rescan(&schedule, &outbox).unwrap(),
            1,
            "one changed file read"
        );
        let s = lock(&schedule);
        assert_eq!(s.len(), 1);
        assert_eq!(s.first_due(&key(), now_unix()), Some(first));
        drop(s);
        let (listings, reads) = outbox.io_counts();
        assert_eq!(
            Schedule::rescan(&schedule, &outbox).unwrap(),
            0,
            "nothing changed"
        );
        assert_eq!(
            outbox.io_counts(),
            (listings + 1, reads),
            "one listing, no read"
        );
    }
}
