//! A local fake of the Microsoft identity platform (v2.0 endpoints) and of
//! the Microsoft Graph v1.0 mail endpoints, for end-to-end tests of the real
//! `apimail` binary.
//!
//! It follows Microsoft's documented behaviour where it is documented:
//!
//! - Identity: authorization code with PKCE (S256), rotating refresh tokens,
//!   client credentials with a secret or an RS256/PS256 certificate assertion
//!   (`x5t` / `x5t#S256`), and the device code grant, with errors in the
//!   AADSTS format (`error`, `error_description`, `error_codes`,
//!   `trace_id`, ...). A refresh token is only issued when `offline_access`
//!   was asked for, an ID token only when `openid` was.
//! - Graph: `sendMail` (base64 MIME as `text/plain`, or JSON), drafts
//!   (`POST messages`, MIME or JSON), attachments (`POST attachments` under
//!   3 MiB, `createUploadSession` from 3 MiB to 150 MiB), the pre-authenticated
//!   upload URL (`PUT` chunks of at most 4 MiB, in order), `send` and
//!   `DELETE` of drafts, and `GET /me`, with Graph's error bodies.
//!
//! Graph API requests can be faulted ([`Fault`]), one upload chunk can be
//! dropped ([`FakeMicrosoft::fail_chunk_once_at`]), and everything is recorded
//! for tests to inspect. Start one with [`FakeMicrosoft::start`]; it stops when
//! dropped.
//!
//! URLs: the authority is [`FakeMicrosoft::authority_url`] (clients append
//! `/{tenant}/oauth2/v2.0/{authorize,token,devicecode}`), Graph is
//! [`FakeMicrosoft::graph_url`] (clients append `/v1.0/...`), and upload URLs
//! are `{base}/upload/{session}?authtoken=...`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Value, json};

use crate::http::{self, Reply, Request, Response, Server, lock};
use crate::http::{URL_SAFE_ANY, form_decode, percent_decode};

/// The global Graph resource, the default audience of Graph tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Microsoft Graph's application id, also accepted as its resource.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Delegated `Mail.Send` in full form.
pub const MAIL_SEND: &str = "https://graph.microsoft.com/Mail.Send";
/// Delegated `Mail.ReadWrite` in full form.
pub const MAIL_READWRITE: &str = "https://graph.microsoft.com/Mail.ReadWrite";
/// Delegated `User.Read` in full form.
pub const USER_READ: &str = "https://graph.microsoft.com/User.Read";
/// The app-only scope for the global cloud.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The device code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `client_assertion_type` of certificate (JWT) client authentication.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The user who signs in unless [`FakeMicrosoft::set_user`] says otherwise.
pub const DEFAULT_USER: &str = "user@contoso.com";
/// The user code of every device code.
pub const USER_CODE: &str = "ABCD-EFGH";
/// The verification URI of every device code.
pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";
/// The tenant id in ID tokens issued through `common`, `organizations` or
/// a domain (a GUID tenant is echoed).
pub const FAKE_TENANT_ID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
/// Largest Graph request body: 4 MiB ("The maximum request length
/// supported is 4MB.").
pub const MAX_REQUEST_BYTES: usize = 4_194_304;
/// Largest upload-URL chunk: 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 4_194_304;
/// "3 MB": attachments from this size on must use an upload session, and
/// upload sessions for smaller ones are refused (unless allowed with
/// [`FakeMicrosoft::allow_small_upload_sessions`]).
pub const UPLOAD_SESSION_MIN_BYTES: u64 = 3_145_728;
/// Largest attachment an upload session takes: 150 MiB.
pub const MAX_ATTACHMENT_BYTES: u64 = 157_286_400;

/// Delegated permissions granted for `{resource}/.default`.
const DEFAULT_DELEGATED: [&str; 3] = ["Mail.Send", "Mail.ReadWrite", "User.Read"];
/// Resources the identity platform knows (Graph in each national cloud).
const KNOWN_RESOURCES: [&str; 5] = [
    GRAPH_RESOURCE,
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    GRAPH_APP_ID,
];
/// Scopes that are about the sign-in, not a resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
const ACCESS_DENIED: &str = "Access is denied. Check credentials and try again.";
const FIXTURE_PEM: &str = include_str!("../fixtures/graph-app.pem");
const FIXTURE_CERT_DER: &[u8] = include_bytes!("../fixtures/graph-app-cert.der");

/// A failure to inject into upcoming Graph API requests (not identity
/// requests, not upload-URL requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `ApplicationThrottled`, "Application is over its
    /// MailboxConcurrency limit.", with `Retry-After` if given.
    Status429 {
        /// Seconds for the `Retry-After` header.
        retry_after_secs: Option<u64>,
    },
    /// 503 `ServiceNotAvailable`.
    Status503,
    /// 504 `GatewayTimeout`.
    Status504,
    /// Read the request, then close the connection without answering.
    DropConnection,
    /// Handle the request normally, then close the connection without
    /// answering: the request took effect, its answer is lost.
    LoseAnswer,
    /// Sleep this long (counted as in flight), then handle the request
    /// normally.
    Slow(Duration),
    /// Any Graph error: `{"error":{"code":code,"message":message,...}}`.
    Error {
        /// HTTP status.
        status: u16,
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
}

/// What the user does with a device code, once the pending polls are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceOutcome {
    /// Signs in: the next poll gets tokens.
    #[default]
    Approve,
    /// Declines: polls get `authorization_declined`.
    Decline,
    /// Lets the code expire: polls get `expired_token`.
    Expire,
    /// Like `Approve`, but the very first poll gets `slow_down`.
    SlowDownOnce,
}

/// A file attachment of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The attachment id Graph returned.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `contentType` (`application/octet-stream` if none was given).
    pub content_type: String,
    /// `contentId`, if given.
    pub content_id: Option<String>,
    /// `isInline`.
    pub is_inline: bool,
    /// The decoded content.
    pub bytes: Vec<u8>,
    /// `"direct"` (`POST attachments`) or `"upload-session"`.
    pub via: String,
}

/// A message Graph accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sending mailbox's address (as registered).
    pub mailbox: String,
    /// `"sendMail-mime"`, `"sendMail-json"` or `"draft"`.
    pub via: String,
    /// The decoded MIME (sendMail or a MIME draft); empty for JSON.
    pub mime: Vec<u8>,
    /// The JSON body (sendMail) or message (JSON draft).
    pub json: Option<Value>,
    /// A sent draft's attachments, in the order they were added.
    pub attachments: Vec<Attachment>,
    /// The access token of the send request.
    pub access_token: String,
}

/// A draft that was neither sent nor deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Message id.
    pub id: String,
    /// The mailbox's address.
    pub mailbox: String,
    /// The decoded MIME; empty for a JSON draft.
    pub mime: Vec<u8>,
    /// The JSON message, for a JSON draft.
    pub json: Option<Value>,
    /// Attachments added so far.
    pub attachments: Vec<Attachment>,
}

/// One `PUT` to an upload URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The upload session's id (the last path segment of its URL).
    pub session: String,
    /// `Content-Range` start (0 if unparseable).
    pub start: u64,
    /// `Content-Range` end, inclusive (0 if unparseable).
    pub end: u64,
    /// `Content-Range` total (0 if unparseable).
    pub total: u64,
    /// Body length.
    pub len: usize,
    /// Whether it carried an `Authorization` header.
    pub had_authorization: bool,
    /// The status answered, 0 if the connection was dropped.
    pub status: u16,
}

/// The running fake. Cheap accessors read its recorded state.
pub struct FakeMicrosoft {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeMicrosoft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMicrosoft")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    base: String,
    clients: HashMap<String, Client>,
    redirect_uris: HashMap<String, Vec<String>>,
    user: String,
    deny: bool,
    /// Lowercased address -> mailbox.
    mailboxes: HashMap<String, Mailbox>,
    /// Lowercased addresses app-only tokens may use, once restricted.
    app_allowed: Option<HashSet<String>>,
    graph_resource: String,
    /// Base of upload URLs, when not `base`.
    upload_base: Option<String>,
    enforce_session_minimum: bool,
    tenants: Vec<String>,
    authorize_requests: Vec<HashMap<String, String>>,
    codes: HashMap<String, Code>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    access_tokens: HashMap<String, AccessGrant>,
    token_forms: Vec<HashMap<String, String>>,
    token_requests: HashMap<String, usize>,
    total_token_requests: usize,
    device_codes: HashMap<String, DeviceGrant>,
    device_pending_polls: usize,
    device_outcome: DeviceOutcome,
    device_polls: usize,
    device_code_requests: usize,
    drafts: Vec<StoredDraft>,
    deleted_drafts: usize,
    sessions: HashMap<String, UploadSession>,
    chunks: Vec<Chunk>,
    chunk_puts: usize,
    fail_chunk_at: Option<usize>,
    lose_chunk_answer_at: Option<usize>,
    /// Lowercased delegated permissions left out of every grant.
    withheld: HashSet<String>,
    /// Sent Items: (mailbox, internetMessageId, id).
    sent_items: Vec<(String, String, String)>,
    uploads_with_authorization: usize,
    delivered: Vec<Delivered>,
    graph_requests: usize,
    graph_log: Vec<(String, String, u16)>,
    in_flight: usize,
    max_in_flight: usize,
    faults: VecDeque<Fault>,
    forever: Option<Fault>,
}

