//! Taking the attachments out of a MIME message, for the draft +
//! attachments route of messages over Graph's request limit.
//!
//! Each attachment part is cut out of the raw bytes together with the
//! boundary delimiter line that opens it: from the start of its
//! `--boundary` line up to the start of the next delimiter line. What is
//! left is the original message minus those byte ranges, so every header
//! and every body part stays byte-for-byte as composed, and the MIME
//! structure stays valid (the CRLF that ends the previous part is kept).

use std::fmt;
use std::io::{self, Read as _};

use mail_parser::{Encoding, MessageParser, MimeHeaders, PartType};

use crate::scan;
#[cfg(test)]
use crate::source::Chunks;
use crate::source::{Body, Decoding, Origin};

/// An attachment taken out of the message, ready for Graph.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ExtractedAttachment {
    /// The file name (`attachment-N` when the part has none).
    pub(crate) name: String,
    /// The part's own `type/subtype`, with its `charset` when it has one.
    pub(crate) content_type: String,
    /// The Content-ID without angle brackets.
    pub(crate) content_id: Option<String>,
    /// Shown in the body (Content-Disposition `inline`, or a part of a
    /// multipart/related) rather than listed as a file.
    pub(crate) inline: bool,
    /// Where the contents are in the message, and how to undo the
    /// transfer encoding: the file's own bytes, never re-encoded text.
    pub(crate) body: Body,
    /// The decoded size in bytes.
    pub(crate) size: usize,
}

impl fmt::Debug for ExtractedAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtractedAttachment")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("content_id", &self.content_id)
            .field("inline", &self.inline)
            .field("bytes", &self.size)
            .finish()
    }
}

/// The message without its attachments, and the attachments.
#[derive(Debug)]
pub(crate) struct Split {
    /// The byte ranges cut out of the message, in order.
    cuts: Vec<(u64, u64)>,
    /// The message's size.
    len: u64,
    /// What was cut out, in message order.
    pub(crate) attachments: Vec<ExtractedAttachment>,
}

impl Split {
    /// The size of the message without the cut parts.
    pub(crate) fn draft_len(&self) -> u64 {
        self.len
            - self
                .cuts
                .iter()
                .map(|(start, end)| end - start)
                .sum::<u64>()
    }

    /// The message without the cut parts, copied from `origin`.
    pub(crate) fn draft(&self, origin: &Origin<'_>) -> io::Result<Vec<u8>> {
        let mut draft = Vec::with_capacity(usize::try_from(self.draft_len()).unwrap_or(0));
        let mut at = 0;
        for &(start, end) in self.cuts.iter().chain([&(self.len, self.len)]) {
            origin.range(at, start)?.read_to_end(&mut draft)?;
            at = end;
        }
        Ok(draft)
    }
}

/// Why a message cannot be split.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SplitError {
    /// The message is not MIME that can be taken apart.
    #[error("the message cannot be parsed as MIME")]
    Unparsable,
    #[error("{0}")]
    Read(io::Error),
}

impl From<io::Error> for SplitError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::InvalidData {
            SplitError::Unparsable
        } else {
            SplitError::Read(error)
        }
    }
}

/// One part to cut out: its id, byte range (with its opening delimiter
/// line) and body, in the message's offsets.
struct Cut {
    part: usize,
    parent: usize,
    start: u64,
    end: u64,
    attachment: ExtractedAttachment,
}

/// Takes every attachment part (as mail-parser classifies them) out of
/// the message of `len` bytes in `origin`, reading it once for its
/// structure (see [`scan`]) and once per attachment for its decoded size.
/// Parts that are the message itself, alternatives of a
/// multipart/alternative (a calendar invitation is a body, not a file), or
/// the last remaining child of a multipart stay in place.
pub(crate) fn split(origin: Origin<'_>, len: u64) -> Result<Split, SplitError> {
    let skeleton = scan::skeleton(origin.all()?, true)?;
    let found = match classify(&skeleton.bytes, &|at| skeleton.to_message(at)) {
        Some(found) => found,
        // Not expected: an offset fell inside a placeholder. Classify the
        // whole message instead.
        None => {
            tracing::debug!("the MIME scan's skeleton did not map back: parsing the whole message");
            let whole = scan::skeleton(origin.all()?, false)?;
            classify(&whole.bytes, &|at| Some(at as u64)).ok_or(SplitError::Unparsable)?
        }
    }?;
    let mut attachments = Vec::with_capacity(found.len());
    let mut cuts = Vec::with_capacity(found.len());
    for cut in found {
        let mut attachment = cut.attachment;
        attachment.size = attachment.body.decoded_len(&origin)?;
        attachments.push(attachment);
        cuts.push((cut.start, cut.end));
    }
    Ok(Split {
        cuts,
        len,
        attachments,
    })
}

