//! [`Mailer`]: one account's provider, shared by every send; with or
//! without the outbox.

use std::sync::Arc;
use std::time::Duration;

use apimail_core::delivery::{Attempted, UnknownOutcome, WhenUnknown, error_chain_unknown};
use apimail_core::intake::{self, Handover};
use apimail_core::retry::RetryPolicy as Retry;
use apimail_core::{Envelope, ErrorKind, Message, Receipt, Transport};

use crate::error::Error;
use crate::limited::Limited;
use crate::queue::{self, Queue};
use apimail_core::delivery::FlushReport;
use apimail_store_postgres::Store as SharedStore;

/// How long to look for the sent copy of a message whose answer was lost
/// (providers file it with a delay): the delivery engine's default.
const VERIFY_WINDOW: Duration = Duration::from_secs(10);

/// Sends messages through one account's provider. Clones share the
/// connection pool, the token cache and the settings.
#[derive(Debug, Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
    deadline: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    transport: Arc<Limited>,
    retry: Retry,
    queue: Option<Outbox>,
}

/// Where a mailer's sends wait: the local outbox or the shared store.
#[derive(Debug)]
enum Outbox {
    Local(Queue),
    Shared(Queue<SharedStore>),
}

/// Where a mailer's outbox is to be: see [`MailerBuilder::outbox`](crate::MailerBuilder::outbox) and
/// [`MailerBuilder::store`](crate::MailerBuilder::store).
#[derive(Debug)]
pub(crate) enum OutboxAt {
    Local(queue::Settings),
    Shared(SharedStore, apimail_core::SenderIdentity),
}

impl Mailer {
    pub(crate) fn new(
        transport: Limited,
        retry: Retry,
        deadline: Option<Duration>,
        queue: Option<OutboxAt>,
    ) -> Result<Mailer, Error> {
        let transport = Arc::new(transport);
        let queue = match queue {
            None => None,
            Some(OutboxAt::Local(settings)) => {
                Some(Outbox::Local(Queue::open(settings, transport.clone())?))
            }
            Some(OutboxAt::Shared(store, identity)) => Some(Outbox::Shared(Queue::shared(
                store,
                identity,
                transport.clone(),
            )?)),
        };
        Ok(Mailer {
            inner: Arc::new(Inner {
                transport,
                retry,
                queue,
            }),
            deadline,
        })
    }

    /// This mailer with every send bounded by `deadline` (retries
    /// included); a cheap clone sharing everything else. A send that runs
    /// out of time fails with [`Error::deadline_elapsed`] set; the provider
    /// may or may not have accepted it.
    pub fn with_deadline(&self, deadline: Duration) -> Mailer {
        Mailer {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// Sends a message composed with [`MessageBuilder`](crate::MessageBuilder).
    pub async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        self.within_deadline(self.deliver(
            message.as_bytes(),
            message.envelope(),
            message.message_id(),
        ))
        .await
    }

    /// Sends RFC 5322 bytes, taken in as `apimail sendmail` and the relay
    /// take theirs (`apimail_core::intake`). The providers deliver to the
    /// addresses in the To, Cc and Bcc headers, so `envelope`'s recipients
    /// missing from them are added as Bcc; a message without From gets the
    /// envelope's sender, one without Date or Message-ID gets one (every
    /// attempt carries the same). Fails with [`ErrorKind::InvalidMessage`]
    /// when the bytes are not a message.
    pub async fn send_raw(&self, message: &[u8], envelope: &Envelope) -> Result<Receipt, Error> {
        let recipients: Vec<String> = envelope
            .recipients()
            .iter()
            .map(|m| m.email().to_owned())
            .collect();
        self.send_handed(message, &recipients, Some(envelope.from().email()))
            .await
    }

    /// [`Mailer::send_raw`] for an envelope given as text (lettre's).
    pub(crate) async fn send_handed(
        &self,
        message: &[u8],
        recipients: &[String],
        envelope_from: Option<&str>,
    ) -> Result<Receipt, Error> {
        let prepared = prepare(message, recipients, envelope_from)?;
        self.within_deadline(self.deliver(
            &prepared.bytes,
            &prepared.envelope(),
            &prepared.message_id,
        ))
        .await
    }

    /// Sends what the outbox holds for this mailer and is due (see
    /// [`MailerBuilder::outbox`](crate::MailerBuilder::outbox)); each entry gets one attempt. Fails with
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) on a mailer without an outbox.
    pub async fn flush(&self) -> Result<FlushReport, Error> {
        self.flush_queue(false).await
    }