#[derive(Debug, Clone, Default)]
struct Client {
    public: bool,
    secret: Option<String>,
    certificate: Option<Certificate>,
    /// Set for apps registered with `add_app`: (tenant, roles).
    app: Option<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct Certificate {
    /// RSAPublicKey (PKCS#1) DER, which `ring` verifies with.
    public_key: Vec<u8>,
    /// base64url SHA-1 of the certificate DER, unpadded.
    x5t: String,
    /// base64url SHA-256 of the certificate DER, unpadded.
    x5t_s256: String,
}

#[derive(Debug, Clone)]
struct Mailbox {
    address: String,
    enabled: bool,
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    /// A signed-in user (delegated).
    User(String),
    /// An application (app-only), by client id.
    App(String),
}

/// What a token or code stands for.
#[derive(Debug, Clone)]
struct Grant {
    principal: Principal,
    client_id: String,
    tenant: String,
    /// The resource as requested, e.g. `https://graph.microsoft.com`.
    resource: String,
    /// Short permission names: delegated scopes or app roles.
    permissions: Vec<String>,
    openid: bool,
    offline: bool,
}

#[derive(Debug)]
struct Code {
    grant: Grant,
    redirect_uri: String,
    challenge: String,
    used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Active,
    Rotated,
    Revoked,
}

#[derive(Debug)]
struct RefreshGrant {
    grant: Grant,
    status: RefreshStatus,
}

#[derive(Debug)]
struct AccessGrant {
    grant: Grant,
    expired: bool,
}

#[derive(Debug)]
struct DeviceGrant {
    grant: Grant,
    pending_polls: usize,
    slowed: bool,
    redeemed: bool,
}

#[derive(Debug, Clone)]
struct StoredDraft {
    id: String,
    mailbox: String,
    mime: Vec<u8>,
    json: Option<Value>,
    attachments: Vec<Attachment>,
    subject: String,
    created: String,
    conversation_id: String,
    internet_message_id: String,
}

#[derive(Debug)]
struct UploadSession {
    authtoken: String,
    mailbox: String,
    draft_id: String,
    name: String,
    content_type: String,
    content_id: Option<String>,
    is_inline: bool,
    size: u64,
    received: Vec<u8>,
    expires: String,
}

impl FakeMicrosoft {
    /// Starts the fake on `127.0.0.1` with a free port. The default user
    /// ([`DEFAULT_USER`]) has a mailbox; no client is registered.
    pub fn start() -> FakeMicrosoft {
        let mut initial = State {
            user: DEFAULT_USER.to_owned(),
            graph_resource: GRAPH_RESOURCE.to_owned(),
            device_pending_polls: 2,
            enforce_session_minimum: true,
            ..State::default()
        };
        add_mailbox(&mut initial, DEFAULT_USER, true);
        let state = Arc::new(Mutex::new(initial));
        let handler_state = state.clone();
        let server = Server::start("fake-microsoft", move |request| {
            handle(&handler_state, request)
        })
        .expect("the fake Microsoft server can bind 127.0.0.1");
        lock(&state).base = server.base_url();
        FakeMicrosoft { server, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Requests and bytes seen on the wire, and the delay added to each
    /// request (for benchmarks).
    pub fn traffic(&self) -> &http::Traffic {
        self.server.traffic()
    }

    /// The authority: the base URL (clients append
    /// `/{tenant}/oauth2/v2.0/...`).
    pub fn authority_url(&self) -> String {
        self.base_url()
    }

    /// The Graph root, `{base}/graph` (clients append `/v1.0/...`).
    pub fn graph_url(&self) -> String {
        format!("{}/graph", self.base_url())
    }

    /// `{base}/{tenant}/oauth2/v2.0/authorize`.
    pub fn authorize_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.base_url())
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`, also the `aud` a client
    /// assertion must carry.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// `{base}/{tenant}/oauth2/v2.0/devicecode`.
    pub fn device_code_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/devicecode", self.base_url())
    }

    /// Registers a public client ("Mobile and desktop", public client flows
    /// allowed): it must not send a secret or an assertion.
    pub fn add_public_client(&self, client_id: &str) {
        let mut state = lock(&self.state);
        let client = state.clients.entry(client_id.to_owned()).or_default();
        client.public = true;
        client.secret = None;
        client.certificate = None;
        client.app = None;
    }

    /// Registers a confidential client with a secret (auth code, refresh).
    pub fn add_confidential_client(&self, client_id: &str, secret: &str) {
        let mut state = lock(&self.state);
        let client = state.clients.entry(client_id.to_owned()).or_default();
        client.public = false;
        client.secret = Some(secret.to_owned());
    }

    /// Registers an app in `tenant` for client credentials, with a secret
    /// and/or a certificate (DER or PEM, e.g. [`fixture_certificate_der`]).
    /// Its token gets the role `Mail.Send` unless
    /// [`set_app_roles`](Self::set_app_roles) says otherwise. Panics if the
    /// certificate holds no RSA public key.
    pub fn add_app(
        &self,
        tenant: &str,
        client_id: &str,
        secret: Option<&str>,
        certificate: Option<&[u8]>,
    ) {
        let certificate = certificate.map(|cert| {
            parse_certificate(cert).expect("an X.509 certificate with an RSA key, DER or PEM")
        });
        let mut state = lock(&self.state);
        let client = state.clients.entry(client_id.to_owned()).or_default();
        client.public = false;
        client.secret = secret.map(str::to_owned);
        client.certificate = certificate;
        let roles = client
            .app
            .take()
            .map(|(_, roles)| roles)
            .unwrap_or_else(|| vec!["Mail.Send".to_owned()]);
        client.app = Some((tenant.to_owned(), roles));
    }

    /// Sets the application permissions (roles) an app's future tokens
    /// carry, e.g. `&["Mail.Send", "Mail.ReadWrite"]`. Panics if `client_id`
    /// was not registered with [`add_app`](Self::add_app).
    pub fn set_app_roles(&self, client_id: &str, roles: &[&str]) {
        let mut state = lock(&self.state);
        let app = state
            .clients
            .get_mut(client_id)
            .and_then(|client| client.app.as_mut())
            .expect("set_app_roles needs an app registered with add_app");
        app.1 = roles.iter().map(|role| (*role).to_owned()).collect();
    }

    /// Registers a redirect URI for `client_id`. As Microsoft documents for
    /// loopback URIs (`localhost`, `127.0.0.1`, `[::1]`), the port is
    /// ignored when matching; scheme, host and path must match exactly.
    pub fn add_redirect_uri(&self, client_id: &str, uri: &str) {
        lock(&self.state)
            .redirect_uris
            .entry(client_id.to_owned())
            .or_default()
            .push(uri.to_owned());
    }

    /// The user who signs in (default [`DEFAULT_USER`]); gets a mailbox if
    /// they have none.
    pub fn set_user(&self, email: &str) {
        let mut state = lock(&self.state);
        state.user = email.to_owned();
        if !state.mailboxes.contains_key(&email.to_lowercase()) {
            add_mailbox(&mut state, email, true);
        }
    }

    /// Makes the authorization endpoint redirect with `error=access_denied`.
    pub fn set_deny(&self, deny: bool) {
        lock(&self.state).deny = deny;
    }

    /// Adds an enabled Exchange Online mailbox (a user Graph knows).
    pub fn add_mailbox(&self, address: &str) {
        add_mailbox(&mut lock(&self.state), address, true);
    }

    /// Makes `address` a user without a usable mailbox: Graph answers 404
    /// `MailboxNotEnabledForRESTAPI`.
    pub fn set_mailbox_not_enabled(&self, address: &str) {
        add_mailbox(&mut lock(&self.state), address, false);
    }

    /// Restricts app-only access (like an application access policy or RBAC
    /// for Applications) to the mailboxes passed to this method: app-only
    /// calls for any other mailbox get 403 `ErrorAccessDenied`.
    pub fn restrict_app_to(&self, address: &str) {
        lock(&self.state)
            .app_allowed
            .get_or_insert_with(HashSet::new)
            .insert(address.to_lowercase());
    }

    /// The Graph root whose tokens Graph accepts (default
    /// [`GRAPH_RESOURCE`]), e.g. `https://graph.microsoft.us` to check that a
    /// national-cloud client asks for its own cloud's scopes. Short scope
    /// names (`Mail.Send`) also mean this resource.
    pub fn set_graph_resource(&self, root: &str) {
        lock(&self.state).graph_resource = root.trim_end_matches('/').to_owned();
    }

    /// Hands out upload URLs on `http://{host}:PORT` instead of the Graph
    /// host, as Graph does (its upload URLs are on outlook.office.com), so
    /// that clients which attach tokens per host leave them off. `host`
    /// must reach this server: `localhost`.
    pub fn set_upload_host(&self, host: &str) {
        let port = self.server.addr().port();
        lock(&self.state).upload_base = Some(format!("http://{host}:{port}"));
    }

    /// Accepts upload sessions for attachments under 3 MiB, which Graph
    /// refuses by default (`ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`).
    pub fn allow_small_upload_sessions(&self, allow: bool) {
        lock(&self.state).enforce_session_minimum = !allow;
    }

    /// How many polls of each device code get `authorization_pending` before
    /// the outcome (default 2).
    pub fn set_device_pending_polls(&self, polls: usize) {
        lock(&self.state).device_pending_polls = polls;
    }

    /// What the user does with device codes (default `Approve`).
    pub fn set_device_outcome(&self, outcome: DeviceOutcome) {
        lock(&self.state).device_outcome = outcome;
    }

    /// How many device code token polls arrived.
    pub fn device_polls(&self) -> usize {
        lock(&self.state).device_polls
    }

    /// How many requests reached the devicecode endpoint.
    pub fn device_code_requests(&self) -> usize {
        lock(&self.state).device_code_requests
    }

    /// Issues a delegated access token for `user` directly, with `scopes`
    /// (space-separated, short or full names; no refresh token). Panics if
    /// the scopes are invalid.
    pub fn issue_access_token(&self, user: &str, scopes: &str) -> String {
        let mut state = lock(&self.state);
        let parsed = parse_scopes(&state, scopes).expect("valid scopes");
        let grant = Grant {
            principal: Principal::User(user.to_owned()),
            client_id: "test-issued".to_owned(),
            tenant: "organizations".to_owned(),
            resource: parsed.resource,
            permissions: parsed.permissions,
            openid: false,
            offline: false,
        };
        issue_access(&mut state, grant)
    }

    /// Issues an app-only access token for `client_id` with `roles`
    /// directly (the client need not be registered).
    pub fn issue_app_token(&self, client_id: &str, roles: &[&str]) -> String {
        let mut state = lock(&self.state);
        let grant = Grant {
            principal: Principal::App(client_id.to_owned()),
            client_id: client_id.to_owned(),
            tenant: FAKE_TENANT_ID.to_owned(),
            resource: state.graph_resource.clone(),
            permissions: roles.iter().map(|role| (*role).to_owned()).collect(),
            openid: false,
            offline: false,
        };
        issue_access(&mut state, grant)
    }

    /// The query parameters of every authorization request, in order.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.state).authorize_requests.clone()
    }

    /// The tenant path segment of every identity request, in order.
    pub fn tenants(&self) -> Vec<String> {
        lock(&self.state).tenants.clone()
    }

    /// Every form posted to a token endpoint, in order.
    pub fn token_forms(&self) -> Vec<HashMap<String, String>> {
        lock(&self.state).token_forms.clone()
    }

