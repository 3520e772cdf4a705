//! The provider's transport under the mailbox's concurrency limit.

use std::sync::Arc;
use std::time::Duration;

use apimail_core::{
    DeliveryNotes, Envelope, ErrorKind, Pace, Receipt, StoredMessage, Transport, TransportError,
};
use tokio::sync::Semaphore;

use apimail_account::Sender;

/// Requests a Gmail mailer has in flight at most. Google publishes a rate
/// per user (6,000 quota units a minute for new projects, 15,000 for older
/// ones: 60 or 150 sends at 100 units each), not a number of concurrent
/// requests, but answers "Too many concurrent requests for user" (429)
/// beyond one it does not name. At one send in flight every 0.4 to 1 s of
/// round trip, 4 at once reach the older projects' 150 a minute; more only
/// earn 429s. Graph's is `MAX_CONCURRENT_REQUESTS`, also 4.
pub const GMAIL_CONCURRENCY: usize = 4;

/// Requests a Graph mailer has in flight at most: Graph's own limit of 4
/// concurrent requests per mailbox (`MailboxConcurrency`).
pub const GRAPH_CONCURRENCY: usize = apimail_graph::MAX_CONCURRENT_REQUESTS;

/// A provider's transport that never has more requests in flight than the
/// mailbox's concurrency, so one mailer needs about that many connections.
#[derive(Debug)]
pub(crate) struct Limited {
    sender: Sender,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// How long a slot stays taken after its request: an HTTP/1 pool gets the
/// connection back from its connection task a moment after the answer was
/// read, and a request starting before that would open a new one.
const RETURN_GRACE: Duration = Duration::from_millis(1);

/// `$call` awaited on whichever transport `$sender` holds; boxed, as the
/// providers' futures are large.
macro_rules! each {
    ($sender:expr, $t:ident => $call:expr) => {
        Box::pin(async {
            match $sender {
                Sender::Gmail($t) => $call.await,
                Sender::Graph($t) => $call.await,
            }
        })
    };
}

impl Limited {
    pub(crate) fn new(sender: Sender) -> Self {
        let concurrency = match sender {
            Sender::Gmail(_) => GMAIL_CONCURRENCY,
            Sender::Graph(_) => GRAPH_CONCURRENCY,
        };
        Limited {
            sender,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    pub(crate) fn provider(&self) -> &'static str {
        self.sender.provider().name()
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs `request` in a slot; the slot is given back
    /// [`RETURN_GRACE`] later, without keeping the caller waiting.
    async fn in_slot<T>(
        &self,
        request: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let slot =
            self.slots.clone().acquire_owned().await.map_err(|_| {
                TransportError::new(ErrorKind::Internal, "the mailer was shut down")
            })?;
        let result = request.await;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(RETURN_GRACE).await;
                drop(slot);
            });
        }
        result
    }
}

impl Transport for Limited {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_raw(envelope, message)))
            .await
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_noted(envelope, message, notes)))
            .await
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_stored(envelope, message, notes)))
            .await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        self.in_slot(each!(&self.sender, t => t.was_sent(message_id)))
            .await
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.in_slot(each!(&self.sender, t => t.discard(notes)))
            .await
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.in_slot(each!(&self.sender, t => t.interrupted(notes)))
            .await
    }
    fn pace(&self) -> Pace {
        match &self.sender {
            Sender::Gmail(t) => t.pace(),
            Sender::Graph(t) => t.pace(),
        }
    }
}
