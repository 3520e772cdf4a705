//! One mapping from a caller's envelope to the headers the APIs read.
//!
//! Gmail and Graph have no envelope: they deliver to the addresses in the
//! To, Cc and Bcc headers. [`plan_recipients`] takes what the caller named
//! for this send (sendmail's arguments; the relay's `RCPT TO`) and the
//! message, and gives the final recipients plus the header edits that make
//! the APIs deliver to exactly them:
//!
//! - local names (`root`) become their aliases' addresses, in the headers
//!   too;
//! - recipients the headers do not name are added to the one Bcc field
//!   (RFC 5322 allows one), merged with any Bcc already there;
//! - a resent message (Resent-To/-Cc/-Bcc, e.g. mutt's bounce) goes only to
//!   the recipients of this send: its To and Cc become Original-To and
//!   Original-Cc, and new To, Cc and Bcc fields name this send's
//!   recipients. Resent-Bcc is removed, as Bcc is.

use crate::address::{AddressError, Mailbox, Recipient, split_list};
use crate::aliases::{Aliases, ExpandError};
use crate::parse::ReadyMessage;

/// Where the recipients of a send come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientSource {
    /// Only those the caller names (sendmail without `-t`, SMTP `RCPT TO`).
    /// An ordinary message's To and Cc still receive it, because the APIs
    /// read them: see [`RecipientPlan::not_named`].
    Envelope,
    /// The message's recipient headers plus those the caller names
    /// (sendmail `-t`).
    HeadersAndEnvelope,
}

/// One change to the message's header section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderEdit {
    /// Make `field` one field holding `mailboxes`; none removes it
    /// (see [`ReadyMessage::set_addresses`]).
    Set {
        /// The header name.
        field: &'static str,
        /// Its new addresses.
        mailboxes: Vec<Mailbox>,
    },
    /// Rename every `field` to `to`, keeping the value.
    Rename {
        /// The header name.
        field: &'static str,
        /// Its new name.
        to: &'static str,
    },
}

/// Who receives a message, and how its headers change so that the APIs
/// deliver to exactly them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientPlan {
    recipients: Vec<Mailbox>,
    not_named: Vec<Mailbox>,
    edits: Vec<HeaderEdit>,
}

impl RecipientPlan {
    /// Everyone the message goes to, each once.
    pub fn recipients(&self) -> &[Mailbox] {
        &self.recipients
    }

    /// With [`RecipientSource::Envelope`], header recipients the caller did
    /// not name who receive the message anyway (worth a warning).
    pub fn not_named(&self) -> &[Mailbox] {
        &self.not_named
    }

    /// The header edits, in the order [`RecipientPlan::apply`] makes them.
    pub fn edits(&self) -> &[HeaderEdit] {
        &self.edits
    }

    /// Makes the edits. `message`'s parsed view (`recipients()`, ...) stays
    /// as it was parsed.
    pub fn apply(&self, message: &mut ReadyMessage) {
        for edit in &self.edits {
            match edit {
                HeaderEdit::Set { field, mailboxes } => message.set_addresses(field, mailboxes),
                HeaderEdit::Rename { field, to } => message.rename_header(field, to),
            }
        }
    }
}

/// Why the recipients cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientError {
    /// A recipient the caller named is neither an address nor a local name.
    #[error("recipient: {0}")]
    Envelope(AddressError),
    /// A local name cannot be expanded.
    #[error("{}: {source}", field.map_or("a recipient of this send".to_owned(), |f| format!("the {f} header")))]
    Alias {
        /// The header that names it, or `None` for the envelope.
        field: Option<&'static str>,
        /// Why.
        source: ExpandError,
    },
    /// Nobody would receive the message.
    #[error("the message has no recipient")]
    NoRecipients,
}

