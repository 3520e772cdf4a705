//! Writing an accepted message and its envelope durably into the outbox.

use apimail_core::Mailbox;
use apimail_core::ReadyMessage;
use apimail_core::intake::{self, Handover, IntakeError, Owner};
use apimail_core::outbox::{EntryId, NewEntry, Outbox, OutboxError};
use apimail_core::recipients::RecipientError;

use super::reply::Reply;
use super::split::{self, Part, Splits};
use super::spool::Received;
use super::{AccountInfo, Principal};

/// A complete transaction: who sent it, as whom, to whom, and the message
/// as received (dot-unstuffed).
#[derive(Debug)]
pub(super) struct Transaction<'a> {
    pub principal: &'a Principal,
    pub account: &'a AccountInfo,
    /// MAIL FROM, possibly empty (`<>`).
    pub mail_from: &'a str,
    /// RCPT TO, in order.
    pub recipients: &'a [String],
}

/// What became of an accepted transaction.
#[derive(Debug)]
pub(super) enum Queued {
    /// A new outbox entry, and the message's Subject.
    New(EntryId, Option<String>),
    /// A later transaction of a split envelope whose recipients all get
    /// the message already, through this entry.
    Covered(EntryId),
}

/// Takes the message in through [`apimail_core::intake`] (one Bcc for RCPT-only
/// recipients, the principal's sender policy, a missing Date and
/// Message-ID) and commits the entry (fsynced). A later transaction of a
/// split envelope (see `split.rs`) goes only to its new recipients.
/// Blocking: file I/O.
pub(super) fn accept(
    outbox: &Outbox,
    splits: &Splits,
    tx: &Transaction<'_>,
    message: Received,
) -> Result<Queued, Reply> {
    match prepare(splits, tx, message)? {
        Prepared::Covered(id) => Ok(Queued::Covered(id)),
        Prepared::Ready(mut ready) => {
            let message = ready.message.take().expect("a prepared message");
            let entry = std::mem::take(&mut ready.entry);
            let queued = message.commit(outbox, &ready.bytes, entry);
            ready.settle(splits, queued.map_err(|e| storage_reply(&e)))
        }
    }
}

/// What [`prepare`] made of a transaction.
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived, one per message, never stored"
)]
pub(super) enum Prepared {
    /// Every recipient gets the message already, through this entry.
    Covered(EntryId),
    /// To be committed.
    Ready(Ready),
}

/// A message ready to commit: its bytes (the header section when the
/// rest is in a file) and its entry, and what the split-envelope memory
/// must learn of the outcome.
pub(super) struct Ready {
    pub(super) bytes: Vec<u8>,
    pub(super) entry: NewEntry,
    /// The message as received; taken to commit it.
    pub(super) message: Option<Received>,
    subject: Option<String>,
    account: String,
    given_id: Option<String>,
    part: Part,
}

impl Ready {
    /// The outcome of committing: the split-envelope memory learns it,
    /// and a failure is logged.
    pub(super) fn settle(
        self,
        splits: &Splits,
        queued: Result<EntryId, Reply>,
    ) -> Result<Queued, Reply> {
        if let (Ok(id), Some(message_id), Part::First) = (&queued, &self.given_id, &self.part) {
            splits.queued(&self.account, message_id, id);
        }
        queued
            .map(|id| Queued::New(id, self.subject))
            .inspect_err(|_| {
                if let Some(id) = &self.given_id {
                    splits.undo(&self.account, id, &self.part);
                }
            })
    }
}

