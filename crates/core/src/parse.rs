//! Ready-made messages, as sendmail callers hand them over.
//!
//! The bytes are kept exactly as given, except for the edits a caller asks
//! for (address headers set, renamed or removed, see
//! [`crate::recipients`]) and a missing Date or Message-ID, added at the
//! end of the header section. Every edit uses the message's own line ending.

use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_parser::{HeaderName, MessageParser};

use crate::address::{Mailbox, Recipient};

/// The headers that name recipients, in the order they are read.
const RECIPIENT_HEADERS: [(HeaderName<'static>, &str); 6] = [
    (HeaderName::To, "To"),
    (HeaderName::Cc, "Cc"),
    (HeaderName::Bcc, "Bcc"),
    (HeaderName::ResentTo, "Resent-To"),
    (HeaderName::ResentCc, "Resent-Cc"),
    (HeaderName::ResentBcc, "Resent-Bcc"),
];

/// Why input is not a usable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is empty.
    #[error("the input is empty, not a message")]
    Empty,
    /// A line in the header section is neither a header nor a continuation.
    #[error(
        "line {line} is not a header field (expected `Name: value` before the first blank line)"
    )]
    NotAHeader {
        /// 1-based line number.
        line: usize,
    },
    /// An address header holds something that is not a valid address.
    #[error("the {header} header holds an invalid address")]
    Address {
        /// Which header.
        header: &'static str,
        /// What is wrong.
        source: crate::AddressError,
    },
}

/// A parsed ready-made message.
#[derive(Debug, Clone)]
pub struct ReadyMessage {
    bytes: Vec<u8>,
    header_end: usize,
    newline: &'static str,
    from: Option<Mailbox>,
    /// Every From mailbox with a domain, in order.
    authors: Vec<Mailbox>,
    /// The Sender mailbox, if it has a domain.
    sender: Option<Mailbox>,
    /// Every recipient header's entries, in [`RECIPIENT_HEADERS`] order.
    fields: Vec<(&'static str, Vec<Recipient>)>,
    recipients: Vec<Mailbox>,
    resent: bool,
    has_date: bool,
    message_id: Option<String>,
    local_sender: Option<String>,
    subject: Option<String>,
}

impl ReadyMessage {
    /// Parses `bytes` as an RFC 5322 message.
    ///
    /// Recipients come from To, Cc and Bcc, or from Resent-To, Resent-Cc
    /// and Resent-Bcc when any of those is present (a resent message).
    /// Bare local names (`To: root`) are kept for aliases to expand.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ParseError> {
        let (header_end, newline) = scan_header_section(&bytes)?;
        let parsed = MessageParser::new()
            .parse_headers(&bytes[..header_end])
            .ok_or(ParseError::NotAHeader { line: 1 })?;

        let resent = [
            HeaderName::ResentTo,
            HeaderName::ResentCc,
            HeaderName::ResentBcc,
        ]
        .into_iter()
        .any(|h| parsed.header(h).is_some());
        let mut fields = Vec::with_capacity(RECIPIENT_HEADERS.len());
        for (name, label) in RECIPIENT_HEADERS {
            fields.push((label, addresses(&parsed, name, label)?));
        }
        let active = if resent { &fields[3..] } else { &fields[..3] };
        let recipients = active
            .iter()
            .flat_map(|(_, list)| list)
            .filter_map(|r| match r {
                Recipient::Mailbox(m) => Some(m.clone()),
                Recipient::Local(_) => None,
            })
            .collect();
        // A local sender such as cron's `From: root (Cron Daemon)` has no
        // domain: callers replace it with a real address.
        let from_field = addresses(&parsed, HeaderName::From, "From")?;
        let (from, local_sender) = match from_field.first() {
            Some(Recipient::Mailbox(from)) => (Some(from.clone()), None),
            Some(Recipient::Local(_)) => (None, Some(local_sender_name(&parsed))),
            None => (None, None),
        };
        let authors = mailboxes(from_field);
        let sender = mailboxes(addresses(&parsed, HeaderName::Sender, "Sender")?)
            .into_iter()
            .next();
        let has_date = parsed.header(HeaderName::Date).is_some();
        let message_id = parsed.message_id().map(|id| format!("<{id}>"));
        let subject = parsed.subject().map(str::to_owned);

