//! Ready-made messages, as sendmail callers hand them over.
//!
//! The bytes are kept exactly as given. The only change is that a missing
//! Date or Message-ID is added at the end of the header section, using
//! the message's own line ending.

use mail_parser::{HeaderName, MessageParser};

use crate::address::Mailbox;

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
    recipients: Vec<Mailbox>,
    resent: bool,
    has_date: bool,
    message_id: Option<String>,
    local_sender: Option<String>,
}

impl ReadyMessage {
    /// Parses `bytes` as an RFC 5322 message.
    ///
    /// Recipients come from To, Cc and Bcc, or from Resent-To, Resent-Cc
    /// and Resent-Bcc when any of those is present (a resent message).
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
        let fields: &[(HeaderName<'static>, &'static str)] = if resent {
            &[
                (HeaderName::ResentTo, "Resent-To"),
                (HeaderName::ResentCc, "Resent-Cc"),
                (HeaderName::ResentBcc, "Resent-Bcc"),
            ]
        } else {
            &[
                (HeaderName::To, "To"),
                (HeaderName::Cc, "Cc"),
                (HeaderName::Bcc, "Bcc"),
            ]
        };
        let mut recipients = Vec::new();
        for (name, label) in fields {
            recipients.extend(addresses(&parsed, name.clone(), label)?);
        }
        // A local sender such as cron's `From: root (Cron Daemon)` has no
        // domain: callers replace it with a real address.
        let (from, local_sender) = match addresses(&parsed, HeaderName::From, "From") {
            Ok(list) => (list.into_iter().next(), None),
            Err(ParseError::Address { source, .. }) if !source.input.contains('@') => {
                (None, Some(local_sender_name(&parsed)))
            }
            Err(e) => return Err(e),
        };
        let has_date = parsed.header(HeaderName::Date).is_some();
        let message_id = parsed.message_id().map(|id| format!("<{id}>"));

        Ok(ReadyMessage {
            bytes,
            header_end,
            newline,
            from,
            recipients,
            resent,
            has_date,
            message_id,
            local_sender,
        })
    }

    /// For a From without a domain (`root (Cron Daemon)`), the name to show
    /// with the real sender address: the comment, else the local user.
    pub fn local_sender(&self) -> Option<&str> {
        self.local_sender.as_deref()
    }

    /// Removes every `name:` header field (with its continuation lines).
    pub fn remove_header(&mut self, name: &str) {
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut skipping = false;
        let mut offset = 0;
        let mut end = self.header_end;
        for line in self.bytes[..self.header_end].split_inclusive(|&b| b == b'\n') {
            let continuation = matches!(line.first(), Some(b' ' | b'\t'));
            if !continuation {
                skipping = line.len() > name.len()
                    && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                    && line[name.len()] == b':';
            }
            if skipping {
                end -= line.len();
            } else {
                out.extend_from_slice(line);
            }
            offset += line.len();
        }
        out.extend_from_slice(&self.bytes[offset..]);
        self.bytes = out;
        self.header_end = end;
    }

    /// The first From mailbox, if the message has one.
    pub fn from(&self) -> Option<&Mailbox> {
        self.from.as_ref()
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

fn addresses(
    parsed: &mail_parser::Message<'_>,
    name: HeaderName<'static>,
    label: &'static str,
) -> Result<Vec<Mailbox>, ParseError> {
    let mut out = Vec::new();
    for value in parsed.header_values(name) {
        let Some(list) = value.as_address() else {
            continue;
        };
        for addr in list.iter() {
            let Some(email) = addr.address() else {
                match addr.name() {
                    Some(text) if !text.trim().is_empty() => {
                        let source = crate::AddressError {
                            input: text.to_owned(),
                            reason: "it has no `@`".into(),
                        };
                        return Err(ParseError::Address {
                            header: label,
                            source,
                        });
                    }
                    _ => continue,
                }
            };
            let mailbox =
                Mailbox::new(addr.name(), email).map_err(|source| ParseError::Address {
                    header: label,
                    source,
                })?;
            out.push(mailbox);
        }
    }
    Ok(out)
}

/// Checks the header section and returns where it ends (the offset just
/// past the last header line, before the blank line) and the line ending.
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
