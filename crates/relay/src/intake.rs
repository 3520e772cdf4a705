//! Accepting into a store other than the local spool (a database several
//! relays share), behind one object-safe face so that the sessions are not
//! generic over the store: any [`Store`] is one. The local spool does not
//! go through here: its sessions write the outbox directly, as they
//! always have. Each call is boxed once per message or per piece of at
//! least [`COPY_BYTES`], next to a database round trip.

use futures_util::future::BoxFuture;

use apimail_core::error_chain;
use apimail_core::outbox::{EntryId, NewEntry};
use apimail_core::store::{Store, StoreIncoming};

/// How much of a received message's file is read and written at a time
/// when it is copied into the store.
pub(super) const COPY_BYTES: usize = 256 * 1024;

/// A store the relay accepts into (see the module's text).
pub(super) trait Intake: Send + Sync {
    /// Accepts a message in memory; committed when this returns `Ok`.
    fn accept<'a>(
        &'a self,
        message: &'a [u8],
        meta: NewEntry,
    ) -> BoxFuture<'a, Result<EntryId, String>>;

    /// Starts a message streamed in.
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Writing>, String>>;
}

/// A message being streamed into the store.
pub(super) trait Writing: Send {
    /// Appends `bytes`.
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>>;

    /// Commits the entry: accepted when this returns `Ok`.
    fn commit(self: Box<Self>, meta: NewEntry) -> BoxFuture<'static, Result<EntryId, String>>;
}

impl<B> Intake for B
where
    B: Store + 'static,
    B::Incoming: 'static,
{
    fn accept<'a>(
        &'a self,
        message: &'a [u8],
        meta: NewEntry,
    ) -> BoxFuture<'a, Result<EntryId, String>> {
        Box::pin(async move {
            Store::accept(self, message, meta)
                .await
                .map_err(|e| error_chain(&e))
        })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Writing>, String>> {
        Box::pin(async move {
            match Store::begin(self).await {
                Ok(incoming) => Ok(Box::new(Streaming(incoming)) as Box<dyn Writing>),
                Err(e) => Err(error_chain(&e)),
            }
        })
    }
}

/// A store's [`StoreIncoming`], boxed.
struct Streaming<I>(I);

impl<I: StoreIncoming + 'static> Writing for Streaming<I> {
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.0.write(bytes).await.map_err(|e| error_chain(&e)) })
    }

    fn commit(self: Box<Self>, meta: NewEntry) -> BoxFuture<'static, Result<EntryId, String>> {
        Box::pin(async move { self.0.commit(meta).await.map_err(|e| error_chain(&e)) })
    }
}
