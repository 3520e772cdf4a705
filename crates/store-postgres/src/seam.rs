//! This store behind core's seam ([`apimail_core::store`]), so that the
//! delivery engine claims, settles and records through it exactly as it
//! does through the local spool.

use std::future::Future;
use std::io;
use std::time::Duration;

use apimail_core::journal::Record;
use apimail_core::outbox::{Entry, EntryId, NewEntry, Outcome};
use apimail_core::store::{PaceStart, SharedStore, Store as CoreStore, StoreClaim, StoreIncoming};
use apimail_core::{DeliveryNotes, NoteWrite, Pace, StoredMessage};

use crate::claim::Claim;
use crate::error::StoreError;
use crate::pace::{Permit, Start};
use crate::queue::Incoming;
use crate::store::Store;
use crate::subjects::Head;

impl CoreStore for Store {
    type Error = StoreError;
    type Claim = Claim;
    type Incoming = Incoming;

    fn is_temporary(error: &StoreError) -> bool {
        error.is_temporary()
    }

    fn accept(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<EntryId, StoreError>> + Send {
        Store::accept(self, message, meta)
    }

    fn begin(&self) -> impl Future<Output = Result<Incoming, StoreError>> + Send {
        Store::begin(self)
    }

    fn accept_claimed(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        Store::accept_claimed(self, message, meta)
    }

    fn get(&self, id: &EntryId) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send {
        Store::get(self, id.as_str())
    }

    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send {
        Store::list(self)
    }

    fn claim(
        &self,
        id: &EntryId,
    ) -> impl Future<Output = Result<Option<Claim>, StoreError>> + Send {
        Store::claim(self, id)
    }

    fn claim_due(
        &self,
        id: &EntryId,
        now: i64,
    ) -> impl Future<Output = Result<Option<Claim>, StoreError>> + Send {
        Store::claim_due(self, id, now)
    }

    fn drop_entry(&self, id: &EntryId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        Store::drop_entry(self, id.as_str())
    }

    async fn subject(&self, id: &EntryId) -> Option<String> {
        if !self.subjects {
            return None;
        }
        // Taken as the message was spooled for an attempt, or read before.
        if let Some(known) = self.subjects_read.get(id.as_str()) {
            return known;
        }
        // Chunks up to the end of the header section, at most 1 MiB.
        let mut reader = self.open_message(id.as_str()).await.ok()??;
        let mut head = Head::default();
        while head.wants_more() {
            match reader.next_chunk().await.ok()? {
                Some(chunk) => head.take(&chunk),
                None => break,
            }
        }
        let subject = head.subject();
        self.subjects_read.put(id.as_str(), subject.clone());
        subject
    }

    async fn append(&self, records: &[Record]) -> io::Result<()> {
        self.append_all(records).await.map_err(io::Error::other)
    }
}

/// The chunks go into the database as they fill, inside the entry's one
/// transaction: accepted when it commits.
impl StoreIncoming for Incoming {
    type Error = StoreError;

    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send {
        Incoming::write(self, bytes)
    }

    fn commit(self, meta: NewEntry) -> impl Future<Output = Result<EntryId, StoreError>> + Send {
        Incoming::commit(self, meta)
    }
}

/// Due entries are claimed with `SKIP LOCKED`, and each mailbox's pace is
/// one row every node locks in turn (`pace.rs`).
impl SharedStore for Store {
    type Permit = Permit;

    fn due_heads(
        &self,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send {
        Store::due_heads(self, now, limit)
    }

    async fn try_start(&self, mailbox: &str, pace: Pace) -> Result<PaceStart<Permit>, StoreError> {
        Ok(match Store::try_start(self, mailbox, pace).await? {
            Start::Go(permit) => PaceStart::Go(permit),
            Start::Wait(wait) => PaceStart::Wait(wait),
        })
    }
}

impl StoreClaim for Claim {
    type Error = StoreError;

    fn entry(&self) -> &Entry {
        Claim::entry(self)
    }

    async fn message(&self) -> io::Result<StoredMessage> {
        let path = self.spooled().await?;
        StoredMessage::new(path)
    }

    fn add_attempts(&mut self, n: u32) {
        Claim::add_attempts(self, n);
    }

    fn begin_attempt(&mut self, now: i64) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::begin_attempt(self, now)
    }

    fn lost(&self) -> impl Future<Output = ()> + Send {
        self.lease_lost()
    }

    fn delivered(self) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::delivered(self)
    }

    fn retry_later_after(
        self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send {
        Claim::retry_later_after(self, error, now, retry_after)
    }

    fn hold(self, error: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::hold(self, error)
    }

    fn uncertain(
        self,
        error: &str,
        now: i64,
        hold: bool,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send {
        Claim::uncertain(self, error, now, hold)
    }

    fn hold_uncertain(self, error: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::hold_uncertain(self, error)
    }

    fn hold_unsent(self, reason: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::hold_unsent(self, reason)
    }

    fn fail(self, reason: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        Claim::fail(self, reason)
    }
}

/// The notes live in the entry's row; each change is one fenced `UPDATE`
/// (a claim whose lease was lost writes nothing and fails).
impl DeliveryNotes for Claim {
    fn get(&self, key: &str) -> Option<String> {
        self.note(key)
    }

    fn set<'a>(&'a self, key: &'a str, value: Option<&'a str>) -> NoteWrite<'a> {
        Box::pin(async move { self.set_note(key, value).await.map_err(io::Error::other) })
    }
}
