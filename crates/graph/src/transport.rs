//! [`GraphTransport`]: its state and clients, the request `Session` (one
//! token, refreshed once after a 401), and `sendMail`. How it sends (the
//! route, `impl Transport`) is `send.rs`.

use std::fmt;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Instant;

use apimail_core::{AccessToken, ErrorKind, TokenSource, TransportError};
use graph_http::api_impl::RequestHandler;
use graph_rs_sdk::header::{CONTENT_TYPE, HeaderValue};
use graph_rs_sdk::http::Body;
use graph_rs_sdk::users::{UsersMessagesApiClient, UsersMessagesIdApiClient};
use graph_rs_sdk::{GraphClient, GraphClientConfiguration};
use url::{Host, Url};

use crate::errors::{self, Answer, Stage, token_failure};
use crate::limit::{self, MAX_CONCURRENT_REQUESTS};
use crate::source::Origin;
use crate::upload;

/// The production Graph root (global cloud); see
/// [`Cloud::graph_url`](crate::Cloud::graph_url) for
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
    pub(crate) max_message_bytes: usize,
    pub(crate) large_messages_allowed: bool,
    app_only: bool,
    pub(crate) permits: Arc<limit::Permits>,
    /// `None` when the configuration is unusable: every send then fails
    /// with `broken`.
    pub(crate) clients: Option<Clients>,
    pub(crate) broken: Option<String>,
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
pub(crate) enum Small {
    Sent,
    TooLarge,
}

impl<T: TokenSource> GraphTransport<T> {
    /// A transport for `mailbox` at `api_url`, the Graph root
    /// ([`DEFAULT_API_URL`], a [`Cloud::graph_url`](crate::Cloud::graph_url), or e.g.
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
    pub(crate) fn url(&self, tail: &[&str]) -> Url {
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

    pub(crate) fn messages(&self, client: &GraphClient) -> UsersMessagesApiClient {
        match &self.mailbox {
            Mailbox::Me => client.me().messages(),
            Mailbox::User(id) => client.user(id).messages(),
        }
    }

    pub(crate) fn message(&self, client: &GraphClient, id: &str) -> UsersMessagesIdApiClient {
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

    pub(crate) async fn send_small(
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
    pub(crate) fn classify(&self, answer: &Answer, stage: Stage) -> TransportError {
        let principal = if self.app_only {
            errors::Principal::App
        } else {
            errors::Principal::User
        };
        errors::classify_as(answer, stage, principal)
    }

    pub(crate) fn mail_folder_messages(
        &self,
        client: &GraphClient,
        folder: &str,
    ) -> UsersMessagesApiClient {
        match &self.mailbox {
            Mailbox::Me => client.me().mail_folder(folder).messages(),
            Mailbox::User(id) => client.user(id).mail_folder(folder).messages(),
        }
    }
}

/// The whole message, for `sendMail`.
pub(crate) fn read_whole(origin: &Origin<'_>) -> Result<Vec<u8>, TransportError> {
    let mut whole = Vec::new();
    origin
        .all()
        .and_then(|mut reader| reader.read_to_end(&mut whole))
        .map_err(read_failure)?;
    Ok(whole)
}

pub(crate) fn read_failure(error: std::io::Error) -> TransportError {
    TransportError::new(ErrorKind::Internal, "cannot read the queued message").with_source(error)
}

/// One send's token and client; every request may refresh the token once
/// after a 401.
pub(crate) struct Session<'a, T> {
    transport: &'a GraphTransport<T>,
    token: AccessToken,
    client: GraphClient,
}

impl<'a, T: TokenSource> Session<'a, T> {
    pub(crate) async fn start(transport: &'a GraphTransport<T>) -> Result<Self, TransportError> {
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
    pub(crate) async fn call<F>(
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
            let response = match self.transport.clients() {
                Ok(clients) => clients.send(handler).await,
                Err(error) => return Err(error),
            };
            let answer = match response {
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
    match clients.send(handler).await {
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

/// A transport's HTTP clients, built once (clones share them), all from
/// apimail-core's HTTP policy (its TLS roots, proxy rules, user agent and
/// connect timeout).
///
/// graph-rs-sdk builds the requests (paths, bearer token, bodies) but does
/// not send them: its own reqwest client takes no TLS configuration, so
/// `api` sends what it builds ([`Clients::send`]), with the roots every
/// other client uses rather than a second copy. Since `api` has only a
/// whole-request timeout, it is `connect + 2 × stall` (its bodies are at
/// most 4 MB); see ARCHITECTURE.md.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) uploads: reqwest::Client,
    api: reqwest::Client,
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
        let loopback = api.scheme() == "http" && is_loopback(api);
        // Plain http, allowed only because the host is loopback.
        let api_client = apimail_core::http::reqwest_builder()
            .map_err(|e| setup(&e))?
            .timeout(errors::whole_request_limit())
            .https_only(!loopback)
            .build()
            .map_err(|e| setup(&e))?;
        let bearer = Bearer::default();
        let build = || {
            // Only builds requests; `api` sends them.
            let config = GraphClientConfiguration::new().client_application(bearer.clone());
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
            api: api_client,
            graph,
            bearer,
        })
    }

    /// Sends the request graph-rs-sdk's `handler` built, through `api`
    /// (what graph-rs-sdk's own `send` does, without its tower layers,
    /// which apimail never enables).
    pub(crate) async fn send(
        &self,
        handler: RequestHandler,
    ) -> Result<reqwest::Response, graph_rs_sdk::error::GraphFailure> {
        let request = handler.build().await?.build()?;
        Ok(self.api.execute(request).await?)
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

pub(crate) fn json_string(body: &[u8], field: &str) -> Option<String> {
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

pub(crate) fn megabytes(bytes: usize) -> String {
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
    use apimail_core::{Envelope, Secret, TokenError, Transport};
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
