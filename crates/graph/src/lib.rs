//! apimail-graph: send RFC 5322 messages through Microsoft Graph, via
//! graph-rs-sdk's typed request builders.
//!
//! # Routes
//!
//! - **Small messages** (base64 MIME up to [`MAX_REQUEST_BYTES`]) go in
//!   one `POST {mailbox}/sendMail` with `Content-Type: text/plain` and the
//!   base64 MIME as the body. Graph answers 202 with no body, so the
//!   [`Receipt`] carries no id. A 413 sends the message down the large
//!   route instead.
//! - **Large messages** (up to the configured maximum,
//!   [`DEFAULT_MAX_MESSAGE_BYTES`] by default) cannot go in one request.
//!   The attachment parts are cut out of the MIME (every header and body
//!   part stays byte-for-byte), the rest becomes a draft
//!   (`POST {mailbox}/messages`, base64 MIME), each attachment is added to
//!   it (`POST .../attachments` under [`UPLOAD_SESSION_THRESHOLD`], an
//!   upload session in [`CHUNK_BYTES`] chunks from there on), and the draft
//!   is sent (`POST .../messages/{id}/send`). The receipt carries the
//!   draft's id. This route needs the Mail.ReadWrite permission. With
//!   [`Transport::send_noted`], the draft is recorded in the notes so the
//!   next attempt re-sends a complete draft or deletes an incomplete one
//!   (see the `draft` module); with [`Transport::send_raw`], a draft is
//!   deleted after any failure.
//!
//! # Memory
//!
//! [`Transport::send_stored`] reads the outbox file whole only for
//! `sendMail` (a message up to 3,000,000 bytes, whose base64 fits in
//! [`MAX_REQUEST_BYTES`]). The large route never holds the message: one
//! streaming pass finds its MIME structure (a skeleton with long body runs
//! left out, which mail-parser classifies), the draft (at most 3,000,000
//! bytes, base64 at most 4 MB) is copied from the file without the
//! attachments' byte ranges, an attachment under
//! [`UPLOAD_SESSION_THRESHOLD`] is decoded into memory on its own, and each
//! upload-session chunk is decoded from the file just before its PUT. A
//! resume from an earlier offset decodes the part again from its start.
//!
//! # graph-rs-sdk, and where it is bypassed
//!
//! Every Graph API request is built with graph-rs-sdk's typed builders
//! (`me()`/`user(id)` → `send_mail`, `messages().create_messages`,
//! `message(id).attachments().create_attachments` /
//! `create_upload_session`, `message(id).send`,
//! `message(id).delete_messages`) on a `GraphClient` made from
//! `GraphClientConfiguration::new().access_token(..).timeout(..)` and
//! reused while the token stays the same (one connection pool), with
//! these deliberate choices:
//!
//! - The endpoint is always set with `use_test_endpoint` (the configured
//!   root plus `/v1.0`). `custom_endpoint`/`use_endpoint` **panic** for
//!   any host outside Microsoft's list, which would make a local fake or
//!   a gateway crash the program; `use_test_endpoint` does no host check.
//!   The URL was already checked (https, or http on a loopback host only),
//!   and `https_only(false)` is set only for a loopback http URL.
//! - No `retry(..)` (it re-POSTs `sendMail` at once on any 5xx: a double
//!   send), no `wait_for_retry_after_headers` (it waits without a cap),
//!   no `concurrency_limit` (a new limiter per request: it limits
//!   nothing). Retrying temporary failures is the caller's policy
//!   (`apimail_core::retry`), informed by
//!   [`TransportError::retry_after`]; this crate never re-sends a POST
//!   by itself, apart from once per request after a 401 with a refreshed
//!   token.
//! - At most [`MAX_CONCURRENT_REQUESTS`] requests are in flight per
//!   transport (Graph's per-mailbox concurrency limit), through a
//!   semaphore that clones share.
//! - Message bodies are raw `reqwest::Body` values with an explicit
//!   `text/plain` content type: a `&String` would be JSON-quoted.
//! - graph-rs-sdk splits the ids it renders into paths at `/`; when its
//!   URL differs from the correctly encoded one, the request is sent to
//!   the correctly encoded URL instead.
//! - Upload-session chunks go through a plain reqwest client, not
//!   graph-rs-sdk's upload helper (see [`CHUNK_BYTES`] for why).
//! - Tokens come from any [`TokenSource`], never from graph-oauth (its
//!   token URLs cannot be overridden and several of its flows are
//!   broken). App-only tokens: [`AppOnlyTokens`]; scopes and sign-in
//!   URLs per national cloud: [`cloud`].
//!
//! # Logging
//!
//! `tracing::debug!` records each request (method, Graph API path,
//! status, sizes, time) and the chosen route. Access tokens and upload
//! URLs (which carry their own authorization) are never logged; for
//! uploads only the host is.