    /// How many token requests had this `grant_type`.
    pub fn token_requests(&self, grant_type: &str) -> usize {
        lock(&self.state)
            .token_requests
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// How many requests reached a token endpoint.
    pub fn total_token_requests(&self) -> usize {
        lock(&self.state).total_token_requests
    }

    /// Revokes every refresh token issued so far (`invalid_grant`,
    /// AADSTS50173). Access tokens stay valid until they expire, as with
    /// Microsoft.
    pub fn revoke_refresh_tokens(&self) {
        for grant in lock(&self.state).refresh_tokens.values_mut() {
            grant.status = RefreshStatus::Revoked;
        }
    }

    /// Treats every access token issued so far as expired (Graph answers 401
    /// `InvalidAuthenticationToken`).
    pub fn expire_access_tokens(&self) {
        for grant in lock(&self.state).access_tokens.values_mut() {
            grant.expired = true;
        }
    }

    /// The messages accepted for delivery so far, in order.
    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.state).delivered.clone()
    }

    /// The drafts neither sent nor deleted, in creation order.
    pub fn drafts(&self) -> Vec<Draft> {
        lock(&self.state)
            .drafts
            .iter()
            .map(|draft| Draft {
                id: draft.id.clone(),
                mailbox: draft.mailbox.clone(),
                mime: draft.mime.clone(),
                json: draft.json.clone(),
                attachments: draft.attachments.clone(),
            })
            .collect()
    }

    /// How many drafts were deleted.
    pub fn deleted_drafts(&self) -> usize {
        lock(&self.state).deleted_drafts
    }

    /// Every `PUT` to an upload URL, in order.
    pub fn chunks(&self) -> Vec<Chunk> {
        lock(&self.state).chunks.clone()
    }

    /// How many upload-URL requests (any method) carried an `Authorization`
    /// header.
    pub fn upload_requests_with_authorization(&self) -> usize {
        lock(&self.state).uploads_with_authorization
    }

    /// How many Graph API requests arrived (faulted ones too; upload-URL
    /// requests not).
    pub fn graph_requests(&self) -> usize {
        lock(&self.state).graph_requests
    }

    /// (method, path as sent, status) of every Graph API request; status 0
    /// when the connection was dropped.
    pub fn graph_request_log(&self) -> Vec<(String, String, u16)> {
        lock(&self.state).graph_log.clone()
    }

    /// The most Graph API requests ever in flight at once.
    pub fn max_concurrent_graph_requests(&self) -> usize {
        lock(&self.state).max_in_flight
    }

    /// Queues `fault` for the next Graph API request.
    pub fn inject(&self, fault: Fault) {
        self.inject_n(fault, 1);
    }

    /// Queues `fault` for the next `n` Graph API requests.
    pub fn inject_n(&self, fault: Fault, n: usize) {
        lock(&self.state)
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Applies `fault` to every Graph API request (after any queued ones)
    /// until [`clear_faults`](Self::clear_faults).
    pub fn fail_forever(&self, fault: Fault) {
        lock(&self.state).forever = Some(fault);
    }

    /// Drops queued and permanent faults, and a pending chunk failure.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.state);
        state.faults.clear();
        state.forever = None;
        state.fail_chunk_at = None;
        state.lose_chunk_answer_at = None;
    }

    /// Leaves `permission` (e.g. `Mail.ReadWrite`) out of every delegated
    /// grant from now on, as when an administrator's consent is missing:
    /// sign-ins succeed, and the token response's `scope` lacks it.
    pub fn withhold_consent(&self, permission: &str) {
        lock(&self.state)
            .withheld
            .insert(permission.to_ascii_lowercase());
    }

    /// Makes the `n`-th upload-URL `PUT` (0-based, counting every `PUT`
    /// since the start) take effect and then close the connection without
    /// an answer: the client must not send those bytes again.
    pub fn lose_chunk_answer_at(&self, n: usize) {
        lock(&self.state).lose_chunk_answer_at = Some(n);
    }

    /// The Message-IDs in `mailbox`'s Sent Items, where Exchange files each
    /// message it sent.
    pub fn sent_items(&self, mailbox: &str) -> Vec<String> {
        lock(&self.state)
            .sent_items
            .iter()
            .filter(|(m, _, _)| m.eq_ignore_ascii_case(mailbox))
            .map(|(_, message_id, _)| message_id.clone())
            .collect()
    }

    /// Makes the `n`-th upload-URL `PUT` (0-based, counting every `PUT` to
    /// any upload URL since the start) close the connection without an
    /// answer, keeping none of its bytes.
    pub fn fail_chunk_once_at(&self, n: usize) {
        lock(&self.state).fail_chunk_at = Some(n);
    }
}

/// The fixture certificate (DER), for [`FakeMicrosoft::add_app`].
pub fn fixture_certificate_der() -> &'static [u8] {
    FIXTURE_CERT_DER
}

/// The fixture PEM file: the PKCS#8 private key and the certificate, as
/// `AZURE_CLIENT_CERTIFICATE_PATH` expects.
pub fn fixture_certificate_pem() -> &'static str {
    FIXTURE_PEM
}

/// Where the fixture PEM file is.
pub fn fixture_certificate_pem_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/graph-app.pem")
}

/// The fixture's private key (PKCS#8 DER), to sign assertions in tests.
pub fn fixture_private_key_pkcs8() -> Vec<u8> {
    pem_block(FIXTURE_PEM, "PRIVATE KEY").expect("the fixture PEM holds a PKCS#8 private key")
}

/// `x5t` of a certificate: base64url (unpadded) SHA-1 of its DER.
pub fn certificate_x5t(certificate_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate_der);
    general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// `x5t#S256` of a certificate: base64url (unpadded) SHA-256 of its DER.
pub fn certificate_x5t_s256(certificate_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate_der);
    general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// The DER of the first PEM block labelled `label` (e.g. `CERTIFICATE`).
pub fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    general_purpose::STANDARD.decode(body).ok()
}

fn add_mailbox(state: &mut State, address: &str, enabled: bool) {
    state.mailboxes.insert(
        address.to_lowercase(),
        Mailbox {
            address: address.to_owned(),
            enabled,
        },
    );
}

/// Routes one request.
fn handle(state: &Mutex<State>, request: &Request) -> Reply {
    let path = request.path.as_str();
    if path == "/graph" || path.starts_with("/graph/") {
        return graph(state, request);
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return upload(state, request, id);
    }
    if let Some((tenant, endpoint)) = identity_route(path) {
        lock(state).tenants.push(tenant.to_owned());
        return match endpoint {
            "authorize" => authorize(state, tenant, request).into(),
            "token" => token(state, tenant, request).into(),
            "devicecode" => device_code(state, tenant, request).into(),
            _ => not_found().into(),
        };
    }
    not_found().into()
}

fn not_found() -> Response {
    Response::text(404, "Not Found\n")
}

/// `/{tenant}/oauth2/v2.0/{endpoint}` -> (tenant, endpoint).
fn identity_route(path: &str) -> Option<(&str, &str)> {
    let (tenant, rest) = path.strip_prefix('/')?.split_once('/')?;
    let endpoint = rest.strip_prefix("oauth2/v2.0/")?;
    (!tenant.is_empty() && !endpoint.contains('/')).then_some((tenant, endpoint))
}

// ---- Identity platform --------------------------------------------------

/// An error in the identity platform's format.
fn aad_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    let timestamp = utc(now_secs()).format(&format).unwrap_or_default();
    let (trace_id, correlation_id) = (uuid(), uuid());
    Response::json(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: \
                 {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn missing_parameter(name: &str) -> Response {
    aad_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn unknown_client(client_id: &str, tenant: &str) -> Response {
    aad_error(
        400,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory \
             '{tenant}'. This can happen if the application has not been installed by the \
             administrator of the tenant or consented to by any user in the tenant. You may have \
             sent your authentication request to the wrong tenant."
        ),
    )
}

/// An error page of the authorization endpoint (shown, not redirected).
fn authorize_page(code: u32, description: &str) -> Response {
    Response::new(400)
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_body(
            format!(
                "<html><body><h1>Sign in</h1><p>AADSTS{code}: {}</p></body></html>\n",
                html_escape(description)
            )
            .into_bytes(),
        )
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: checks the request and redirects
/// with a code (or an error).
fn authorize(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let params = request.query_map();
    let mut state = lock(state);
    state.authorize_requests.push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let client_id = param("client_id");
    if client_id.is_empty() {
        return authorize_page(
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if !state.clients.contains_key(client_id) {
        return authorize_page(
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'."
            ),
        );
    }
    let redirect_uri = param("redirect_uri");
    let registered = state
        .redirect_uris
        .get(client_id)
        .cloned()
        .unwrap_or_default();
    if registered.is_empty() {
        return authorize_page(
            500113,
            "No reply address is registered for the application.",
        );
    }
    let location = url::Url::parse(redirect_uri)
        .ok()
        .filter(|_| registered.iter().any(|r| redirect_matches(r, redirect_uri)));
    let Some(mut location) = location else {
        return authorize_page(
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{client_id}'. Make sure the \
                 redirect URI sent in the request matches one added to your application in the \
                 Azure portal."
            ),
        );
    };
    let state_param = params.get("state").cloned();
    let redirect_error = |mut location: url::Url, error: &str, code: u32, description: &str| {
        {
            let mut query = location.query_pairs_mut();
            query.append_pair("error", error);
            query.append_pair("error_description", &format!("AADSTS{code}: {description}"));
            if let Some(value) = &state_param {
                query.append_pair("state", value);
            }
        }
        Response::new(302).with_header("Location", location.as_str())
    };
    if param("response_type") != "code" {
        return redirect_error(
            location,
            "unsupported_response_type",
            70005,
            "The application requested an unsupported response type.",
        );
    }
    if param("scope").trim().is_empty() {
        return redirect_error(
            location,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    let scopes = match parse_scopes(&state, param("scope")) {
        Ok(scopes) => scopes,
        Err((error, code, description)) => {
            return redirect_error(location, error, code, &description);
        }
    };
    let challenge = param("code_challenge");
    if challenge.is_empty() {
        return redirect_error(
            location,
            "invalid_request",
            50147,
            "Missing code_challenge: this fake requires PKCE.",
        );
    }
    if param("code_challenge_method") != "S256" {
        return redirect_error(
            location,
            "invalid_request",
            501491,
            "code_challenge_method must be S256.",
        );
    }
    let challenge_ok = (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !challenge_ok {
        return redirect_error(
            location,
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        );
    }
    if state.deny {
        return redirect_error(
            location,
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        );
    }
    let code = format!("1.AAAA-fake-code-{}", random_hex(32));
    let grant = Grant {
        principal: Principal::User(state.user.clone()),
        client_id: client_id.to_owned(),
        tenant: tenant.to_owned(),
        resource: scopes.resource,
        permissions: scopes.permissions,
        openid: scopes.openid,
        offline: scopes.offline,
    };
    state.codes.insert(
        code.clone(),
        Code {
            grant,
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            used: false,
        },
    );
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(value) = &state_param {
            query.append_pair("state", value);
        }
        query.append_pair("session_state", &uuid());
    }
    Response::new(302).with_header("Location", location.as_str())
}

/// Whether `requested` matches the `registered` redirect URI: exactly, or,
/// for loopback hosts, with any port.
fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(registered), Ok(requested)) = (url::Url::parse(registered), url::Url::parse(requested))
    else {
        return false;
    };
    let loopback = matches!(
        registered.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    );
    loopback
        && registered.scheme() == requested.scheme()
        && registered.host_str() == requested.host_str()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
}

/// Scopes as the identity platform reads them.
#[derive(Debug)]
struct Scopes {
    resource: String,
    permissions: Vec<String>,
    openid: bool,
    offline: bool,
}

/// Parses a space-separated scope list; errors are (error, code,
/// description).
fn parse_scopes(state: &State, scope: &str) -> Result<Scopes, (&'static str, u32, String)> {
    let mut resource: Option<String> = None;
    let mut permissions: Vec<String> = Vec::new();
    let (mut openid, mut offline) = (false, false);
    for item in scope.split_whitespace() {
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            openid |= lower == "openid";
            offline |= lower == "offline_access";
            continue;
        }
        let (item_resource, permission) = match item.rsplit_once('/') {
            Some((res, perm)) if !res.is_empty() && !perm.is_empty() => {
                (res.trim_end_matches('/').to_owned(), perm.to_owned())
            }
            Some(_) => {
                return Err((
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The \
                         scope {item} is not valid."
                    ),
                ));
            }
            None => (state.graph_resource.clone(), item.to_owned()),
        };
        if !KNOWN_RESOURCES
            .iter()
            .chain([&state.graph_resource.as_str()])
            .any(|known| known.eq_ignore_ascii_case(&item_resource))
        {
            return Err((
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {item_resource} was not found in the tenant. \
                     This can happen if the application has not been installed by the \
                     administrator of the tenant or consented to by any user in the tenant."
                ),
            ));
        }
        match &resource {
            Some(known) if !known.eq_ignore_ascii_case(&item_resource) => {
                return Err((
                    "invalid_scope",
                    28000,
                    format!(
                        "Provided value for the input parameter scope is not valid because it \
                         contains more than one resource. Scope {scope} is not valid."
                    ),
                ));
            }
            Some(_) => {}
            None => resource = Some(item_resource),
        }
        if permission == ".default" {
            permissions.extend(DEFAULT_DELEGATED.iter().map(|p| (*p).to_owned()));
        } else {
            permissions.push(permission);
        }
    }
    let mut seen = HashSet::new();
    permissions.retain(|p| seen.insert(p.to_ascii_lowercase()));
    // Permissions nobody consented to are left out of the grant (and of the
    // token response's `scope`).
    permissions.retain(|p| !state.withheld.contains(&p.to_ascii_lowercase()));
    Ok(Scopes {
        resource: resource.unwrap_or_else(|| state.graph_resource.clone()),
        permissions,
        openid,
        offline,
    })
}

