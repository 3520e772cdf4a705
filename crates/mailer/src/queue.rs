//! The optional outbox ([`MailerBuilder::outbox`](crate::MailerBuilder::outbox)):
//! a send is first accepted into `apimail_core::Outbox` (fsynced), then
//! delivered by the delivery engine, the one the command line and the relay
//! use, so a crash between the two leaves the message on disk for the next
//! flush. The account layer builds the engine as it does for the command
//! line: the journal beside the outbox, `$APIMAIL_WHEN_UNKNOWN`, and
//! `$APIMAIL_QUEUE_MAX_AGE_DAYS` for each entry. With a shared store
//! ([`MailerBuilder::store`](crate::MailerBuilder::store)) the entry and
//! its journal records are in PostgreSQL instead, through the same engine.

use std::path::PathBuf;
use std::sync::Arc;

use apimail_account::{Delivery, OneSender};
use apimail_core::delivery::{Engine, FlushReport, IfNotSent, Selection, Settled};
use apimail_core::intake::Owner;
use apimail_core::retry::RetryPolicy;
use apimail_core::store::{LocalStore, Store};
use apimail_core::{Envelope, ErrorKind, Receipt, SenderIdentity};

use crate::Error;
use crate::limited::Limited;

/// Where the outbox is and whom its entries are sent as.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    pub(crate) identity: SenderIdentity,
}

/// The outbox and the engine over it, resolving only this mailer's own
/// entries: the local spool by default, or a shared store.
#[derive(Debug)]
pub(crate) struct Queue<B = LocalStore> {
    engine: Engine<OneSender<Arc<Limited>>, B>,
    max_age_secs: i64,
}

impl Queue<apimail_store_postgres::Store> {
    /// The engine over a shared `store`, with the account layer's delivery
    /// settings.
    pub(crate) fn shared(
        store: apimail_store_postgres::Store,
        identity: SenderIdentity,
        transport: Arc<Limited>,
    ) -> Result<Self, Error> {
        let delivery = Delivery::from_config(&apimail_account::Config::default())?;
        let own = OneSender {
            transport,
            identity,
        };
        Ok(Queue {
            engine: apimail_account::shared_engine(store, own, &delivery),
            max_age_secs: delivery.max_age_secs,
        })
    }
}

impl Queue {
    pub(crate) fn open(settings: Settings, transport: Arc<Limited>) -> Result<Queue, Error> {
        let delivery = Delivery::from_config(&apimail_account::Config::default())?;
        let own = OneSender {
            transport,
            identity: settings.identity,
        };
        let engine = apimail_account::engine(&settings.dir, own, &delivery).map_err(|e| {
            Error::config(format!(
                "cannot open the outbox {}: {}",
                settings.dir.display(),
                apimail_core::error_chain(&e)
            ))
        })?;
        Ok(Queue {
            engine,
            max_age_secs: delivery.max_age_secs,
        })
    }
}

impl<B: Store> Queue<B> {
    /// Accepts the message, then delivers it with in-process retries. Not
    /// sent now, it is kept (temporary failures, queued for a later flush)
    /// or moved to `failed/` (a permanent one), and the error names the
    /// entry ([`Error::outbox_entry`]).
    pub(crate) async fn send(
        &self,
        message: &[u8],
        envelope: &Envelope,
        message_id: &str,
        retry: &RetryPolicy,
    ) -> Result<Receipt, Error> {
        let own = self.engine.senders();
        let owner = Owner {
            account: own.identity.account_name().map(str::to_owned),
            provider: Some(own.transport.provider().to_owned()),
            max_age_secs: self.max_age_secs,
            ..Owner::new(own.identity.clone())
        };
        let meta = owner.entry(envelope.from(), envelope.recipients(), message_id);
        // Still claimed: no other process's flush takes it before this attempt.
        let claim = self
            .engine
            .store()
            .accept_claimed(message, meta)
            .await
            .map_err(|e| store_error::<B>("cannot accept the message into the outbox", &e))?;
        let delivery = self
            .engine
            .deliver_claimed(claim, &own.transport, retry, IfNotSent::Keep)
            .await
            .map_err(|e| store_error::<B>("the outbox failed during delivery", &e))?;
        let place = match &delivery.settled {
            Settled::Sent(receipt) => return Ok(receipt.clone()),
            Settled::VerifiedSent | Settled::SettledElsewhere => {
                return Ok(Receipt {
                    provider: own.transport.provider(),
                    id: None,
                    thread_id: None,
                    possible_duplicate: false,
                });
            }
            Settled::Failed => "moved to the outbox's failed/",
            Settled::Held { .. } => "held in the outbox",
            _ => "kept in the outbox; a later flush sends it",
        };
        let error = match (delivery.error, delivery.unresolved) {
            (Some(error), _) => Error::from(error),
            (None, Some(reason)) => Error::new(ErrorKind::Config, reason),
            (None, None) => Error::new(
                ErrorKind::Temporary,
                "another process is delivering it".to_owned(),
            ),
        };
        Err(error.kept(delivery.id.as_str(), place))
    }

    pub(crate) async fn flush(&self, include_not_due: bool) -> Result<FlushReport, Error> {
        let selection = Selection {
            identity: Some(self.engine.senders().identity.clone()),
            include_not_due,
            ..Selection::default()
        };
        self.engine
            .flush(&selection)
            .await
            .map_err(|e| store_error::<B>("the outbox failed during the flush", &e))
    }
}

/// The store's own trouble: a full disk or a database away is temporary,
/// anything else is the setup's.
fn store_error<B: Store>(what: &str, error: &B::Error) -> Error {
    let kind = if B::is_temporary(error) {
        ErrorKind::Temporary
    } else {
        ErrorKind::Config
    };
    Error::new(
        kind,
        format!("{what}: {}", apimail_core::error_chain(error)),
    )
}