/// Works out the recipients of `message` and the header edits that make
/// the APIs deliver to exactly them (see the module documentation).
///
/// `envelope` holds the recipients as the caller gave them: addresses or
/// bare local names, each string possibly a comma-separated list (as
/// sendmail allows). Local names, in the envelope or the headers, are
/// expanded through `aliases`; without aliases they are an error.
pub fn plan_recipients<S: AsRef<str>>(
    message: &ReadyMessage,
    envelope: &[S],
    source: RecipientSource,
    aliases: Option<&Aliases>,
) -> Result<RecipientPlan, RecipientError> {
    let mut named = Vec::new();
    for given in envelope {
        for part in split_list(given.as_ref()) {
            let recipient = part.parse().map_err(RecipientError::Envelope)?;
            add_all(&mut named, expand(&recipient, None, aliases)?);
        }
    }
    let plan = if message.is_resent() {
        resent(message, named, source, aliases)?
    } else {
        ordinary(message, named, source, aliases)?
    };
    if plan.recipients.is_empty() {
        return Err(RecipientError::NoRecipients);
    }
    Ok(plan)
}

/// To, Cc and Bcc receive it; the envelope's others join the one Bcc.
fn ordinary(
    message: &ReadyMessage,
    named: Vec<Mailbox>,
    source: RecipientSource,
    aliases: Option<&Aliases>,
) -> Result<RecipientPlan, RecipientError> {
    let mut edits = Vec::new();
    let mut in_headers = Vec::new();
    for field in ["To", "Cc"] {
        let (list, rewrite) = header(message, field, aliases)?;
        if rewrite {
            edits.push(HeaderEdit::Set {
                field,
                mailboxes: list.clone(),
            });
        }
        add_all(&mut in_headers, list);
    }
    let (mut bcc, mut rewrite) = header(message, "Bcc", aliases)?;
    add_all(&mut in_headers, bcc.clone());
    for mailbox in &named {
        if !contains(&in_headers, mailbox) {
            bcc.push(mailbox.clone());
            rewrite = true;
        }
    }
    if rewrite || message.count_fields("Bcc") > 1 {
        edits.push(HeaderEdit::Set {
            field: "Bcc",
            mailboxes: bcc,
        });
    }
    let not_named = match source {
        RecipientSource::Envelope => in_headers
            .iter()
            .filter(|m| !contains(&named, m))
            .cloned()
            .collect(),
        RecipientSource::HeadersAndEnvelope => Vec::new(),
    };
    let mut recipients = in_headers;
    add_all(&mut recipients, named);
    Ok(RecipientPlan {
        recipients,
        not_named,
        edits,
    })
}

/// Only this send's recipients: the original To and Cc are renamed, and
/// new To, Cc and Bcc fields name them.
fn resent(
    message: &ReadyMessage,
    named: Vec<Mailbox>,
    source: RecipientSource,
    aliases: Option<&Aliases>,
) -> Result<RecipientPlan, RecipientError> {
    let mut edits = vec![
        HeaderEdit::Rename {
            field: "To",
            to: "Original-To",
        },
        HeaderEdit::Rename {
            field: "Cc",
            to: "Original-Cc",
        },
    ];
    let mut lists = Vec::new();
    for field in ["Resent-To", "Resent-Cc", "Resent-Bcc"] {
        let (list, rewrite) = header(message, field, aliases)?;
        if rewrite && field != "Resent-Bcc" {
            edits.push(HeaderEdit::Set {
                field,
                mailboxes: list.clone(),
            });
        }
        lists.push(list);
    }
    let recipients = match source {
        RecipientSource::Envelope => named,
        RecipientSource::HeadersAndEnvelope => {
            let mut all = Vec::new();
            for list in &lists {
                add_all(&mut all, list.clone());
            }
            add_all(&mut all, named);
            all
        }
    };
    let only_recipients = |list: &[Mailbox]| -> Vec<Mailbox> {
        list.iter()
            .filter(|m| contains(&recipients, m))
            .cloned()
            .collect()
    };
    let to = only_recipients(&lists[0]);
    let cc: Vec<Mailbox> = only_recipients(&lists[1])
        .into_iter()
        .filter(|m| !contains(&to, m))
        .collect();
    let bcc: Vec<Mailbox> = recipients
        .iter()
        .filter(|m| !contains(&to, m) && !contains(&cc, m))
        .cloned()
        .collect();
    for (field, mailboxes) in [("To", to), ("Cc", cc), ("Bcc", bcc)] {
        edits.push(HeaderEdit::Set { field, mailboxes });
    }
    edits.push(HeaderEdit::Set {
        field: "Resent-Bcc",
        mailboxes: Vec::new(),
    });
    Ok(RecipientPlan {
        recipients,
        not_named: Vec::new(),
        edits,
    })
}