type Form = HashMap<String, String>;

/// `POST /{tenant}/oauth2/v2.0/token`: the four grant types.
fn token(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let form: Form = http::first_wins(
        url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect(),
    );
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut state = lock(state);
    state.total_token_requests += 1;
    *state.token_requests.entry(grant_type.clone()).or_default() += 1;
    state.token_forms.push(form.clone());
    if request.method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let form_type = request.header("content-type").unwrap_or("");
    if !form_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return aad_error(
            400,
            "invalid_request",
            90004,
            "The request isn't properly formatted: expected application/x-www-form-urlencoded.",
        );
    }
    let result = match grant_type.as_str() {
        "" => Err(missing_parameter("grant_type")),
        "authorization_code" => authorization_code(&mut state, tenant, request, &form),
        "refresh_token" => refresh(&mut state, tenant, request, &form),
        "client_credentials" => client_credentials(&mut state, tenant, request, &form),
        DEVICE_CODE_GRANT => device_token(&mut state, tenant, request, &form),
        other => Err(aad_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        )),
    };
    result.unwrap_or_else(|response| response)
}

fn authorization_code(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    let code_value = form.get("code").ok_or_else(|| missing_parameter("code"))?;
    let invalid_code = || {
        aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid.",
        )
    };
    let code = state.codes.get_mut(code_value).ok_or_else(invalid_code)?;
    if code.grant.client_id != client_id {
        return Err(invalid_code());
    }
    if code.used {
        return Err(aad_error(
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        ));
    }
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| missing_parameter("redirect_uri"))?;
    if *redirect_uri != code.redirect_uri {
        return Err(aad_error(
            400,
            "invalid_grant",
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URI of the authorization request."
            ),
        ));
    }
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or("");
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    if general_purpose::URL_SAFE_NO_PAD.encode(digest) != code.challenge {
        return Err(aad_error(
            400,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization \
             request.",
        ));
    }
    code.used = true;
    let grant = code.grant.clone();
    Ok(Response::json(200, &issue_tokens(state, grant)))
}

fn refresh(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    let refresh_token = form
        .get("refresh_token")
        .ok_or_else(|| missing_parameter("refresh_token"))?;
    let Some(stored) = state.refresh_tokens.get(refresh_token) else {
        return Err(aad_error(
            400,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        ));
    };
    match stored.status {
        RefreshStatus::Active => {}
        RefreshStatus::Rotated => {
            return Err(aad_error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'refresh_token' parameter is not valid: it was \
                 already redeemed and replaced by a newer refresh token.",
            ));
        }
        RefreshStatus::Revoked => {
            return Err(aad_error(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is \
                 needed. The user might have changed or reset their password.",
            ));
        }
    }
    if stored.grant.client_id != client_id {
        return Err(aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'refresh_token' parameter is not valid: it was issued to \
             another client.",
        ));
    }
    let mut grant = stored.grant.clone();
    if let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) {
        let asked = parse_scopes(state, scope)
            .map_err(|(error, code, description)| aad_error(400, error, code, &description))?;
        let granted = |p: &String| grant.permissions.iter().any(|g| g.eq_ignore_ascii_case(p));
        if !asked.resource.eq_ignore_ascii_case(&grant.resource)
            || !asked.permissions.iter().all(granted)
        {
            return Err(aad_error(
                400,
                "invalid_grant",
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID \
                     '{client_id}'. Send an interactive authorization request for this user and \
                     resource."
                ),
            ));
        }
        if !asked.permissions.is_empty() {
            grant.permissions = asked.permissions;
        }
    }
    if let Some(stored) = state.refresh_tokens.get_mut(refresh_token) {
        stored.status = RefreshStatus::Rotated;
    }
    grant.offline = true;
    Ok(Response::json(200, &issue_tokens(state, grant)))
}

fn client_credentials(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    let client_id = client_auth(state, tenant, request, form)?;
    if state.clients.get(&client_id).is_some_and(|c| c.public) {
        return Err(aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        ));
    }
    let roles = match state.clients.get(&client_id).and_then(|c| c.app.as_ref()) {
        Some((app_tenant, roles)) if app_tenant.eq_ignore_ascii_case(tenant) => roles.clone(),
        _ => return Err(unknown_client(&client_id, tenant)),
    };
    let scope = form
        .get("scope")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing_parameter("scope"))?;
    let resource = match scope.strip_suffix("/.default") {
        Some(resource) if !scope.contains(char::is_whitespace) => resource.trim_end_matches('/'),
        _ => {
            return Err(aad_error(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            ));
        }
    };
    let known = KNOWN_RESOURCES
        .iter()
        .chain([&state.graph_resource.as_str()])
        .any(|known| known.eq_ignore_ascii_case(resource));
    if !known {
        return Err(aad_error(
            400,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant}."
            ),
        ));
    }
    let grant = Grant {
        principal: Principal::App(client_id.clone()),
        client_id,
        tenant: tenant.to_owned(),
        resource: resource.to_owned(),
        permissions: roles,
        openid: false,
        offline: false,
    };
    let access_token = issue_access(state, grant);
    Ok(Response::json(
        200,
        &json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }),
    ))
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
fn device_code(state: &Mutex<State>, tenant: &str, request: &Request) -> Response {
    let form: Form = http::first_wins(
        url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect(),
    );
    let mut state = lock(state);
    state.device_code_requests += 1;
    if request.method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let Some(client_id) = form.get("client_id").filter(|id| !id.is_empty()) else {
        return missing_parameter("client_id");
    };
    if !state.clients.contains_key(client_id) {
        return unknown_client(client_id, tenant);
    }
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else {
        return missing_parameter("scope");
    };
    let scopes = match parse_scopes(&state, scope) {
        Ok(scopes) => scopes,
        Err((error, code, description)) => return aad_error(400, error, code, &description),
    };
    let device_code = format!("DAQABAAEAAAD-fake-{}", random_hex(32));
    let grant = Grant {
        principal: Principal::User(state.user.clone()),
        client_id: client_id.clone(),
        tenant: tenant.to_owned(),
        resource: scopes.resource,
        permissions: scopes.permissions,
        openid: scopes.openid,
        offline: scopes.offline,
    };
    state.device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            grant,
            pending_polls: 0,
            slowed: false,
            redeemed: false,
        },
    );
    Response::json(
        200,
        &json!({
            "user_code": USER_CODE,
            "device_code": device_code,
            "verification_uri": VERIFICATION_URI,
            "expires_in": 900,
            "interval": 1,
            "message": format!(
                "To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the \
                 code {USER_CODE} to authenticate."
            ),
        }),
    )
}

