//! [`GmailTransport`]: `users.messages.send` through google-gmail1.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use apimail_core::{
    AccessToken, DeliveryNotes, Envelope, ErrorKind, Pace, Receipt, StoredMessage, TokenError,
    TokenSource, Transport, TransportError,
};
use google_gmail1::api::{Message, Scope};
use google_gmail1::common::{Delegate, MethodInfo, Response, Retry};
use google_gmail1::{Gmail, hyper_util};
use url::Url;

use crate::client::{Client, Connector};
use crate::errors;
use crate::scopes::SENT_CHECK_DEPTH;

/// The Gmail API's media limit for `messages.send` (35 MiB).
pub const MAX_MESSAGE_BYTES: usize = 36_700_160;

/// Messages above this size use a resumable upload.
pub const RESUMABLE_THRESHOLD: usize = 8 * 1024 * 1024;

/// Chunk size of resumable uploads (a multiple of 256 KiB, as Google requires).
pub const CHUNK_SIZE: u64 = 8 * 1024 * 1024;

/// The production API root.
pub const DEFAULT_API_URL: &str = "https://gmail.googleapis.com/";

/// Gmail's pace per user: 250 quota units a second, 100 per
/// `messages.send`, so 150 a minute; 4 at once (Google states no
/// concurrency limit; more only earns 429s).
pub const PACE: Pace = Pace {
    concurrency: 4,
    per_minute: 150,
};

/// Sends through `users.messages.send` as one user.
#[derive(Clone)]
pub struct GmailTransport<T> {
    client: Client,
    api_url: String,
    user_id: String,
    tokens: T,
    sent_check: bool,
}