/// A header's addresses with local names expanded, and whether it had any
/// (so it must be rewritten).
fn header(
    message: &ReadyMessage,
    field: &'static str,
    aliases: Option<&Aliases>,
) -> Result<(Vec<Mailbox>, bool), RecipientError> {
    let mut list = Vec::new();
    let mut local = false;
    for recipient in message.header_recipients(field) {
        local |= matches!(recipient, Recipient::Local(_));
        add_all(&mut list, expand(recipient, Some(field), aliases)?);
    }
    Ok((list, local))
}

fn expand(
    recipient: &Recipient,
    field: Option<&'static str>,
    aliases: Option<&Aliases>,
) -> Result<Vec<Mailbox>, RecipientError> {
    match recipient {
        Recipient::Mailbox(mailbox) => Ok(vec![mailbox.clone()]),
        Recipient::Local(name) => match aliases {
            Some(aliases) => aliases.expand(name),
            None => Err(ExpandError::Unknown {
                name: name.clone(),
                via: Vec::new(),
            }),
        }
        .map_err(|source| RecipientError::Alias { field, source }),
    }
}

fn contains(list: &[Mailbox], mailbox: &Mailbox) -> bool {
    list.iter()
        .any(|m| m.email().eq_ignore_ascii_case(mailbox.email()))
}

