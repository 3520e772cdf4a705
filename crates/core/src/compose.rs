//! The composer: typed input in, exact RFC 5322 bytes out.
//!
//! Headers are checked before anything is written: a CR or LF in a value
//! is refused (no header injection), addresses are validated by
//! [`Mailbox`], and with [`Charset::Iso2022Jp`] every character must be
//! representable. Bcc stays in the output on purpose; see [`Message`].

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use encodify::base64::MIME as BASE64;
use encodify::qp::{self, QuotedPrintable};
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};

use crate::address::Mailbox;
use crate::charset::{
    Charset, Unrepresentable, encode_iso_2022_jp, iso_2022_jp_text, iso_2022_jp_words,
};
use crate::transport::Envelope;

/// Headers set through their own builder methods, which
/// [`MessageBuilder::header`] therefore refuses.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
];

/// Why a message could not be composed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// The message has no From address.
    #[error("the message has no From address")]
    MissingFrom,
    /// The message has no To, Cc or Bcc recipient.
    #[error("the message has no recipient (To, Cc or Bcc)")]
    NoRecipients,
    /// A header value holds a CR or LF, which would start a new header.
    #[error("the {header} header contains a line break (CR or LF)")]
    LineBreak {
        /// The header's name.
        header: String,
    },
    /// An address failed validation.
    #[error("invalid address in {field}")]
    Address {
        /// The header the address was given for.
        field: String,
        /// What is wrong with it.
        source: crate::AddressError,
    },
    /// An extra header's name is not a valid field name.
    #[error("`{name}` is not a valid header name (use letters, digits and `-`, as in X-Mailer)")]
    HeaderName {
        /// The offending name.
        name: String,
    },
    /// An extra header would duplicate one the composer writes itself.
    #[error("the {name} header cannot be set as an extra header")]
    ReservedHeader {
        /// The offending name.
        name: String,
    },
    /// A message identifier (Message-ID, In-Reply-To, References) is malformed.
    #[error("{field} `{value}` is not a valid message id (expected <id@domain>)")]
    MessageId {
        /// The header the id was given for.
        field: String,
        /// The id as given.
        value: String,
    },
    /// A character the chosen charset cannot represent.
    #[error("the {field} contains `{ch}` (U+{code:04X}), which {charset} cannot represent", code = u32::from(*ch))]
    Unrepresentable {
        /// Which field held it, e.g. "subject" or "text body".
        field: String,
        /// The character.
        ch: char,
        /// The charset in use.
        charset: Charset,
    },
    /// An inline part was given, but no HTML body refers to it.
    #[error("inline part `{name}` needs an HTML body that refers to it as cid:{name}")]
    InlineWithoutHtml {
        /// The inline part's content id.
        name: String,
    },
    /// A content type is not of the form `type/subtype`.
    #[error("`{value}` is not a valid content type (expected type/subtype, as in application/pdf)")]
    ContentType {
        /// The value as given.
        value: String,
    },
    /// An attachment file could not be read.
    #[error("cannot read attachment {}", path.display())]
    Attachment {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The writer given to [`MessageBuilder::write_to`] failed (or refused
    /// more bytes, e.g. over a size limit).
    #[error("cannot write the message")]
    Write(#[source] std::io::Error),
}

/// A file to attach, or an inline part referenced from HTML by Content-ID.
#[derive(Debug, Clone)]
pub struct Attachment {
    filename: String,
    content_type: String,
    content_id: Option<String>,
    data: Content,
}

/// An attachment's bytes: in memory, or a file read when the message is
/// written.
#[derive(Debug, Clone)]
enum Content {
    Memory(Vec<u8>),
    File { path: PathBuf, len: u64 },
}

impl Attachment {
    /// An attachment from memory; the content type is guessed from `filename`.
    pub fn new(filename: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        let filename = filename.into();
        let content_type = mime_guess::from_path(&filename)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();
        Attachment {
            filename,
            content_type,
            content_id: None,
            data: Content::Memory(data.into()),
        }
    }

    /// A file; its name becomes the attachment's file name. It is read when
    /// the message is written: a file of a non-`text/*` type streams
    /// through the base64 encoder and is never whole in memory.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ComposeError> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)
            .map_err(|source| ComposeError::Attachment {
                path: path.to_owned(),
                source,
            })?
            .len();
        let name = path
            .file_name()
            .map_or_else(|| "attachment".into(), |n| n.to_string_lossy().into_owned());
        let mut attachment = Attachment::new(name, Vec::new());
        attachment.data = Content::File {
            path: path.to_owned(),
            len,
        };
        Ok(attachment)
    }

    /// Overrides the guessed content type.
    pub fn content_type(mut self, content_type: &str) -> Result<Self, ComposeError> {
        if !is_valid_content_type(content_type) {
            return Err(ComposeError::ContentType {
                value: content_type.to_owned(),
            });
        }
        self.content_type = content_type.to_ascii_lowercase();
        Ok(self)
    }

    /// Sets the Content-ID that HTML refers to as `cid:ID` (inline parts
    /// default to their file name).
    pub fn content_id(mut self, id: impl Into<String>) -> Self {
        self.content_id = Some(id.into());
        self
    }

    /// The file name carried in Content-Disposition.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The MIME type, such as `application/pdf`.
    pub fn mime_type(&self) -> &str {
        &self.content_type
    }

    /// The size of the content in bytes (a file's, when it was found).
    pub fn len(&self) -> u64 {
        match &self.data {
            Content::Memory(data) => data.len() as u64,
            Content::File { len, .. } => *len,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cid(&self) -> &str {
        self.content_id.as_deref().unwrap_or(&self.filename)
    }
}

fn is_valid_content_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    matches!(value.split_once('/'), Some((t, s)) if token(t) && token(s))
}

/// A composed message: the exact bytes to hand to a provider, plus the
/// envelope derived from its headers.
///
/// The bytes keep the `Bcc:` header. Neither the Gmail API nor Microsoft
/// Graph has an SMTP envelope: both read every recipient from the To, Cc
/// and Bcc headers, and both strip Bcc from the copies they deliver.
/// Dropping Bcc here would silently drop those recipients.
#[derive(Debug, Clone)]
pub struct Message {
    bytes: Vec<u8>,
    envelope: Envelope,
    message_id: String,
}

impl Message {
    /// The RFC 5322 bytes, CRLF line endings.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Sender and every recipient (To, Cc and Bcc).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The Message-ID, with angle brackets.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
}

/// What [`MessageBuilder::write_to`] composed, its bytes having gone to
/// the writer: the envelope and the Message-ID.
#[derive(Debug, Clone)]
pub struct Composed {
    envelope: Envelope,
    message_id: String,
}

impl Composed {
    /// Sender and every recipient (To, Cc and Bcc).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The Message-ID, with angle brackets.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
}

/// Builds a [`Message`].
///
/// ```
/// use apimail_core::{MessageBuilder, Mailbox};
///
/// let message = MessageBuilder::new()
///     .from("Ann <ann@example.com>".parse::<Mailbox>()?)
///     .to("bob@example.com".parse::<Mailbox>()?)
///     .subject("Quarterly report")
///     .text("See the attachment.\n")
///     .build()?;
/// assert!(message.as_bytes().starts_with(b"From: "));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MessageBuilder {
    from: Option<Mailbox>,
    sender: Option<Mailbox>,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    reply_to: Vec<Mailbox>,
    subject: Option<String>,
    date: Option<i64>,
    message_id: Option<String>,
    in_reply_to: Vec<String>,
    references: Vec<String>,
    headers: Vec<(String, String)>,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<Attachment>,
    inline: Vec<Attachment>,
    charset: Charset,
    boundary_prefix: Option<String>,
}

impl MessageBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets From.
    pub fn from(mut self, mailbox: Mailbox) -> Self {
        self.from = Some(mailbox);
        self
    }

    /// Sets Sender (the mailbox that actually sends, when it differs from From).
    pub fn sender(mut self, mailbox: Mailbox) -> Self {
        self.sender = Some(mailbox);
        self
    }

    /// Adds a To recipient.
    pub fn to(mut self, mailbox: Mailbox) -> Self {
        self.to.push(mailbox);
        self
    }

    /// Adds a Cc recipient.
    pub fn cc(mut self, mailbox: Mailbox) -> Self {
        self.cc.push(mailbox);
        self
    }

    /// Adds a Bcc recipient.
    pub fn bcc(mut self, mailbox: Mailbox) -> Self {
        self.bcc.push(mailbox);
        self
    }

    /// Adds a Reply-To address.
    pub fn reply_to(mut self, mailbox: Mailbox) -> Self {
        self.reply_to.push(mailbox);
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Pins Date to a Unix time in seconds (default: now).
    pub fn date(mut self, unix_seconds: i64) -> Self {
        self.date = Some(unix_seconds);
        self
    }

    /// Pins Message-ID, as `<id@domain>` or `id@domain` (default: a random
    /// id at the From domain).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Adds an In-Reply-To message id.
    pub fn in_reply_to(mut self, id: impl Into<String>) -> Self {
        self.in_reply_to.push(id.into());
        self
    }

    /// Adds a References message id.
    pub fn references(mut self, id: impl Into<String>) -> Self {
        self.references.push(id.into());
        self
    }

    /// Adds an extra header, such as `X-Mailer`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the plain-text body.
    pub fn text(mut self, body: impl Into<String>) -> Self {
        self.text = Some(body.into());
        self
    }

    /// Sets the HTML body. With a text body too, the message becomes
    /// multipart/alternative.
    pub fn html(mut self, body: impl Into<String>) -> Self {
        self.html = Some(body.into());
        self
    }

    /// Adds an attachment.
    pub fn attach(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// Adds an inline part that the HTML body refers to as `cid:ID`
    /// (multipart/related).
    pub fn inline(mut self, part: Attachment) -> Self {
        self.inline.push(part);
        self
    }

    /// Sets the charset of text parts and encoded-words.
    pub fn charset(mut self, charset: Charset) -> Self {
        self.charset = charset;
        self
    }

    /// Pins MIME boundaries to `PREFIX_1`, `PREFIX_2`, ... (default: derived
    /// from the Message-ID, so a pinned Message-ID and Date give identical
    /// bytes on every run).
    pub fn boundary_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.boundary_prefix = Some(prefix.into());
        self
    }

    /// Checks everything and writes the message into memory.
    pub fn build(self) -> Result<Message, ComposeError> {
        let mut bytes = Vec::new();
        let composed = self.write_to(&mut bytes)?;
        Ok(Message {
            bytes,
            envelope: composed.envelope,
            message_id: composed.message_id,
        })
    }

    /// Checks everything, then writes the message to `out` (e.g. an outbox
    /// file), part by part: the message is never whole in memory, and each
    /// body and attachment is held once. A failing writer stops the writing
    /// ([`ComposeError::Write`]); nothing is written before every check
    /// has passed.
    pub fn write_to(mut self, out: impl std::io::Write) -> Result<Composed, ComposeError> {
        let from = self.from.clone().ok_or(ComposeError::MissingFrom)?;
        if self.to.is_empty() && self.cc.is_empty() && self.bcc.is_empty() {
            return Err(ComposeError::NoRecipients);
        }
        if let Some(subject) = &self.subject {
            no_line_break("Subject", subject)?;
        }
        let message_id = match &self.message_id {
            Some(id) => checked_message_id("Message-ID", id)?,
            None => crate::intake::new_message_id(from.domain()),
        };
        let in_reply_to = checked_ids("In-Reply-To", &self.in_reply_to)?;
        let references = checked_ids("References", &self.references)?;
        for (name, value) in &self.headers {
            check_extra_header(name, value)?;
        }
        if self.html.is_none()
            && let Some(part) = self.inline.first()
        {
            return Err(ComposeError::InlineWithoutHtml {
                name: part.cid().to_owned(),
            });
        }
        let headers = HeaderWriter {
            charset: self.charset,
        };

        let mut mb = mail_builder::MessageBuilder::new();
        let sender: &[Mailbox] = self.sender.as_slice();
        for (name, list) in [
            ("From", std::slice::from_ref(&from)),
            ("Sender", sender),
            ("To", &self.to),
            ("Cc", &self.cc),
            ("Bcc", &self.bcc),
            ("Reply-To", &self.reply_to),
        ] {
            if !list.is_empty() {
                mb = mb.header(name, headers.addresses(name, list)?);
            }
        }
        if let Some(subject) = &self.subject {
            mb = mb.header("Subject", headers.text("subject", subject)?);
        }
        let date = self.date.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        mb = mb.date(Date::new(date));
        mb = mb.message_id(bare_id(&message_id).to_owned());
        if !in_reply_to.is_empty() {
            mb = mb.in_reply_to(MessageId::new_list(
                in_reply_to.iter().map(|id| bare_id(id).to_owned()),
            ));
        }
        if !references.is_empty() {
            mb = mb.references(MessageId::new_list(
                references.iter().map(|id| bare_id(id).to_owned()),
            ));
        }
        for (name, value) in &self.headers {
            mb = mb.header(
                name.clone(),
                headers.text(&format!("{name} header"), value)?,
            );
        }

        let mut boundaries = Boundaries::new(self.boundary_prefix.as_deref(), &message_id);
        let recipients = self
            .to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .cloned()
            .collect();
        let mut files = Vec::new();
        let body = self.body_tree(&mut boundaries, &mut files)?;
        let mut out = Splicer {
            inner: out,
            files: &files,
            token: Vec::new(),
            failed: None,
        };
        if let Err(e) = mb.body(body).write_to(&mut out) {
            return Err(match out.failed.take() {
                Some((path, source)) => ComposeError::Attachment { path, source },
                None => ComposeError::Write(e),
            });
        }
        Ok(Composed {
            envelope: Envelope::new(from, recipients),
            message_id,
        })
    }

    /// The MIME tree; bodies and attachments move into it, uncopied.
    fn body_tree(
        &mut self,
        boundaries: &mut Boundaries,
        files: &mut Vec<PathBuf>,
    ) -> Result<MimePart<'static>, ComposeError> {
        let text = match self.text.take() {
            Some(text) => Some(self.text_part("text/plain", "text body", text)?),
            None => None,
        };
        let html = match self.html.take() {
            Some(html) => {
                let part = self.text_part("text/html", "HTML body", html)?;
                Some(if self.inline.is_empty() {
                    part
                } else {
                    let mut parts = vec![part];
                    for part in std::mem::take(&mut self.inline) {
                        parts.push(inline_part(part, files)?);
                    }
                    multipart("multipart/related", parts, boundaries)
                })
            }
            None => None,
        };
        let body = match (text, html) {
            (Some(text), Some(html)) => {
                multipart("multipart/alternative", vec![text, html], boundaries)
            }
            (Some(part), None) | (None, Some(part)) => part,
            (None, None) => self.text_part("text/plain", "text body", String::new())?,
        };
        if self.attachments.is_empty() {
            return Ok(body);
        }
        let mut parts = vec![body];
        for attachment in std::mem::take(&mut self.attachments) {
            parts.push(attachment_part(attachment, files)?);
        }
        Ok(multipart("multipart/mixed", parts, boundaries))
    }

    fn text_part(
        &self,
        mime: &str,
        field: &str,
        text: String,
    ) -> Result<MimePart<'static>, ComposeError> {
        let text = crlf_line_breaks(text);
        let content_type =
            ContentType::new(mime.to_owned()).attribute("charset", self.charset.mime_name());
        let contents = match self.charset {
            Charset::Utf8 => BodyPart::Text(text.into()),
            Charset::Iso2022Jp => BodyPart::Binary(
                encode_iso_2022_jp(&text)
                    .map_err(|e| unrepresentable(field, e, self.charset))?
                    .into(),
            ),
        };
        Ok(exact_bytes(MimePart::new(content_type, contents), qp::BODY))
    }
}