/// A device code poll at the token endpoint.
fn device_token(
    state: &mut State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<Response, Response> {
    state.device_polls += 1;
    let client_id = client_auth(state, tenant, request, form)?;
    let code = form
        .get("device_code")
        .ok_or_else(|| missing_parameter("device_code"))?;
    let (pending_polls, outcome) = (state.device_pending_polls, state.device_outcome);
    let invalid = || {
        aad_error(
            400,
            "invalid_grant",
            70000,
            "The provided value for the 'device_code' parameter is not valid.",
        )
    };
    let device = state.device_codes.get_mut(code).ok_or_else(invalid)?;
    if device.grant.client_id != client_id {
        return Err(invalid());
    }
    if device.redeemed {
        return Err(aad_error(
            400,
            "invalid_grant",
            54005,
            "The device code was already redeemed.",
        ));
    }
    if outcome == DeviceOutcome::SlowDownOnce && !device.slowed {
        device.slowed = true;
        return Err(aad_error(
            400,
            "slow_down",
            70016,
            "OAuth 2.0 device flow error. The client is polling too quickly; slow down.",
        ));
    }
    if device.pending_polls < pending_polls {
        device.pending_polls += 1;
        return Err(aad_error(
            400,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ));
    }
    match outcome {
        DeviceOutcome::Decline => Err(aad_error(
            400,
            "authorization_declined",
            65004,
            "User declined to consent to access the app.",
        )),
        DeviceOutcome::Expire => Err(aad_error(
            400,
            "expired_token",
            70019,
            "Verification code expired. Have the user retry the sign-in.",
        )),
        DeviceOutcome::Approve | DeviceOutcome::SlowDownOnce => {
            device.redeemed = true;
            let grant = device.grant.clone();
            Ok(Response::json(200, &issue_tokens(state, grant)))
        }
    }
}

/// Authenticates the client: public clients by `client_id` alone,
/// confidential ones by secret (form or HTTP Basic) or by a certificate
/// assertion. Returns the client id.
fn client_auth(
    state: &State,
    tenant: &str,
    request: &Request,
    form: &Form,
) -> Result<String, Response> {
    let basic = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (mut id, mut secret) = (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    );
    if let Some(credentials) = basic {
        let decoded = general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let Some((basic_id, basic_secret)) = decoded.as_deref().and_then(|s| s.split_once(':'))
        else {
            return Err(aad_error(
                401,
                "invalid_client",
                7000216,
                "Malformed HTTP Basic client credentials.",
            ));
        };
        id = Some(form_decode(basic_id));
        secret = Some(form_decode(basic_secret));
    }
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(missing_parameter("client_id"));
    };
    let Some(client) = state.clients.get(&id) else {
        return Err(unknown_client(&id, tenant));
    };
    let assertion_type = form.get("client_assertion_type");
    let assertion = form.get("client_assertion");
    if client.public {
        if secret.is_some() || assertion.is_some() {
            return Err(aad_error(
                401,
                "invalid_client",
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be \
                 presented.",
            ));
        }
        return Ok(id);
    }
    if let Some(assertion) = assertion {
        if assertion_type.map(String::as_str) != Some(CLIENT_ASSERTION_TYPE) {
            return Err(aad_error(
                400,
                "invalid_request",
                90004,
                &format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}."),
            ));
        }
        let token_url = format!("{}/{tenant}/oauth2/v2.0/token", state.base);
        verify_assertion(client, &id, assertion, &token_url)?;
        return Ok(id);
    }
    match (secret, &client.secret) {
        (None, _) => Err(aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )),
        (Some(given), Some(expected)) if given == *expected => Ok(id),
        (Some(_), _) => Err(aad_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{id}'."
            ),
        )),
    }
}

/// Checks a client assertion: an RS256 (or PS256) JWT signed by the app's
/// certificate, naming it in `x5t` or `x5t#S256`, with `aud` the token
/// endpoint, `iss` = `sub` = the client id, a future `exp` and a `jti`.
fn verify_assertion(
    client: &Client,
    client_id: &str,
    assertion: &str,
    token_url: &str,
) -> Result<(), Response> {
    let malformed = || {
        aad_error(
            401,
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let segments: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err(malformed());
    };
    let decode_json = |segment: &str| {
        URL_SAFE_ANY
            .decode(segment)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(Value::is_object)
    };
    let (Some(header), Some(claims), Ok(signature)) = (
        decode_json(header),
        decode_json(claims),
        URL_SAFE_ANY.decode(signature),
    ) else {
        return Err(malformed());
    };
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match header["alg"].as_str() {
        Some("RS256") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &ring::signature::RSA_PSS_2048_8192_SHA256,
        _ => return Err(malformed()),
    };
    let key_not_found = |thumbprint: &str| {
        aad_error(
            401,
            "invalid_client",
            700027,
            &format!(
                "Client assertion failed signature validation. [Reason - The key was not found., \
                 Thumbprint of key used by client: '{thumbprint}']"
            ),
        )
    };
    let x5t = header["x5t"].as_str().map(|t| t.trim_end_matches('='));
    let x5t_s256 = header["x5t#S256"].as_str().map(|t| t.trim_end_matches('='));
    let Some(certificate) = &client.certificate else {
        return Err(key_not_found(x5t.or(x5t_s256).unwrap_or("")));
    };
    let known =
        x5t == Some(certificate.x5t.as_str()) || x5t_s256 == Some(certificate.x5t_s256.as_str());
    if !known {
        return Err(key_not_found(x5t.or(x5t_s256).unwrap_or("")));
    }
    let signed = &assertion[..segments[0].len() + 1 + segments[1].len()];
    ring::signature::UnparsedPublicKey::new(algorithm, &certificate.public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| {
            aad_error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            )
        })?;
    if claims["aud"].as_str() != Some(token_url) {
        return Err(aad_error(
            401,
            "invalid_client",
            700023,
            &format!(
                "Client assertion audience claim does not match Realm issuer. Expected \
                 '{token_url}'."
            ),
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err(aad_error(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let now = now_secs();
    let exp_ok = claims["exp"].as_i64().is_some_and(|exp| exp > now);
    let nbf_ok = claims["nbf"].as_i64().is_none_or(|nbf| nbf <= now + 300);
    if !exp_ok || !nbf_ok {
        return Err(aad_error(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err(malformed());
    }
    Ok(())
}

fn issue_access(state: &mut State, grant: Grant) -> String {
    let token = format!("eyJ0eXAi.fake-{}", random_hex(24));
    state.access_tokens.insert(
        token.clone(),
        AccessGrant {
            grant,
            expired: false,
        },
    );
    token
}

/// Issues the tokens of a delegated grant; returns the response JSON.
fn issue_tokens(state: &mut State, grant: Grant) -> Value {
    let scope = grant
        .permissions
        .iter()
        .map(|p| format!("{}/{p}", grant.resource))
        .collect::<Vec<_>>()
        .join(" ");
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": 3599,
        "ext_expires_in": 3599,
    });
    if grant.openid {
        body["id_token"] = Value::String(id_token(&grant));
    }
    if grant.offline {
        let refresh_token = format!("0.AAA-fake-{}", random_hex(32));
        state.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                grant: grant.clone(),
                status: RefreshStatus::Active,
            },
        );
        body["refresh_token"] = Value::String(refresh_token);
    }
    body["access_token"] = Value::String(issue_access(state, grant));
    body
}

/// An unsigned (`alg: none`) but well-formed v2.0 ID token.
fn id_token(grant: &Grant) -> String {
    let Principal::User(email) = &grant.principal else {
        return String::new();
    };
    let tid = if grant.tenant.len() == 36 && grant.tenant.matches('-').count() == 4 {
        grant.tenant.clone()
    } else {
        FAKE_TENANT_ID.to_owned()
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, email.to_lowercase().as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let oid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let now = now_secs();
    let name = email.split('@').next().unwrap_or(email);
    let header = json!({"typ": "JWT", "alg": "none"});
    let payload = json!({
        "ver": "2.0",
        "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "sub": general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[16..]),
        "aud": grant.client_id,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "name": name,
        "preferred_username": email,
        "email": email,
        "oid": oid,
        "tid": tid,
    });
    let encode = |value: &Value| general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", encode(&header), encode(&payload))
}

// ---- Graph ----------------------------------------------------------------

/// A Graph error body. `innerError`'s ids are filled in by
/// [`finish_graph_response`].
fn graph_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {
            "code": code,
            "message": message,
            "innerError": {"date": graph_date(now_secs()), "request-id": "", "client-request-id": ""},
        }}),
    )
}

fn access_denied() -> Response {
    graph_error(403, "ErrorAccessDenied", ACCESS_DENIED)
}

fn too_large() -> Response {
    graph_error(
        413,
        "RequestEntityTooLarge",
        "The maximum request length supported is 4MB.",
    )
}

fn invalid_token(message: &str) -> Response {
    graph_error(401, "InvalidAuthenticationToken", message).with_header(
        "WWW-Authenticate",
        &format!(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/\
             oauth2/authorize\", client_id=\"{GRAPH_APP_ID}\""
        ),
    )
}

