//! The SMTP submission server behind `apimail relay` (feature `relay`).
//!
//! Devices and applications that only speak SMTP hand their mail to a
//! [`Server`]; each message is written durably into the [`Outbox`] with
//! the sender identity of the account its client maps to, and announced on
//! a channel ([`Accepted`]) for the delivery workers. The reply to the end
//! of DATA is 250 only once the entry is fsynced.
//!
//! - `session.rs`: one SMTP session over any byte stream (smtp-proto parses
//!   the commands; the loop, the replies and the limits are ours).
//! - `server.rs`: listeners, the connection limit, graceful shutdown,
//!   reload.
//! - `policy.rs`: who may send as whom: networks, `allowed_from`,
//!   `rewrite_from`, the AUTH back-off per client address, the rate limit
//!   per principal.
//! - `accept.rs`: the accepted message and its envelope into the outbox,
//!   through [`crate::recipients::plan_recipients`].
//! - `reply.rs`, `shared.rs`: SMTP replies; what all sessions share.
//! - `tls.rs`: the listeners' rustls configuration (PEM files, or a
//!   self-signed certificate kept in the data directory).
//! - `users.rs`: the relay users file (argon2id hashes).
//! - `workers.rs`: the delivery workers: the engine over due entries,
//!   paced per mailbox, with postmaster reports.
//!
//! [`Outbox`]: crate::outbox::Outbox

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::SenderIdentity;
use crate::outbox::EntryId;

mod accept;
mod policy;
mod reply;
mod server;
mod session;
mod shared;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod users;
pub mod workers;

pub use ipnet::IpNet;
pub use server::Server;

/// One listening socket's rules.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The listener's name in the configuration (logs, `for_client`).
    pub name: String,
    /// Plain (with optional STARTTLS) or implicit TLS.
    pub tls: ListenerTls,
    /// Every client must AUTH before MAIL, even from loopback or an
    /// allowed network.
    pub require_auth: bool,
    /// Networks whose clients may send without AUTH (as the principal
    /// [`Directory::for_client`] maps them to). Loopback clients always may,
    /// unless `require_auth`.
    pub allowed_networks: Vec<IpNet>,
    /// AUTH over an unencrypted connection from a non-loopback address;
    /// otherwise refused with `538 5.7.11`. For old printers; loud.
    pub allow_plaintext_auth: bool,
}

impl Listener {
    /// A plain listener named `name`, without STARTTLS, AUTH optional, no
    /// allowed networks, plaintext AUTH refused (from non-loopback).
    pub fn plain(name: impl Into<String>) -> Self {
        Listener {
            name: name.into(),
            tls: ListenerTls::Plain { starttls: None },
            require_auth: false,
            allowed_networks: Vec::new(),
            allow_plaintext_auth: false,
        }
    }
}

/// A listener's TLS.
#[derive(Clone)]
pub enum ListenerTls {
    /// Plain text, upgraded by STARTTLS when a configuration is given.
    Plain {
        /// The STARTTLS configuration; `None` offers no STARTTLS.
        starttls: Option<Arc<rustls::ServerConfig>>,
    },
    /// TLS from the first byte (port 465 style, RFC 8314).
    Implicit(Arc<rustls::ServerConfig>),
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerTls::Plain { starttls } => f
                .debug_struct("Plain")
                .field("starttls", &starttls.is_some())
                .finish(),
            ListenerTls::Implicit(_) => f.write_str("Implicit"),
        }
    }
}

/// Timeouts the server gives the client (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpTimeouts {
    /// Waiting for the next command (and a TLS handshake): 5 minutes.
    pub command: Duration,
    /// Waiting for each block of DATA: 3 minutes.
    pub data_block: Duration,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        SmtpTimeouts {
            command: Duration::from_secs(5 * 60),
            data_block: Duration::from_secs(3 * 60),
        }
    }
}

/// How failed logins from one client address are slowed, then refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    /// Failures answered at once.
    pub free_failures: u32,
    /// The delay before the reply to the first failure after the free
    /// ones; it doubles with each further failure, up to `max_delay`.
    pub delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// After this many failures, AUTH from the address is refused...
    pub lock_after: u32,
    /// ...for this long after the last failure.
    pub lock_for: Duration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            free_failures: 3,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            lock_after: 10,
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

/// The server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sessions at once; one more gets `421 4.3.2` and is closed.
    pub max_connections: usize,
    /// The longest command line, CRLF included (`500 5.5.2`).
    pub max_line_bytes: usize,
    /// The largest message, whatever the account allows (`552 5.3.4`).
    pub max_message_bytes: u64,
    /// Recipients per message (`452 4.5.3`).
    pub max_recipients: usize,
    /// Unknown or malformed commands per session before `421` and close.
    pub max_bad_commands: u32,
    /// Per-command timeouts.
    pub timeouts: SmtpTimeouts,
    /// The AUTH back-off per client address.
    pub auth_failures: BackoffSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100,
            max_line_bytes: 4096,
            max_message_bytes: 150 * 1024 * 1024,
            max_recipients: 500,
            max_bad_commands: 10,
            timeouts: SmtpTimeouts::default(),
            auth_failures: BackoffSettings::default(),
        }
    }
}

/// Who a client is, once known: an authenticated relay user, or the
/// mapping of its network (or loopback) to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The relay user's name, or the network mapping's name (logs, rate
    /// limit).
    pub name: String,
    /// The apimail account it sends with.
    pub account: String,
    /// Senders it may use (MAIL FROM and the From header): patterns where
    /// `*` matches any run of characters, case-insensitive (`*@example.com`,
    /// `scanner@*`, `*`). Empty: only the account's own address.
    pub allowed_from: Vec<String>,
    /// From becomes the account's address, the device's name kept as the
    /// display name; `allowed_from` is then not checked.
    pub rewrite_from: bool,
    /// Messages per minute; more get `451 4.7.0` at MAIL.
    pub messages_per_minute: Option<u32>,
}

/// What the relay needs to know about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Recorded with each entry; the workers send as exactly this.
    pub identity: SenderIdentity,
    /// The account's address (for `rewrite_from`, and the default
    /// `allowed_from`), when known.
    pub address: Option<String>,
    /// The provider's limit for one message, in bytes (SIZE, 552).
    pub max_message_bytes: u64,
}

/// The users, networks and accounts the relay serves; replaced on reload.
pub trait Directory: Send + Sync + 'static {
    /// Checks a relay user's password. Slow (argon2): the session calls it
    /// through `spawn_blocking`.
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal>;
    /// A client that did not AUTH, from `ip` on the listener named
    /// `listener`: the principal its address maps to (an allowed network, or
    /// loopback → the default account). Asked only for loopback clients and
    /// clients in the listener's `allowed_networks`, never when the
    /// listener requires AUTH.
    fn for_client(&self, listener: &str, ip: IpAddr) -> Option<Principal>;
    /// An account by name; `None` refuses the principal's mail (`451`).
    fn account(&self, account: &str) -> Option<AccountInfo>;
}

/// A message that is now durably in the outbox, for the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The outbox entry.
    pub id: EntryId,
    /// Who it is sent as (also recorded in the entry).
    pub identity: SenderIdentity,
}