/// The parts of `raw` (a message or its skeleton) to cut out, with
/// offsets turned into the message's by `to_message`; `None` when an
/// offset does not map.
fn classify(
    raw: &[u8],
    to_message: &dyn Fn(usize) -> Option<u64>,
) -> Option<Result<Vec<Cut>, SplitError>> {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Some(Err(SplitError::Unparsable));
    };
    let parts = &message.parts;

    let mut parent = vec![None; parts.len()];
    for (id, part) in parts.iter().enumerate() {
        for &child in part.sub_parts().unwrap_or(&[]) {
            if let Some(slot) = parent.get_mut(child as usize) {
                *slot = Some(id);
            }
        }
    }

    let mut cuts: Vec<Cut> = Vec::new();
    for &id in &message.attachments {
        let id = id as usize;
        if id == 0
            || message.text_body.contains(&(id as u32))
            || message.html_body.contains(&(id as u32))
        {
            continue;
        }
        let (Some(part), Some(parent_id)) = (parts.get(id), parent[id]) else {
            continue;
        };
        if part.is_multipart() || parts[parent_id].is_content_type("multipart", "alternative") {
            continue;
        }
        let Some(boundary) = parts[parent_id]
            .content_type()
            .and_then(|ct| ct.attribute("boundary"))
        else {
            continue;
        };
        if let Some((start, end)) = part_range(
            raw,
            boundary.as_bytes(),
            part.offset_header as usize,
            part.offset_body as usize,
        ) {
            let body_end = part.offset_end as usize;
            cuts.push(Cut {
                part: id,
                parent: parent_id,
                start: to_message(start)?,
                end: to_message(end)?,
                attachment: ExtractedAttachment {
                    name: String::new(),
                    content_type: String::new(),
                    content_id: None,
                    inline: false,
                    body: Body {
                        start: to_message(part.offset_body as usize)?,
                        end: to_message(body_end)?,
                        decoding: decoding(part),
                        at_line_break: matches!(raw.get(body_end), Some(b'\r' | b'\n')),
                    },
                    size: 0,
                },
            });
        }
    }

    // A multipart needs at least one body part: keep the smallest child of
    // any multipart that would otherwise be emptied.
    for (id, part) in parts.iter().enumerate() {
        let Some(children) = part.sub_parts() else {
            continue;
        };
        let all_cut = !children.is_empty()
            && children
                .iter()
                .all(|&c| cuts.iter().any(|cut| cut.part == c as usize));
        if all_cut
            && let Some(keep) = cuts
                .iter()
                .enumerate()
                .filter(|(_, cut)| cut.parent == id)
                .min_by_key(|(_, cut)| cut.end - cut.start)
                .map(|(index, _)| index)
        {
            cuts.remove(keep);
        }
    }
    cuts.sort_by_key(|cut| cut.start);

    for (n, cut) in cuts.iter_mut().enumerate() {
        let part = &message.parts[cut.part];
        let parent_related = message.parts[cut.parent].is_content_type("multipart", "related");
        let inline = match part.content_disposition() {
            Some(disposition) if disposition.is_inline() => true,
            Some(disposition) if disposition.is_attachment() => false,
            _ => parent_related,
        };
        let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
        let message_part = matches!(part.body, PartType::Message(_));
        let mut content_type = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            },
            None if message_part => "message/rfc822".to_owned(),
            None if text => "text/plain".to_owned(),
            None => "application/octet-stream".to_owned(),
        }
        .to_ascii_lowercase();
        if let Some(charset) = part
            .content_type()
            .and_then(|ct| ct.attribute("charset"))
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            content_type.push_str(&format!("; charset={charset}"));
        }
        let name = part
            .attachment_name()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map_or_else(
                || {
                    if message_part {
                        format!("attachment-{}.eml", n + 1)
                    } else {
                        format!("attachment-{}", n + 1)
                    }
                },
                str::to_owned,
            );
        let content_id = part
            .content_id()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty());
        let attachment = &mut cut.attachment;
        attachment.name = name;
        attachment.content_type = content_type;
        attachment.content_id = content_id;
        attachment.inline = inline;
    }
    Some(Ok(cuts))
}

