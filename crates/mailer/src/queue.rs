//! The optional outbox ([`MailerBuilder::outbox`](crate::MailerBuilder::outbox)):
//! a send is first accepted into `apimail_core::Outbox` (fsynced), then
//! delivered by the delivery engine, the one the command line and the relay
//! use, so a crash between the two leaves the message on disk for the next
//! flush.

use std::path::PathBuf;
use std::sync::Arc;

use apimail_core::delivery::{Engine, FlushReport, IfNotSent, Selection, Senders, Settled};
use apimail_core::outbox::{Entry, NewEntry, Outbox};
use apimail_core::retry::RetryPolicy;
use apimail_core::{Envelope, ErrorKind, Receipt, SenderIdentity};

use crate::Error;
use crate::limited::Limited;

/// Where the outbox is and whom its entries are sent as.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    pub(crate) identity: SenderIdentity,
}

/// The outbox and the engine over it.
#[derive(Debug)]
pub(crate) struct Queue {
    engine: Engine<Own>,
}

/// Resolves entries accepted for this mailer's identity to its transport;
/// entries of any other sender in a shared outbox are left alone.
#[derive(Debug)]
struct Own {
    transport: Arc<Limited>,
    identity: SenderIdentity,
}

impl Senders for Own {
    type Sender = Arc<Limited>;

    async fn resolve(&self, entry: &Entry) -> Result<Arc<Limited>, String> {
        if entry.identity.as_ref() == Some(&self.identity) {
            Ok(self.transport.clone())
        } else {
            Err(format!(
                "it was accepted for another sender than this mailer's {}",
                self.identity
            ))
        }
    }

    /// A library mailer has no login to wait for: refused credentials are
    /// retried on the schedule until someone fixes them.
    fn login_can_fix(&self, _: &Arc<Limited>) -> bool {
        false
    }
}

impl Queue {
    pub(crate) fn open(settings: Settings, transport: Arc<Limited>) -> Result<Queue, Error> {
        let outbox = Outbox::open(&settings.dir).map_err(|e| {
            Error::config(format!(
                "cannot open the outbox {}: {}",
                settings.dir.display(),
                apimail_core::error_chain(&e)
            ))
        })?;
        let own = Own {
            transport,
            identity: settings.identity,
        };
        Ok(Queue {
            engine: Engine::new(outbox, own, Default::default()),
        })
    }

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
        let meta = NewEntry {
            identity: Some(own.identity.clone()),
            account: own.identity.account_name().map(str::to_owned),
            provider: Some(own.transport.provider().to_owned()),
            from: envelope.from().email().to_owned(),
            recipients: envelope
                .recipients()
                .iter()
                .map(|r| r.email().to_owned())
                .collect(),
            message_id: message_id.to_owned(),
            ..NewEntry::default()
        };
        let outbox = self.engine.outbox();
        let id = outbox
            .accept(message, meta)
            .map_err(|e| outbox_error("cannot accept the message into the outbox", &e))?;
        let delivery = self
            .engine
            .deliver(&id, &own.transport, retry, IfNotSent::Keep)
            .await
            .map_err(|e| outbox_error("the outbox failed during delivery", &e))?;
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
        Err(error.kept(id.as_str(), place))
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
            .map_err(|e| outbox_error("the outbox failed during the flush", &e))
    }
}

/// The outbox's own trouble: a full disk is temporary, anything else is
/// the setup's.
fn outbox_error(what: &str, error: &apimail_core::outbox::OutboxError) -> Error {
    let kind = if error.is_disk_full() {
        ErrorKind::Temporary
    } else {
        ErrorKind::Config
    };
    Error::new(
        kind,
        format!("{what}: {}", apimail_core::error_chain(error)),
    )
}