impl<T> std::fmt::Debug for GmailTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmailTransport")
            .field("api_url", &self.api_url)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl<T: TokenSource> GmailTransport<T> {
    /// A transport for `user_id` (`me`, or the address a service account
    /// acts as) at `api_url` (see [`DEFAULT_API_URL`]).
    pub fn new(client: Client, api_url: &Url, user_id: impl Into<String>, tokens: T) -> Self {
        let mut api_url = api_url.to_string();
        if !api_url.ends_with('/') {
            api_url.push('/');
        }
        GmailTransport {
            client,
            api_url,
            user_id: user_id.into(),
            tokens,
            sent_check: false,
        }
    }

    /// Lets [`Transport::was_sent`] look in Sent; only for tokens granted
    /// [`METADATA_SCOPE`](crate::METADATA_SCOPE).
    pub fn with_sent_check(mut self, granted: bool) -> Self {
        self.sent_check = granted;
        self
    }

    fn hub(&self, token: &AccessToken) -> Gmail<Connector> {
        let mut hub = Gmail::new(self.client.clone(), token.secret.expose().to_owned());
        hub.root_url(self.api_url.clone());
        hub.base_url(self.api_url.clone());
        hub.user_agent(apimail_core::http::USER_AGENT.to_owned());
        hub
    }

    /// Whether one of the newest sent messages has `message_id`.
    async fn find_sent(
        &self,
        token: &AccessToken,
        message_id: &str,
    ) -> Result<bool, TransportError> {
        let hub = self.hub(token);
        let recorder = Arc::new(Mutex::new(errors::LastFailure::default()));
        let failure = |error, recorder: &Arc<Mutex<errors::LastFailure>>| {
            let last = std::mem::take(&mut *recorder.lock().unwrap_or_else(|e| e.into_inner()));
            errors::classify(error, last, &self.api_url, false)
        };
        let mut delegate = Recorder(recorder.clone());
        let listed = hub
            .users()
            .messages_list(&self.user_id)
            .add_label_ids("SENT")
            .max_results(SENT_CHECK_DEPTH)
            .add_scope(Scope::Metadata)
            .delegate(&mut delegate)
            .doit()
            .await;
        let (_, list) = listed.map_err(|e| failure(e, &recorder))?;
        for listed in list.messages.unwrap_or_default() {
            let Some(id) = listed.id else { continue };
            let mut delegate = Recorder(recorder.clone());
            let fetched = hub
                .users()
                .messages_get(&self.user_id, &id)
                .format("metadata")
                .add_metadata_headers("Message-ID")
                .add_scope(Scope::Metadata)
                .delegate(&mut delegate)
                .doit()
                .await;
            let (_, message) = fetched.map_err(|e| failure(e, &recorder))?;
            let headers = message.payload.and_then(|p| p.headers).unwrap_or_default();
            let found = headers.iter().any(|h| {
                h.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case("message-id"))
                    && h.value.as_deref().map(str::trim) == Some(message_id)
            });
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Where this transport gets its tokens.
    pub fn tokens(&self) -> &T {
        &self.tokens
    }

    /// Sends `upload`, refreshing the token once after a 401.
    async fn send_upload(&self, upload: &Upload) -> Result<Receipt, TransportError> {
        let len = upload.len();
        if len > MAX_MESSAGE_BYTES as u64 {
            return Err(TransportError::new(
                ErrorKind::InvalidMessage,
                format!(
                    "the message is {len} bytes; Gmail accepts at most {MAX_MESSAGE_BYTES} bytes (35 MiB)"
                ),
            ));
        }
        self.with_token(move |token| async move { self.send_with(&token, upload).await })
            .await
    }

    /// Runs `request` with the current access token, and once more with a
    /// fresh one if Gmail rejected the first.
    async fn with_token<R, F>(
        &self,
        request: impl Fn(AccessToken) -> F,
    ) -> Result<R, TransportError>
    where
        F: Future<Output = Result<R, TransportError>>,
    {
        let token = self.tokens.token().await.map_err(token_failure)?;
        match request(token.clone()).await {
            Err(e) if errors::is_rejected_token(&e) => {
                let token = self
                    .tokens
                    .refresh_after_rejection(&token)
                    .await
                    .map_err(token_failure)?;
                request(token).await
            }
            other => other,
        }
    }

    async fn send_with(
        &self,
        token: &AccessToken,
        upload: &Upload,
    ) -> Result<Receipt, TransportError> {
        let hub = self.hub(token);
        let recorder = Arc::new(Mutex::new(errors::LastFailure::default()));
        let user_id = self.user_id.clone();
        let len = upload.len();
        // Shared bytes or a fresh handle on the file: nothing is copied.
        let reader = upload.reader()?;
        let task_recorder = recorder.clone();
        let resumable = len > RESUMABLE_THRESHOLD as u64;
        let url = format!(
            "{}{}upload/gmail/v1/users/{}/messages/send?uploadType={}",
            self.api_url,
            if resumable { "resumable/" } else { "" },
            self.user_id,
            if resumable { "resumable" } else { "multipart" },
        );
        tracing::debug!("POST {url} ({len} bytes of message)");
        if resumable {
            tracing::debug!(
                "resumable upload in chunks of {CHUNK_SIZE} bytes (the session URL is not logged: it is a credential)"
            );
        }
        let started = std::time::Instant::now();
        // google-gmail1 can panic on a malformed answer (a resumable session
        // without Location); a task turns that into an error instead.
        let outcome = tokio::spawn(async move {
            let mut delegate = Recorder(task_recorder);
            let call = hub
                .users()
                .messages_send(Message::default(), &user_id)
                .add_scope(Scope::Send)
                .delegate(&mut delegate);
            let media = "message/rfc822".parse().expect("a valid MIME type");
            if resumable {
                call.upload_resumable(reader, media).await
            } else {
                call.upload(reader, media).await
            }
        })
        .await;
        let last = std::mem::take(&mut *recorder.lock().unwrap_or_else(|e| e.into_inner()));
        let elapsed = started.elapsed().as_millis();
        match (&outcome, last.status, &last.connection) {
            (Ok(Ok(_)), ..) => tracing::debug!("POST {url} -> 200 in {elapsed} ms"),
            (_, Some(status), _) => tracing::debug!("POST {url} -> {status} in {elapsed} ms"),
            (_, None, Some(error)) => {
                tracing::debug!("POST {url} failed after {elapsed} ms: {error}")
            }
            _ => tracing::debug!("POST {url} failed after {elapsed} ms"),
        }
        match outcome {
            Ok(Ok((_, sent))) => Ok(Receipt {
                provider: "gmail",
                id: sent.id,
                thread_id: sent.thread_id,
                possible_duplicate: false,
            }),
            Ok(Err(error)) => Err(errors::classify(error, last, &self.api_url, true)),
            Err(join) => Err(TransportError::new(
                ErrorKind::Internal,
                "the Gmail client failed on an unexpected answer from the server",
            )
            .with_source(join)),
        }
    }
}

/// What an upload reads: bytes shared with the caller (one multipart
/// request), or, above [`RESUMABLE_THRESHOLD`], the outbox file itself,
/// which google-gmail1's resumable loop reads one [`CHUNK_SIZE`] chunk at a
/// time.
enum Upload {
    Memory(Arc<[u8]>),
    File(StoredMessage),
}

impl Upload {
    fn len(&self) -> u64 {
        match self {
            Upload::Memory(bytes) => bytes.len() as u64,
            Upload::File(stored) => stored.len(),
        }
    }

    fn reader(&self) -> Result<UploadReader, TransportError> {
        Ok(match self {
            Upload::Memory(bytes) => UploadReader::Memory(Cursor::new(bytes.clone())),
            Upload::File(stored) => UploadReader::File(stored.open()?),
        })
    }
}

enum UploadReader {
    Memory(Cursor<Arc<[u8]>>),
    File(apimail_core::MessageReader),
}

impl Read for UploadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            UploadReader::Memory(r) => r.read(buf),
            UploadReader::File(r) => r.read(buf),
        }
    }
}

