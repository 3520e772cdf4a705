//! Writing an accepted message and its envelope durably into the outbox.

use crate::Mailbox;
use crate::outbox::{DEFAULT_MAX_AGE_SECS, EntryId, NewEntry, Outbox};
use crate::parse::ReadyMessage;
use crate::recipients::{RecipientError, RecipientSource, plan_recipients};
use crate::token::now_unix;

use super::policy::sender_allowed;
use super::reply::Reply;
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

/// Maps the envelope onto the headers (one Bcc for RCPT-only recipients),
/// applies the sender policy, adds a missing Date and Message-ID, and
/// commits the entry (fsynced). Blocking: file I/O.
pub(super) fn accept(
    outbox: &Outbox,
    tx: &Transaction<'_>,
    message: Vec<u8>,
) -> Result<EntryId, Reply> {
    let mut ready = ReadyMessage::parse(message)
        .map_err(|e| Reply::new(554, [5, 6, 0], format!("not an email message: {e}")))?;
    let plan = plan_recipients(&ready, tx.recipients, RecipientSource::Envelope, None)
        .map_err(recipient_reply)?;
    if !plan.not_named().is_empty() {
        let names: Vec<&str> = plan.not_named().iter().map(Mailbox::email).collect();
        tracing::warn!(
            "the message's headers also name {}; they receive it too (the APIs read recipients from the headers)",
            names.join(", ")
        );
    }

    let (from, set_from) = sender(&ready, tx)?;
    plan.apply(&mut ready);
    if set_from {
        ready.set_addresses("From", std::slice::from_ref(&from));
    }
    let now = now_unix();
    let message_id = match ready.message_id() {
        Some(id) => id.to_owned(),
        None => format!("<{now}.{}@{}>", random_hex(), from.domain()),
    };
    let bytes = ready.into_bytes_with(&rfc5322_date(now), &message_id);
    let meta = NewEntry {
        identity: Some(tx.account.identity.clone()),
        account: Some(tx.principal.account.clone()),
        provider: None,
        from: from.email().to_owned(),
        recipients: plan
            .recipients()
            .iter()
            .map(|m| m.email().to_owned())
            .collect(),
        message_id,
        max_age_secs: DEFAULT_MAX_AGE_SECS,
    };
    outbox.accept(&bytes, meta).map_err(|e| {
        tracing::error!("cannot queue a message: {e}");
        if e.is_disk_full() {
            Reply::new(
                452,
                [4, 3, 1],
                "insufficient system storage, try again later",
            )
        } else {
            Reply::new(
                451,
                [4, 3, 0],
                "cannot queue the message now, try again later",
            )
        }
    })
}

/// The From the message is sent with, and whether the header must be
/// (re)written.
fn sender(ready: &ReadyMessage, tx: &Transaction<'_>) -> Result<(Mailbox, bool), Reply> {
    let own = tx.account.address.as_deref();
    if tx.principal.rewrite_from {
        let Some(own) = own else {
            tracing::error!(
                "rewrite_from for `{}` needs the address of account `{}`, which is unknown",
                tx.principal.name,
                tx.principal.account
            );
            return Err(Reply::new(
                451,
                [4, 3, 5],
                "the sending account's address is unknown",
            ));
        };
        // The device's name: its display name, else what it called itself.
        let name = ready
            .from()
            .map(|m| m.name().unwrap_or(m.email()).to_owned())
            .or_else(|| ready.local_sender().map(str::to_owned))
            .or_else(|| Some(tx.mail_from.to_owned()))
            .filter(|n| !n.is_empty() && n != own);
        let from = Mailbox::new(name.as_deref(), own)
            .map_err(|e| Reply::new(451, [4, 3, 5], format!("the account's address: {e}")))?;
        return Ok((from, true));
    }
    match ready.from() {
        Some(from) if sender_allowed(tx.principal, own, from.email()) => Ok((from.clone(), false)),
        Some(from) => Err(not_allowed(from.email())),
        // No From, or one without a domain: the envelope sender, if allowed.
        None => {
            let address = Some(tx.mail_from)
                .filter(|a| a.contains('@'))
                .or(own)
                .ok_or_else(|| Reply::new(554, [5, 6, 0], "the message has no From header"))?;
            if !sender_allowed(tx.principal, own, address) {
                return Err(not_allowed(address));
            }
            let name = ready.local_sender().filter(|n| !n.is_empty());
            let from = Mailbox::new(name, address)
                .map_err(|e| Reply::new(553, [5, 1, 7], format!("bad sender address: {e}")))?;
            Ok((from, true))
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

fn recipient_reply(error: RecipientError) -> Reply {
    match error {
        RecipientError::NoRecipients => Reply::new(554, [5, 5, 1], "no valid recipients"),
        other => Reply::new(550, [5, 1, 3], printable(&other.to_string())),
    }
}

/// Client-supplied text made safe for one reply line.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

fn random_hex() -> String {
    let random = getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id()));
    format!("{random:016x}")
}

/// `Thu, 1 Jan 2026 00:00:00 +0000`.
fn rfc5322_date(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&format)
        .unwrap_or_default()
}