        Ok(ReadyMessage {
            bytes,
            header_end,
            newline,
            from,
            authors,
            sender,
            fields,
            recipients,
            resent,
            has_date,
            message_id,
            local_sender,
            subject,
        })
    }

    /// For a From without a domain (`root (Cron Daemon)`), the name to show
    /// with the real sender address: the comment, else the local user.
    pub fn local_sender(&self) -> Option<&str> {
        self.local_sender.as_deref()
    }

    /// Removes every `name:` header field (with its continuation lines).
    pub fn remove_header(&mut self, name: &str) {
        self.edit_fields(name, |_, _| Vec::new());
    }

    /// Renames every `from:` header field to `to:`, keeping its value.
    pub fn rename_header(&mut self, from: &str, to: &str) {
        self.edit_fields(from, |_, field| {
            [to.as_bytes(), &field[from.len()..]].concat()
        });
    }

    /// Makes `name:` one field holding `mailboxes`, written by mail-builder
    /// (display names quoted or encoded as needed, long lines folded): in
    /// place of the first such field, or first in the header section when
    /// there is none. Later `name:` fields are removed; so is every one when
    /// `mailboxes` is empty.
    pub fn set_addresses(&mut self, name: &str, mailboxes: &[Mailbox]) {
        let field = self.address_field(name, mailboxes);
        let found = self.edit_fields(name, |index, _| {
            if index == 0 {
                field.clone()
            } else {
                Vec::new()
            }
        });
        if found == 0 && !field.is_empty() {
            self.header_end += field.len();
            self.bytes.splice(0..0, field);
        }
    }

    /// How many `name:` fields the header section has.
    pub fn count_fields(&self, name: &str) -> usize {
        header_fields(&self.bytes[..self.header_end])
            .filter(|field| is_field(field, name))
            .count()
    }

    /// The entries of one recipient header (`To`, `Cc`, `Bcc`, `Resent-To`,
    /// `Resent-Cc` or `Resent-Bcc`; all its fields together), as parsed.
    pub fn header_recipients(&self, name: &str) -> &[Recipient] {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map_or(&[], |(_, list)| list)
    }

    /// Replaces each `name:` field (with its continuation lines) by what
    /// `edit` returns for it (given its index among them and its bytes).
    /// Returns how many there were.
    fn edit_fields(&mut self, name: &str, mut edit: impl FnMut(usize, &[u8]) -> Vec<u8>) -> usize {
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut found = 0;
        for field in header_fields(&self.bytes[..self.header_end]) {
            if is_field(field, name) {
                out.extend(edit(found, field));
                found += 1;
            } else {
                out.extend_from_slice(field);
            }
        }
        let header_end = out.len();
        out.extend_from_slice(&self.bytes[self.header_end..]);
        self.bytes = out;
        self.header_end = header_end;
        found
    }

    /// `Name: value` plus the message's line ending; empty for no mailboxes.
    fn address_field(&self, name: &str, mailboxes: &[Mailbox]) -> Vec<u8> {
        if mailboxes.is_empty() {
            return Vec::new();
        }
        let list = mailboxes
            .iter()
            .map(|m| Address::new_address(m.name(), m.email()))
            .collect();
        let mut field = format!("{name}: ").into_bytes();
        Address::new_list(list).write_header(&mut field, name.len() + 2);
        if self.newline == "\n" {
            field.retain(|&b| b != b'\r');
        }
        field
    }

    /// The first From mailbox, if the message has one.
    pub fn from(&self) -> Option<&Mailbox> {
        self.from.as_ref()
    }

    /// Every From mailbox that has a domain (a message may have several
    /// authors).
    pub fn authors(&self) -> &[Mailbox] {
        &self.authors
    }

    /// The Sender mailbox, if the message has one with a domain.
    pub fn sender(&self) -> Option<&Mailbox> {
        self.sender.as_ref()
    }