/// Typed text may have its line breaks rewritten: CRLF, lone CR and lone
/// LF all become CRLF, the only line break MIME text has.
fn crlf_line_breaks(text: String) -> String {
    let bytes = text.as_bytes();
    let lone = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| {
            (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
                || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        })
        .count();
    if lone == 0 {
        return text;
    }
    // One pass, one allocation: each lone CR or LF grows by one byte.
    let mut out = String::with_capacity(text.len() + lone);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

/// Makes sure a leaf part decodes to exactly its bytes.
///
/// mail-builder picks the transfer encoding: base64 for non-text types, and
/// for `text/*` 7bit when no byte is 0x7F or above, no line is over 76
/// octets and none ends in white space, else the shorter of
/// quoted-printable and base64. Its test misses two things 7bit forbids
/// (RFC 2045 section 2.7), NUL and a CR not followed by LF, and it takes
/// every part whose disposition is not `attachment` (inline parts too) for
/// typed text whose lone LFs it may turn into CRLF. A text part holding any
/// of NUL, lone CR or lone LF is therefore encoded here, with the same
/// engines and the same "shorter wins" rule: `engine` is [`qp::BODY`] for
/// typed text (already CRLF) and [`qp::BINARY`] for files, whose CR and LF
/// bytes it escapes.
fn exact_bytes(mut part: MimePart<'static>, engine: QuotedPrintable) -> MimePart<'static> {
    let is_text = part.headers.iter().any(|(name, value)| {
        name == "Content-Type" && value.as_content_type().is_some_and(|ct| ct.is_text())
    });
    let data: &[u8] = match &part.contents {
        BodyPart::Text(text) => text.as_bytes(),
        BodyPart::Binary(data) if is_text => data,
        _ => return part,
    };
    if !has_nul_or_lone_line_break(data) {
        return part;
    }
    let base64_len = BASE64.encoded_len(data.len());
    let (encoding, encoded) = match engine.encoded_len_within(data, base64_len.saturating_sub(1)) {
        Some(_) => ("quoted-printable", engine.encode(data)),
        None => ("base64", BASE64.encode(data)),
    };
    part.contents = BodyPart::Text(encoded.into());
    part.transfer_encoding(encoding)
}

/// Whether `data` holds a NUL, a CR not followed by LF, or an LF not
/// preceded by CR.
fn has_nul_or_lone_line_break(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(i, &byte)| match byte {
        0 => true,
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || data[i - 1] != b'\r',
        _ => false,
    })
}

/// A part's body: a file of a non-text type becomes a placeholder that
/// [`Splicer`] replaces with the file's base64 (`streamed`: the part then
/// names its `Content-Transfer-Encoding: base64` itself, where mail-builder
/// would write the same line); anything else is in memory.
fn body(
    data: Content,
    content_type: &str,
    files: &mut Vec<PathBuf>,
) -> Result<(BodyPart<'static>, bool), ComposeError> {
    match data {
        Content::Memory(data) => Ok((BodyPart::Binary(data.into()), false)),
        Content::File { path, .. } if !content_type.starts_with("text/") => {
            let placeholder = format!("\0{}\0", files.len()).into_bytes();
            files.push(path);
            Ok((BodyPart::Binary(placeholder.into()), true))
        }
        Content::File { path, .. } => match std::fs::read(&path) {
            Ok(data) => Ok((BodyPart::Binary(data.into()), false)),
            Err(source) => Err(ComposeError::Attachment { path, source }),
        },
    }
}

fn file_part(part: MimePart<'static>, streamed: bool) -> MimePart<'static> {
    if streamed {
        part.transfer_encoding("base64")
    } else {
        exact_bytes(part, qp::BINARY)
    }
}

fn attachment_part(
    a: Attachment,
    files: &mut Vec<PathBuf>,
) -> Result<MimePart<'static>, ComposeError> {
    let (contents, streamed) = body(a.data, &a.content_type, files)?;
    let part = MimePart::new(ContentType::new(a.content_type), contents).attachment(a.filename);
    Ok(file_part(part, streamed))
}

fn inline_part(a: Attachment, files: &mut Vec<PathBuf>) -> Result<MimePart<'static>, ComposeError> {
    let cid = a.cid().to_owned();
    let (contents, streamed) = body(a.data, &a.content_type, files)?;
    let part = MimePart::new(ContentType::new(a.content_type), contents)
        .header(
            "Content-Disposition",
            ContentType::new("inline").attribute("filename", a.filename),
        )
        .cid(cid);
    Ok(file_part(part, streamed))
}

