//! The seam between composing and sending.
//!
//! A provider implements [`Transport::send_raw`] over RFC 5322 bytes plus
//! an [`Envelope`]. Failures are [`TransportError`]s whose [`ErrorKind`]
//! tells the caller what to do next: retry later, re-authorize, give up,
//! or fix local input or configuration.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::address::Mailbox;
use crate::pace::Pace;

/// Who sends, and to whom. The HTTPS APIs read recipients from the
/// headers; the envelope lets callers check and log them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    from: Mailbox,
    recipients: Vec<Mailbox>,
}

impl Envelope {
    /// An envelope; duplicate recipient addresses are dropped.
    pub fn new(from: Mailbox, recipients: Vec<Mailbox>) -> Self {
        let mut unique: Vec<Mailbox> = Vec::with_capacity(recipients.len());
        for r in recipients {
            if !unique
                .iter()
                .any(|u| u.email().eq_ignore_ascii_case(r.email()))
            {
                unique.push(r);
            }
        }
        Envelope {
            from,
            recipients: unique,
        }
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Every recipient, To, Cc and Bcc alike.
    pub fn recipients(&self) -> &[Mailbox] {
        &self.recipients
    }
}

/// Proof that a provider accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Which provider accepted it, e.g. `gmail`.
    pub provider: &'static str,
    /// The provider's id for the message, when it returns one.
    pub id: Option<String>,
    /// The provider's conversation id (Gmail's threadId), when it returns one.
    pub thread_id: Option<String>,
    /// This send repeated an earlier attempt whose outcome was unknown and
    /// could not be checked (same Message-ID): recipients may get it twice.
    pub possible_duplicate: bool,
}

/// What kind of failure a [`TransportError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Worth retrying later: network trouble, throttling, 5xx.
    Temporary,
    /// The credentials are missing, expired, revoked or lack a permission.
    Unauthorized,
    /// The provider refused the message for good.
    Rejected,
    /// The message itself is unacceptable (too large, malformed).
    InvalidMessage,
    /// Local configuration is wrong or incomplete.
    Config,
    /// A bug or an unexpected answer.
    Internal,
}

/// A failed send.
#[derive(Debug)]
pub struct TransportError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    outcome_unknown: bool,
    provider_code: Option<String>,
    provider_message: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A new error of `kind`; `message` says what happened, in lowercase
    /// and without a trailing period.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
            retry_after: None,
            outcome_unknown: false,
            provider_code: None,
            provider_message: None,
            source: None,
        }
    }

    /// Records the provider's own error code (Gmail's `reason`, Graph's
    /// `error.code`) and message, when its answer had them.
    pub fn with_provider_error(mut self, code: Option<String>, message: Option<String>) -> Self {
        self.provider_code = code.filter(|c| !c.is_empty());
        self.provider_message = message.filter(|m| !m.is_empty());
        self
    }

    /// The provider's own error code, e.g. `rateLimitExceeded` or
    /// `ErrorSendAsDenied`.
    pub fn provider_code(&self) -> Option<&str> {
        self.provider_code.as_deref()
    }

    /// The provider's own error message, as it gave it.
    pub fn provider_message(&self) -> Option<&str> {
        self.provider_message.as_deref()
    }

    /// Marks a failure after which the provider may or may not have
    /// accepted the message: the request went out whole and no answer came
    /// back (a reset or timeout while waiting, a 502 or 504).
    pub fn with_unknown_outcome(mut self) -> Self {
        self.outcome_unknown = true;
        self
    }

    /// Whether the provider may have accepted the message despite the error.
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches an underlying cause that is already boxed.
    pub fn with_source_boxed(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }

    /// Records how long the provider asked us to wait.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Temporary
    }

    /// The provider's requested delay before a retry, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Something that delivers composed messages.
pub trait Transport {
    /// Hands `message` (RFC 5322 bytes, Bcc header included) to the
    /// provider. Recipients are read from the message's headers; the
    /// envelope is what the caller expects them to be.
    fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> impl Future<Output = Result<Receipt, TransportError>> + Send;