    /// Recipients named in the headers (see [`ReadyMessage::parse`]).
    pub fn recipients(&self) -> &[Mailbox] {
        &self.recipients
    }

    /// Whether recipients came from Resent-* headers.
    pub fn is_resent(&self) -> bool {
        self.resent
    }

    /// The Message-ID with angle brackets, if present.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The Subject, decoded (encoded-words and folding undone).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Whether a Date header is present.
    pub fn has_date(&self) -> bool {
        self.has_date
    }

    /// The original bytes, untouched.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes to send: the original, plus Date (as `date`, an RFC 5322
    /// date) and Message-ID (as `message_id`, with brackets) when missing.
    pub fn into_bytes_with(self, date: &str, message_id: &str) -> Vec<u8> {
        let mut added = String::new();
        if !self.has_date {
            added.push_str(&format!("Date: {date}{}", self.newline));
        }
        if self.message_id.is_none() {
            added.push_str(&format!("Message-ID: {message_id}{}", self.newline));
        }
        if added.is_empty() {
            return self.bytes;
        }
        let mut bytes = self.bytes;
        // A message that ends right after its last header line may lack
        // the final newline; add one so the new header starts on its own line.
        let mut at = self.header_end;
        if at == bytes.len() && !bytes.ends_with(b"\n") {
            bytes.extend_from_slice(self.newline.as_bytes());
            at = bytes.len();
        }
        bytes.splice(at..at, added.into_bytes());
        bytes
    }
}

fn local_sender_name(parsed: &mail_parser::Message<'_>) -> String {
    parsed
        .header(HeaderName::From)
        .and_then(|v| v.as_address())
        .and_then(|a| a.first())
        .and_then(|a| a.name().or(a.address()))
        .unwrap_or("")
        .trim_matches(|c| c == '(' || c == ')')
        .to_owned()
}

/// The entries that are mailboxes (with a domain).
fn mailboxes(list: Vec<Recipient>) -> Vec<Mailbox> {
    list.into_iter()
        .filter_map(|r| match r {
            Recipient::Mailbox(m) => Some(m),
            Recipient::Local(_) => None,
        })
        .collect()
}

fn addresses(
    parsed: &mail_parser::Message<'_>,
    name: HeaderName<'static>,
    label: &'static str,
) -> Result<Vec<Recipient>, ParseError> {
    let error = |source| ParseError::Address {
        header: label,
        source,
    };
    let mut out = Vec::new();
    for value in parsed.header_values(name) {
        let Some(list) = value.as_address() else {
            continue;
        };
        for addr in list.iter() {
            // `To: root` parses as a display name without an address.
            let (display, text) = match (addr.address(), addr.name()) {
                (Some(email), display) => (display, email),
                (None, Some(text)) if !text.trim().is_empty() => (None, text),
                (None, _) => continue,
            };
            let recipient = if text.contains('@') {
                Recipient::Mailbox(Mailbox::new(display, text).map_err(error)?)
            } else {
                Recipient::local(text).ok_or_else(|| {
                    error(crate::AddressError {
                        input: text.to_owned(),
                        reason: "it has no `@`".into(),
                    })
                })?
            };
            out.push(recipient);
        }
    }
    Ok(out)
}

/// The header section's fields, each with its continuation lines.
fn header_fields(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = head;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        for line in rest.split_inclusive(|&b| b == b'\n') {
            if end > 0 && !matches!(line.first(), Some(b' ' | b'\t')) {
                break;
            }
            end += line.len();
        }
        let (field, after) = rest.split_at(end);
        rest = after;
        Some(field)
    })
}

fn is_field(field: &[u8], name: &str) -> bool {
    field.len() > name.len()
        && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && field[name.len()] == b':'
}

