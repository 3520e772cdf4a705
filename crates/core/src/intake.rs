//! The one intake: how a message handed to apimail becomes an outbox entry.
//!
//! sendmail, the relay and the library all hand over a message with an
//! envelope. [`take`] parses it (or takes a [`ReadyMessage`]), plans the
//! recipients ([`crate::recipients`]), applies the [`SenderPolicy`] to
//! every author (each From mailbox and Sender), adds a missing Date and
//! Message-ID, and gives the final bytes as [`Prepared`];
//! [`Prepared::entry`] (or [`Owner::entry`] for a message
//! [`MessageBuilder`](crate::MessageBuilder) composed) is its outbox entry.
//!
//! Message-IDs are [`new_message_id`]'s and dates [`rfc5322_date`]'s, here
//! and in `compose.rs`.

use crate::address::{AddressError, Mailbox};
use crate::aliases::Aliases;
use crate::identity::SenderIdentity;
use crate::outbox::{DEFAULT_MAX_AGE_SECS, NewEntry};
use crate::parse::{ParseError, ReadyMessage};
use crate::recipients::{RecipientError, RecipientPlan, RecipientSource, plan_recipients};
use crate::token::now_unix;
use crate::transport::Envelope;

/// Who may appear as a message's author (From, Sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderPolicy<'a> {
    /// Any author: the provider decides (sendmail, the library).
    Any,
    /// Authors are the account's address or match `allowed_from`
    /// (patterns where `*` matches any run of characters, ASCII
    /// case-insensitive). A message with any other author is rewritten
    /// to come from the account (`rewrite`) or refused.
    Checked {
        /// The patterns.
        allowed_from: &'a [String],
        /// Rewrite rather than refuse.
        rewrite: bool,
    },
}

impl SenderPolicy<'_> {
    /// Whether `address` may be an author: the account's own address, or
    /// one an `allowed_from` pattern matches.
    pub fn allows(&self, account_address: Option<&str>, address: &str) -> bool {
        match self {
            SenderPolicy::Any => true,
            SenderPolicy::Checked { allowed_from, .. } => {
                account_address.is_some_and(|own| own.eq_ignore_ascii_case(address))
                    || allowed_from
                        .iter()
                        .any(|pattern| glob_match(pattern, address))
            }
        }
    }
}

/// What the caller states about the message it hands over.
#[derive(Debug, Clone, Copy)]
pub struct Handover<'a> {
    /// The recipients the caller names (sendmail's arguments, `RCPT TO`,
    /// a library envelope): addresses or local names.
    pub recipients: &'a [String],
    /// Whether the headers' recipients join them (sendmail `-t`).
    pub source: RecipientSource,
    /// For local names.
    pub aliases: Option<&'a Aliases>,
    /// The envelope sender (`MAIL FROM`, `-f`): the From written into a
    /// message without one, when it has a domain.
    pub envelope_from: Option<&'a str>,
    /// The display name of a From written by apimail (sendmail `-F`).
    pub full_name: Option<&'a str>,
    /// The sending account's address, when known.
    pub account_address: Option<&'a str>,
    /// Who may be the message's author.
    pub policy: SenderPolicy<'a>,
}

impl<'a> Handover<'a> {
    /// `recipients` only: any sender, no aliases, no envelope sender.
    pub fn new(recipients: &'a [String]) -> Self {
        Handover {
            recipients,
            source: RecipientSource::Envelope,
            aliases: None,
            envelope_from: None,
            full_name: None,
            account_address: None,
            policy: SenderPolicy::Any,
        }
    }
}

/// Why a handed-over message is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// Not a message.
    #[error("not an email message: {0}")]
    Parse(#[from] ParseError),
    /// The recipients cannot be worked out.
    #[error(transparent)]
    Recipients(#[from] RecipientError),
    /// No From header, and neither an envelope sender nor the account's
    /// address to write one with.
    #[error("the message has no From: header and the sender's address is unknown")]
    NoSender,
    /// The From written from the envelope sender is not a valid mailbox.
    #[error("the envelope sender: {0}")]
    EnvelopeSender(AddressError),
    /// An author the policy does not allow (it refuses, not rewrites).
    #[error("sender {address} is not allowed")]
    NotAllowed {
        /// The first author not allowed.
        address: String,
    },
    /// The policy would rewrite From to the account's address, which is
    /// unknown or invalid.
    #[error("From must be rewritten to the sending account's address, which is unknown")]
    AccountAddressUnknown,
}

/// A message taken in: its final bytes, and what its outbox entry records.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The message as it is queued (or its header section, for a caller
    /// that handed over only that).
    pub bytes: Vec<u8>,
    /// Its author, as sent: the first From mailbox.
    pub from: Mailbox,
    /// Its recipients, and the header edits made for them.
    pub plan: RecipientPlan,
    /// Its Message-ID, with angle brackets.
    pub message_id: String,
    /// The authors' addresses before the policy rewrote them
    /// (comma-separated), for the journal; `None` when not rewritten.
    pub original_from: Option<String>,
}

impl Prepared {
    /// Sender and recipients.
    pub fn envelope(&self) -> Envelope {
        Envelope::new(self.from.clone(), self.plan.recipients().to_vec())
    }

    /// The outbox entry of this message, for `owner`.
    pub fn entry(&self, owner: &Owner) -> NewEntry {
        NewEntry {
            original_from: self.original_from.clone(),
            ..owner.entry(&self.from, self.plan.recipients(), &self.message_id)
        }
    }
}