    /// Like [`Transport::send_raw`], for a message that may have been tried
    /// before: `notes` keep what the transport must remember across attempts
    /// and processes (Graph's draft id, say); the outbox stores them with
    /// the entry.
    fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> impl Future<Output = Result<Receipt, TransportError>> + Send {
        let _ = notes;
        self.send_raw(envelope, message)
    }

    /// Like [`Transport::send_noted`], for a message in a file (an outbox
    /// entry): a transport that can stream reads the file in pieces, on
    /// each attempt anew; by default it is read whole.
    fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> impl Future<Output = Result<Receipt, TransportError>> + Send
    where
        Self: Sync,
    {
        async move {
            let bytes = message.read()?;
            self.send_noted(envelope, &bytes, notes).await
        }
    }

    /// Whether the mailbox shows the message with this Message-ID (angle
    /// brackets included) as sent: `Some(true)` found, `Some(false)` not
    /// found, `None` when this transport cannot tell (no permission to look).
    fn was_sent(
        &self,
        message_id: &str,
    ) -> impl Future<Output = Result<Option<bool>, TransportError>> + Send {
        let _ = message_id;
        async { Ok(None) }
    }

    /// After an attempt was cut short (a signal): cleans up what is of no
    /// use to the next attempt (a half-built Graph draft, say). Called with
    /// a short time limit.
    fn interrupted(
        &self,
        notes: &dyn DeliveryNotes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let _ = notes;
        async { Ok(()) }
    }

    /// Cleans up what earlier attempts left at the provider for a message
    /// that will not be sent (a half-built Graph draft, say).
    fn discard(
        &self,
        notes: &dyn DeliveryNotes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let _ = notes;
        async { Ok(()) }
    }

    /// How fast this sender's mailbox may be sent to (the provider's
    /// limits); [`Pace::UNLIMITED`] unless the transport states one.
    fn pace(&self) -> Pace {
        Pace::UNLIMITED
    }
}

impl<T: Transport + Send + Sync> Transport for std::sync::Arc<T> {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        T::send_raw(self, envelope, message).await
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        T::send_noted(self, envelope, message, notes).await
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        T::send_stored(self, envelope, message, notes).await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        T::was_sent(self, message_id).await
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        T::discard(self, notes).await
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        T::interrupted(self, notes).await
    }
    fn pace(&self) -> Pace {
        T::pace(self)
    }
}

/// A message in a file, exactly as it is to be sent: a byte range of an
/// outbox entry's file (the first bytes of a `.msg`, or a whole `.eml`).
/// Transports open it on each attempt, so a retry copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    path: PathBuf,
    offset: u64,
    len: u64,
}

impl StoredMessage {
    /// The message in `path`, the whole file of its present size.
    pub fn new(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let len = std::fs::metadata(&path)?.len();
        Ok(StoredMessage {
            path,
            offset: 0,
            len,
        })
    }

    /// The message that is the `len` bytes of `path` from `offset` on.
    pub fn section(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        StoredMessage {
            path: path.into(),
            offset,
            len,
        }
    }

    /// The file the message is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where in the file the message starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Opens the message for reading from its start: a reader (and
    /// seeker) of its bytes only.
    pub fn open(&self) -> Result<MessageReader, TransportError> {
        let mut file = std::fs::File::open(&self.path).map_err(|e| self.read_error(e))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(self.offset))
            .map_err(|e| self.read_error(e))?;
        Ok(MessageReader {
            file,
            start: self.offset,
            len: self.len,
            pos: 0,
        })
    }

    /// Reads the whole message: for small messages, or transports that
    /// need it whole.
    pub fn read(&self) -> Result<Vec<u8>, TransportError> {
        let mut bytes = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        std::io::Read::read_to_end(&mut self.open()?, &mut bytes)
            .map_err(|e| self.read_error(e))?;
        Ok(bytes)
    }

    fn read_error(&self, error: std::io::Error) -> TransportError {
        TransportError::new(
            ErrorKind::Internal,
            format!("cannot read the queued message {}", self.path.display()),
        )
        .with_source(error)
    }
}