impl Seek for UploadReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match self {
            UploadReader::Memory(r) => r.seek(to),
            UploadReader::File(r) => r.seek(to),
        }
    }
}

impl<T: TokenSource> Transport for GmailTransport<T> {
    fn pace(&self) -> Pace {
        PACE
    }

    async fn send_raw(
        &self,
        _envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.send_upload(&Upload::Memory(message.into())).await
    }

    /// Up to [`RESUMABLE_THRESHOLD`], the file is read whole (once per
    /// attempt); above it, the resumable upload reads it chunk by chunk.
    async fn send_stored(
        &self,
        _envelope: &Envelope,
        message: &StoredMessage,
        _notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        let upload = if message.len() > RESUMABLE_THRESHOLD as u64 {
            Upload::File(message.clone())
        } else {
            Upload::Memory(message.read()?.into())
        };
        self.send_upload(&upload).await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        if !self.sent_check {
            return Ok(None);
        }
        let found = self
            .with_token(move |token| async move { self.find_sent(&token, message_id).await })
            .await?;
        Ok(Some(found))
    }
}

/// Maps a failure to get a token onto the transport's error kinds.
pub fn token_failure(error: TokenError) -> TransportError {
    let kind = match &error {
        TokenError::InvalidGrant { .. } | TokenError::NotLoggedIn { .. } => ErrorKind::Unauthorized,
        TokenError::Refused { .. } => ErrorKind::Unauthorized,
        TokenError::Unreachable(_) => ErrorKind::Temporary,
        TokenError::Network(failure) if failure.is_temporary() => ErrorKind::Temporary,
        TokenError::Network(_) | TokenError::Store(_) | TokenError::NotTokenEndpoint { .. } => {
            ErrorKind::Config
        }
        _ => ErrorKind::Internal,
    };
    TransportError::new(
        kind,
        error.headline("could not get an access token for the Gmail API"),
    )
    .with_source(error)
}

/// A google-gmail1 delegate that records what went wrong and never lets
/// the crate retry on its own: retries follow apimail's policy instead.
struct Recorder(Arc<Mutex<errors::LastFailure>>);

impl Delegate for Recorder {
    fn begin(&mut self, _info: MethodInfo) {}

    fn http_error(&mut self, err: &hyper_util::client::legacy::Error) -> Retry {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).connection = Some(err.to_string());
        Retry::Abort
    }

    fn http_failure(&mut self, response: &Response, body: Option<&serde_json::Value>) -> Retry {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.status = Some(response.status().as_u16());
        last.retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        last.body = body.cloned();
        Retry::Abort
    }

    fn chunk_size(&mut self) -> u64 {
        CHUNK_SIZE
    }
}
