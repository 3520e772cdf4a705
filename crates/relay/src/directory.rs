//! What the server asks about its clients and accounts ([`Directory`]),
//! and what it hands the workers ([`Accepted`]).

use std::net::IpAddr;

use apimail_core::SenderIdentity;
use apimail_core::intake::SenderPolicy;
use apimail_core::journal::Details;
use apimail_core::outbox::EntryId;

/// Who a client is, once known: an authenticated relay user, or the
/// mapping of its network (or loopback) to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The relay user's name, or the network mapping's name (logs, rate
    /// limit).
    pub name: String,
    /// The apimail account it sends with.
    pub account: String,
    /// Senders it may use besides the account's own address (MAIL FROM,
    /// every From mailbox and Sender): patterns where `*` matches any run
    /// of characters, case-insensitive (`*@example.com`, `scanner@*`, `*`).
    pub allowed_from: Vec<String>,
    /// A message with any other author is sent from the account's address,
    /// the authors' names kept as the display name (the default in the
    /// configuration); `false` refuses it with `553`.
    pub rewrite_from: bool,
    /// Messages per minute; more get `451 4.7.0` at MAIL.
    pub messages_per_minute: Option<u32>,
}

impl Principal {
    /// Its sender policy, for [`apimail_core::intake`].
    pub fn sender_policy(&self) -> SenderPolicy<'_> {
        SenderPolicy::Checked {
            allowed_from: &self.allowed_from,
            rewrite: self.rewrite_from,
        }
    }
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
    /// The provider (`gmail`, `graph`), recorded with each entry (the
    /// journal's `provider`).
    pub provider: Option<String>,
    /// How long the account's entries may wait in the queue, in seconds
    /// (the account layer's `APIMAIL_QUEUE_MAX_AGE_DAYS`).
    pub max_age_secs: i64,
}

/// The users, networks and accounts the relay serves; replaced on reload.
pub trait Directory: Send + Sync + 'static {
    /// Checks a relay user's password. Slow (argon2): the session calls it
    /// through `spawn_blocking`.
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal>;
    /// A client that did not AUTH, from `ip` on the listener named
    /// `listener`: the principal its address maps to (an allowed network, or
    /// loopback → the default account). Asked only for clients in the
    /// listener's `allowed_networks` (or loopback clients, when it names
    /// none), never when the listener requires AUTH.
    fn for_client(&self, listener: &str, ip: IpAddr) -> Option<Principal>;
    /// An account by name; `None` refuses the principal's mail (`451`).
    fn account(&self, account: &str) -> Option<AccountInfo>;
    /// The largest message any account takes: EHLO's SIZE before the
    /// client is known (after AUTH, its account's limit). `None`: the
    /// relay's own ceiling.
    fn largest_message_bytes(&self) -> Option<u64> {
        None
    }
}

/// A message that is now durably in the outbox, for the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The outbox entry.
    pub id: EntryId,
    /// Who it is sent as (also recorded in the entry).
    pub identity: SenderIdentity,
    /// For the journal's first record: the Subject, the client's address
    /// and the SMTP user.
    pub details: Details,
}
