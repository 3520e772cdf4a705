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
//! and [`Mailer::flush`] sends what is still queued. A cloud function,
//! whose disk dies with its instance, uses the shared store on PostgreSQL
//! instead ([`MailerBuilder::store`], or `APIMAIL_STORE_URL` for
//! [`Mailer::from_env`]): each send is committed to the database first,
//! and any worker's flush sends what is left. An answer lost after
//! the provider took a message is never silently resent: see
//! [`Receipt::possible_duplicate`].

#![warn(missing_docs)]

mod builder;
mod config;
mod error;
#[cfg(feature = "lettre")]
mod lettre;
mod limited;
mod mailer;
mod queue;

pub use apimail_account::Credentials;
pub use apimail_core::delivery::FlushReport;
pub use apimail_core::retry::RetryPolicy;
pub use apimail_core::{
    Envelope, ErrorKind, Mailbox, Message, MessageBuilder, Receipt, Secret, Transport,
};
pub use apimail_graph::Cloud;
pub use builder::MailerBuilder;
pub use error::Error;
#[cfg(feature = "lettre")]
pub use lettre::{BlockingLettreTransport, LettreTransport};
pub use limited::{GMAIL_CONCURRENCY, GRAPH_CONCURRENCY};
pub use mailer::Mailer;
