//! The local spool behind the seam: an [`Outbox`] directory and, when
//! kept, a [`Journal`] beside it. Its calls are short and blocking (a lock,
//! a rename, an fsync) and run inline, as they did before the seam.

use std::future::{Future, pending, ready};
use std::time::Duration;

use super::seam::{Store, StoreClaim, StoreIncoming};
use crate::journal::{Journal, Record};
use crate::outbox::{Claim, Entry, EntryId, Incoming, NewEntry, Outbox, OutboxError, Outcome};
use crate::transport::StoredMessage;

/// The outbox directory and its journal: the default store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    outbox: Outbox,
    journal: Option<Journal>,
}

impl LocalStore {
    /// The store over `outbox`, recording outcomes in `journal` if given.
    pub fn new(outbox: Outbox, journal: Option<Journal>) -> Self {
        LocalStore { outbox, journal }
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The journal, when outcomes are recorded.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Records outcomes in `journal` from now on.
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }
}

impl Store for LocalStore {
    type Error = OutboxError;
    type Claim = Claim;
    type Incoming = Incoming;

    fn is_temporary(error: &OutboxError) -> bool {
        error.is_disk_full()
    }

    fn accept(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<EntryId, OutboxError>> + Send {
        ready(self.outbox.accept(message, meta))
    }

    fn begin(&self) -> impl Future<Output = Result<Incoming, OutboxError>> + Send {
        ready(self.outbox.begin())
    }

    fn accept_claimed(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<Claim, OutboxError>> + Send {
        ready(self.outbox.accept_claimed(message, meta))
    }

    fn get(&self, id: &EntryId) -> impl Future<Output = Result<Option<Entry>, OutboxError>> + Send {
        ready(self.outbox.get(id.as_str()))
    }

    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, OutboxError>> + Send {
        ready(self.outbox.list())
    }

    fn claim(
        &self,
        id: &EntryId,
    ) -> impl Future<Output = Result<Option<Claim>, OutboxError>> + Send {
        ready(self.outbox.claim(id))
    }

    fn claim_due(
        &self,
        id: &EntryId,
        now: i64,
    ) -> impl Future<Output = Result<Option<Claim>, OutboxError>> + Send {
        ready(self.outbox.claim_due(id, now))
    }

    fn drop_entry(&self, id: &EntryId) -> impl Future<Output = Result<bool, OutboxError>> + Send {
        ready(self.outbox.drop_entry(id.as_str()))
    }

    fn subject(&self, id: &EntryId) -> impl Future<Output = Option<String>> + Send {
        ready(
            self.journal
                .as_ref()
                .and_then(|journal| stored_subject(journal, &self.outbox, id)),
        )
    }

    fn append(&self, records: &[Record]) -> impl Future<Output = std::io::Result<()>> + Send {
        ready(match &self.journal {
            Some(journal) => journal.append_all(records).map_err(std::io::Error::other),
            None => Ok(()),
        })
    }
}

/// The Subject of entry `id`'s message in `outbox`, when `journal`
/// records subjects.
pub(crate) fn stored_subject(journal: &Journal, outbox: &Outbox, id: &EntryId) -> Option<String> {
    if !journal.records_subjects() {
        return None;
    }
    let message = outbox.stored_message(id.as_str()).ok().flatten()?;
    message.open().ok().and_then(crate::parse::read_subject)
}

/// The temporary file in `tmp/`; writes are short and blocking, inline.
impl StoreIncoming for Incoming {
    type Error = OutboxError;

    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), OutboxError>> + Send {
        use std::io::Write;
        let written = self.write_all(bytes);
        ready(written.map_err(|source| OutboxError::Write {
            path: self.path().to_owned(),
            source,
        }))
    }

    fn commit(self, meta: NewEntry) -> impl Future<Output = Result<EntryId, OutboxError>> + Send {
        ready(Incoming::commit(self, meta))
    }
}

impl StoreClaim for Claim {
    type Error = OutboxError;

    fn entry(&self) -> &Entry {
        Claim::entry(self)
    }

    fn message(&self) -> impl Future<Output = std::io::Result<StoredMessage>> + Send {
        ready(self.stored_message())
    }

    fn add_attempts(&mut self, n: u32) {
        Claim::add_attempts(self, n);
    }

    fn begin_attempt(&mut self, now: i64) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::begin_attempt(self, now))
    }

    fn lost(&self) -> impl Future<Output = ()> + Send {
        pending()
    }

    fn delivered(self) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::delivered(self))
    }

    fn retry_later_after(
        self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome, OutboxError>> + Send {
        ready(Claim::retry_later_after(self, error, now, retry_after))
    }

    fn hold(self, error: &str) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::hold(self, error))
    }

    fn uncertain(
        self,
        error: &str,
        now: i64,
        hold: bool,
    ) -> impl Future<Output = Result<Outcome, OutboxError>> + Send {
        ready(Claim::uncertain(self, error, now, hold))
    }

    fn hold_uncertain(self, error: &str) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::hold_uncertain(self, error))
    }

    fn hold_unsent(self, reason: &str) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::hold_unsent(self, reason))
    }

    fn fail(self, reason: &str) -> impl Future<Output = Result<(), OutboxError>> + Send {
        ready(Claim::fail(self, reason))
    }
}
