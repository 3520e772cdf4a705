//! apimail-core: the provider-independent half of apimail.
//!
//! - [`MessageBuilder`] turns typed input into exact RFC 5322 bytes
//!   ([`Message`]), with mail-builder underneath.
//! - [`ReadyMessage`] parses a message someone else composed, as a
//!   `sendmail` caller hands it over; [`recipients::plan_recipients`]
//!   maps the caller's envelope onto its headers, expanding local names
//!   through [`aliases::Aliases`]; [`intake`] takes such a message in
//!   (recipients, sender policy, Date, Message-ID) for the outbox.
//! - [`Transport`] is the seam every provider implements, and
//!   [`TransportError`] the classification every provider maps its
//!   failures to. [`FileTransport`] and [`StubTransport`] are test doubles.
//!
//! ```
//! use apimail_core::{MessageBuilder, Mailbox, StubTransport, Transport};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let message = MessageBuilder::new()
//!     .from("ops@example.com".parse::<Mailbox>()?)
//!     .to("oncall@example.com".parse::<Mailbox>()?)
//!     .subject("disk almost full")
//!     .text("/var is at 93%\n")
//!     .build()?;
//! let transport = StubTransport::new_ok();
//! transport.send_raw(message.envelope(), message.as_bytes()).await?;
//! assert_eq!(transport.messages().len(), 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod address;
pub mod aliases;
mod charset;
mod compose;
pub mod delivery;
pub mod endpoint;
pub mod files;
pub mod http;
mod identity;
pub mod intake;
pub mod journal;
pub mod journal_csv;
pub mod login_backoff;
pub mod oauth;
pub mod outbox;
mod pace;
mod parse;
pub mod recipients;
pub mod retry;
pub mod schedule;
mod secret;
pub mod slots;
pub mod store;
mod token;
mod token_sources;
pub mod token_store;
pub mod token_vault;
mod transport;

pub use address::{AddressError, Mailbox, Recipient};
pub use charset::Charset;
pub use compose::{Attachment, ComposeError, Composed, Message, MessageBuilder};
pub use identity::SenderIdentity;
pub use pace::Pace;
pub use parse::{ParseError, ReadyMessage, read_subject};
pub use secret::Secret;
pub use token::{AccessToken, EXPIRY_MARGIN, TokenError, TokenResponse, TokenSource, now_unix};
pub use token_sources::{RefreshTokenSource, StoredTokens};
pub use transport::{
    DeliveryNotes, Envelope, ErrorKind, FileTransport, MemoryNotes, MessageReader, NoteWrite,
    Receipt, SentMessage, StoredMessage, StubTransport, Transport, TransportError, error_chain,
};