/// How a part's body is decoded. A file part as mail-parser decodes it
/// while parsing; a text part from its raw bytes with only the transfer
/// encoding undone (mail-parser would hand it over converted to UTF-8
/// from its charset, and a file must arrive as it was); a nested message
/// as its raw bytes.
fn decoding(part: &mail_parser::MessagePart<'_>) -> Decoding {
    let strict = matches!(part.body, PartType::Text(_) | PartType::Html(_));
    match (part.encoding, strict) {
        (Encoding::None, _) => Decoding::Copy,
        (Encoding::Base64, false) => Decoding::Base64Mime,
        (Encoding::Base64, true) => Decoding::Base64Strict,
        (Encoding::QuotedPrintable, false) => Decoding::QpMime,
        (Encoding::QuotedPrintable, true) => Decoding::QpStrict,
    }
}

/// The byte range of a part with its opening delimiter line: from the
/// start of the `--boundary` line before `header_start` to the start of
/// the next delimiter line after `body_start`. `None` when the bytes do
/// not look as expected (the part is then left in place).
fn part_range(
    raw: &[u8],
    boundary: &[u8],
    header_start: usize,
    body_start: usize,
) -> Option<(usize, usize)> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);

    let before = raw.get(..header_start)?;
    let start = (0..=before.len().checked_sub(delimiter.len())?)
        .rev()
        .find(|&i| at_line_start(raw, i) && raw[i..].starts_with(&delimiter))?;
    // Between the delimiter and the headers: only transport padding and
    // the line break.
    let padding = &raw[start + delimiter.len()..header_start];
    if !padding
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        || padding.is_empty()
    {
        return None;
    }

    let search_from = body_start.max(header_start);
    let end = (search_from..=raw.len().checked_sub(delimiter.len())?)
        .find(|&i| at_line_start(raw, i) && raw[i..].starts_with(&delimiter))?;
    Some((start, end))
}

fn at_line_start(raw: &[u8], i: usize) -> bool {
    i == 0 || raw[i - 1] == b'\n'
}

/// Today's whole-message split (mail-parser decodes every attachment
/// while parsing), kept as the reference the streaming split is tested
/// against.
#[cfg(test)]
mod whole {
    use std::fmt;

    use mail_parser::decoders::base64::base64_decode;
    use mail_parser::decoders::quoted_printable::quoted_printable_decode;
    use mail_parser::{Encoding, Message, MessageParser, MimeHeaders, PartType};

    use super::part_range;

    /// An attachment taken out of the message, ready for Graph.
    #[derive(Clone, PartialEq, Eq)]
    pub(super) struct OldAttachment {
        /// The file name (`attachment-N` when the part has none).
        pub(super) name: String,
        /// The part's own `type/subtype`, with its `charset` when it has one.
        pub(super) content_type: String,
        /// The Content-ID without angle brackets.
        pub(super) content_id: Option<String>,
        /// Shown in the body (Content-Disposition `inline`, or a part of a
        /// multipart/related) rather than listed as a file.
        pub(super) inline: bool,
        /// The contents with the transfer encoding undone: the file's own
        /// bytes, never re-encoded text.
        pub(super) data: Vec<u8>,
    }