/// Takes the message in through [`apimail_core::intake`], as [`accept`]
/// does, without committing it. CPU only: the message is in memory, or
/// only its header section is read.
pub(super) fn prepare(
    splits: &Splits,
    tx: &Transaction<'_>,
    mut message: Received,
) -> Result<Prepared, Reply> {
    // Only the header section when the message is in a file.
    let ready = ReadyMessage::parse(message.head()).map_err(|e| intake_reply(e.into(), tx))?;
    let subject = ready.subject().map(str::to_owned);
    // The client's Message-ID, with the body (see split.rs).
    let shown_id = ready.message_id().unwrap_or_default().to_owned();
    let given_id = ready
        .message_id()
        .map(|id| split::key(id, ready.as_bytes()));
    let handover = Handover {
        envelope_from: Some(tx.mail_from),
        account_address: tx.account.address.as_deref(),
        policy: tx.principal.sender_policy(),
        ..Handover::new(tx.recipients)
    };
    let mut prepared = intake::take(ready, &handover).map_err(|e| intake_reply(e, tx))?;
    let account = tx.principal.account.as_str();
    let part = given_id.as_deref().map_or(Part::First, |id| {
        splits.join(account, id, prepared.plan.recipients())
    });
    let mut recipients = prepared.plan.recipients().to_vec();
    match &part {
        Part::Later { new, first } if new.is_empty() => {
            let Some(first) = first else {
                // The first transaction is being queued right now.
                return Err(Reply::new(451, [4, 3, 0], "try again in a moment"));
            };
            tracing::info!("{shown_id}: every recipient already gets it as {first} (same message)");
            return Ok(Prepared::Covered(first.clone()));
        }
        Part::Later { new, first } => {
            tracing::info!(
                "{shown_id}: a later transaction of {}; sent only to the {} new recipient(s), as Bcc",
                first.as_ref().map_or("an earlier one", EntryId::as_str),
                new.len()
            );
            let mut later = ReadyMessage::parse(std::mem::take(&mut prepared.bytes))
                .map_err(|e| intake_reply(e.into(), tx))?;
            split::only_to(&mut later, new);
            prepared.bytes = later.into_bytes_with("", &prepared.message_id);
            recipients = new.clone();
        }
        Part::First if !prepared.plan.not_named().is_empty() => {
            let names: Vec<&str> = prepared
                .plan
                .not_named()
                .iter()
                .map(Mailbox::email)
                .collect();
            tracing::warn!(
                "the message's headers also name {}; they receive it too (the APIs read recipients from the headers)",
                names.join(", ")
            );
        }
        Part::First => {}
    }
    if let Some(original) = &prepared.original_from {
        tracing::info!(
            "From {} rewritten to the address of account `{}` (sender policy of `{}`)",
            printable(original),
            tx.principal.account,
            tx.principal.name
        );
    }
    let owner = Owner {
        account: Some(tx.principal.account.clone()),
        provider: tx.account.provider.clone(),
        max_age_secs: tx.account.max_age_secs,
        ..Owner::new(tx.account.identity.clone())
    };
    let mut entry = prepared.entry(&owner);
    entry.recipients = recipients.iter().map(|m| m.email().to_owned()).collect();
    Ok(Prepared::Ready(Ready {
        bytes: prepared.bytes,
        entry,
        message: Some(message),
        subject,
        account: account.to_owned(),
        given_id,
        part,
    }))
}

/// The reply when the outbox cannot take a message.
fn storage_reply(error: &OutboxError) -> Reply {
    tracing::error!("cannot queue a message: {error}");
    if error.is_disk_full() {
        Reply::new(
            452,
            [4, 3, 1],
            "insufficient system storage, try again later",
        )
    } else {
        unavailable()
    }
}

/// The reply when the store cannot take a message now: temporary, the
/// client tries again (never a 250 before the entry is durable).
pub(super) fn unavailable() -> Reply {
    Reply::new(
        451,
        [4, 3, 0],
        "cannot queue the message now, try again later",
    )
}

/// The reply to a message the intake refused.
fn intake_reply(error: IntakeError, tx: &Transaction<'_>) -> Reply {
    match error {
        IntakeError::Parse(e) => Reply::new(554, [5, 6, 0], format!("not an email message: {e}")),
        IntakeError::Recipients(RecipientError::NoRecipients) => {
            Reply::new(554, [5, 5, 1], "no valid recipients")
        }
        IntakeError::Recipients(other) => Reply::new(550, [5, 1, 3], printable(&other.to_string())),
        IntakeError::NoSender => Reply::new(554, [5, 6, 0], "the message has no From header"),
        IntakeError::EnvelopeSender(e) => Reply::new(
            553,
            [5, 1, 7],
            format!("bad sender address: {}", printable(&e.to_string())),
        ),
        IntakeError::NotAllowed { address } => not_allowed(&address),
        // The account's address is unknown.
        _ => {
            tracing::error!(
                "the sender policy of `{}` rewrites From to the address of account `{}`, which is unknown",
                tx.principal.name,
                tx.principal.account
            );
            Reply::new(451, [4, 3, 5], "the sending account's address is unknown")
        }
    }
}

pub(super) fn not_allowed(address: &str) -> Reply {
    Reply::new(
        553,
        [5, 7, 1],
        format!("sender {} not allowed for this user", printable(address)),
    )
}

/// Client-supplied text made safe for one reply line.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}
