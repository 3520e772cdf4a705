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
//!
//! This file is the public face and the router; `identity.rs` serves the
//! identity platform and `graph.rs` Graph and the upload URLs, and both
//! import only `state.rs`.

mod graph;
mod identity;
mod state;

pub use crate::fake_common::pem_block;
pub use identity::{
    certificate_x5t, certificate_x5t_s256, fixture_certificate_der, fixture_certificate_pem,
    fixture_certificate_pem_path, fixture_private_key_pkcs8,
};
pub use state::{
    Attachment, CLIENT_ASSERTION_TYPE, Chunk, DEFAULT_USER, DEVICE_CODE_GRANT, Delivered,
    DeviceOutcome, Draft, FAKE_TENANT_ID, Fault, GRAPH_APP_ID, GRAPH_DEFAULT_SCOPE, GRAPH_RESOURCE,
    MAIL_READWRITE, MAIL_SEND, MAX_ATTACHMENT_BYTES, MAX_CHUNK_BYTES, MAX_REQUEST_BYTES,
    MESSAGES_PER_MINUTE, RECIPIENTS_PER_DAY, UPLOAD_SESSION_MIN_BYTES, USER_CODE, USER_READ,
    VERIFICATION_URI,
};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::http::{self, Reply, Request, Server, lock};
use state::{Grant, Mailbox, Principal, RefreshStatus, State};

fn add_mailbox(state: &mut State, address: &str, enabled: bool) {
    state.mailboxes.insert(
        address.to_lowercase(),
        Mailbox {
            address: address.to_owned(),
            enabled,
        },
    );
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
            identity::parse_certificate(cert)
                .expect("an X.509 certificate with an RSA key, DER or PEM")
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

    /// Hands out upload URLs on `base` (another server: one that never
    /// answers, say), as Graph's upload host can fail on its own.
    pub fn set_upload_base(&self, base: &str) {
        lock(&self.state).upload_base = Some(base.trim_end_matches('/').to_owned());
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
        let parsed = identity::parse_scopes(&state, scopes).expect("valid scopes");
        let grant = Grant {
            principal: Principal::User(user.to_owned()),
            client_id: "test-issued".to_owned(),
            tenant: "organizations".to_owned(),
            resource: parsed.resource,
            permissions: parsed.permissions,
            openid: false,
            offline: false,
        };
        identity::issue_access(&mut state, grant)
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
        identity::issue_access(&mut state, grant)
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

    /// The copies `address` received of the MIME messages delivered so far
    /// (see [`copy_for`](crate::fake_common::copy_for): no Bcc field).
    pub fn inbox(&self, address: &str) -> Vec<Vec<u8>> {
        let delivered = self.delivered();
        delivered
            .iter()
            .filter_map(|m| crate::fake_common::copy_for(&m.mime, address))
            .collect()
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

    /// Enforces a message rate limit: at most `messages` sent (sendMail or
    /// a draft's send) per mailbox in any 60 seconds; Exchange Online's is
    /// 30 ([`MESSAGES_PER_MINUTE`]). Over it, a send gets 429
    /// `TooManyRequests` with `Retry-After` (seconds until the window has
    /// room) and is counted by [`throttled`](Self::throttled). Off by
    /// default.
    pub fn set_per_minute_limit(&self, messages: u64) {
        lock(&self.state).quotas.per_minute = Some(messages);
    }

    /// Enforces a recipient rate limit: at most `recipients` (To, Cc and
    /// Bcc of the messages sent) per mailbox in any 24 hours; Exchange
    /// Online's is 10,000 ([`RECIPIENTS_PER_DAY`]). Over it, a send gets
    /// 429 `ErrorSubmissionQuotaExceeded` and is counted by
    /// [`over_daily_limit`](Self::over_daily_limit). Off by default.
    pub fn set_daily_recipient_limit(&self, recipients: u64) {
        lock(&self.state).quotas.daily = Some(recipients);
    }

    /// Moves the clock of the fake's quotas forward.
    pub fn advance_clock(&self, by: std::time::Duration) {
        lock(&self.state).quotas.advance(by);
    }

    /// How many sends the message rate limit refused.
    pub fn throttled(&self) -> usize {
        lock(&self.state).quotas.throttled
    }

    /// How many sends the recipient rate limit refused.
    pub fn over_daily_limit(&self) -> usize {
        lock(&self.state).quotas.over_daily
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

    /// Makes the next token request (any grant) fail with Entra's error
    /// for AADSTS `code` (65001, 7000218, 50011, 53003, 50076, 50079,
    /// 700016, 700082, 9002313, 90014): its `error`, an `error_description`
    /// starting `AADSTS{code}: ` and `error_codes`, as Entra answers.
    pub fn fail_token_with(&self, code: u32) {
        lock(&self.state).token_errors.push_back(code);
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

/// Routes one request.
fn handle(state: &Mutex<State>, request: &Request) -> Reply {
    let path = request.path.as_str();
    if path == "/graph" || path.starts_with("/graph/") {
        return graph::graph(state, request);
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return graph::upload(state, request, id);
    }
    if let Some((tenant, endpoint)) = identity_route(path) {
        lock(state).tenants.push(tenant.to_owned());
        return match endpoint {
            "authorize" => identity::authorize(state, tenant, request).into(),
            "token" => identity::token(state, tenant, request).into(),
            "devicecode" => identity::device_code(state, tenant, request).into(),
            _ => graph::not_found().into(),
        };
    }
    graph::not_found().into()
}

/// `/{tenant}/oauth2/v2.0/{endpoint}` -> (tenant, endpoint).
fn identity_route(path: &str) -> Option<(&str, &str)> {
    let (tenant, rest) = path.strip_prefix('/')?.split_once('/')?;
    let endpoint = rest.strip_prefix("oauth2/v2.0/")?;
    (!tenant.is_empty() && !endpoint.contains('/')).then_some((tenant, endpoint))
}
