//! The queue as the console reads and changes it: the data directory's
//! outbox, or the shared store's entries when the console has one
//! (`Console::with_store`). The queue page, the overview, the message
//! page and the API's queue actions all go through here.

use apimail_core::delivery;
use apimail_core::outbox::{Entry, EntryId, OutboxError};
use apimail_store_postgres::StoreError;

use crate::state::Console;

/// Why a queue action did not happen.
#[derive(Debug)]
pub(crate) enum ActionError {
    /// Not a queue id.
    InvalidId(String),
    /// Another process (or node) is sending it.
    Busy,
    /// The outbox or the store failed.
    Other(String),
}

impl From<OutboxError> for ActionError {
    fn from(error: OutboxError) -> ActionError {
        match error {
            OutboxError::InvalidId { .. } => ActionError::InvalidId(error.to_string()),
            OutboxError::Busy { .. } => ActionError::Busy,
            error => ActionError::Other(error.to_string()),
        }
    }
}

impl From<StoreError> for ActionError {
    fn from(error: StoreError) -> ActionError {
        match error {
            StoreError::InvalidId(error) => ActionError::from(error),
            StoreError::Busy { .. } => ActionError::Busy,
            error => ActionError::Other(error.to_string()),
        }
    }
}

/// Every entry, queued and held then failed, each oldest first.
pub(crate) async fn all_entries(console: &Console) -> Result<Vec<Entry>, String> {
    if let Some(store) = &console.store {
        let mut entries = store.list().await.map_err(|e| e.to_string())?;
        entries.extend(store.list_failed().await.map_err(|e| e.to_string())?);
        return Ok(entries);
    }
    let outbox = console.outbox.clone();
    tokio::task::spawn_blocking(move || {
        let mut entries = outbox.list().map_err(|e| e.to_string())?;
        entries.extend(outbox.list_failed().map_err(|e| e.to_string())?);
        Ok(entries)
    })
    .await
    .unwrap_or_else(|_| Err("the outbox listing stopped".to_owned()))
}

/// The queued and held entries, oldest first, from a blocking thread (the
/// alerts' rounds): the store is waited for through the runtime's handle.
pub(crate) fn list_blocking(console: &Console) -> Result<Vec<Entry>, String> {
    let Some(store) = &console.store else {
        return console.outbox.list().map_err(|e| e.to_string());
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    runtime.block_on(store.list()).map_err(|e| e.to_string())
}

/// Entry `id`'s message, if it is still queued.
pub(crate) async fn read_message(console: &Console, id: String) -> Option<Vec<u8>> {
    if let Some(store) = &console.store {
        return store.read_message(&id).await.ok().flatten();
    }
    let outbox = console.outbox.clone();
    tokio::task::spawn_blocking(move || outbox.read_message(&id))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// `queue retry ID`: due now; `false` when there is no such entry.
pub(crate) async fn retry(console: &Console, id: String) -> Result<bool, ActionError> {
    if let Some(store) = &console.store {
        return Ok(store.retry(&id).await?);
    }
    let outbox = console.outbox.clone();
    tokio::task::spawn_blocking(move || outbox.retry(&id))
        .await
        .map_err(|_| ActionError::Other("the outbox action stopped".to_owned()))?
        .map_err(ActionError::from)
}

/// `queue drop ID`: deletes the entry, journaled as dropped; `false` when
/// there is no such entry.
pub(crate) async fn drop_entry(console: &Console, id: String) -> Result<bool, ActionError> {
    if let Some(store) = &console.store {
        let Ok(id) = EntryId::try_from(id) else {
            return Ok(false);
        };
        return Ok(delivery::drop_from(store, &id).await?);
    }
    let outbox = console.outbox.clone();
    let journal = console.journal.clone();
    tokio::task::spawn_blocking(move || delivery::drop_entry(&outbox, &journal, &id))
        .await
        .map_err(|_| ActionError::Other("the outbox action stopped".to_owned()))?
        .map_err(ActionError::from)
}