fn item_not_found() -> Response {
    graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Adds `request-id` / `client-request-id` to a Graph response, in its
/// headers and in an error body's `innerError`.
fn finish_graph_response(mut response: Response, request: &Request) -> Response {
    let request_id = uuid();
    let client_request_id = request
        .header("client-request-id")
        .map(str::to_owned)
        .unwrap_or_else(uuid);
    if response.status >= 400
        && let Ok(mut body) = serde_json::from_slice::<Value>(&response.body)
        && let Some(inner) = body["error"]["innerError"].as_object_mut()
    {
        inner.insert("request-id".into(), Value::String(request_id.clone()));
        inner.insert(
            "client-request-id".into(),
            Value::String(client_request_id.clone()),
        );
        response.body = body.to_string().into_bytes();
    }
    response
        .with_header("request-id", &request_id)
        .with_header("client-request-id", &client_request_id)
}

/// A Graph API request: counts it, tracks concurrency, applies faults,
/// serves it.
fn graph(state: &Mutex<State>, request: &Request) -> Reply {
    let fault = {
        let mut state = lock(state);
        state.graph_requests += 1;
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.faults.pop_front().or_else(|| state.forever.clone())
    };
    let reply = match fault {
        None => Reply::Respond(graph_api(state, request)),
        Some(Fault::Slow(delay)) => {
            std::thread::sleep(delay);
            Reply::Respond(graph_api(state, request))
        }
        Some(Fault::DropConnection) => Reply::Drop,
        Some(Fault::LoseAnswer) => {
            graph_api(state, request);
            Reply::Drop
        }
        Some(Fault::Status429 { retry_after_secs }) => {
            let response = graph_error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            );
            Reply::Respond(match retry_after_secs {
                Some(secs) => response.with_header("Retry-After", &secs.to_string()),
                None => response,
            })
        }
        Some(Fault::Status503) => Reply::Respond(graph_error(
            503,
            "ServiceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        )),
        Some(Fault::Status504) => Reply::Respond(graph_error(
            504,
            "GatewayTimeout",
            "The gateway did not receive a timely response from the upstream server.",
        )),
        Some(Fault::Error {
            status,
            code,
            message,
        }) => Reply::Respond(graph_error(status, &code, &message)),
    };
    let reply = match reply {
        Reply::Respond(response) => Reply::Respond(finish_graph_response(response, request)),
        Reply::Drop => Reply::Drop,
    };
    let status = match &reply {
        Reply::Respond(response) => response.status,
        Reply::Drop => 0,
    };
    let mut state = lock(state);
    state.in_flight -= 1;
    state
        .graph_log
        .push((request.method.clone(), request.path.clone(), status));
    reply
}

/// Which mailbox a request names.
#[derive(Debug)]
enum Target {
    Me,
    User(String),
}

/// A Graph operation the fake serves.
#[derive(Debug)]
enum Operation {
    Profile,
    SendMail,
    CreateDraft,
    GetDraft(String),
    DeleteDraft(String),
    AddAttachment(String),
    CreateUploadSession(String),
    ListAttachments(String),
    SendDraft(String),
    ListSentItems,
}

impl Operation {
    /// The delegated scopes or app roles of which the operation needs one.
    fn permission(&self) -> &'static [&'static str] {
        match self {
            Operation::Profile => &["User.Read"],
            Operation::SendMail | Operation::SendDraft(_) => &["Mail.Send"],
            Operation::ListSentItems => &["Mail.Read", "Mail.ReadWrite"],
            _ => &["Mail.ReadWrite"],
        }
    }
}

/// Parses `/graph/v1.0/...` into (target, operation).
fn graph_route(request: &Request) -> Result<(Target, Operation), Response> {
    let Some(rest) = request.path.strip_prefix("/graph/v1.0/") else {
        let version = request
            .path
            .trim_start_matches("/graph")
            .trim_start_matches('/');
        let version = version.split('/').next().unwrap_or("");
        return Err(graph_error(
            400,
            "BadRequest",
            &format!("Invalid version: {version}"),
        ));
    };
    let segments: Vec<String> = rest
        .split('/')
        .map(|segment| percent_decode(segment).unwrap_or_else(|| segment.to_owned()))
        .collect();
    let not_found = |segment: &str| {
        graph_error(
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
        )
    };
    let (target, rest) = match segments.as_slice() {
        [first, rest @ ..] if first.eq_ignore_ascii_case("me") => (Target::Me, rest),
        [first, id, rest @ ..] if first.eq_ignore_ascii_case("users") && !id.is_empty() => {
            (Target::User(id.clone()), rest)
        }
        [first, ..] => return Err(not_found(first)),
        [] => return Err(not_found("")),
    };
    let is = |segment: &String, name: &str| segment.eq_ignore_ascii_case(name);
    let method = request.method.as_str();
    let operation = match (rest, method) {
        ([], "GET") if matches!(target, Target::Me) => Some(Operation::Profile),
        ([send], "POST") if is(send, "sendMail") => Some(Operation::SendMail),
        ([messages], "POST") if is(messages, "messages") => Some(Operation::CreateDraft),
        ([messages, id], "GET") if is(messages, "messages") => {
            Some(Operation::GetDraft(id.clone()))
        }
        ([messages, id], "DELETE") if is(messages, "messages") => {
            Some(Operation::DeleteDraft(id.clone()))
        }
        ([messages, id, attachments], "POST")
            if is(messages, "messages") && is(attachments, "attachments") =>
        {
            Some(Operation::AddAttachment(id.clone()))
        }
        ([messages, id, attachments], "GET")
            if is(messages, "messages") && is(attachments, "attachments") =>
        {
            Some(Operation::ListAttachments(id.clone()))
        }
        ([folders, folder, messages], "GET")
            if is(folders, "mailFolders")
                && is(folder, "sentitems")
                && is(messages, "messages") =>
        {
            Some(Operation::ListSentItems)
        }
        ([messages, id, attachments, create], "POST")
            if is(messages, "messages")
                && is(attachments, "attachments")
                && is(create, "createUploadSession") =>
        {
            Some(Operation::CreateUploadSession(id.clone()))
        }
        ([messages, id, send], "POST") if is(messages, "messages") && is(send, "send") => {
            Some(Operation::SendDraft(id.clone()))
        }
        _ => None,
    };
    let Some(operation) = operation else {
        let known = match rest {
            [] => matches!(target, Target::Me),
            [one] => is(one, "sendMail") || is(one, "messages"),
            [messages, _] => is(messages, "messages"),
            [messages, _, last] => {
                is(messages, "messages") && (is(last, "attachments") || is(last, "send"))
            }
            [messages, _, attachments, create] => {
                is(messages, "messages")
                    && is(attachments, "attachments")
                    && is(create, "createUploadSession")
            }
            _ => false,
        };
        return Err(if known {
            graph_error(
                405,
                "Request_BadRequest",
                &format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        } else {
            not_found(rest.last().map(String::as_str).unwrap_or(""))
        });
    };
    Ok((target, operation))
}

/// Serves one Graph API request (after faults).
fn graph_api(state: &Mutex<State>, request: &Request) -> Response {
    let result = (|| {
        if request.body.len() > MAX_REQUEST_BYTES {
            return Err(too_large());
        }
        let mut guard = lock(state);
        let state = &mut *guard;
        let (token, grant) = authenticate(state, request)?;
        let (target, operation) = graph_route(request)?;
        let mailbox = resolve_mailbox(state, &grant, &target, operation.permission())?;
        match operation {
            Operation::Profile => Ok(profile(state, &mailbox)),
            Operation::SendMail => send_mail(state, request, &mailbox, &token),
            Operation::CreateDraft => create_draft(state, request, &mailbox),
            Operation::GetDraft(id) => {
                let draft = find_draft(state, &mailbox, &id)?;
                Ok(Response::json(200, &draft_json(state, draft)))
            }
            Operation::DeleteDraft(id) => {
                find_draft(state, &mailbox, &id)?;
                state.drafts.retain(|draft| draft.id != id);
                state.sessions.retain(|_, session| session.draft_id != id);
                state.deleted_drafts += 1;
                Ok(Response::new(204))
            }
            Operation::AddAttachment(id) => add_attachment(state, request, &mailbox, &id),
            Operation::CreateUploadSession(id) => {
                create_upload_session(state, request, &mailbox, &id)
            }
            Operation::SendDraft(id) => send_draft(state, &mailbox, &id, &token),
            Operation::ListAttachments(id) => {
                let draft = find_draft(state, &mailbox, &id)?;
                let value: Vec<Value> = draft
                    .attachments
                    .iter()
                    .map(|a| json!({"id": a.id, "name": a.name, "size": a.bytes.len()}))
                    .collect();
                Ok(Response::json(200, &json!({ "value": value })))
            }
            Operation::ListSentItems => list_sent_items(state, request, &mailbox),
        }
    })();
    result.unwrap_or_else(|response| response)
}

/// Checks the bearer token; returns it and its grant.
fn authenticate(state: &State, request: &Request) -> Result<(String, Grant), Response> {
    let header = request.header("authorization").unwrap_or("").trim();
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    if token.is_empty() {
        return Err(invalid_token("Access token is empty."));
    }
    let Some(access) = state.access_tokens.get(token) else {
        return Err(invalid_token(
            "CompactToken parsing failed with error code: 80049217",
        ));
    };
    if access.expired {
        return Err(invalid_token(
            "Access token has expired or is not yet valid.",
        ));
    }
    let resource = &access.grant.resource;
    if !resource.eq_ignore_ascii_case(&state.graph_resource)
        && !resource.eq_ignore_ascii_case(GRAPH_APP_ID)
    {
        return Err(invalid_token(
            "Access token validation failure. Invalid audience.",
        ));
    }
    Ok((token.to_owned(), access.grant.clone()))
}

/// Checks the permission and finds the mailbox a request may use; returns
/// its address.
fn resolve_mailbox(
    state: &State,
    grant: &Grant,
    target: &Target,
    permission: &[&str],
) -> Result<String, Response> {
    let address = match (target, &grant.principal) {
        (Target::Me, Principal::App(_)) => {
            return Err(graph_error(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            ));
        }
        (Target::Me, Principal::User(user)) => user.clone(),
        (Target::User(id), _) => id.clone(),
    };
    if !grant.permissions.iter().any(|p| {
        permission
            .iter()
            .any(|needed| p.eq_ignore_ascii_case(needed))
    }) {
        return Err(access_denied());
    }
    match &grant.principal {
        Principal::User(user) if !address.eq_ignore_ascii_case(user) => {
            return Err(access_denied());
        }
        Principal::User(_) => {}
        Principal::App(_) => {
            if !state.mailboxes.contains_key(&address.to_lowercase()) {
                return Err(invalid_user(&address));
            }
            if state
                .app_allowed
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&address.to_lowercase()))
            {
                return Err(access_denied());
            }
        }
    }
    let Some(mailbox) = state.mailboxes.get(&address.to_lowercase()) else {
        return Err(invalid_user(&address));
    };
    if !mailbox.enabled {
        return Err(graph_error(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    Ok(mailbox.address.clone())
}

fn invalid_user(address: &str) -> Response {
    graph_error(
        404,
        "ErrorInvalidUser",
        &format!("The requested user '{address}' is invalid."),
    )
}

/// `GET /me`.
fn profile(state: &State, mailbox: &str) -> Response {
    let name = mailbox.split('@').next().unwrap_or(mailbox);
    let digest = ring::digest::digest(&ring::digest::SHA256, mailbox.to_lowercase().as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Response::json(
        200,
        &json!({
            "@odata.context": format!("{}/graph/v1.0/$metadata#users/$entity", state.base),
            "id": format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]),
            "displayName": name,
            "mail": mailbox,
            "userPrincipalName": mailbox,
        }),
    )
}

/// The media type of a request, lowercased, without parameters.
fn media_type(request: &Request) -> String {
    request
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A request body as Graph reads it: base64 MIME or JSON.
#[derive(Debug)]
enum Body {
    Mime(Vec<u8>),
    Json(Value),
}

fn read_body(request: &Request) -> Result<Body, Response> {
    match media_type(request).as_str() {
        "text/plain" => {
            let text: Vec<u8> = request
                .body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            match general_purpose::STANDARD.decode(&text) {
                Ok(mime) if !mime.is_empty() => Ok(Body::Mime(mime)),
                _ => Err(graph_error(
                    400,
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                )),
            }
        }
        "application/json" => {
            if request.body.iter().all(u8::is_ascii_whitespace) {
                return Err(graph_error(
                    400,
                    "BadRequest",
                    "Empty Payload. JSON content expected.",
                ));
            }
            serde_json::from_slice::<Value>(&request.body)
                .ok()
                .filter(Value::is_object)
                .map(Body::Json)
                .ok_or_else(|| {
                    graph_error(
                        400,
                        "RequestBodyRead",
                        "Invalid JSON. A JSON object was expected.",
                    )
                })
        }
        other => Err(graph_error(
            415,
            "UnsupportedMediaType",
            &format!(
                "The content type '{other}' is not supported: use application/json, or \
                 text/plain for base64 MIME."
            ),
        )),
    }
}

fn no_recipients() -> Response {
    graph_error(
        400,
        "ErrorInvalidRecipients",
        "At least one recipient is not valid., A message can't be sent because it contains no \
         recipients.",
    )
}

/// Whether a JSON message has at least one recipient with an address.
fn json_has_recipient(message: &Value) -> bool {
    ["toRecipients", "ccRecipients", "bccRecipients"]
        .iter()
        .filter_map(|field| message[field].as_array())
        .flatten()
        .any(|recipient| {
            recipient["emailAddress"]["address"]
                .as_str()
                .is_some_and(|address| !address.trim().is_empty())
        })
}

/// `POST .../sendMail`.
fn send_mail(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    token: &str,
) -> Result<Response, Response> {
    let (via, mime, json) = match read_body(request)? {
        Body::Mime(mime) => {
            if !has_recipient(&mime) {
                return Err(no_recipients());
            }
            file_sent_copy(state, mailbox, &mime);
            ("sendMail-mime", mime, None)
        }
        Body::Json(body) => {
            let Some(message) = parameter(&body, "Message").filter(|m| m.is_object()) else {
                return Err(graph_error(
                    400,
                    "ErrorInvalidParameter",
                    "The value of the parameter 'Message' is empty.",
                ));
            };
            if !json_has_recipient(message) {
                return Err(no_recipients());
            }
            ("sendMail-json", Vec::new(), Some(body))
        }
    };
    state.delivered.push(Delivered {
        mailbox: mailbox.to_owned(),
        via: via.to_owned(),
        mime,
        json,
        attachments: Vec::new(),
        access_token: token.to_owned(),
    });
    Ok(Response::new(202))
}

/// The action parameter `name` of a JSON body. Graph matches these names
/// without regard to case: the generated SDKs send `Message`, the docs
/// show `message`.
fn parameter<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// `POST .../messages`: a draft from base64 MIME or JSON.
fn create_draft(state: &mut State, request: &Request, mailbox: &str) -> Result<Response, Response> {
    let (mime, json) = match read_body(request)? {
        Body::Mime(mime) => (mime, None),
        Body::Json(message) => (Vec::new(), Some(message)),
    };
    let subject = match &json {
        Some(message) => message["subject"].as_str().unwrap_or("").to_owned(),
        None => header_value(&mime, "subject").unwrap_or_default(),
    };
    let internet_message_id = header_value(&mime, "message-id").unwrap_or_else(|| {
        format!(
            "<{}@{}.prod.outlook.com>",
            random_hex(12),
            random_hex(4).to_uppercase()
        )
    });
    let draft = StoredDraft {
        id: graph_id(),
        mailbox: mailbox.to_owned(),
        mime,
        json,
        attachments: Vec::new(),
        subject,
        created: iso_time(now_secs()),
        conversation_id: graph_id(),
        internet_message_id,
    };
    let body = draft_json(state, &draft);
    state.drafts.push(draft);
    Ok(Response::json(201, &body))
}

/// A draft as Graph shows it (a few realistic fields).
fn draft_json(state: &State, draft: &StoredDraft) -> Value {
    json!({
        "@odata.context": format!(
            "{}/graph/v1.0/$metadata#users('{}')/messages/$entity",
            state.base, draft.mailbox
        ),
        "@odata.etag": format!("W/\"{}\"", random_hex(8)),
        "id": draft.id,
        "createdDateTime": draft.created,
        "lastModifiedDateTime": draft.created,
        "changeKey": random_hex(8),
        "categories": [],
        "hasAttachments": !draft.attachments.is_empty(),
        "internetMessageId": draft.internet_message_id,
        "subject": draft.subject,
        "importance": "normal",
        "parentFolderId": "AQMkADrafts",
        "conversationId": draft.conversation_id,
        "isRead": true,
        "isDraft": true,
        "webLink": format!(
            "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
            draft.id
        ),
    })
}

fn find_draft<'a>(state: &'a State, mailbox: &str, id: &str) -> Result<&'a StoredDraft, Response> {
    state
        .drafts
        .iter()
        .find(|draft| draft.id == id && draft.mailbox.eq_ignore_ascii_case(mailbox))
        .ok_or_else(item_not_found)
}

fn find_draft_mut<'a>(
    state: &'a mut State,
    mailbox: &str,
    id: &str,
) -> Result<&'a mut StoredDraft, Response> {
    state
        .drafts
        .iter_mut()
        .find(|draft| draft.id == id && draft.mailbox.eq_ignore_ascii_case(mailbox))
        .ok_or_else(item_not_found)
}

