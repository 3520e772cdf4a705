//! Where the command line's queue and journal are: the local outbox and
//! journal in the data directory, or the shared PostgreSQL store when one
//! is configured (`[store] url`, `APIMAIL_STORE_URL`). The one place that
//! chooses: `send`, `sendmail`, `queue` and `log` call the same methods
//! either way, and the delivery engine settles through the store's seam.
//!
//! A message is written to the data directory's `outbox/tmp/` first, as
//! it arrives (memory does not grow with it); it is accepted when it is
//! committed there, or, with a store, when the store's transaction that
//! copies it in has committed.

use apimail_account::{Config, Delivery, StoreSettings};
use apimail_core::delivery::{
    self as engine, Engine, FlushReport, IfNotSent, Interrupt, Selection,
};
use apimail_core::journal::{Filter, Journal, JournalError, Record};
use apimail_core::outbox::{Entry, EntryId, Incoming, NewEntry, Outbox, OutboxError};
use apimail_core::retry::RetryPolicy;
use apimail_store_postgres::{Store as SharedStore, StoreError, redact_url};

use crate::exit::{Exit, Failure};
use crate::providers::{ConfiguredSenders, Context, Resolved};

/// The outbox under the data directory (`$APIMAIL_DATA_DIR/outbox`).
pub fn open_outbox() -> Result<Outbox, Failure> {
    Outbox::open(apimail_account::outbox_dir()?).map_err(outbox_failure)
}

/// The delivery journal under the data directory (`$APIMAIL_DATA_DIR/journal`),
/// with the config's `[journal]` settings.
pub fn open_journal(config: &apimail_account::Config) -> Result<Journal, Failure> {
    let delivery = apimail_account::Delivery::from_config(config)?;
    apimail_account::open_journal(&apimail_account::outbox_dir()?, &delivery)
        .map_err(journal_failure)
}

pub fn journal_failure(error: JournalError) -> Failure {
    Failure::new(Exit::Config, error).hint("check the data directory's permissions and free space")
}

/// An outbox failure, by what the user must do.
pub fn outbox_failure(error: OutboxError) -> Failure {
    match &error {
        OutboxError::InvalidId { .. } => {
            Failure::new(Exit::Usage, error).hint("see `apimail queue list` for the ids")
        }
        OutboxError::Busy { .. } => Failure::new(Exit::TempFail, error)
            .hint("another apimail process is sending it; see `apimail queue list` in a moment"),
        _ if error.is_disk_full() => Failure::new(Exit::TempFail, error)
            .hint("the disk holding the data directory is full; free some space, then try again"),
        _ => Failure::new(Exit::Config, error)
            .hint("check the data directory's permissions (apimail doctor)"),
    }
}

/// The first SIGINT or SIGTERM, by name: what interrupts a delivery.
#[cfg(unix)]
pub async fn signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT".to_owned(),
        _ = terminate.recv() => "SIGTERM".to_owned(),
    }
}

/// The first Ctrl-C.
#[cfg(not(unix))]
pub async fn signal() -> String {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C".to_owned()
}

/// How many journal records `log` reads from the store at a time.
const JOURNAL_PAGE: usize = 1000;

/// The queue's place: the local outbox, or the shared store.
pub enum QueueStore {
    Local,
    Shared(Shared),
}

/// The open shared store and how to name it in a failure.
pub struct Shared {
    store: SharedStore,
    named: Named,
}

impl Shared {
    fn failure(&self, error: StoreError) -> Failure {
        self.named.failure(error)
    }
}

/// A page of `queue list`: queued and held entries, then failed ones.
pub struct Page {
    pub queued: Vec<Entry>,
    pub queued_total: usize,
    pub failed: Vec<Entry>,
    pub failed_total: usize,
}

impl QueueStore {
    /// The store `config` (or the environment) names, opened; else the
    /// local outbox. A database that does not answer is a temporary
    /// failure (exit 75): nothing is accepted without it.
    pub async fn open(config: &Config) -> Result<QueueStore, Failure> {
        let settings =
            apimail_account::store_settings(config).map_err(crate::store::settings_failure)?;
        let Some(settings) = settings else {
            return Ok(QueueStore::Local);
        };
        Ok(QueueStore::Shared(open_shared(&settings).await?))
    }