    impl fmt::Debug for OldAttachment {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("OldAttachment")
                .field("name", &self.name)
                .field("content_type", &self.content_type)
                .field("content_id", &self.content_id)
                .field("inline", &self.inline)
                .field("bytes", &self.data.len())
                .finish()
        }
    }

    /// The message without its attachments, and the attachments.
    #[derive(Debug)]
    pub(super) struct OldSplit {
        /// The message bytes with every extracted part cut out.
        pub(super) draft: Vec<u8>,
        /// What was cut out, in message order.
        pub(super) attachments: Vec<OldAttachment>,
    }

    /// The message is not MIME that can be taken apart.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("the message cannot be parsed as MIME")]
    pub(super) struct Unparsable;

    /// One part to cut out: its id and byte range.
    struct Cut {
        part: usize,
        parent: usize,
        start: usize,
        end: usize,
    }

    /// Takes every attachment part (as mail-parser classifies them) out of
    /// `raw`. Parts that are the message itself, alternatives of a
    /// multipart/alternative (a calendar invitation is a body, not a file), or
    /// the last remaining child of a multipart stay in place.
    pub(super) fn split_attachments(raw: &[u8]) -> Result<OldSplit, Unparsable> {
        let mut message = MessageParser::default().parse(raw).ok_or(Unparsable)?;
        let parts = &message.parts;

        let mut parent = vec![None; parts.len()];
        for (id, part) in parts.iter().enumerate() {
            for &child in part.sub_parts().unwrap_or(&[]) {
                if let Some(slot) = parent.get_mut(child as usize) {
                    *slot = Some(id);
                }
            }
        }

        let mut cuts: Vec<Cut> = Vec::new();
        for &id in &message.attachments {
            let id = id as usize;
            if id == 0
                || message.text_body.contains(&(id as u32))
                || message.html_body.contains(&(id as u32))
            {
                continue;
            }
            let (Some(part), Some(parent_id)) = (parts.get(id), parent[id]) else {
                continue;
            };
            if part.is_multipart() || parts[parent_id].is_content_type("multipart", "alternative") {
                continue;
            }
            let Some(boundary) = parts[parent_id]
                .content_type()
                .and_then(|ct| ct.attribute("boundary"))
            else {
                continue;
            };
            if let Some((start, end)) = part_range(
                raw,
                boundary.as_bytes(),
                part.offset_header as usize,
                part.offset_body as usize,
            ) {
                cuts.push(Cut {
                    part: id,
                    parent: parent_id,
                    start,
                    end,
                });
            }
        }

        // A multipart needs at least one body part: keep the smallest child of
        // any multipart that would otherwise be emptied.
        for (id, part) in parts.iter().enumerate() {
            let Some(children) = part.sub_parts() else {
                continue;
            };
            let all_cut = !children.is_empty()
                && children
                    .iter()
                    .all(|&c| cuts.iter().any(|cut| cut.part == c as usize));
            if all_cut
                && let Some(keep) = cuts
                    .iter()
                    .enumerate()
                    .filter(|(_, cut)| cut.parent == id)
                    .min_by_key(|(_, cut)| cut.end - cut.start)
                    .map(|(index, _)| index)
            {
                cuts.remove(keep);
            }
        }
        cuts.sort_by_key(|cut| cut.start);

        let cut_len: usize = cuts.iter().map(|cut| cut.end - cut.start).sum();
        let mut draft = Vec::with_capacity(raw.len() - cut_len);
        let mut at = 0;
        let mut attachments = Vec::with_capacity(cuts.len());
        for (n, cut) in cuts.iter().enumerate() {
            draft.extend_from_slice(&raw[at..cut.start]);
            at = cut.end;
            let part = &message.parts[cut.part];
            let parent_related = message.parts[cut.parent].is_content_type("multipart", "related");
            let inline = match part.content_disposition() {
                Some(disposition) if disposition.is_inline() => true,
                Some(disposition) if disposition.is_attachment() => false,
                _ => parent_related,
            };
            let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
            let message_part = matches!(part.body, PartType::Message(_));
            let mut content_type = match part.content_type() {
                Some(ct) => match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                },
                None if message_part => "message/rfc822".to_owned(),
                None if text => "text/plain".to_owned(),
                None => "application/octet-stream".to_owned(),
            }
            .to_ascii_lowercase();
            if let Some(charset) = part
                .content_type()
                .and_then(|ct| ct.attribute("charset"))
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                content_type.push_str(&format!("; charset={charset}"));
            }
            let name = part
                .attachment_name()
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map_or_else(
                    || {
                        if message_part {
                            format!("attachment-{}.eml", n + 1)
                        } else {
                            format!("attachment-{}", n + 1)
                        }
                    },
                    str::to_owned,
                );
            let content_id = part
                .content_id()
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty());
            attachments.push(OldAttachment {
                name,
                content_type,
                content_id,
                inline,
                data: file_bytes(&mut message, cut.part).ok_or(Unparsable)?,
            });
        }
        draft.extend_from_slice(&raw[at..]);
        Ok(OldSplit { draft, attachments })
    }

    /// A part's body with only the transfer encoding undone. mail-parser
    /// hands text parts over converted to UTF-8 from their charset; a file
    /// must arrive as it was, so text bodies are decoded here from the raw
    /// bytes. A binary body mail-parser decoded is taken, not copied.
    fn file_bytes(message: &mut Message<'_>, id: usize) -> Option<Vec<u8>> {
        let part = message.parts.get_mut(id)?;
        match &mut part.body {
            PartType::Binary(data) | PartType::InlineBinary(data) => {
                return Some(std::mem::take(data).into_owned());
            }
            PartType::Text(_) | PartType::Html(_) => {}
            _ => return Some(part.contents().to_vec()),
        }
        let part = &message.parts[id];
        let raw = message
            .raw_message
            .get(part.offset_body as usize..part.offset_end as usize)?;
        match part.encoding {
            Encoding::Base64 => base64_decode(raw),
            Encoding::QuotedPrintable => quoted_printable_decode(raw),
            Encoding::None => Some(raw.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimail_core::{Attachment, MessageBuilder};
    use base64::Engine as _;
    use mail_parser::Message;
    use std::io::Write as _;

    /// Splits `raw` from memory and from a file, checks both against
    /// today's whole-message split (same draft bytes, same attachments,
    /// same decoded contents), and returns today's.
    fn split_both(raw: &[u8]) -> whole::OldSplit {
        let old = whole::split_attachments(raw).unwrap();
        // In a file, as a range with bytes before and after it (as in an
        // outbox entry's file), which nothing may read.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"HEAD").unwrap();
        file.write_all(raw).unwrap();
        file.write_all(b"\r\n--TAIL\r\n{\"not\": \"the message\"}\n")
            .unwrap();
        let stored = apimail_core::StoredMessage::section(file.path(), 4, raw.len() as u64);
        for origin in [Origin::Memory(raw), Origin::File(&stored)] {
            let new = split(origin, raw.len() as u64).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&new.draft(&origin).unwrap()),
                String::from_utf8_lossy(&old.draft)
            );
            assert_eq!(new.draft_len(), old.draft.len() as u64);
            assert_eq!(new.attachments.len(), old.attachments.len());
            for (new, old) in new.attachments.iter().zip(&old.attachments) {
                assert_eq!(
                    (&new.name, &new.content_type, &new.content_id, new.inline),
                    (&old.name, &old.content_type, &old.content_id, old.inline)
                );
                let data = new.body.decode(&origin).unwrap();
                assert_eq!(data, old.data, "`{}` from {origin:?}", old.name);
                assert_eq!(new.size, old.data.len());
                // Chunks of an odd size, then a resume from the start.
                let mut chunks = Chunks::new(origin, new.body, new.size);
                let mut joined = Vec::new();
                for start in (0..new.size).step_by(1000) {
                    joined.extend(chunks.read(start, (start + 1000).min(new.size)).unwrap());
                }
                assert_eq!(joined, old.data);
                assert_eq!(
                    chunks.read(0, new.size.min(10)).unwrap(),
                    old.data[..new.size.min(10)]
                );
            }
        }
        old
    }

    fn b64_lines(data: &[u8], width: usize, line_break: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        encoded
            .as_bytes()
            .chunks(width)
            .map(|line| format!("{}{line_break}", String::from_utf8_lossy(line)))
            .collect()
    }

    fn sample() -> Vec<u8> {
        let png: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let pdf: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        MessageBuilder::new()
            .from("Ann Example <ann@example.com>".parse().unwrap())
            .to("bob@example.com".parse().unwrap())
            .cc("carol@example.com".parse().unwrap())
            .bcc("dave@example.com".parse().unwrap())
            .subject("Quarterly report – ünïcode")
            .header("X-Custom", "kept")
            .message_id("fixed@example.com")
            .date(1_700_000_000)
            .text("Hello Bob,\r\nthe report is attached.\r\n")
            .html("<p>Hello Bob,</p><p><img src=\"cid:logo\"></p>")
            .inline(
                Attachment::new("logo.png", png)
                    .content_id("logo")
                    .content_type("image/png")
                    .unwrap(),
            )
            .attach(Attachment::new("report.pdf", pdf))
            .attach(Attachment::new("notes.txt", "line one\r\nline two ✓\r\n"))
            .build()
            .unwrap()
            .into_bytes()
    }

    fn bodies<'a>(m: &'a Message<'a>) -> (Vec<&'a [u8]>, Vec<&'a [u8]>) {
        let raw = |p: &&mail_parser::MessagePart<'_>| {
            &m.raw_message[p.offset_body as usize..p.offset_end as usize]
        };
        (
            m.text_bodies().map(|p| raw(&p)).collect(),
            m.html_bodies().map(|p| raw(&p)).collect(),
        )
    }

    #[test]
    fn takes_out_attachments_and_keeps_everything_else() {
        let raw = sample();
        let split = split_both(&raw);
        let original = MessageParser::default().parse(&raw).unwrap();
        let draft = MessageParser::default().parse(&split.draft).unwrap();

        // Every top-level header byte-for-byte.
        let head = |m: &[u8]| {
            let end = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            m[..end].to_vec()
        };
        assert_eq!(head(&split.draft), head(&raw));
        assert_eq!(original.headers(), draft.headers());
        assert_eq!(draft.subject(), Some("Quarterly report – ünïcode"));
        assert_eq!(draft.header_raw("X-Custom"), Some(" kept\r\n"));
        assert_eq!(
            draft.bcc().unwrap().first().unwrap().address(),
            Some("dave@example.com")
        );

        // The bodies, raw (still transfer-encoded) bytes identical.
        assert_eq!(bodies(&draft), bodies(&original));
        assert_eq!(draft.body_text(0), original.body_text(0));
        assert_eq!(draft.body_html(0), original.body_html(0));
        assert_eq!(
            draft.attachment_count(),
            0,
            "{}",
            String::from_utf8_lossy(&split.draft)
        );
        // Nothing but the removed parts changed: the draft is the original
        // with whole lines taken out.
        assert!(split.draft.len() < raw.len() - 45_000);
        assert!(split.draft.ends_with(b"--\r\n") || split.draft.ends_with(b"--"));

        let names: Vec<_> = split.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["logo.png", "report.pdf", "notes.txt"]);
        let logo = &split.attachments[0];
        assert!(logo.inline);
        assert_eq!(logo.content_id.as_deref(), Some("logo"));
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(
            logo.data,
            (0..=255u8).cycle().take(5000).collect::<Vec<_>>()
        );
        let pdf = &split.attachments[1];
        assert!(!pdf.inline);
        assert_eq!(pdf.content_type, "application/pdf");
        assert_eq!(
            pdf.data,
            (0..40_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>()
        );
        let notes = &split.attachments[2];
        assert!(!notes.inline);
        assert_eq!(notes.content_type, "text/plain", "the part's own type");
        assert_eq!(notes.data, "line one\r\nline two ✓\r\n".as_bytes());
    }

    #[test]
    fn a_message_without_attachments_is_unchanged() {
        let raw = MessageBuilder::new()
            .from("ann@example.com".parse().unwrap())
            .to("bob@example.com".parse().unwrap())
            .subject("hi")
            .text("plain\r\n")
            .html("<p>html</p>")
            .build()
            .unwrap()
            .into_bytes();
        let split = split_both(&raw);
        assert_eq!(split.draft, raw);
        assert!(split.attachments.is_empty());
    }

    #[test]
    fn keeps_the_last_child_and_alternatives_and_handles_lf() {
        // multipart/mixed whose only children are attachments: the smaller
        // stays, so the multipart is not emptied. LF line endings.
        let raw = b"From: a@example.com\nTo: b@example.com\nSubject: s\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\n\
Content-Type: application/octet-stream; name=\"big.bin\"\nContent-Transfer-Encoding: base64\n\n\
AAECAwQFBgcICQ==\n--XX\nContent-Type: application/octet-stream\n\
Content-Disposition: attachment; filename=\"small.bin\"\n\nab\n--XX--\nepilogue\n";
        let split = split_both(raw);
        assert_eq!(split.attachments.len(), 1);
        assert_eq!(split.attachments[0].name, "big.bin");
        assert_eq!(split.attachments[0].data, (0..10u8).collect::<Vec<_>>());
        let draft = MessageParser::default().parse(&split.draft).unwrap();
        assert_eq!(draft.attachment_count(), 1);
        assert_eq!(
            draft.attachment(0).unwrap().attachment_name(),
            Some("small.bin")
        );
        assert!(
            split
                .draft
                .starts_with(b"From: a@example.com\nTo: b@example.com\nSubject: s\n")
        );
        assert!(split.draft.ends_with(b"ab\n--XX--\nepilogue\n"));

        // A text/calendar alternative is a body: it stays.
        let raw = b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n\
BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n--b--\r\n";
        let split = split_both(raw);
        assert!(split.attachments.is_empty());
        assert_eq!(split.draft, raw);

        // A single-part message that is itself a file stays whole.
        let raw = b"From: a@example.com\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=x.pdf\r\n\r\n%PDF\r\n";
        let split = split_both(raw);
        assert!(split.attachments.is_empty());
        assert_eq!(split.draft, raw);
    }

    #[test]
    fn text_attachments_keep_their_own_bytes_and_charset() {
        // Latin-1 in 8bit, quoted-printable and base64; UTF-16 with a BOM;
        // Shift_JIS; a CSV starting with FF FE; a text with NULs.
        let latin1 = b"caf\xe9 cr\xe8me\r\n".to_vec();
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("h\u{e9}!".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let sjis = b"\x93\xfa\x96\x7b\x8c\xea\r\n".to_vec();
        let csv = b"\xff\xfea,b\r\n1,2\r\n".to_vec();
        let nuls = b"a\x00b\x00\x00c\r\n".to_vec();
        let b64 =
            |data: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data);
        let mut raw = b"From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
            .to_vec();
        let mut part = |headers: &str, body: &[u8]| {
            raw.extend_from_slice(b"--B\r\n");
            raw.extend_from_slice(headers.as_bytes());
            raw.extend_from_slice(b"\r\n\r\n");
            raw.extend_from_slice(body);
            raw.extend_from_slice(b"\r\n");
        };
        part(
            "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\
             Content-Disposition: attachment; filename=l8.txt",
            &latin1[..latin1.len() - 2],
        );
        part(
            "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\
             Content-Disposition: attachment; filename=lqp.txt",
            b"caf=E9 cr=E8me=0D=0A",
        );
        for (name, ct, data) in [
            ("l64.txt", "text/plain; charset=iso-8859-1", &latin1),
            ("u16.txt", "text/plain; charset=utf-16", &utf16),
            ("sjis.txt", "text/plain; charset=shift_jis", &sjis),
            ("data.csv", "text/csv", &csv),
            ("nul.txt", "text/plain", &nuls),
        ] {
            part(
                &format!(
                    "Content-Type: {ct}\r\nContent-Transfer-Encoding: base64\r\n\
                     Content-Disposition: attachment; filename={name}"
                ),
                b64(data).as_bytes(),
            );
        }
        raw.extend_from_slice(b"--B--\r\n");

        let split = split_both(&raw);
        let got: Vec<(&str, &str, &[u8])> = split
            .attachments
            .iter()
            .map(|a| (a.name.as_str(), a.content_type.as_str(), a.data.as_slice()))
            .collect();
        let latin1_body = &latin1[..latin1.len() - 2];
        assert_eq!(
            got,
            [
                ("l8.txt", "text/plain; charset=iso-8859-1", latin1_body),
                (
                    "lqp.txt",
                    "text/plain; charset=ISO-8859-1",
                    latin1.as_slice()
                ),
                (
                    "l64.txt",
                    "text/plain; charset=iso-8859-1",
                    latin1.as_slice()
                ),
                ("u16.txt", "text/plain; charset=utf-16", utf16.as_slice()),
                ("sjis.txt", "text/plain; charset=shift_jis", sjis.as_slice()),
                ("data.csv", "text/csv", csv.as_slice()),
                ("nul.txt", "text/plain", nuls.as_slice()),
            ]
        );
    }

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    #[test]
    fn the_skeleton_is_small_and_maps_back() {
        let big = data(1_000_000, 1);
        let raw = MessageBuilder::new()
            .from("ann@example.com".parse().unwrap())
            .to("bob@example.com".parse().unwrap())
            .subject("big")
            .text("see attached\r\n")
            .attach(Attachment::new("big.bin", big.clone()))
            .build()
            .unwrap()
            .into_bytes();
        let skeleton = scan::skeleton(&raw[..], true).unwrap();
        assert!(skeleton.bytes.len() < 4096, "{}", skeleton.bytes.len());
        let whole = scan::skeleton(&raw[..], false).unwrap();
        assert_eq!(whole.bytes, raw);
        let split = split_both(&raw);
        assert_eq!(split.attachments[0].data, big);
    }

    #[test]
    fn odd_line_lengths_and_line_breaks() {
        for line_break in ["\r\n", "\n"] {
            for width in [1, 3, 61, 76, 1000, 100_000] {
                let a = data(5000, width as u32);
                let b = data(777, 7);
                let raw = format!(
                    "From: a@example.com{n}Subject: odd{n}MIME-Version: 1.0{n}\
Content-Type: multipart/mixed; boundary=\"=_b\"{n}{n}--=_b{n}Content-Type: text/plain{n}{n}hello{n}\
--=_b{n}Content-Type: application/octet-stream; name=a.bin{n}Content-Transfer-Encoding: base64{n}{n}{}\
--=_b{n}Content-Type: image/png; name=b.png{n}Content-Transfer-Encoding: BASE64{n}{n}{}{n}--=_b--{n}",
                    b64_lines(&a, width, line_break),
                    b64_lines(&b, width, line_break).trim_end(),
                    n = line_break
                );
                let split = split_both(raw.as_bytes());
                assert_eq!(split.attachments[0].data, a, "width {width}");
            }
        }
    }

    #[test]
    fn quoted_printable_soft_breaks_and_odd_escapes() {
        // Long lines cut by soft breaks at every position, trailing white
        // space, an escape split across a line, bad escapes in a file part.
        let mut text = String::new();
        // Over 64 KiB, so the decoder's reads split it too.
        for i in 0..2000 {
            text.push_str(&format!(
                "line {i} caf=E9 =\r\nsoft{}  \r\n",
                "x".repeat(i % 70)
            ));
        }
        let raw = format!(
            "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=Q\r\n\r\n\
--Q\r\nContent-Type: text/plain\r\n\r\nbody\r\n\
--Q\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\
Content-Disposition: attachment; filename=t.txt\r\n\r\n{text}end with space  \r\n\
--Q\r\nContent-Type: application/octet-stream; name=q.bin\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
{text}bad =ZZ and =4\r\n1 and =\tx\r\ntrailing  \r\n--Q--\r\n"
        );
        let split = split_both(raw.as_bytes());
        assert_eq!(split.attachments.len(), 2);
        assert!(split.attachments[0].data.ends_with(b"end with space  "));
        assert!(split.attachments[1].data.ends_with(b"trailing"));
    }

    #[test]
    fn nested_multiparts_preamble_boundaries_and_broken_parts() {
        let pdf = data(9000, 3);
        let png = data(3000, 4);
        let junk = "not base64 at all! ".repeat(40);
        let raw = format!(
            "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
This preamble mentions --inner and even\r\n--outerish lines that are not ours.\r\n\
--outer\r\nContent-Type: multipart/related; boundary=inner\r\n\r\n\
preamble of inner with --inner-not\r\n\
--inner\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n\
--alt\r\nContent-Type: text/plain\r\n\r\nplain -- with dashes\r\n\
--alt\r\nContent-Type: text/html\r\n\r\n<img src=cid:p>\r\n--alt--\r\n\
--inner\r\nContent-Type: image/png\r\nContent-ID: <p>\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
--inner--\r\nepilogue\r\n\
--outer\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
--outer\r\nContent-Type: application/octet-stream; name=junk.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{junk}\r\n\
--outer\r\nContent-Type: message/rfc822\r\n\r\n\
From: c@example.com\r\nSubject: inner mail\r\nContent-Type: multipart/mixed; boundary=m2\r\n\r\n\
--m2\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n\
--m2\r\nContent-Type: application/octet-stream; name=f.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\
--m2--\r\n\
--outer--\r\n",
            b64_lines(&png, 76, "\r\n"),
            b64_lines(&pdf, 76, "\r\n"),
            b64_lines(&data(4000, 5), 76, "\r\n"),
        );
        let old = whole::split_attachments(raw.as_bytes()).unwrap();
        let names: Vec<_> = old.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["attachment-1", "r.pdf", "junk.bin", "attachment-4.eml"]
        );
        let forwarded = &old.attachments[3].data;
        assert!(forwarded.starts_with(b"From: c@example.com\r\n"));
        assert!(forwarded.ends_with(b"--m2--"));
        let old = split_both(raw.as_bytes());
        assert_eq!(old.attachments[0].data, png);
        assert_eq!(old.attachments[1].data, pdf);
        assert_eq!(old.attachments[2].data, junk.as_bytes());

        let new = split(Origin::Memory(raw.as_bytes()), raw.len() as u64).unwrap();
        assert_eq!(new.attachments[3].name, "attachment-4.eml");
        assert_eq!(
            new.draft(&Origin::Memory(raw.as_bytes())).unwrap(),
            old.draft
        );
    }
}