/// A [`StoredMessage`] open for reading: its byte range of the file, as
/// if it were the whole file (positions and seeks count from the
/// message's first byte; the end is the message's end).
#[derive(Debug)]
pub struct MessageReader {
    file: std::fs::File,
    start: u64,
    len: u64,
    /// The position within the message.
    pos: u64,
}

impl std::io::Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for MessageReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the message's start",
            )
        })?;
        self.file
            .seek(std::io::SeekFrom::Start(self.start.saturating_add(target)))?;
        self.pos = target;
        Ok(target)
    }
}

/// A note being written ([`DeliveryNotes::set`]).
pub type NoteWrite<'a> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;

/// Small named values a transport keeps about one message across attempts.
pub trait DeliveryNotes: Send + Sync {
    /// The value stored under `key`.
    fn get(&self, key: &str) -> Option<String>;
    /// Stores (or with `None` removes) `key`, durably, before it resolves
    /// (a store over the network needs a round trip).
    fn set<'a>(&'a self, key: &'a str, value: Option<&'a str>) -> NoteWrite<'a>;
}

/// Notes kept in memory only: for sends without an outbox entry.
#[derive(Debug, Default)]
pub struct MemoryNotes(Mutex<std::collections::BTreeMap<String, String>>);

impl From<std::collections::BTreeMap<String, String>> for MemoryNotes {
    fn from(notes: std::collections::BTreeMap<String, String>) -> Self {
        MemoryNotes(Mutex::new(notes))
    }
}

impl DeliveryNotes for MemoryNotes {
    fn get(&self, key: &str) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn set<'a>(&'a self, key: &'a str, value: Option<&'a str>) -> NoteWrite<'a> {
        let written = self
            .0
            .lock()
            .map(|mut notes| {
                match value {
                    Some(value) => notes.insert(key.to_owned(), value.to_owned()),
                    None => notes.remove(key),
                };
            })
            .map_err(|_| std::io::Error::other("poisoned"));
        Box::pin(std::future::ready(written))
    }
}

/// Writes each message as an `.eml` file into a folder: for tests, and for
/// keeping a copy of what would be sent.
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    /// Writes into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileTransport { dir: dir.into() }
    }

    fn write(&self, message: &[u8]) -> Result<PathBuf, TransportError> {
        let io = |e: std::io::Error| {
            TransportError::new(
                ErrorKind::Config,
                format!("cannot write into {}", self.dir.display()),
            )
            .with_source(e)
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for attempt in 0..1000u32 {
            let path = self
                .dir
                .join(format!("{nanos}-{}-{attempt}.eml", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    std::io::Write::write_all(&mut file, message).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(e)),
            }
        }
        Err(TransportError::new(
            ErrorKind::Internal,
            "cannot find a free file name",
        ))
    }
}

impl Transport for FileTransport {
    async fn send_raw(
        &self,
        _envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        let path = self.write(message)?;
        Ok(Receipt {
            provider: "file",
            id: Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            thread_id: None,
            possible_duplicate: false,
        })
    }
}

/// Records every message it is given, or fails as told: a test double.
#[derive(Debug, Clone)]
pub struct StubTransport {
    failure: Option<(ErrorKind, String)>,
    sent: Arc<Mutex<Vec<SentMessage>>>,
}

/// A message the stub accepted: its envelope and bytes.
pub type SentMessage = (Envelope, Vec<u8>);

impl StubTransport {
    /// Accepts every message.
    pub fn new_ok() -> Self {
        StubTransport {
            failure: None,
            sent: Arc::default(),
        }
    }