    /// At most `limit` entries from the `offset`th on, queued and held
    /// ones first, then the failed ones, with the totals.
    pub async fn page(&self, offset: usize, limit: usize) -> Result<Page, Failure> {
        let ((queued, queued_total), failed_of) = match self {
            QueueStore::Local => {
                let outbox = open_outbox()?;
                let queued = outbox.list_page(offset, limit).map_err(outbox_failure)?;
                let failed_offset = offset.saturating_sub(queued.1);
                let failed_limit = limit.saturating_sub(queued.0.len());
                let failed = outbox
                    .list_failed_page(failed_offset, failed_limit)
                    .map_err(outbox_failure)?;
                (queued, failed)
            }
            QueueStore::Shared(shared) => {
                let queued = shared
                    .store
                    .list_page(offset, limit)
                    .await
                    .map_err(|e| shared.failure(e))?;
                let failed_offset = offset.saturating_sub(queued.1);
                let failed_limit = limit.saturating_sub(queued.0.len());
                let failed = shared
                    .store
                    .list_failed_page(failed_offset, failed_limit)
                    .await
                    .map_err(|e| shared.failure(e))?;
                (queued, failed)
            }
        };
        Ok(Page {
            queued,
            queued_total,
            failed: failed_of.0,
            failed_total: failed_of.1,
        })
    }

    /// Entry `id`, queued, held or failed.
    pub async fn get(&self, id: &str) -> Result<Option<Entry>, Failure> {
        match self {
            QueueStore::Local => open_outbox()?.get(id).map_err(outbox_failure),
            QueueStore::Shared(shared) => shared.store.get(id).await.map_err(|e| shared.failure(e)),
        }
    }

    /// Entry `id`'s message, as accepted.
    pub async fn read_message(&self, id: &str) -> Result<Option<Vec<u8>>, Failure> {
        match self {
            QueueStore::Local => open_outbox()?.read_message(id).map_err(outbox_failure),
            QueueStore::Shared(shared) => shared
                .store
                .read_message(id)
                .await
                .map_err(|e| shared.failure(e)),
        }
    }

    /// `queue retry ID`: due now (a failed one back in the queue);
    /// `false` when there is no such entry.
    pub async fn retry(&self, id: &str) -> Result<bool, Failure> {
        match self {
            QueueStore::Local => open_outbox()?.retry(id).map_err(outbox_failure),
            QueueStore::Shared(shared) => {
                shared.store.retry(id).await.map_err(|e| shared.failure(e))
            }
        }
    }

    /// After a login: the held entries of `account` become due.
    pub async fn release_held(&self, account: &str) -> Result<usize, Failure> {
        match self {
            QueueStore::Local => open_outbox()?
                .release_held(Some(account))
                .map_err(outbox_failure),
            QueueStore::Shared(shared) => shared
                .store
                .release_held(Some(account))
                .await
                .map_err(|e| shared.failure(e)),
        }
    }

    /// Calls `each` with every journal record passing `filter`, oldest
    /// first, until it returns `false`. Returns how many lines of the
    /// local journal were skipped as not records.
    pub async fn read_journal(
        &self,
        config: &Config,
        filter: &Filter,
        mut each: impl FnMut(&Record) -> Result<bool, Failure>,
    ) -> Result<usize, Failure> {
        match self {
            QueueStore::Local => {
                let journal = open_journal(config)?;
                let mut records = journal.read(filter).map_err(journal_failure)?;
                for record in records.by_ref() {
                    if !each(&record.map_err(journal_failure)?)? {
                        break;
                    }
                }
                Ok(records.skipped())
            }
            QueueStore::Shared(shared) => {
                let mut after = 0;
                loop {
                    let page = shared
                        .store
                        .read_journal(filter, after, JOURNAL_PAGE)
                        .await
                        .map_err(|e| shared.failure(e))?;
                    for stored in &page {
                        if !each(&stored.record)? {
                            return Ok(0);
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == JOURNAL_PAGE => after = last.seq,
                        _ => return Ok(0),
                    }
                }
            }
        }
    }

    /// The delivery engine over this store, resolving senders from `ctx`
    /// as the account layer builds it (journal, `when_unknown`), stopped
    /// by SIGINT or SIGTERM.
    pub fn engine(self, ctx: &Context) -> Result<Engines<'_>, Failure> {
        let delivery = Delivery::from_config(&ctx.config)?;
        let senders = ConfiguredSenders { ctx };
        let interrupt = || Interrupt::new(signal);
        Ok(match self {
            QueueStore::Local => {
                let dir = apimail_account::outbox_dir()?;
                let engine =
                    apimail_account::engine(&dir, senders, &delivery).map_err(outbox_failure)?;
                Engines::Local(engine.with_interrupt(interrupt()))
            }
            QueueStore::Shared(Shared { store, named }) => {
                let engine = apimail_account::shared_engine(store, senders, &delivery);
                Engines::Shared(engine.with_interrupt(interrupt()), named)
            }
        })
    }
}

/// How a shared store is named in a failure: its URL without the
/// password, and the setting that gave it.
pub struct Named {
    shown: String,
    from: &'static str,
}

impl Named {
    fn failure(&self, error: StoreError) -> Failure {
        crate::store::store_failure(error, &self.shown, self.from)
    }
}