    /// Like [`Mailer::flush`], for every queued entry whether due or not
    /// (a temporary failure schedules the next attempt minutes ahead).
    pub async fn flush_all(&self) -> Result<FlushReport, Error> {
        self.flush_queue(true).await
    }

    async fn flush_queue(&self, include_not_due: bool) -> Result<FlushReport, Error> {
        match &self.inner.queue {
            Some(Outbox::Local(queue)) => queue.flush(include_not_due).await,
            Some(Outbox::Shared(queue)) => queue.flush(include_not_due).await,
            None => Err(Error::config(
                "this mailer has no outbox: build it with MailerBuilder::outbox or MailerBuilder::store",
            )),
        }
    }

    async fn within_deadline(
        &self,
        send: impl Future<Output = Result<Receipt, Error>>,
    ) -> Result<Receipt, Error> {
        match self.deadline {
            None => send.await,
            Some(deadline) => match tokio::time::timeout(deadline, send).await {
                Ok(result) => result,
                Err(_) => Err(Error::deadline(deadline)),
            },
        }
    }

    /// Through the outbox when there is one, else straight to the provider.
    async fn deliver(
        &self,
        message: &[u8],
        envelope: &Envelope,
        message_id: &str,
    ) -> Result<Receipt, Error> {
        let retry = &self.inner.retry;
        match &self.inner.queue {
            Some(Outbox::Local(queue)) => queue.send(message, envelope, message_id, retry).await,
            Some(Outbox::Shared(queue)) => queue.send(message, envelope, message_id, retry).await,
            None => self.send_now(message, envelope, message_id).await,
        }
    }

    /// Retries temporary failures under the policy. After an attempt whose
    /// outcome is unknown, the next one first looks for the message among
    /// the sent ones (Graph, with Mail.Read or Mail.ReadWrite) and stops
    /// there if it was sent; where that cannot be checked (Gmail), it is
    /// resent with the same Message-ID, with a warning and
    /// [`Receipt::possible_duplicate`] set. The delivery engine's rule.
    async fn send_now(
        &self,
        message: &[u8],
        envelope: &Envelope,
        message_id: &str,
    ) -> Result<Receipt, Error> {
        let transport = &*self.inner.transport;
        let rule = UnknownOutcome::new(
            transport,
            message_id,
            message_id,
            WhenUnknown::Resend,
            VERIFY_WINDOW,
            false,
        );
        let result = self
            .inner
            .retry
            .run(
                |_| rule.attempt(transport.send_raw(envelope, message)),
                |_, _, _| {},
            )
            .await;
        match result {
            Ok(Attempted::Sent(receipt)) => Ok(receipt),
            Ok(Attempted::VerifiedSent) => Ok(self.verified_receipt()),
            Ok(Attempted::HeldUnknown(error)) => Err(error.into()),
            // The last answer was lost: look before reporting a failure.
            Err(error) if error_chain_unknown(&error) => match rule.verify().await {
                Some(true) => Ok(self.verified_receipt()),
                _ => Err(error.into()),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// The receipt for a message an earlier attempt sent: the provider's
    /// id for it was in the lost answer.
    fn verified_receipt(&self) -> Receipt {
        Receipt {
            provider: self.provider(),
            id: None,
            thread_id: None,
            possible_duplicate: false,
        }
    }

    /// Which provider this mailer sends through: `gmail` or `graph`.
    pub fn provider(&self) -> &'static str {
        self.inner.transport.provider()
    }

    /// How many requests this mailer has in flight at most: the mailbox's
    /// concurrency ([`GRAPH_CONCURRENCY`](crate::GRAPH_CONCURRENCY), [`GMAIL_CONCURRENCY`](crate::GMAIL_CONCURRENCY)). Sends
    /// beyond it wait their turn.
    pub fn concurrency(&self) -> usize {
        self.inner.transport.concurrency()
    }
}

/// A raw message through the intake: any sender (the provider decides).
pub(crate) fn prepare(
    message: &[u8],
    recipients: &[String],
    envelope_from: Option<&str>,
) -> Result<intake::Prepared, Error> {
    let handover = Handover {
        envelope_from,
        ..Handover::new(recipients)
    };
    intake::take_bytes(message.to_vec(), &handover)
        .map_err(|e| Error::new(ErrorKind::InvalidMessage, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn a_mailer_is_send_sync_and_clone() {
        assert_shareable::<Mailer>();
    }
}