/// Passes the message through to `inner`, replacing each placeholder
/// (`NUL index NUL`; the composed message has no NUL of its own) with the
/// base64 of `files[index]`, read and encoded a few hundred KiB at a time.
/// The lines are those mail-builder writes: 57 input bytes per 76-character
/// line, each ended by CRLF.
struct Splicer<'a, W> {
    inner: W,
    files: &'a [PathBuf],
    /// A placeholder cut by the end of a write, from its opening NUL.
    token: Vec<u8>,
    /// The file that could not be read.
    failed: Option<(PathBuf, std::io::Error)>,
}

/// Whole base64 lines of input per read.
const SPLICE_CHUNK: usize = 57 * 4096;

impl<W: std::io::Write> Splicer<'_, W> {
    fn splice(&mut self) -> std::io::Result<()> {
        let index = std::str::from_utf8(&self.token[1..self.token.len() - 1])
            .ok()
            .and_then(|n| n.parse::<usize>().ok());
        self.token.clear();
        let files = self.files;
        let Some(path) = index.and_then(|i| files.get(i)) else {
            return Err(std::io::Error::other("a NUL byte in the composed message"));
        };
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) => return Err(self.read_failed(path, e)),
        };
        let mut chunk = vec![0; SPLICE_CHUNK];
        loop {
            let n = match fill(&mut file, &mut chunk) {
                Ok(n) => n,
                Err(e) => return Err(self.read_failed(path, e)),
            };
            if n > 0 {
                self.inner
                    .write_all(BASE64.encode(&chunk[..n]).as_bytes())?;
            }
            if n < chunk.len() {
                return Ok(());
            }
        }
    }

    /// Records that `path` could not be read, for [`ComposeError::Attachment`].
    fn read_failed(&mut self, path: &Path, error: std::io::Error) -> std::io::Error {
        let copy = std::io::Error::new(error.kind(), error.to_string());
        self.failed = Some((path.to_owned(), error));
        copy
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn fill(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<W: std::io::Write> std::io::Write for Splicer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let nul = rest.iter().position(|&b| b == 0);
            if self.token.is_empty() {
                match nul {
                    Some(i) => {
                        self.inner.write_all(&rest[..i])?;
                        self.token.push(0);
                        rest = &rest[i + 1..];
                    }
                    None => {
                        self.inner.write_all(rest)?;
                        rest = &[];
                    }
                }
            } else {
                match nul {
                    Some(i) => {
                        self.token.extend_from_slice(&rest[..=i]);
                        rest = &rest[i + 1..];
                        self.splice()?;
                    }
                    None => {
                        self.token.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn multipart(
    mime: &str,
    parts: Vec<MimePart<'static>>,
    boundaries: &mut Boundaries,
) -> MimePart<'static> {
    MimePart::new(
        ContentType::new(mime.to_owned()).attribute("boundary", boundaries.next()),
        BodyPart::Multipart(parts),
    )
}

/// MIME boundaries: `=_` cannot occur in quoted-printable or base64 text,
/// and the hash of the (random or pinned) Message-ID keeps 7bit parts from
/// colliding with them.
struct Boundaries {
    prefix: String,
    count: u32,
}

impl Boundaries {
    fn new(prefix: Option<&str>, message_id: &str) -> Self {
        let prefix = prefix.map_or_else(
            || {
                format!(
                    "=_{:016x}{:016x}",
                    fnv1a(message_id, 0),
                    fnv1a(message_id, 1)
                )
            },
            str::to_owned,
        );
        Boundaries { prefix, count: 0 }
    }

    fn next(&mut self) -> String {
        self.count += 1;
        format!("{}_{}", self.prefix, self.count)
    }
}

/// FNV-1a, seeded: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(text: &str, seed: u8) -> u64 {
    std::iter::once(seed)
        .chain(text.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

fn no_line_break(header: &str, value: &str) -> Result<(), ComposeError> {
    if value.contains(['\r', '\n']) {
        return Err(ComposeError::LineBreak {
            header: header.to_owned(),
        });
    }
    Ok(())
}

/// Returns the id with angle brackets.
fn checked_message_id(field: &str, id: &str) -> Result<String, ComposeError> {
    let trimmed = id.trim();
    let bare = trimmed
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(trimmed);
    let valid = bare.len() <= 250
        && bare
            .split_once('@')
            .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty())
        && bare
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>\"\\".contains(c));
    if !valid {
        return Err(ComposeError::MessageId {
            field: field.to_owned(),
            value: id.to_owned(),
        });
    }
    Ok(format!("<{bare}>"))
}

fn checked_ids(field: &str, ids: &[String]) -> Result<Vec<String>, ComposeError> {
    ids.iter()
        .flat_map(|s| s.split_whitespace())
        .map(|id| checked_message_id(field, id))
        .collect()
}

fn bare_id(id: &str) -> &str {
    id.trim_start_matches('<').trim_end_matches('>')
}

fn check_extra_header(name: &str, value: &str) -> Result<(), ComposeError> {
    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid_name {
        return Err(ComposeError::HeaderName {
            name: name.to_owned(),
        });
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("content-") {
        return Err(ComposeError::ReservedHeader {
            name: name.to_owned(),
        });
    }
    no_line_break(name, value)
}

fn unrepresentable(field: &str, e: Unrepresentable, charset: Charset) -> ComposeError {
    ComposeError::Unrepresentable {
        field: field.to_owned(),
        ch: e.0,
        charset,
    }
}

/// Writes header values in the message's charset: mail-builder's own
/// encoders for UTF-8, our ISO-2022-JP encoded-words otherwise.
struct HeaderWriter {
    charset: Charset,
}

impl HeaderWriter {
    fn text(&self, field: &str, value: &str) -> Result<HeaderType<'static>, ComposeError> {
        Ok(match self.charset {
            Charset::Utf8 => Text::new(value.to_owned()).into(),
            Charset::Iso2022Jp => Raw::new(
                iso_2022_jp_text(value).map_err(|e| unrepresentable(field, e, self.charset))?,
            )
            .into(),
        })
    }

    fn addresses(
        &self,
        header: &str,
        list: &[Mailbox],
    ) -> Result<HeaderType<'static>, ComposeError> {
        match self.charset {
            Charset::Utf8 => {
                let list: Vec<Address<'static>> = list
                    .iter()
                    .map(|m| {
                        Address::new_address(m.name().map(str::to_owned), m.email().to_owned())
                    })
                    .collect();
                Ok(if list.len() == 1 {
                    list.into_iter().next().expect("one element")
                } else {
                    Address::new_list(list)
                }
                .into())
            }
            Charset::Iso2022Jp => {
                let field = format!("{header} display name");
                let rendered = list
                    .iter()
                    .map(|m| match m.name() {
                        Some(name) => Ok(format!("{} <{}>", self.phrase(&field, name)?, m.email())),
                        None => Ok(m.email().to_owned()),
                    })
                    .collect::<Result<Vec<_>, ComposeError>>()?;
                Ok(Raw::new(rendered.join(", ")).into())
            }
        }
    }

    /// A display name for the ISO-2022-JP path: plain when it is printable
    /// ASCII (quoted if it has specials), encoded-words otherwise.
    fn phrase(&self, field: &str, name: &str) -> Result<String, ComposeError> {
        let printable = name.chars().all(|c| (' '..='~').contains(&c)) && !name.contains("=?");
        if printable && name.len() <= 60 {
            let atoms = name.chars().all(|c| {
                c == ' ' || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
            });
            return Ok(if atoms {
                name.to_owned()
            } else {
                format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
            });
        }
        iso_2022_jp_words(name).map_err(|e| unrepresentable(field, e, self.charset))
    }
}