/// The delivery engine over the local outbox or the shared store.
pub enum Engines<'a> {
    Local(Engine<ConfiguredSenders<'a>>),
    Shared(Engine<ConfiguredSenders<'a>, SharedStore>, Named),
}

impl Engines<'_> {
    /// Where a message is written while it arrives, before it is
    /// accepted: the local outbox (its `tmp/`).
    pub fn staging(&self) -> Result<Outbox, Failure> {
        match self {
            Engines::Local(engine) => Ok(engine.outbox().clone()),
            Engines::Shared(..) => open_outbox(),
        }
    }

    /// Accepts the message written to `incoming`, still claimed, and
    /// delivers it now with `resolved` under `retry`. Accepted means
    /// committed: fsynced in the outbox, or the store's transaction done.
    pub async fn accept_and_deliver(
        &self,
        incoming: Incoming,
        meta: NewEntry,
        resolved: &Resolved,
        retry: &RetryPolicy,
        if_not_sent: IfNotSent,
    ) -> Result<engine::Delivery, Failure> {
        match self {
            Engines::Local(engine) => {
                let claim = incoming.commit_claimed(meta).map_err(outbox_failure)?;
                let id = claim.entry().id.clone();
                engine
                    .deliver_claimed(claim, resolved, retry, if_not_sent)
                    .await
                    .map_err(|e| still_there(outbox_failure(e), &id))
            }
            Engines::Shared(engine, named) => {
                let into = copy_in(engine.store(), incoming);
                let claim = match into.await {
                    Ok(into) => into.commit_claimed(meta).await,
                    Err(error) => Err(error),
                }
                .map_err(|e| named.failure(e))?;
                let id = claim.entry().id.clone();
                engine
                    .deliver_claimed(claim, resolved, retry, if_not_sent)
                    .await
                    .map_err(|e| still_there(named.failure(e), &id))
            }
        }
    }

    /// Accepts the message written to `incoming` without an attempt
    /// (`send --queue`), journaled as queued.
    pub async fn accept(&self, incoming: Incoming, meta: NewEntry) -> Result<EntryId, Failure> {
        match self {
            Engines::Local(engine) => {
                let id = incoming.commit(meta).map_err(outbox_failure)?;
                engine.record_queued(&id).map_err(outbox_failure)?;
                Ok(id)
            }
            Engines::Shared(engine, named) => {
                let into = copy_in(engine.store(), incoming);
                let id = match into.await {
                    Ok(into) => into.commit(meta).await,
                    Err(error) => Err(error),
                }
                .map_err(|e| named.failure(e))?;
                engine
                    .journal_queued(&id)
                    .await
                    .map_err(|e| named.failure(e))?;
                Ok(id)
            }
        }
    }

    /// Flushes the selected entries.
    pub async fn flush(&self, selection: &Selection) -> Result<FlushReport, Failure> {
        match self {
            Engines::Local(engine) => engine.flush(selection).await.map_err(outbox_failure),
            Engines::Shared(engine, named) => {
                engine.flush(selection).await.map_err(|e| named.failure(e))
            }
        }
    }

    /// `queue drop ID`: deletes the entry, journaled as dropped; `false`
    /// when there is no such entry.
    pub async fn drop_entry(&self, id: &str) -> Result<bool, Failure> {
        let id = EntryId::parse(id).map_err(outbox_failure)?;
        match self {
            Engines::Local(engine) => engine.drop_entry(&id).await.map_err(outbox_failure),
            Engines::Shared(engine, named) => {
                engine.drop_entry(&id).await.map_err(|e| named.failure(e))
            }
        }
    }
}

/// A failure of the store after entry `id` was accepted: the message is
/// kept, and the next flush (here or on any machine using the store) sends
/// it, or finds what this attempt did.
fn still_there(failure: Failure, id: &EntryId) -> Failure {
    failure.note(format!(
        "the message was accepted as {id} before this failure and is kept: `apimail queue show {id}`, `apimail log`"
    ))
}

/// The message staged in `incoming`, copied into the store's own
/// incoming message (committed by the caller, in one transaction).
async fn copy_in(
    store: &SharedStore,
    mut incoming: Incoming,
) -> Result<apimail_store_postgres::Incoming, StoreError> {
    use std::io::{Read, Write};
    incoming.flush().map_err(StoreError::Read)?;
    let mut file = std::fs::File::open(incoming.path()).map_err(StoreError::Read)?;
    let mut into = store.begin().await?;
    let mut chunk = vec![0; 256 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => into.write(&chunk[..n]).await?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Read(e)),
        }
    }
    Ok(into)
}

/// The store `settings` name, open (checked, migrated when configured),
/// for the admin console.
pub async fn open_store(settings: &StoreSettings) -> Result<SharedStore, Failure> {
    Ok(open_shared(settings).await?.store)
}

async fn open_shared(settings: &StoreSettings) -> Result<Shared, Failure> {
    let named = Named {
        shown: redact_url(settings.url.expose()),
        from: settings.url_from,
    };
    match apimail_account::open_store(settings).await {
        Ok(store) => Ok(Shared { store, named }),
        Err(error) => Err(named.failure(error)),
    }
}