/// Whom an outbox entry is sent as, and for how long it is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Who to send it as.
    pub identity: Option<SenderIdentity>,
    /// The account's name, if one was chosen.
    pub account: Option<String>,
    /// The provider (`gmail`, `graph`), if known.
    pub provider: Option<String>,
    /// How long to keep retrying, in seconds.
    pub max_age_secs: i64,
}

impl Owner {
    /// An owner sending as `identity`, retried for the default maximum age.
    pub fn new(identity: SenderIdentity) -> Self {
        Owner {
            identity: Some(identity),
            account: None,
            provider: None,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        }
    }

    /// The outbox entry of a message from `from` to `recipients` (one
    /// [`MessageBuilder`](crate::MessageBuilder) composed: see
    /// [`Composed`](crate::Composed)).
    pub fn entry(&self, from: &Mailbox, recipients: &[Mailbox], message_id: &str) -> NewEntry {
        NewEntry {
            identity: self.identity.clone(),
            account: self.account.clone(),
            provider: self.provider.clone(),
            from: from.email().to_owned(),
            recipients: recipients.iter().map(|m| m.email().to_owned()).collect(),
            message_id: message_id.to_owned(),
            max_age_secs: self.max_age_secs,
            original_from: None,
        }
    }
}

/// Parses `bytes`, then [`take`].
pub fn take_bytes(bytes: Vec<u8>, handover: &Handover<'_>) -> Result<Prepared, IntakeError> {
    take(ReadyMessage::parse(bytes)?, handover)
}

/// Takes a message in: recipients planned, the sender policy applied,
/// Date and Message-ID added when missing (see the module documentation).
pub fn take(mut ready: ReadyMessage, handover: &Handover<'_>) -> Result<Prepared, IntakeError> {
    let plan = plan_recipients(
        &ready,
        handover.recipients,
        handover.source,
        handover.aliases,
    )?;
    let written = match ready.from() {
        Some(_) => None,
        None => Some(written_from(&ready, handover)?),
    };
    let authors: Vec<Mailbox> = match &written {
        Some(from) => vec![from.clone()],
        None => ready.authors().to_vec(),
    };
    let sender = ready.sender().cloned();
    let foreign: Vec<&Mailbox> = authors
        .iter()
        .chain(&sender)
        .filter(|m| !handover.policy.allows(handover.account_address, m.email()))
        .collect();

    plan.apply(&mut ready);
    let mut original_from = None;
    let from = match (foreign.first(), handover.policy) {
        (None, _) => {
            if let Some(from) = &written {
                ready.set_addresses("From", std::slice::from_ref(from));
            }
            authors[0].clone()
        }
        (Some(_), SenderPolicy::Checked { rewrite: true, .. }) => {
            let from = rewritten(&authors, handover.account_address)?;
            let mut original: Vec<&str> = Vec::new();
            for m in authors.iter().chain(&sender) {
                if !original.iter().any(|o| o.eq_ignore_ascii_case(m.email())) {
                    original.push(m.email());
                }
            }
            original_from = Some(original.join(", "));
            ready.set_addresses("From", std::slice::from_ref(&from));
            // One author, the account: a Sender would only repeat it.
            ready.remove_header("Sender");
            from
        }
        (Some(first), _) => {
            return Err(IntakeError::NotAllowed {
                address: first.email().to_owned(),
            });
        }
    };
    let message_id = match ready.message_id() {
        Some(id) => id.to_owned(),
        None => new_message_id(from.domain()),
    };
    let bytes = ready.into_bytes_with(&rfc5322_date(now_unix()), &message_id);
    Ok(Prepared {
        bytes,
        from,
        plan,
        message_id,
        original_from,
    })
}

/// The From written into a message without one: the envelope sender when
/// it has a domain (`-f root`, like cron's `From: root`, does not), else
/// the account's address; named as the caller says, else as a local
/// sender's From called itself.
fn written_from(ready: &ReadyMessage, handover: &Handover<'_>) -> Result<Mailbox, IntakeError> {
    let address = handover
        .envelope_from
        .filter(|a| a.contains('@'))
        .or(handover.account_address)
        .ok_or(IntakeError::NoSender)?;
    let name = handover
        .full_name
        .or(ready.local_sender())
        .filter(|n| !n.is_empty());
    Mailbox::new(name, address).map_err(IntakeError::EnvelopeSender)
}

/// The one author a rewritten message has: the account's address, named
/// after the original authors (each one's display name, else its address).
fn rewritten(authors: &[Mailbox], own: Option<&str>) -> Result<Mailbox, IntakeError> {
    let own = own.ok_or(IntakeError::AccountAddressUnknown)?;
    let mut names: Vec<&str> = Vec::new();
    for author in authors {
        let name = author
            .name()
            .filter(|n| !n.is_empty())
            .unwrap_or(author.email());
        if !name.eq_ignore_ascii_case(own) && !names.contains(&name) {
            names.push(name);
        }
    }
    let name = names.join(", ");
    Mailbox::new(Some(name.as_str()).filter(|n| !n.is_empty()), own)
        .map_err(|_| IntakeError::AccountAddressUnknown)
}

/// A new Message-ID, `<32 random hex digits@domain>`, with brackets.
pub fn new_message_id(domain: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS random source: time, process and a counter stay unique.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[12..].copy_from_slice(&(count as u32).to_be_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("<{hex}@{domain}>")
}

/// `unix` as an RFC 5322 date in UTC: `Thu, 1 Jan 2026 00:00:00 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&format)
        .unwrap_or_default()
}

/// `*` matches any run of characters; everything else matches itself,
/// ASCII case-insensitively.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let text = text.to_ascii_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests;