#![deny(missing_docs)]

mod app_only;
mod assertion;
pub mod cloud;
mod draft;
mod environment;
mod errors;
mod limit;
mod mime;
mod scan;
mod source;
mod upload;

use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Instant;

use apimail_core::{
    AccessToken, DeliveryNotes, Envelope, ErrorKind, MemoryNotes, Receipt, StoredMessage,
    TokenSource, Transport, TransportError,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use graph_http::api_impl::RequestHandler;
use graph_rs_sdk::header::{CONTENT_TYPE, HeaderValue};
use graph_rs_sdk::http::Body;
use graph_rs_sdk::users::{UsersMessagesApiClient, UsersMessagesIdApiClient};
use graph_rs_sdk::{GraphClient, GraphClientConfiguration};
use url::{Host, Url};

use errors::{Answer, Stage};
use source::Origin;

pub use app_only::{AppCredential, AppOnlyTokens};
pub use assertion::{ASSERTION_LIFETIME_SECS, AssertionError, client_assertion};
pub use cloud::{
    Cloud, UnknownCloud, admin_consent_url, app_scope, authorize_url, delegated_scopes,
    device_code_url, token_url,
};
pub use draft::{NOTE_COMPLETE, NOTE_DRAFT_ID, NOTE_SEND_UNKNOWN, after_interruption};
pub use environment::{
    ENV_VARS, EnvCredentials, EnvError, GraphTokens, INVALID_GRANT_CAUSES, allows_large_messages,
    certificate_path_from_env, credentials_from_env, login_secret_from_env, max_message_bytes,
    secret_from_env,
};
pub use errors::{failure_hint, token_failure};
pub use upload::{CHUNK_BYTES, MAX_RESUMES_PER_CHUNK};

/// The production Graph root (global cloud); see [`Cloud::graph_url`] for
/// the others.
pub const DEFAULT_API_URL: &str = "https://graph.microsoft.com";

/// The API version appended to the root.
pub const API_VERSION: &str = "v1.0";

/// Exchange Online's default maximum message size: 35 MB
/// (35 × 1024 × 1024 bytes). Tenants can raise it to 150 MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 35 * 1024 * 1024;

/// The largest request body sent to Graph: 4,000,000 bytes. Graph refuses
/// requests over about 4 MB with 413 ("The maximum request length
/// supported is 4MB"); 4,000,000 stays under both the decimal and the
/// binary reading of that. Since base64 is 4/3 of the raw size, this is
/// a raw MIME message of 3,000,000 bytes for `sendMail`.
pub const MAX_REQUEST_BYTES: usize = 4_000_000;

/// Attachments from this size on (3 MiB, 3,145,728 bytes: Microsoft's
/// documented minimum for upload sessions) go through an upload session;
/// smaller ones are posted inline (`POST .../attachments`, base64
/// `contentBytes`). A 413 to the `POST`, or
/// `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize` to the session,
/// tries the other way once.
pub const UPLOAD_SESSION_THRESHOLD: usize = 3 * 1024 * 1024;

/// Graph's limit of concurrent requests per mailbox.
pub const MAX_CONCURRENT_REQUESTS: usize = 4;

/// Whose mailbox sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailbox {
    /// `/me`: the signed-in user (delegated tokens).
    Me,
    /// `/users/{id}`: a user id or user principal name (app-only tokens,
    /// or a delegated user with rights on that mailbox).
    User(String),
}

impl Mailbox {
    fn segments(&self) -> Vec<&str> {
        match self {
            Mailbox::Me => vec!["me"],
            Mailbox::User(id) => vec!["users", id],
        }
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mailbox::Me => f.write_str("me"),
            Mailbox::User(id) => write!(f, "users/{id}"),
        }
    }
}

/// Sends through Microsoft Graph as one mailbox. Clones share the token
/// source and the limit of [`MAX_CONCURRENT_REQUESTS`] requests in flight.
pub struct GraphTransport<T> {
    api: Url,
    loopback: bool,
    mailbox: Mailbox,
    tokens: Arc<T>,
    max_message_bytes: usize,
    large_messages_allowed: bool,
    app_only: bool,
    permits: Arc<limit::Permits>,
    /// `None` when the configuration is unusable: every send then fails
    /// with `broken`.
    clients: Option<Clients>,
    broken: Option<String>,
}

impl<T> Clone for GraphTransport<T> {
    fn clone(&self) -> Self {
        GraphTransport {
            api: self.api.clone(),
            loopback: self.loopback,
            mailbox: self.mailbox.clone(),
            tokens: self.tokens.clone(),
            max_message_bytes: self.max_message_bytes,
            large_messages_allowed: self.large_messages_allowed,
            app_only: self.app_only,
            permits: self.permits.clone(),
            clients: self.clients.clone(),
            broken: self.broken.clone(),
        }
    }
}