/// `POST .../messages/{id}/attachments`: a file attachment under 3 MiB.
fn add_attachment(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    id: &str,
) -> Result<Response, Response> {
    find_draft(state, mailbox, id)?;
    let Body::Json(body) = read_body(request)? else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "Attachments are posted as application/json.",
        ));
    };
    if body["@odata.type"].as_str() != Some("#microsoft.graph.fileAttachment") {
        return Err(graph_error(
            400,
            "RequestBodyRead",
            "The attachment must have \"@odata.type\": \"#microsoft.graph.fileAttachment\".",
        ));
    }
    let name = body["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'Name' is empty.",
        ));
    }
    let encoded = body["contentBytes"].as_str().unwrap_or("");
    let Ok(bytes) = general_purpose::STANDARD.decode(encoded) else {
        return Err(graph_error(
            400,
            "RequestBodyRead",
            "Cannot convert the literal value of 'contentBytes' to the expected type \
             'Edm.Binary'.",
        ));
    };
    if bytes.len() as u64 >= UPLOAD_SESSION_MIN_BYTES {
        return Err(too_large());
    }
    let attachment = Attachment {
        id: graph_id(),
        name,
        content_type: body["contentType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        content_id: body["contentId"].as_str().map(str::to_owned),
        is_inline: body["isInline"].as_bool().unwrap_or(false),
        bytes,
        via: "direct".to_owned(),
    };
    let response = json!({
        "@odata.context": format!(
            "{}/graph/v1.0/$metadata#users('{mailbox}')/messages('{id}')/attachments/$entity",
            state.base
        ),
        "@odata.type": "#microsoft.graph.fileAttachment",
        "@odata.mediaContentType": attachment.content_type,
        "id": attachment.id,
        "lastModifiedDateTime": iso_time(now_secs()),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.bytes.len(),
        "isInline": attachment.is_inline,
        "contentId": attachment.content_id,
        "contentLocation": null,
        "contentBytes": encoded,
    });
    find_draft_mut(state, mailbox, id)?
        .attachments
        .push(attachment);
    Ok(Response::json(201, &response))
}

/// `POST .../messages/{id}/attachments/createUploadSession`.
fn create_upload_session(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    id: &str,
) -> Result<Response, Response> {
    find_draft(state, mailbox, id)?;
    let Body::Json(body) = read_body(request)? else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "createUploadSession takes application/json.",
        ));
    };
    let item = parameter(&body, "AttachmentItem")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| {
            graph_error(
                400,
                "ErrorInvalidParameter",
                "The value of the parameter 'AttachmentItem' is empty.",
            )
        })?;
    if !item["attachmentType"]
        .as_str()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("file"))
    {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "AttachmentItem.attachmentType must be 'file'.",
        ));
    }
    let name = item["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'AttachmentItem.Name' is empty.",
        ));
    }
    let Some(size) = item["size"].as_u64().filter(|&size| size > 0) else {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "AttachmentItem.size must be a positive number of bytes.",
        ));
    };
    if size > MAX_ATTACHMENT_BYTES {
        return Err(graph_error(
            400,
            "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize",
            "The attachment size exceeds the maximum of 150 MB for an upload session.",
        ));
    }
    if state.enforce_session_minimum && size < UPLOAD_SESSION_MIN_BYTES {
        return Err(graph_error(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be at least 3 MB for an upload session; attach smaller files \
             with a single POST to the attachments navigation property.",
        ));
    }
    let session_id = random_hex(16);
    let authtoken = format!("eyJhbGciOiJSUzI1NiJ9.fake-{}", random_hex(24));
    let expires = iso_time(now_secs() + 6 * 3600);
    state.sessions.insert(
        session_id.clone(),
        UploadSession {
            authtoken: authtoken.clone(),
            mailbox: mailbox.to_owned(),
            draft_id: id.to_owned(),
            name,
            content_type: item["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_owned(),
            content_id: item["contentId"].as_str().map(str::to_owned),
            is_inline: item["isInline"].as_bool().unwrap_or(false),
            size,
            received: Vec::new(),
            expires: expires.clone(),
        },
    );
    Ok(Response::json(
        201,
        &json!({
            "@odata.context": format!(
                "{}/graph/v1.0/$metadata#microsoft.graph.uploadSession",
                state.base
            ),
            "uploadUrl": format!(
                "{}/upload/{session_id}?authtoken={authtoken}",
                state.upload_base.as_deref().unwrap_or(&state.base)
            ),
            "expirationDateTime": expires,
            "nextExpectedRanges": ["0-"],
        }),
    ))
}

/// `POST .../messages/{id}/send`.
fn send_draft(
    state: &mut State,
    mailbox: &str,
    id: &str,
    token: &str,
) -> Result<Response, Response> {
    let draft = find_draft(state, mailbox, id)?.clone();
    let has_recipient = match &draft.json {
        Some(message) => json_has_recipient(message),
        None => has_recipient(&draft.mime),
    };
    if !has_recipient {
        return Err(no_recipients());
    }
    state.drafts.retain(|d| d.id != draft.id);
    state
        .sessions
        .retain(|_, session| session.draft_id != draft.id);
    // The draft leaves Drafts; its sent copy gets a new id in Sent Items.
    state.sent_items.push((
        draft.mailbox.clone(),
        draft.internet_message_id.clone(),
        graph_id(),
    ));
    state.delivered.push(Delivered {
        mailbox: draft.mailbox,
        via: "draft".to_owned(),
        mime: draft.mime,
        json: draft.json,
        attachments: draft.attachments,
        access_token: token.to_owned(),
    });
    Ok(Response::new(202))
}