/// Checks the header section and returns where it ends (the offset just
/// past the last header line, before the blank line) and the line ending.
/// The Subject of the message in the file at `path`, decoded, reading
/// only its header section (at most 256 KiB); `None` without one or when
/// the file cannot be read.
pub fn read_subject(message: impl std::io::Read) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(message.take(256 << 10));
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if reader.read_until(b'\n', &mut head).ok()? == 0 {
            break;
        }
        if matches!(&head[start..], b"\n" | b"\r\n") {
            break;
        }
    }
    let parsed = MessageParser::new().parse_headers(&head)?;
    parsed.subject().map(str::to_owned)
}

fn scan_header_section(bytes: &[u8]) -> Result<(usize, &'static str), ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut newline = "\n";
    let mut offset = 0;
    for (index, raw_line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = raw_line.strip_suffix(b"\n").unwrap_or(raw_line);
        let line = match line.strip_suffix(b"\r") {
            Some(l) => {
                if index == 0 {
                    newline = "\r\n";
                }
                l
            }
            None => line,
        };
        if line.is_empty() {
            if index == 0 {
                return Err(ParseError::NotAHeader { line: 1 });
            }
            return Ok((offset, newline));
        }
        let continuation = matches!(line[0], b' ' | b'\t');
        let field = line.iter().position(|&b| b == b':').is_some_and(|colon| {
            colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b))
        });
        if (continuation && index == 0) || (!continuation && !field) {
            return Err(ParseError::NotAHeader { line: index + 1 });
        }
        offset += raw_line.len();
    }
    Ok((offset, newline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_from_and_recipients() {
        let raw = b"From: Ann <ann@example.com>\r\nTo: b@example.com, \"C, D\" <c@example.com>\r\nCc: d@example.com\r\nBcc: e@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let m = ReadyMessage::parse(raw.to_vec()).unwrap();
        assert_eq!(m.from().unwrap().email(), "ann@example.com");
        let emails: Vec<_> = m.recipients().iter().map(Mailbox::email).collect();
        assert_eq!(
            emails,
            [
                "b@example.com",
                "c@example.com",
                "d@example.com",
                "e@example.com"
            ]
        );
        assert!(!m.is_resent());
        assert_eq!(m.as_bytes(), raw);
    }

    #[test]
    fn every_author_and_the_sender_are_read() {
        let raw = b"From: Ann <ann@example.com>, root, bob@example.org\nSender: sec@example.com\nTo: b@example.com\n\nbody\n";
        let m = ReadyMessage::parse(raw.to_vec()).unwrap();
        let authors: Vec<_> = m.authors().iter().map(Mailbox::email).collect();
        assert_eq!(authors, ["ann@example.com", "bob@example.org"]);
        assert_eq!(m.sender().map(Mailbox::email), Some("sec@example.com"));
        assert_eq!(m.from().map(Mailbox::email), Some("ann@example.com"));
        let m = ReadyMessage::parse(b"To: b@example.com\n\nbody\n".to_vec()).unwrap();
        assert!(m.authors().is_empty() && m.sender().is_none());
    }

    #[test]
    fn resent_headers_take_over() {
        let raw = b"From: a@example.com\nTo: old@example.com\nResent-From: r@example.com\nResent-To: new@example.com\n\nbody\n";
        let m = ReadyMessage::parse(raw.to_vec()).unwrap();
        assert!(m.is_resent());
        let emails: Vec<_> = m.recipients().iter().map(Mailbox::email).collect();
        assert_eq!(emails, ["new@example.com"]);
    }

    #[test]
    fn adds_only_missing_date_and_message_id() {
        let raw = b"From: a@example.com\nTo: b@example.com\n\nbody\n";
        let m = ReadyMessage::parse(raw.to_vec()).unwrap();
        let out = m.into_bytes_with("Thu, 1 Jan 1970 00:00:00 +0000", "<x@example.com>");
        assert_eq!(
            out,
            b"From: a@example.com\nTo: b@example.com\nDate: Thu, 1 Jan 1970 00:00:00 +0000\nMessage-ID: <x@example.com>\n\nbody\n"
        );

        let raw = b"Date: Thu, 1 Jan 1970 00:00:00 +0000\r\nMessage-ID: <k@example.com>\r\nTo: b@example.com\r\n\r\nx";
        let m = ReadyMessage::parse(raw.to_vec()).unwrap();
        assert_eq!(m.message_id(), Some("<k@example.com>"));
        assert_eq!(m.into_bytes_with("unused", "<unused@x>"), raw);
    }

    #[test]
    fn headers_only_message_without_final_newline() {
        let m = ReadyMessage::parse(b"To: b@example.com".to_vec()).unwrap();
        let out = m.into_bytes_with("D", "<i@x>");
        assert_eq!(out, b"To: b@example.com\nDate: D\nMessage-ID: <i@x>\n");
    }

    #[test]
    fn local_senders_can_be_replaced() {
        let raw = b"From: root (Cron Daemon)\nTo: ops@example.com\nSubject: x\n\nbody\n";
        let mut m = ReadyMessage::parse(raw.to_vec()).unwrap();
        assert_eq!(m.from(), None);
        assert_eq!(m.local_sender(), Some("Cron Daemon"));
        m.remove_header("from");
        let out = m.into_bytes_with("D", "<i@x>");
        assert_eq!(
            out,
            b"To: ops@example.com\nSubject: x\nDate: D\nMessage-ID: <i@x>\n\nbody\n"
        );
    }

    #[test]
    fn local_names_are_kept_and_address_headers_can_be_edited() {
        let raw = b"To: root, a@example.com\r\nSubject: s\r\nCc: x@example.com,\r\n\tmore@example.com\r\nCc: y@example.com\r\n\r\nbody";
        let mut m = ReadyMessage::parse(raw.to_vec()).unwrap();
        assert_eq!(
            m.header_recipients("to"),
            [
                Recipient::Local("root".into()),
                Recipient::Mailbox("a@example.com".parse().unwrap())
            ]
        );
        assert_eq!(
            m.recipients().len(),
            4,
            "local names are not in recipients()"
        );
        assert_eq!(m.count_fields("cc"), 2);
        let long: Vec<Mailbox> = (0..4)
            .map(|i| {
                format!("Person {i} <person.number.{i}@example.com>")
                    .parse()
                    .unwrap()
            })
            .collect();
        m.set_addresses("Cc", &long);
        m.rename_header("to", "Original-To");
        m.set_addresses("Bcc", &long[..1]);
        assert_eq!(
            String::from_utf8(m.as_bytes().to_vec()).unwrap(),
            "Bcc: \"Person 0\" <person.number.0@example.com>\r\n\
             Original-To: root, a@example.com\r\n\
             Subject: s\r\n\
             Cc: \"Person 0\" <person.number.0@example.com>, \"Person 1\"\r\n \
             <person.number.1@example.com>, \"Person 2\" <person.number.2@example.com>,\r\n \
             \"Person 3\" <person.number.3@example.com>\r\n\
             \r\nbody"
        );
        m.set_addresses("cc", &[]);
        assert_eq!(m.count_fields("Cc"), 0);
        let out = m.into_bytes_with("D", "<i@x>");
        assert!(out.ends_with(b"Subject: s\r\nDate: D\r\nMessage-ID: <i@x>\r\n\r\nbody"));
    }

    #[test]
    fn rejects_what_is_not_a_message() {
        assert_eq!(
            ReadyMessage::parse(Vec::new()).unwrap_err(),
            ParseError::Empty
        );
        assert_eq!(
            ReadyMessage::parse(b"hello there\nthis is text\n".to_vec()).unwrap_err(),
            ParseError::NotAHeader { line: 1 }
        );
        assert_eq!(
            ReadyMessage::parse(b"To: a@example.com\nnot a header\n\nbody".to_vec()).unwrap_err(),
            ParseError::NotAHeader { line: 2 }
        );
        assert_eq!(
            ReadyMessage::parse(b"\nbody only".to_vec()).unwrap_err(),
            ParseError::NotAHeader { line: 1 }
        );
        assert!(matches!(
            ReadyMessage::parse(b"To: not an address\n\n".to_vec()).unwrap_err(),
            ParseError::Address { header: "To", .. }
        ));
    }
}
