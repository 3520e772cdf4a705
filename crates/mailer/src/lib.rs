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

#![warn(missing_docs)]

mod builder;
mod config;
mod error;
#[cfg(feature = "lettre")]
mod lettre;

use std::sync::Arc;
use std::time::Duration;

use apimail_core::retry::RetryPolicy as Retry;
use apimail_gmail::{GmailTokens, GmailTransport};
use apimail_graph::{GraphTokens, GraphTransport};

pub use apimail_core::retry::RetryPolicy;
pub use apimail_core::{
    Envelope, ErrorKind, Mailbox, Message, MessageBuilder, Receipt, Secret, Transport,
};
pub use apimail_graph::Cloud;
pub use builder::{Credentials, MailerBuilder};
pub use error::Error;
#[cfg(feature = "lettre")]
pub use lettre::{BlockingLettreTransport, LettreTransport};

/// Sends messages through one account's provider. Clones share the
/// connection pool, the token cache and the settings.
#[derive(Debug, Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
    deadline: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    sender: Sender,
    retry: Retry,
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

    fn new(sender: Sender, retry: Retry, deadline: Option<Duration>) -> Mailer {
        Mailer {
            inner: Arc::new(Inner { sender, retry }),
            deadline,
        }
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
        self.send_raw(message.as_bytes(), message.envelope()).await
    }

    /// Sends RFC 5322 bytes. The providers deliver to the addresses in the
    /// To, Cc and Bcc headers; `envelope` is what the caller expects them
    /// to be (see `Mailer::lettre`, feature `lettre`, for envelope recipients missing from
    /// the headers).
    pub async fn send_raw(&self, message: &[u8], envelope: &Envelope) -> Result<Receipt, Error> {
        let attempts = self.inner.retry.run(
            |_| self.inner.sender.send_raw(envelope, message),
            |_, _, _| {},
        );
        match self.deadline {
            None => Ok(attempts.await?),
            Some(deadline) => match tokio::time::timeout(deadline, attempts).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(Error::deadline(deadline)),
            },
        }
    }

    /// Which provider this mailer sends through: `gmail` or `graph`.
    pub fn provider(&self) -> &'static str {
        match self.inner.sender {
            Sender::Gmail(_) => "gmail",
            Sender::Graph(_) => "graph",
        }
    }
}

impl Sender {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, apimail_core::TransportError> {
        match self {
            Sender::Gmail(t) => t.send_raw(envelope, message).await,
            Sender::Graph(t) => t.send_raw(envelope, message).await,
        }
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