/// Exchange files a copy of each sent message in Sent Items.
fn file_sent_copy(state: &mut State, mailbox: &str, mime: &[u8]) {
    if let Some(message_id) = header_value(mime, "message-id") {
        state
            .sent_items
            .push((mailbox.to_owned(), message_id, graph_id()));
    }
}

/// `GET .../mailFolders/sentitems/messages?$filter=internetMessageId eq '…'`:
/// the only filter the fake understands (Graph's OData string literal, `''`
/// for a quote).
fn list_sent_items(state: &State, request: &Request, mailbox: &str) -> Result<Response, Response> {
    let query = request.query_map();
    let wanted = match query.get("$filter") {
        None => None,
        Some(filter) => {
            let literal = filter
                .trim()
                .strip_prefix("internetMessageId eq '")
                .and_then(|rest| rest.strip_suffix('\''))
                .ok_or_else(|| {
                    graph_error(
                        400,
                        "BadRequest",
                        &format!("Invalid filter clause: the fake understands only internetMessageId eq '...', not {filter}"),
                    )
                })?;
            Some(literal.replace("''", "'"))
        }
    };
    let value: Vec<Value> = state
        .sent_items
        .iter()
        .filter(|(m, message_id, _)| {
            m.eq_ignore_ascii_case(mailbox) && wanted.as_ref().is_none_or(|w| w == message_id)
        })
        .map(|(_, message_id, id)| json!({"id": id, "internetMessageId": message_id}))
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "@odata.context": format!("{}/graph/v1.0/$metadata#users('{mailbox}')/mailFolders('sentitems')/messages", state.base),
            "value": value,
        }),
    ))
}

// ---- Upload URLs ------------------------------------------------------------

/// A request to an upload URL (pre-authenticated: no `Authorization`).
fn upload(state: &Mutex<State>, request: &Request, session_id: &str) -> Reply {
    let mut guard = lock(state);
    let state = &mut *guard;
    let had_authorization = request.header("authorization").is_some();
    if had_authorization {
        state.uploads_with_authorization += 1;
    }
    if request.method == "PUT" {
        let index = state.chunk_puts;
        state.chunk_puts += 1;
        let range = request
            .header("content-range")
            .and_then(parse_content_range);
        let (start, end, total) = range.unwrap_or((0, 0, 0));
        let mut chunk = Chunk {
            session: session_id.to_owned(),
            start,
            end,
            total,
            len: request.body.len(),
            had_authorization,
            status: 0,
        };
        if state.fail_chunk_at == Some(index) {
            state.fail_chunk_at = None;
            state.chunks.push(chunk);
            return Reply::Drop;
        }
        let response = upload_request(state, request, session_id, had_authorization, range);
        let response = finish_graph_response(response, request);
        chunk.status = response.status;
        if state.lose_chunk_answer_at == Some(index) {
            state.lose_chunk_answer_at = None;
            chunk.status = 0;
            state.chunks.push(chunk);
            return Reply::Drop;
        }
        state.chunks.push(chunk);
        return response.into();
    }
    let response = upload_request(state, request, session_id, had_authorization, None);
    finish_graph_response(response, request).into()
}

fn upload_request(
    state: &mut State,
    request: &Request,
    session_id: &str,
    had_authorization: bool,
    range: Option<(u64, u64, u64)>,
) -> Response {
    if had_authorization {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: do not send an Authorization header with \
             requests to it.",
        );
    }
    let Some(session) = state.sessions.get_mut(session_id) else {
        return item_not_found();
    };
    if request.query_map().get("authtoken") != Some(&session.authtoken) {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "The authtoken of the upload URL is missing or invalid.",
        );
    }
    match request.method.as_str() {
        "GET" => Response::json(200, &session_status(session)),
        "DELETE" => {
            state.sessions.remove(session_id);
            Response::new(204)
        }
        "PUT" => put_chunk(state, request, session_id, range),
        _ => graph_error(
            405,
            "Request_BadRequest",
            "An upload URL takes PUT, GET and DELETE.",
        ),
    }
}

fn session_status(session: &UploadSession) -> Value {
    json!({
        "expirationDateTime": session.expires,
        "nextExpectedRanges": [session.received.len().to_string()],
    })
}

fn put_chunk(
    state: &mut State,
    request: &Request,
    session_id: &str,
    range: Option<(u64, u64, u64)>,
) -> Response {
    let invalid = |message: &str| graph_error(400, "InvalidRequest", message);
    let Some(session) = state.sessions.get_mut(session_id) else {
        return item_not_found();
    };
    let Some((start, end, total)) = range else {
        return invalid("The Content-Range header is missing or malformed.");
    };
    if request.header("content-length").is_none() {
        return graph_error(
            411,
            "LengthRequired",
            "The Content-Length header is required.",
        );
    }
    let body = &request.body;
    if (end - start + 1) as usize != body.len() {
        return invalid("The Content-Range header does not match the length of the body.");
    }
    if body.len() > MAX_CHUNK_BYTES {
        return invalid("The Content-Range header length exceeds the chunk size limit of 4 MB.");
    }
    if total != session.size {
        return invalid(&format!(
            "The Content-Range total {total} does not match the upload session's size {}.",
            session.size
        ));
    }
    let next = session.received.len() as u64;
    if start != next {
        return Response::json(
            416,
            &json!({
                "error": {
                    "code": "InvalidRange",
                    "message": format!(
                        "The uploaded fragment must start at byte {next}, not {start}. Expected \
                         ranges: {next}-"
                    ),
                    "innerError": {"date": graph_date(now_secs()), "request-id": "", "client-request-id": ""},
                },
                "nextExpectedRanges": [next.to_string()],
            }),
        );
    }
    session.received.extend_from_slice(body);
    if (session.received.len() as u64) < session.size {
        return Response::json(
            200,
            &json!({
                "@odata.context": format!(
                    "{}/graph/v1.0/$metadata#microsoft.graph.uploadSession",
                    state.base
                ),
                "expirationDateTime": session.expires,
                "nextExpectedRanges": [session.received.len().to_string()],
            }),
        );
    }
    let Some(session) = state.sessions.remove(session_id) else {
        return item_not_found();
    };
    let attachment = Attachment {
        id: graph_id(),
        name: session.name,
        content_type: session.content_type,
        content_id: session.content_id,
        is_inline: session.is_inline,
        bytes: session.received,
        via: "upload-session".to_owned(),
    };
    let location = format!(
        "{}/graph/v1.0/users('{}')/messages('{}')/attachments('{}')",
        state.base, session.mailbox, session.draft_id, attachment.id
    );
    match find_draft_mut(state, &session.mailbox, &session.draft_id) {
        Ok(draft) => draft.attachments.push(attachment),
        Err(response) => return response,
    }
    Response::new(201).with_header("Location", &location)
}

/// Parses `bytes START-END/TOTAL`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let (start, end, total): (u64, u64, u64) = (
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (start <= end && end < total).then_some((start, end, total))
}

// ---- Small helpers ------------------------------------------------------------

/// Reads an X.509 certificate (DER or PEM): its RSA public key and
/// thumbprints.
fn parse_certificate(input: &[u8]) -> Option<Certificate> {
    let der = match std::str::from_utf8(input) {
        Ok(text) if text.contains("-----BEGIN") => pem_block(text, "CERTIFICATE")?,
        _ => input.to_vec(),
    };
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
    //   OPTIONAL, serialNumber, signature, issuer, validity, subject,
    //   subjectPublicKeyInfo, ... }, ... }
    let (tag, certificate, _) = der_next(&der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der_next(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = der_next(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = der_next(rest)?.2;
    }
    let (tag, spki, _) = der_next(rest)?;
    if tag != 0x30 {
        return None;
    }
    // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }
    let (tag, algorithm, after) = der_next(spki)?;
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if tag != 0x30 || !algorithm.starts_with(RSA_ENCRYPTION) {
        return None;
    }
    let (tag, bits, _) = der_next(after)?;
    if tag != 0x03 {
        return None;
    }
    let public_key = bits.strip_prefix(&[0])?.to_vec();
    Some(Certificate {
        public_key,
        x5t: certificate_x5t(&der),
        x5t_s256: certificate_x5t_s256(&der),
    })
}

/// Splits one DER element off `input`: (tag, contents, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len_byte, mut rest) = rest.split_first()?;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        len_bytes
            .iter()
            .fold(0, |len, &b| (len << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The unfolded fields of a message's header section.
fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head_end = [text.find("\r\n\r\n"), text.find("\n\n")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text[..head_end].lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        }
    }
    fields
}

/// The first `name` field of a message's header, trimmed.
fn header_value(raw: &[u8], name: &str) -> Option<String> {
    header_fields(raw)
        .into_iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// Whether the message's header section has a non-empty To, Cc or Bcc.
fn has_recipient(raw: &[u8]) -> bool {
    header_fields(raw).iter().any(|(name, value)| {
        matches!(name.as_str(), "to" | "cc" | "bcc") && !value.trim().is_empty()
    })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn random_bytes(len: usize) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0; len];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    buf
}

fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random version 4 UUID.
fn uuid() -> String {
    let mut bytes = random_bytes(16);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// An Exchange-style item id: `AAMkAD` + base64url with padding (may hold
/// `-`, `_` and `=`).
fn graph_id() -> String {
    format!(
        "AAMkAD{}",
        general_purpose::URL_SAFE.encode(random_bytes(40))
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn utc(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-21T10:00:00Z`.
fn iso_time(secs: i64) -> String {
    let format = time::format_description::well_known::Rfc3339;
    utc(secs).format(&format).unwrap_or_default()
}

/// Graph's `innerError.date`: `2026-11-21T10:00:00`.
fn graph_date(secs: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    utc(secs).format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_795_255_200), "2026-11-21T10:00:00Z");
    }

    #[test]
    fn fixture_certificate_parses() {
        let certificate = parse_certificate(fixture_certificate_der()).unwrap();
        assert_eq!(certificate.x5t.len(), 27);
        let from_pem = parse_certificate(fixture_certificate_pem().as_bytes()).unwrap();
        assert_eq!(from_pem.public_key, certificate.public_key);
    }

    #[test]
    fn loopback_redirects_ignore_the_port() {
        let registered = "http://localhost/callback";
        assert!(redirect_matches(
            registered,
            "http://localhost:48888/callback"
        ));
        assert!(redirect_matches(
            "http://localhost:48888/callback",
            "http://localhost:5000/callback"
        ));
        assert!(!redirect_matches(
            registered,
            "http://127.0.0.1:48888/callback"
        ));
        assert!(!redirect_matches(
            registered,
            "http://localhost:48888/other"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
    }
}
