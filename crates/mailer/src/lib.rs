//! Send mail from Rust through the Gmail API or Microsoft Graph, with the
//! credentials and endpoints the `apimail` command line uses.
//!
//! A [`Mailer`] is built once and shared: it is `Send + Sync`, cheap to
//! clone, keeps its HTTPS client (and so its connection pool) for every
//! send, and fetches an access token once for all concurrent sends. Each
//! send retries temporary failures in-process (the [`RetryPolicy`]) and can
//! be bounded by a deadline.
//!
//! ```no_run
//! use apimail_mailer::{Mailer, MessageBuilder};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // GOOGLE_APPLICATION_CREDENTIALS + APIMAIL_GMAIL_USER, or
//! // AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET + APIMAIL_GRAPH_USER, ...
//! let mailer = Mailer::from_env().await?;
//! let message = MessageBuilder::new()
//!     .from("alerts@example.com".parse()?)
//!     .to("oncall@example.com".parse()?)
//!     .subject("disk almost full")
//!     .text("/var is at 93%")
//!     .build()?;
//! let receipt = mailer.send(&message).await?;
//! println!("sent: {:?}", receipt.id);
//! # Ok(())
//! # }
//! ```
//!
//! Other ways to build one: [`Mailer::from_config`] (an account of the
//! command line's configuration, with its token store) and
//! [`Mailer::builder`] with explicit [`Credentials`], which touches neither
//! the environment nor the disk. With the `lettre` feature,
//! `Mailer::lettre` (feature `lettre`) is a lettre transport.
//!
//! A long-lived service may add a durable outbox
//! ([`MailerBuilder::outbox`]): each send is on disk before it is tried,
//! and [`Mailer::flush`] sends what is still queued. An answer lost after
//! the provider took a message is never silently resent: see
//! [`Receipt::possible_duplicate`].

#![warn(missing_docs)]

mod builder;
mod config;
mod error;
#[cfg(feature = "lettre")]
mod lettre;
mod limited;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use apimail_core::delivery::{Attempted, UnknownOutcome, WhenUnknown, error_chain_unknown};
use apimail_core::retry::RetryPolicy as Retry;
use apimail_gmail::{GmailTokens, GmailTransport};
use apimail_graph::{GraphTokens, GraphTransport};

pub use apimail_core::delivery::FlushReport;
pub use apimail_core::retry::RetryPolicy;
pub use apimail_core::{
    Envelope, ErrorKind, Mailbox, Message, MessageBuilder, Receipt, Secret, Transport,
};
pub use apimail_graph::Cloud;
pub use builder::{Credentials, MailerBuilder};
pub use error::Error;
#[cfg(feature = "lettre")]
pub use lettre::{BlockingLettreTransport, LettreTransport};
pub use limited::{GMAIL_CONCURRENCY, GRAPH_CONCURRENCY};

use limited::Limited;
use queue::Queue;

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
    queue: Option<Queue>,
}

/// The provider's transport, built once.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per mailer")]
enum Sender {
    Gmail(GmailTransport<GmailTokens>),
    Graph(GraphTransport<GraphTokens>),
}

impl Mailer {
    /// A mailer from the environment's credentials, read as the command
    /// line reads them: a Gmail service account
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, `APIMAIL_GMAIL_USER`) or refresh
    /// token (`APIMAIL_GOOGLE_CLIENT_ID`, `_CLIENT_SECRET`,
    /// `_REFRESH_TOKEN`), else Graph app-only credentials
    /// (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` or
    /// `AZURE_CLIENT_CERTIFICATE_PATH`, `APIMAIL_GRAPH_USER`). Endpoint
    /// overrides (`APIMAIL_GMAIL_API_URL`, `APIMAIL_GOOGLE_TOKEN_URL`,
    /// `APIMAIL_GRAPH_API_URL`, `APIMAIL_MS_AUTHORITY_URL`,
    /// `APIMAIL_GRAPH_CLOUD`), `APIMAIL_GRAPH_MAX_MESSAGE_MB` and the retry
    /// bound (`APIMAIL_RETRY_ATTEMPTS`, `APIMAIL_RETRY_MAX_SECONDS`) apply
    /// too.
    ///
    /// Fails with [`ErrorKind::Config`] when no credentials are set.
    pub async fn from_env() -> Result<Mailer, Error> {
        builder::from_env().await?.build().await
    }

    /// A mailer for `account` of the command line's configuration file
    /// (`None`: its `default_account`), with the tokens `apimail auth
    /// login` stored (`APIMAIL_DATA_DIR`). `path` `None` is where the
    /// command line looks: `$APIMAIL_CONFIG`, else the platform's
    /// configuration directory.
    pub async fn from_config(
        path: Option<&std::path::Path>,
        account: Option<&str>,
    ) -> Result<Mailer, Error> {
        config::mailer(path, account).await
    }

    /// A builder for explicit credentials; nothing is read from the
    /// environment or the disk.
    pub fn builder(credentials: Credentials) -> MailerBuilder {
        MailerBuilder::new(credentials)
    }

    fn new(
        transport: Limited,
        retry: Retry,
        deadline: Option<Duration>,
        queue: Option<queue::Settings>,
    ) -> Result<Mailer, Error> {
        let transport = Arc::new(transport);
        let queue = queue
            .map(|settings| Queue::open(settings, transport.clone()))
            .transpose()?;
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

    /// Sends a message composed with [`MessageBuilder`].
    pub async fn send(&self, message: &Message) -> Result<Receipt, Error> {
        self.within_deadline(self.deliver(
            message.as_bytes(),
            message.envelope(),
            message.message_id(),
        ))
        .await
    }

    /// Sends RFC 5322 bytes. The providers deliver to the addresses in the
    /// To, Cc and Bcc headers; `envelope` is what the caller expects them
    /// to be (see `Mailer::lettre`, feature `lettre`, for envelope recipients missing from
    /// the headers). A message without a Message-ID gets one, so that every
    /// attempt carries the same.
    pub async fn send_raw(&self, message: &[u8], envelope: &Envelope) -> Result<Receipt, Error> {
        let (bytes, message_id) = limited::with_message_id(message, envelope.from());
        self.within_deadline(self.deliver(&bytes, envelope, &message_id))
            .await
    }

    /// Sends what the outbox holds for this mailer and is due (see
    /// [`MailerBuilder::outbox`]); each entry gets one attempt. Fails with
    /// [`ErrorKind::Config`] on a mailer without an outbox.
    pub async fn flush(&self) -> Result<FlushReport, Error> {
        self.queue()?.flush(false).await
    }

    /// Like [`Mailer::flush`], for every queued entry whether due or not
    /// (a temporary failure schedules the next attempt minutes ahead).
    pub async fn flush_all(&self) -> Result<FlushReport, Error> {
        self.queue()?.flush(true).await
    }

    fn queue(&self) -> Result<&Queue, Error> {
        self.inner.queue.as_ref().ok_or_else(|| {
            Error::config("this mailer has no outbox: build it with MailerBuilder::outbox")
        })
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
        match &self.inner.queue {
            Some(queue) => {
                queue
                    .send(message, envelope, message_id, &self.inner.retry)
                    .await
            }
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
    /// concurrency ([`GRAPH_CONCURRENCY`], [`GMAIL_CONCURRENCY`]). Sends
    /// beyond it wait their turn.
    pub fn concurrency(&self) -> usize {
        self.inner.transport.concurrency()
    }
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