impl<T> fmt::Debug for GraphTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphTransport")
            .field("api", &self.api.as_str())
            .field("mailbox", &self.mailbox)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("large_messages_allowed", &self.large_messages_allowed)
            .finish_non_exhaustive()
    }
}

/// How a `sendMail` attempt ended, when it did not fail.
enum Small {
    Sent,
    TooLarge,
}

impl<T: TokenSource> GraphTransport<T> {
    /// A transport for `mailbox` at `api_url`, the Graph root
    /// ([`DEFAULT_API_URL`], a [`Cloud::graph_url`], or e.g.
    /// `http://127.0.0.1:PORT/graph` for a local fake); `/v1.0` is
    /// appended unless the URL already ends with it.
    ///
    /// `max_message_bytes` is the largest message accepted
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`] unless the tenant raised it).
    /// `large_messages_allowed` says whether the draft route may be tried:
    /// false when the delegated grant is known to lack Mail.ReadWrite (a
    /// message that needs the route then fails with
    /// [`ErrorKind::Unauthorized`] before any request); true for app-only
    /// tokens, whose permissions cannot be known in advance.
    ///
    /// An unusable configuration (see [`try_new`](Self::try_new)) does
    /// not fail here: every send fails with [`ErrorKind::Config`] instead.
    pub fn new(
        api_url: &Url,
        mailbox: Mailbox,
        tokens: T,
        max_message_bytes: usize,
        large_messages_allowed: bool,
    ) -> Self {
        let (api, clients, broken) = match Self::prepare(api_url, &mailbox) {
            Ok((api, clients)) => (api, Some(clients), None),
            Err(error) => (api_url.clone(), None, Some(error.to_string())),
        };
        GraphTransport {
            loopback: api.scheme() == "http" && is_loopback(&api),
            api,
            mailbox,
            tokens: Arc::new(tokens),
            max_message_bytes,
            large_messages_allowed,
            app_only: false,
            permits: Arc::new(limit::Permits::new(None)),
            clients,
            broken,
        }
    }

    /// [`new`](Self::new), failing with [`ErrorKind::Config`] for a URL
    /// that is neither https nor http on a loopback host, has a query, for
    /// an empty user id, or when the HTTPS client cannot be set up.
    pub fn try_new(
        api_url: &Url,
        mailbox: Mailbox,
        tokens: T,
        max_message_bytes: usize,
        large_messages_allowed: bool,
    ) -> Result<Self, TransportError> {
        Self::prepare(api_url, &mailbox)?;
        Ok(Self::new(
            api_url,
            mailbox,
            tokens,
            max_message_bytes,
            large_messages_allowed,
        ))
    }

    /// Checks the configuration: the versioned API root and the upload
    /// client.
    /// Where this transport gets its tokens.
    pub fn tokens(&self) -> &T {
        &self.tokens
    }

    /// The largest message this mailbox takes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Marks the tokens as app-only (client credentials): a missing
    /// permission is then an administrator's matter
    /// ([`ErrorKind::Config`]), not something a login fixes.
    pub fn app_only(mut self) -> Self {
        self.app_only = true;
        self
    }

    /// Also limits requests across every apimail process on this machine,
    /// with lock files for this mailbox under `dir`. `address` is the
    /// mailbox's address when known, so that `/me` and `/users/{address}`
    /// share one count, as they share Graph's.
    pub fn with_machine_limit(
        mut self,
        dir: impl Into<std::path::PathBuf>,
        address: Option<&str>,
    ) -> Self {
        let key = limit_key(&self.api, &self.mailbox, address);
        let slots = apimail_core::slots::ProcessSlots::new(dir, &key, MAX_CONCURRENT_REQUESTS);
        self.permits = Arc::new(limit::Permits::new(Some(slots)));
        self
    }

    fn prepare(api_url: &Url, mailbox: &Mailbox) -> Result<(Url, Clients), TransportError> {
        let config = |message: String| TransportError::new(ErrorKind::Config, message);
        apimail_core::endpoint::checked_url(api_url.as_str())
            .map_err(|e| config(format!("the Microsoft Graph URL is not usable: {e}")))?;
        if api_url.query().is_some() || api_url.cannot_be_a_base() {
            return Err(config(format!(
                "the Microsoft Graph URL `{api_url}` must be a root such as {DEFAULT_API_URL}, without a query"
            )));
        }
        if let Mailbox::User(id) = mailbox
            && id.trim().is_empty()
        {
            return Err(config("the mailbox's user id is empty".to_owned()));
        }
        let mut api = api_url.clone();
        api.set_fragment(None);
        let versioned = api
            .path_segments()
            .and_then(|mut s| s.rfind(|s| !s.is_empty()))
            == Some(API_VERSION);
        if let Ok(mut segments) = api.path_segments_mut() {
            segments.pop_if_empty();
            if !versioned {
                segments.push(API_VERSION);
            }
        }
        let clients = Clients::new(&api)?;
        Ok((api, clients))
    }

    /// The versioned API root requests go to (ends with `/v1.0`).
    pub fn api_url(&self) -> &Url {
        &self.api
    }

    /// The mailbox that sends.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// The URL of `{mailbox}/{tail...}`, each segment percent-encoded.
    fn url(&self, tail: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(self.mailbox.segments()).extend(tail);
        }
        url
    }

    /// The graph-rs-sdk client, now sending with `token`.
    fn client(&self, token: &AccessToken) -> Result<GraphClient, TransportError> {
        let clients = self.clients()?;
        clients.bearer.set(token);
        Ok(clients.graph.clone())
    }

    /// The clients, or why this transport cannot send.
    fn clients(&self) -> Result<&Clients, TransportError> {
        self.clients.as_ref().ok_or_else(|| {
            TransportError::new(ErrorKind::Config, self.broken.clone().unwrap_or_default())
        })
    }

    fn messages(&self, client: &GraphClient) -> UsersMessagesApiClient {
        match &self.mailbox {
            Mailbox::Me => client.me().messages(),
            Mailbox::User(id) => client.user(id).messages(),
        }
    }

    fn message(&self, client: &GraphClient, id: &str) -> UsersMessagesIdApiClient {
        match &self.mailbox {
            Mailbox::Me => client.me().message(id),
            Mailbox::User(user) => client.user(user).message(id),
        }
    }

    fn send_mail(&self, client: &GraphClient, base64_mime: &str) -> RequestHandler {
        let body = Body::from(base64_mime.to_owned());
        match &self.mailbox {
            Mailbox::Me => client.me().send_mail(body),
            Mailbox::User(id) => client.user(id).send_mail(body),
        }
        .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
    }

    async fn send_small(
        &self,
        session: &mut Session<'_, T>,
        base64_mime: &str,
    ) -> Result<Small, TransportError> {
        let answer = session
            .call(
                Stage::SendMail,
                "POST",
                self.url(&["sendMail"]),
                base64_mime.len(),
                |c| self.send_mail(c, base64_mime),
            )
            .await?;
        match answer.status {
            413 => Ok(Small::TooLarge),
            _ if answer.is_success() => Ok(Small::Sent),
            _ => Err(self.classify(&answer, Stage::SendMail)),
        }
    }

    /// Graph's answer as an error, read for this transport's kind of token.
    fn classify(&self, answer: &Answer, stage: Stage) -> TransportError {
        let principal = if self.app_only {
            errors::Principal::App
        } else {
            errors::Principal::User
        };
        errors::classify_as(answer, stage, principal)
    }

    fn mail_folder_messages(&self, client: &GraphClient, folder: &str) -> UsersMessagesApiClient {
        match &self.mailbox {
            Mailbox::Me => client.me().mail_folder(folder).messages(),
            Mailbox::User(id) => client.user(id).mail_folder(folder).messages(),
        }
    }
}

impl<T: TokenSource> Transport for GraphTransport<T> {
    async fn send_raw(
        &self,
        _envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.deliver(
            Origin::Memory(message),
            message.len() as u64,
            &MemoryNotes::default(),
            false,
        )
        .await
    }

    async fn send_noted(
        &self,
        _envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.deliver(Origin::Memory(message), message.len() as u64, notes, true)
            .await
    }

    /// Read whole only for `sendMail` (base64 up to [`MAX_REQUEST_BYTES`]);
    /// the draft route reads the file: once for the MIME structure, once
    /// per attachment for its size, then the draft's own bytes, and each
    /// upload chunk decoded as it is sent.
    async fn send_stored(
        &self,
        _envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.deliver(Origin::File(message.path()), message.len(), notes, true)
            .await
    }

    /// Looks in Sent Items (`internetMessageId`); `None` without
    /// Mail.Read or Mail.ReadWrite.
    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        let mut session = Session::start(self).await?;
        self.find_sent(&mut session, message_id).await
    }

    /// Deletes the draft an earlier attempt recorded in `notes`.
    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        self.discard_draft(notes).await
    }

    /// Deletes an incomplete draft; a complete one is kept, marked as
    /// possibly sent (see [`after_interruption`]).
    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match draft::after_interruption(notes) {
            Ok(false) => Ok(()),
            Ok(true) | Err(_) => self.discard(notes).await,
        }
    }
}

impl<T: TokenSource> GraphTransport<T> {
    /// One attempt: first whatever an earlier attempt left (see
    /// the `draft` module), then `sendMail` or the draft route.
    async fn deliver(
        &self,
        origin: Origin<'_>,
        len: u64,
        notes: &dyn DeliveryNotes,
        durable: bool,
    ) -> Result<Receipt, TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        if len > self.max_message_bytes as u64 {
            return Err(TransportError::new(
                ErrorKind::InvalidMessage,
                format!(
                    "the message is {len} bytes; this mailbox accepts at most {} bytes ({:.1} MiB, \
                     {}; Exchange Online allows up to 150 MB)",
                    self.max_message_bytes,
                    self.max_message_bytes as f64 / (1024.0 * 1024.0),
                    errors::TOO_LARGE_FOR_MAILBOX
                ),
            ));
        }
        let mut session = Session::start(self).await?;
        if let Some(id) = notes.get(NOTE_DRAFT_ID) {
            match self
                .resume_draft(&mut session, &id, origin, notes, durable)
                .await?
            {
                draft::Resumed::Sent(receipt) => return Ok(receipt),
                draft::Resumed::StartOver => {}
            }
        }
        // Measured before encoding: a large message is never base64'd whole.
        let base64_len = usize::try_from(len)
            .ok()
            .and_then(|len| base64::encoded_len(len, true))
            .unwrap_or(usize::MAX);
        let small = if base64_len <= MAX_REQUEST_BYTES {
            tracing::debug!(
                "base64 MIME is {} ({base64_len} bytes), within Graph's 4 MB request limit: sending with sendMail",
                megabytes(base64_len),
            );
            let message = match origin {
                Origin::Memory(bytes) => Cow::Borrowed(bytes),
                Origin::File(_) => Cow::Owned(read_whole(&origin)?),
            };
            let base64_mime = STANDARD.encode(&message);
            match self.send_small(&mut session, &base64_mime).await? {
                Small::Sent => {
                    return Ok(Receipt {
                        provider: "graph",
                        id: None,
                        thread_id: None,
                        possible_duplicate: false,
                    });
                }
                Small::TooLarge => tracing::debug!(
                    "Graph answered 413 to sendMail: taking the draft + upload session path"
                ),
            }
            Some(message)
        } else {
            tracing::debug!(
                "base64 MIME is {} ({base64_len} bytes), over Graph's 4 MB request limit: taking the draft + upload session path",
                megabytes(base64_len),
            );
            None
        };
        // A message read for sendMail is used from memory from here on.
        let origin = match &small {
            Some(message) => Origin::Memory(message),
            None => origin,
        };
        let (split, draft) = self.prepare_large(origin, len)?;
        self.send_large(&mut session, origin, split, draft, notes, durable)
            .await
    }

    /// Local checks and the MIME split of the large route, before any
    /// request: the permission hint, then the draft's size.
    fn prepare_large(
        &self,
        origin: Origin<'_>,
        len: u64,
    ) -> Result<(mime::Split, String), TransportError> {
        if !self.large_messages_allowed {
            return Err(TransportError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the message is too large for one Graph request (base64 over {MAX_REQUEST_BYTES} bytes), and {}",
                    "sending it as a draft needs the Mail.ReadWrite permission, which this \
                     authorization does not include; authorize again with Mail.ReadWrite"
                ),
            ));
        }
        let split = mime::split(origin, len).map_err(|e| match e {
            mime::SplitError::Unparsable => {
                TransportError::new(ErrorKind::InvalidMessage, e.to_string())
            }
            mime::SplitError::Read(e) => read_failure(e),
        })?;
        // Checked before the draft is read.
        let draft_len = usize::try_from(split.draft_len())
            .ok()
            .and_then(|len| base64::encoded_len(len, true))
            .unwrap_or(usize::MAX);
        if draft_len > MAX_REQUEST_BYTES {
            return Err(TransportError::new(
                ErrorKind::InvalidMessage,
                format!(
                    "the message body without attachments is over Graph's 4 MB request limit \
                     ({draft_len} bytes as base64, at most {MAX_REQUEST_BYTES}); move large content into attachments"
                ),
            ));
        }
        let draft = STANDARD.encode(split.draft(&origin).map_err(read_failure)?);
        tracing::debug!(
            "draft MIME without {} attachment(s) is {} bytes as base64; attachments: {}",
            split.attachments.len(),
            draft.len(),
            split
                .attachments
                .iter()
                .map(|a| format!("`{}` {} bytes", a.name, a.size))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok((split, draft))
    }
}

/// The whole message, for `sendMail`.
fn read_whole(origin: &Origin<'_>) -> Result<Vec<u8>, TransportError> {
    let mut whole = Vec::new();
    origin
        .all()
        .and_then(|mut reader| reader.read_to_end(&mut whole))
        .map_err(read_failure)?;
    Ok(whole)
}

fn read_failure(error: std::io::Error) -> TransportError {
    TransportError::new(ErrorKind::Internal, "cannot read the queued message").with_source(error)
}

/// One send's token and client; every request may refresh the token once
/// after a 401.
struct Session<'a, T> {
    transport: &'a GraphTransport<T>,
    token: AccessToken,
    client: GraphClient,
}

impl<'a, T: TokenSource> Session<'a, T> {
    async fn start(transport: &'a GraphTransport<T>) -> Result<Self, TransportError> {
        let token = transport.tokens.token().await.map_err(token_failure)?;
        let client = transport.client(&token)?;
        Ok(Session {
            transport,
            token,
            client,
        })
    }

    /// Sends the request `build` makes to `url`, under a permit; after a
    /// 401, refreshes the token and sends it once more (once per request:
    /// a long send may outlive several tokens).
    async fn call<F>(
        &mut self,
        stage: Stage,
        method: &str,
        url: Url,
        sent: usize,
        build: F,
    ) -> Result<Answer, TransportError>
    where
        F: Fn(&GraphClient) -> RequestHandler,
    {
        let request = format!("{method} {}", url.path());
        let delivers = matches!(stage, Stage::SendMail | Stage::SendDraft);
        let mut refreshed = false;
        loop {
            let mut handler = build(&self.client);
            if handler.url() != url {
                tracing::debug!(
                    "graph-rs-sdk built {} for {request}; sending to the correctly encoded path",
                    handler.url().path()
                );
                *AsMut::<Url>::as_mut(&mut handler) = url.clone();
            }
            let permit = self.transport.permits.acquire().await.map_err(|_| {
                TransportError::new(ErrorKind::Internal, "the request limiter was closed")
            })?;
            let started = Instant::now();
            let answer = match handler.send().await {
                Ok(response) => upload::read(response).await.map_err(|e| {
                    TransportError::new(
                        ErrorKind::Temporary,
                        format!("the connection to Microsoft Graph broke during {request}"),
                    )
                    .with_source(e)
                }),
                Err(error) => Err(errors::request_failure(error, &url, &request, delivers)),
            };
            drop(permit);
            let elapsed = started.elapsed().as_millis();
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!("{request} ({sent} bytes) failed after {elapsed} ms: {error}");
                    return Err(error);
                }
            };
            tracing::debug!(
                "{request} ({sent} bytes) -> {} in {elapsed} ms ({} bytes back)",
                answer.status,
                answer.body.len()
            );
            if answer.is_rejected_token() && !refreshed {
                refreshed = true;
                tracing::debug!("the access token was rejected: refreshing it once and resending");
                self.token = self
                    .transport
                    .tokens
                    .refresh_after_rejection(&self.token)
                    .await
                    .map_err(token_failure)?;
                self.client = self.transport.client(&self.token)?;
                continue;
            }
            return Ok(answer);
        }
    }
}

/// Sends a `HEAD` to `url`'s root through the client Graph requests go
/// through (graph-rs-sdk's, set up as a transport sets it up), for
/// `apimail doctor`.
pub async fn probe(
    url: &Url,
) -> Result<apimail_core::endpoint::Probe, (apimail_core::endpoint::ProbeFailure, String)> {
    use apimail_core::endpoint::{Probe, ProbeFailure, probe_url};
    let root = probe_url(url);
    let clients = Clients::new(&root).map_err(|e| (ProbeFailure::Setup, e.to_string()))?;
    let mut handler = clients.graph.custom(graph_rs_sdk::http::Method::HEAD, None);
    *AsMut::<Url>::as_mut(&mut handler) = root;
    let started = Instant::now();
    match handler.send().await {
        Ok(response) => Ok(Probe {
            status: response.status().as_u16(),
            date: response
                .headers()
                .get(graph_rs_sdk::header::DATE)
                .and_then(|d| d.to_str().ok())
                .map(str::to_owned),
            elapsed: started.elapsed(),
        }),
        Err(error) => {
            let error: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
            Err(ProbeFailure::read(error.as_ref(), url))
        }
    }
}

/// A transport's HTTP clients, built once (clones share them).
///
/// The upload client is built from apimail-core's HTTP policy. graph-rs-sdk
/// builds its own reqwest client and takes no TLS configuration, so it gets
/// the policy's proxy rules, user agent and connect timeout, and, since it
/// has only a whole-request timeout, `connect + 2 × stall` as that (its
/// bodies are at most 4 MB); see ARCHITECTURE.md.
#[derive(Clone)]
struct Clients {
    uploads: reqwest::Client,
    graph: GraphClient,
    bearer: Bearer,
}

impl Clients {
    fn new(api: &Url) -> Result<Self, TransportError> {
        let setup = |e: &dyn fmt::Display| {
            TransportError::new(
                ErrorKind::Config,
                format!("cannot set up the HTTPS client: {e}"),
            )
        };
        // No read_timeout: every upload request goes through
        // `http::exchange`, the policy's stall timer.
        let uploads = apimail_core::http::reqwest_builder()
            .map_err(|e| setup(&e))?
            .build()
            .map_err(|e| setup(&e))?;
        let timeouts = apimail_core::http::timeouts();
        let bearer = Bearer::default();
        let loopback = api.scheme() == "http" && is_loopback(api);
        let build = || {
            let mut config = GraphClientConfiguration::new()
                .client_application(bearer.clone())
                .timeout(errors::whole_request_limit())
                .connect_timeout(timeouts.connect)
                .proxy(apimail_core::http::reqwest_proxy())
                .user_agent(HeaderValue::from_static(apimail_core::http::USER_AGENT));
            if loopback {
                // Plain http, allowed only because the host is loopback.
                config = config.https_only(false);
            }
            let mut client = GraphClient::from(config);
            // Never custom_endpoint/use_endpoint: they panic on hosts
            // outside Microsoft's list. The URL was checked in `prepare`.
            client.use_test_endpoint(api);
            client
        };
        // graph-rs-sdk unwraps its reqwest client builder; a TLS setup
        // failure must not take the program down.
        let graph =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).map_err(|_| {
                TransportError::new(
                    ErrorKind::Config,
                    "graph-rs-sdk could not set up its HTTPS client",
                )
            })?;
        Ok(Clients {
            uploads,
            graph,
            bearer,
        })
    }
}

/// The access token graph-rs-sdk's client sends: the latest one a session
/// set (clones share it; any current token of the mailbox will do).
#[derive(Clone)]
struct Bearer(Arc<std::sync::Mutex<apimail_core::Secret>>);

impl Default for Bearer {
    fn default() -> Self {
        Bearer(Arc::new(std::sync::Mutex::new(apimail_core::Secret::new(
            "",
        ))))
    }
}

impl Bearer {
    fn set(&self, token: &AccessToken) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = token.secret.clone();
    }

    fn current(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expose()
            .to_owned()
    }
}

#[async_trait::async_trait]
impl graph_core::identity::ClientApplication for Bearer {
    fn get_token_silent(&mut self) -> graph_rs_sdk::error::AuthExecutionResult<String> {
        Ok(self.current())
    }

    async fn get_token_silent_async(&mut self) -> graph_rs_sdk::error::AuthExecutionResult<String> {
        Ok(self.current())
    }

    fn with_force_token_refresh(
        &mut self,
        _force_token_refresh: graph_core::identity::ForceTokenRefresh,
    ) {
    }
}

fn json_string(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The machine-wide limit's key: the mailbox (its address, lowercased,
/// when known) at this Graph root.
fn limit_key(api: &Url, mailbox: &Mailbox, address: Option<&str>) -> String {
    let who = match (mailbox, address) {
        (Mailbox::User(id), _) => id.as_str(),
        (Mailbox::Me, Some(address)) => address,
        (Mailbox::Me, None) => "me",
    };
    format!(
        "graph {} {}",
        api.as_str().trim_end_matches('/'),
        who.trim().to_lowercase()
    )
}

fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimail_core::{Secret, TokenError};
    use serde_json::json;

    struct Fixed;

    impl TokenSource for Fixed {
        async fn token(&self) -> Result<AccessToken, TokenError> {
            Ok(token())
        }

        async fn refresh_after_rejection(
            &self,
            _rejected: &AccessToken,
        ) -> Result<AccessToken, TokenError> {
            Ok(token())
        }
    }

    fn token() -> AccessToken {
        AccessToken {
            secret: Secret::new("t"),
            expires_at: None,
        }
    }

    fn transport(root: &str, mailbox: Mailbox) -> GraphTransport<Fixed> {
        GraphTransport::try_new(
            &Url::parse(root).unwrap(),
            mailbox,
            Fixed,
            DEFAULT_MAX_MESSAGE_BYTES,
            true,
        )
        .unwrap()
    }

    #[test]
    fn roots_get_the_version_once() {
        for (root, api) in [
            (
                "https://graph.microsoft.com",
                "https://graph.microsoft.com/v1.0",
            ),
            (
                "https://graph.microsoft.us/",
                "https://graph.microsoft.us/v1.0",
            ),
            (
                "https://graph.microsoft.com/v1.0",
                "https://graph.microsoft.com/v1.0",
            ),
            ("http://127.0.0.1:9/graph/", "http://127.0.0.1:9/graph/v1.0"),
            ("http://localhost:9/graph", "http://localhost:9/graph/v1.0"),
        ] {
            assert_eq!(transport(root, Mailbox::Me).api_url().as_str(), api);
        }
        let refuse = |root: &str, mailbox| {
            GraphTransport::try_new(&Url::parse(root).unwrap(), mailbox, Fixed, 1, true)
                .unwrap_err()
        };
        assert_eq!(
            refuse("http://graph.example.com", Mailbox::Me).kind(),
            ErrorKind::Config
        );
        assert_eq!(
            refuse("https://g.example/?a=b", Mailbox::Me).kind(),
            ErrorKind::Config
        );
        assert_eq!(
            refuse("https://graph.microsoft.com", Mailbox::User(" ".into())).kind(),
            ErrorKind::Config
        );
    }

    #[test]
    fn me_and_users_address_share_one_limit() {
        let api = Url::parse("https://graph.microsoft.com/v1.0").unwrap();
        let me = limit_key(&api, &Mailbox::Me, Some("Ann@Contoso.com"));
        let user = limit_key(&api, &Mailbox::User("ann@contoso.com".into()), None);
        assert_eq!(me, user);
        assert_ne!(me, limit_key(&api, &Mailbox::Me, None));
        assert_ne!(
            me,
            limit_key(&api, &Mailbox::User("bob@contoso.com".into()), None)
        );
    }

    #[tokio::test]
    async fn an_unusable_configuration_fails_each_send() {
        let t = GraphTransport::new(
            &Url::parse("http://graph.example.com").unwrap(),
            Mailbox::Me,
            Fixed,
            DEFAULT_MAX_MESSAGE_BYTES,
            true,
        );
        let envelope = Envelope::new("a@example.com".parse().unwrap(), vec![]);
        let error = t
            .send_raw(&envelope, b"Subject: x\r\n\r\nx")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("loopback"), "{error}");
    }

    /// graph-rs-sdk's typed builders and our own URL agree, except where
    /// it splits an id at `/` (then our URL is used).
    #[test]
    fn typed_builders_reach_the_expected_paths() {
        let ids = [
            "ann@contoso.com",
            "o'brien&co@contoso.com",
            "guest_x.com#EXT#@contoso.onmicrosoft.com",
            "8b081ef6-4792-4def-b2c9-c363a1bf41d5",
        ];
        for user in ids {
            for mailbox in [Mailbox::Me, Mailbox::User(user.to_owned())] {
                let t = transport("http://127.0.0.1:9/graph", mailbox);
                let c = t.client(&token()).unwrap();
                let message_id = "AAMkAGI2TG93AAA=";
                assert_eq!(t.send_mail(&c, "x").url(), t.url(&["sendMail"]));
                assert_eq!(
                    t.messages(&c).create_messages(Body::from("x")).url(),
                    t.url(&["messages"])
                );
                assert_eq!(
                    t.message(&c, message_id).send().url(),
                    t.url(&["messages", message_id, "send"])
                );
                assert_eq!(
                    t.message(&c, message_id).delete_messages().url(),
                    t.url(&["messages", message_id])
                );
                assert_eq!(
                    t.message(&c, message_id)
                        .attachments()
                        .create_upload_session(&json!({}))
                        .url(),
                    t.url(&["messages", message_id, "attachments", "createUploadSession"])
                );
                assert_eq!(
                    t.message(&c, message_id)
                        .attachments()
                        .create_attachments(&json!({}))
                        .url(),
                    t.url(&["messages", message_id, "attachments"])
                );
            }
        }
        let t = transport(
            "http://127.0.0.1:9/graph",
            Mailbox::User("x#EXT#@t.com".into()),
        );
        assert_eq!(
            t.url(&["messages", "a/b+c=", "send"]).path(),
            "/graph/v1.0/users/x%23EXT%23@t.com/messages/a%2Fb+c=/send"
        );
        let c = t.client(&token()).unwrap();
        assert_ne!(
            t.message(&c, "a/b+c=").send().url(),
            t.url(&["messages", "a/b+c=", "send"]),
            "graph-rs-sdk splits ids at `/`, which is why `call` corrects the URL"
        );
    }

    #[tokio::test]
    async fn large_route_without_mail_read_write_fails_before_any_request() {
        let t = GraphTransport::new(
            &Url::parse("http://127.0.0.1:9/graph").unwrap(),
            Mailbox::Me,
            Fixed,
            DEFAULT_MAX_MESSAGE_BYTES,
            false,
        );
        let envelope = Envelope::new("a@example.com".parse().unwrap(), vec![]);
        let big = vec![b'a'; 3_100_000];
        let error = t.send_raw(&envelope, &big).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unauthorized);
        assert!(error.to_string().contains("Mail.ReadWrite"), "{error}");

        let error = t
            .send_raw(&envelope, &vec![b'a'; DEFAULT_MAX_MESSAGE_BYTES + 1])
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidMessage);
        assert!(error.to_string().contains("36700161 bytes"), "{error}");
    }
}