    /// Fails every send with an error of `kind` and `message`.
    pub fn new_error(kind: ErrorKind, message: impl Into<String>) -> Self {
        StubTransport {
            failure: Some((kind, message.into())),
            sent: Arc::default(),
        }
    }

    /// What was accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Transport for StubTransport {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        if let Some((kind, text)) = &self.failure {
            return Err(TransportError::new(*kind, text.clone()));
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push((envelope.clone(), message.to_vec()));
        Ok(Receipt {
            provider: "stub",
            id: Some(format!("stub-{}", sent.len())),
            thread_id: None,
            possible_duplicate: false,
        })
    }
}

/// An error and its causes on one line, `: `-separated; a cause the link
/// before it already ends with is said once (as the CLI's report does).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = error.to_string();
    let mut text = said.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !said.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        said = cause_text;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message stored as a range of a larger file reads and seeks as if
    /// it were the whole file, never past its end (Gmail's resumable
    /// upload seeks; Graph reads ranges).
    #[test]
    fn a_stored_message_is_its_range_only() {
        use std::io::{Read, Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.msg");
        std::fs::write(&path, b"HEADmessage bytes{\"meta\":1}FOOTER").unwrap();
        let stored = StoredMessage::section(&path, 4, 13);
        assert_eq!(stored.read().unwrap(), b"message bytes");
        let mut reader = stored.open().unwrap();
        let mut buf = [0u8; 7];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"message");
        assert_eq!(reader.seek(SeekFrom::End(-5)).unwrap(), 8);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"bytes");
        assert_eq!(reader.seek(SeekFrom::Start(0)).unwrap(), 0);
        assert_eq!(reader.seek(SeekFrom::Current(8)).unwrap(), 8);
        assert!(reader.seek(SeekFrom::Current(-9)).is_err());
        let whole = StoredMessage::new(&path).unwrap();
        assert_eq!((whole.offset(), whole.len()), (0, 33));
    }

    #[test]
    fn a_chain_says_each_text_once() {
        let inner = TransportError::new(ErrorKind::Temporary, "HTTP 500: Backend Error");
        let outer = TransportError::new(
            ErrorKind::Temporary,
            "the Gmail API answered HTTP 500: Backend Error",
        )
        .with_source(inner);
        assert_eq!(
            error_chain(&outer),
            "the Gmail API answered HTTP 500: Backend Error"
        );
        let other = TransportError::new(ErrorKind::Temporary, "gave up")
            .with_source(TransportError::new(ErrorKind::Temporary, "server busy"));
        assert_eq!(error_chain(&other), "gave up: server busy");
    }

    fn envelope() -> Envelope {
        Envelope::new(
            "a@example.com".parse().unwrap(),
            vec![
                "b@example.com".parse().unwrap(),
                "B@example.com".parse().unwrap(),
            ],
        )
    }

    #[tokio::test]
    async fn stub_records_and_fails_as_told() {
        let ok = StubTransport::new_ok();
        let receipt = ok.send_raw(&envelope(), b"x").await.unwrap();
        assert_eq!(receipt.id.as_deref(), Some("stub-1"));
        assert_eq!(ok.messages().len(), 1);
        assert_eq!(
            ok.messages()[0].0.recipients().len(),
            1,
            "duplicates dropped"
        );

        let failing = StubTransport::new_error(ErrorKind::Temporary, "try later");
        let error = failing.send_raw(&envelope(), b"x").await.unwrap_err();
        assert!(error.is_temporary());
        assert_eq!(error.to_string(), "try later");
        assert!(failing.messages().is_empty());
    }

    #[tokio::test]
    async fn file_transport_writes_eml() {
        let dir = tempfile::tempdir().unwrap();
        let transport = FileTransport::new(dir.path());
        let receipt = transport
            .send_raw(&envelope(), b"Subject: x\r\n\r\nhi\r\n")
            .await
            .unwrap();
        let name = receipt.id.unwrap();
        assert!(name.ends_with(".eml"));
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            b"Subject: x\r\n\r\nhi\r\n"
        );
    }
}