fn add_all(list: &mut Vec<Mailbox>, more: Vec<Mailbox>) {
    for mailbox in more {
        if !contains(list, &mailbox) {
            list.push(mailbox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        raw: &str,
        envelope: &[&str],
        source: RecipientSource,
        aliases: Option<&str>,
    ) -> Result<(Vec<String>, String), RecipientError> {
        let mut message = ReadyMessage::parse(raw.as_bytes().to_vec()).unwrap();
        let aliases = aliases.map(|text| Aliases::parse(text).unwrap());
        let plan = plan_recipients(&message, envelope, source, aliases.as_ref())?;
        plan.apply(&mut message);
        let emails = plan
            .recipients()
            .iter()
            .map(|m| m.email().to_owned())
            .collect();
        Ok((
            emails,
            String::from_utf8(message.as_bytes().to_vec()).unwrap(),
        ))
    }

    use RecipientSource::{Envelope, HeadersAndEnvelope};

    #[test]
    fn envelope_recipients_join_one_merged_bcc_field() {
        let raw = "From: a@example.com\nTo: to@example.net\nBcc: b1@example.net\nSubject: s\nBcc: b2@example.net\n\nbody\n";
        let (emails, bytes) = plan(
            raw,
            &["extra@example.net, to@example.net"],
            HeadersAndEnvelope,
            None,
        )
        .unwrap();
        assert_eq!(
            emails,
            [
                "to@example.net",
                "b1@example.net",
                "b2@example.net",
                "extra@example.net"
            ]
        );
        assert_eq!(
            bytes,
            "From: a@example.com\nTo: to@example.net\nBcc: <b1@example.net>, <b2@example.net>, <extra@example.net>\nSubject: s\n\nbody\n"
        );
        // Nothing to add and one Bcc field: the message is untouched.
        let raw = "To: to@example.net\r\nBcc: b@example.net\r\n\r\nbody";
        let (_, bytes) = plan(raw, &["b@example.net"], HeadersAndEnvelope, None).unwrap();
        assert_eq!(bytes, raw);
    }

    #[test]
    fn a_bcc_is_added_first_with_the_messages_line_ending() {
        let raw = "Subject: x\r\n\r\nhello\r\n";
        let (emails, bytes) = plan(
            raw,
            &["a@example.net", "Bé <b@example.net>"],
            Envelope,
            None,
        )
        .unwrap();
        assert_eq!(emails, ["a@example.net", "b@example.net"]);
        assert_eq!(
            bytes,
            "Bcc: <a@example.net>, =?utf-8?B?QsOp?= <b@example.net>\r\nSubject: x\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn header_recipients_the_caller_did_not_name_are_reported() {
        let raw = "To: other@example.net, a@example.net\n\nhi\n";
        let message = ReadyMessage::parse(raw.as_bytes().to_vec()).unwrap();
        let p = plan_recipients(&message, &["a@example.net"], Envelope, None).unwrap();
        let not_named: Vec<_> = p.not_named().iter().map(Mailbox::email).collect();
        assert_eq!(not_named, ["other@example.net"]);
        assert!(p.edits().is_empty());
        let p = plan_recipients(&message, &["a@example.net"], HeadersAndEnvelope, None).unwrap();
        assert!(p.not_named().is_empty());
    }

    #[test]
    fn local_names_become_their_aliases_in_the_headers_too() {
        let aliases = "root: ops@example.com, Oncall <oncall@example.com>\npostmaster: root\ndefault: admin@example.com\n";
        // cron with MAILTO unset: `To: root`, and `root` as the argument.
        let raw = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> job\n\nout\n";
        let (emails, bytes) = plan(raw, &["root"], Envelope, Some(aliases)).unwrap();
        assert_eq!(emails, ["ops@example.com", "oncall@example.com"]);
        assert_eq!(
            bytes,
            "From: root (Cron Daemon)\nTo: <ops@example.com>, \"Oncall\" <oncall@example.com>\nSubject: Cron <root@host> job\n\nout\n"
        );
        // A chain and the catch-all; full addresses stay as written.
        let raw = "To: x@example.net, postmaster\nCc: www-data\n\nb\n";
        let (emails, bytes) = plan(raw, &[] as &[&str], HeadersAndEnvelope, Some(aliases)).unwrap();
        assert_eq!(
            emails,
            [
                "x@example.net",
                "ops@example.com",
                "oncall@example.com",
                "admin@example.com"
            ]
        );
        assert!(bytes.starts_with("To: <x@example.net>, <ops@example.com>, \"Oncall\" <oncall@example.com>\nCc: <admin@example.com>\n"), "{bytes}");
    }

    #[test]
    fn local_names_without_an_alias_are_named() {
        let e = plan("To: root\n\nb\n", &["root"], Envelope, None).unwrap_err();
        assert_eq!(
            e,
            RecipientError::Alias {
                field: None,
                source: ExpandError::Unknown {
                    name: "root".into(),
                    via: vec![]
                }
            }
        );
        let e = plan(
            "To: root\n\nb\n",
            &[] as &[&str],
            HeadersAndEnvelope,
            Some("postmaster: root\n"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the To header: `root` is a local name with no alias"
        );
        let e = plan("Subject: s\n\nb\n", &["two words"], Envelope, None).unwrap_err();
        assert!(matches!(e, RecipientError::Envelope(_)), "{e}");
        let e = plan("Subject: s\n\nb\n", &[" , "], Envelope, None).unwrap_err();
        assert_eq!(e, RecipientError::NoRecipients);
    }

    /// mutt's bounce: Resent-* headers before the original, the new
    /// recipient as the argument.
    const BOUNCE: &str = "Resent-From: me@example.com\nResent-To: new@example.net\nResent-Bcc: hidden@example.net\nFrom: ann@example.org\nTo: orig@example.org\nCc: occ@example.org\nBcc: obcc@example.org\nSubject: s\n\nbody\n";

    #[test]
    fn a_resent_message_goes_only_to_this_sends_recipients() {
        let (emails, bytes) = plan(BOUNCE, &["new@example.net"], Envelope, None).unwrap();
        assert_eq!(emails, ["new@example.net"]);
        assert_eq!(
            bytes,
            "To: <new@example.net>\nResent-From: me@example.com\nResent-To: new@example.net\nFrom: ann@example.org\nOriginal-To: orig@example.org\nOriginal-Cc: occ@example.org\nSubject: s\n\nbody\n"
        );
        // With -t: the Resent-* recipients, the blind one in Bcc.
        let (emails, bytes) = plan(BOUNCE, &[] as &[&str], HeadersAndEnvelope, None).unwrap();
        assert_eq!(emails, ["new@example.net", "hidden@example.net"]);
        assert_eq!(
            bytes,
            "To: <new@example.net>\nResent-From: me@example.com\nResent-To: new@example.net\nFrom: ann@example.org\nOriginal-To: orig@example.org\nOriginal-Cc: occ@example.org\nBcc: <hidden@example.net>\nSubject: s\n\nbody\n"
        );
    }
}
