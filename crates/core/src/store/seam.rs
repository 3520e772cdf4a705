//! The traits the delivery engine is generic over. Every method is async:
//! a database needs a round trip, and the local spool's short blocking
//! calls (a lock, a rename, an fsync) run inline as they always have.

use std::future::Future;
use std::time::Duration;

use crate::Pace;
use crate::journal::Record;
use crate::outbox::{Entry, EntryId, NewEntry, Outcome};
use crate::transport::{DeliveryNotes, StoredMessage};

/// Where the outbox and the journal live: what
/// [`Engine`](crate::delivery::Engine) claims, settles and records through.
pub trait Store: Send + Sync {
    /// What the store's operations fail with (the local spool:
    /// [`OutboxError`](crate::outbox::OutboxError)). Callers tell a
    /// temporary trouble (a full disk, a database away) from the rest by it.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A claimed entry.
    type Claim: StoreClaim<Error = Self::Error>;
    /// A message being streamed in ([`begin`](Self::begin)).
    type Incoming: StoreIncoming<Error = Self::Error>;

    /// Whether `error` is temporary (a full disk, a database away): the
    /// caller tries again later. Nothing was accepted or settled.
    fn is_temporary(error: &Self::Error) -> bool;

    /// Accepts `message` (durable when this returns) as a new entry.
    fn accept(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<EntryId, Self::Error>> + Send;

    /// Starts an entry whose message is streamed in, in pieces
    /// ([`StoreIncoming::write`]); it is accepted only when
    /// [`StoreIncoming::commit`] returns `Ok`, and dropping it uncommitted
    /// leaves nothing behind.
    fn begin(&self) -> impl Future<Output = Result<Self::Incoming, Self::Error>> + Send;

    /// Accepts `message` as [`accept`](Self::accept) does, still claimed by
    /// the caller, who attempts it at once.
    fn accept_claimed(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> impl Future<Output = Result<Self::Claim, Self::Error>> + Send;

    /// The entry `id`, queued or failed; `None` when there is none.
    fn get(&self, id: &EntryId) -> impl Future<Output = Result<Option<Entry>, Self::Error>> + Send;

    /// The queued entries (not the failed ones), oldest first.
    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, Self::Error>> + Send;

    /// Claims entry `id`, due or not; `None` when someone else holds it or
    /// it is gone or failed.
    fn claim(
        &self,
        id: &EntryId,
    ) -> impl Future<Output = Result<Option<Self::Claim>, Self::Error>> + Send;

    /// Claims entry `id` if it is queued and due at `now`.
    fn claim_due(
        &self,
        id: &EntryId,
        now: i64,
    ) -> impl Future<Output = Result<Option<Self::Claim>, Self::Error>> + Send;

    /// Deletes entry `id` and its message, queued, held or failed (`queue
    /// drop`); `false` when there is none. A busy error while someone
    /// else holds it (is sending it).
    fn drop_entry(&self, id: &EntryId) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// The Subject of entry `id`'s message, when the journal records
    /// subjects and the message is still there. The engine asks after
    /// the claim's `message`, so a store that copies the message for the
    /// transports may answer from that copy.
    fn subject(&self, id: &EntryId) -> impl Future<Output = Option<String>> + Send;

    /// Appends `records` to the journal in one write; nothing without a
    /// journal. The outcome is settled by then: a failure is the caller's
    /// warning, never a lost delivery.
    fn append(&self, records: &[Record]) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// A claimed entry: one sender at a time. The local spool's is a lock the
/// kernel drops with its process; a shared store's is a lease that lapses
/// unless renewed. Dropping a claim unsettled leaves the entry as it was.
pub trait StoreClaim: DeliveryNotes + Send + Sync + Sized {
    /// What settling fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The entry as claimed (attempts counted so far, notes, state).
    fn entry(&self) -> &Entry;

    /// The message the transport reads, exactly as accepted.
    fn message(&self) -> impl Future<Output = std::io::Result<StoredMessage>> + Send;

    /// Counts `n` more attempts, written with the next settlement.
    fn add_attempts(&mut self, n: u32);

    /// Durably marks the entry in flight from `now`, before an attempt: a
    /// later claim that finds the mark treats the outcome as unknown.
    fn begin_attempt(&mut self, now: i64) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Resolves when the claim stops being ours (a lease another node has
    /// taken over); the local spool's never does. The engine then writes
    /// nothing more for the entry: its new holder finds it in flight.
    fn lost(&self) -> impl Future<Output = ()> + Send;

    /// Sent: the entry is removed.
    fn delivered(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A temporary failure: rescheduled, or [`Outcome::Expired`] (failed)
    /// past the entry's maximum age.
    fn retry_later_after(
        self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;

    /// Held for a login (an attempt counted).
    fn hold(self, error: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The attempt's outcome is unknown: held (`hold`) or rescheduled.
    fn uncertain(
        self,
        error: &str,
        now: i64,
        hold: bool,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;

    /// Held as uncertain without an attempt now.
    fn hold_uncertain(self, error: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Held without an attempt: its sender cannot be resolved.
    fn hold_unsent(self, reason: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Given up on: moved to the failed entries with `reason`.
    fn fail(self, reason: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A message being streamed into a store (see [`Store::begin`]): the
/// local spool's is a file in `tmp/`, a database's a transaction writing
/// bounded chunks, so a message of any size takes constant memory.
pub trait StoreIncoming: Send + Sized {
    /// What writing or committing fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Appends `bytes` to the message.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes the message an entry, queued and due now. When this returns
    /// `Ok` the entry is durable (fsynced, or its transaction committed):
    /// the message is accepted. On an error nothing was accepted, or, when
    /// the answer to a commit was lost, the caller cannot tell: it
    /// answers "try again later" either way.
    fn commit(self, meta: NewEntry) -> impl Future<Output = Result<EntryId, Self::Error>> + Send;
}

/// A store that several nodes share (a database): each node claims due
/// entries from it directly, and each mailbox's pace is kept in it, so
/// that the limits hold across all nodes together. The local spool is not
/// one: its relay keeps a schedule and the pace in memory.
pub trait SharedStore: Store + Clone + 'static {
    /// One delivery under way for a mailbox; dropping it frees its slot
    /// (a dead node's permits expire).
    type Permit: Send + 'static;

    /// The oldest entry due at `now` (or held for a sender that may
    /// resolve again) of each mailbox (sender identity and account) that
    /// no node holds, at most `limit` of them, oldest first.
    fn due_heads(
        &self,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, Self::Error>> + Send;

    /// Asks to start one delivery for `mailbox` under `pace`, counted
    /// across every node sharing the store.
    fn try_start(
        &self,
        mailbox: &str,
        pace: Pace,
    ) -> impl Future<Output = Result<PaceStart<Self::Permit>, Self::Error>> + Send;
}

/// The answer to [`SharedStore::try_start`].
#[derive(Debug)]
pub enum PaceStart<P> {
    /// Go: hold the permit while delivering.
    Go(P),
    /// Not now; ask again after this long.
    Wait(Duration),
}
