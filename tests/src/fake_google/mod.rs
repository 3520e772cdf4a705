//! A local fake of Google's OAuth 2.0 server and of the Gmail API's
//! `users.messages.send`, for end-to-end tests of the real `apimail` binary.
//!
//! It follows Google's documented behaviour: authorization code with PKCE
//! (S256 only), refresh tokens that are not rotated, the JWT-bearer grant of
//! service accounts with domain-wide delegation, token revocation, and the
//! Gmail send call in its four forms (JSON `raw`, `uploadType=media`,
//! `multipart` and `resumable`), with Google's error bodies. Faults can be
//! queued for the next send requests. Everything is recorded for tests to
//! inspect. Start one with [`FakeGoogle::start`]; it stops when dropped.
//!
//! This file is the public face and the router; `oauth.rs` serves the OAuth
//! endpoints and `gmail.rs` the API, and both import only `state.rs`.

mod gmail;
mod oauth;
mod state;

pub use oauth::pem_decode;
pub use state::{
    Delivered, FIXTURE_SERVICE_ACCOUNT, Fault, GMAIL_SEND_SCOPE, JWT_BEARER, MAIL_SCOPE,
    MAX_MESSAGE_BYTES, READ_UNITS, SEND_UNITS, UNITS_PER_MINUTE,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::http::{self, Reply, Request, Server, lock};
use state::State;

const FIXTURE_KEY_JSON: &str = include_str!("../../fixtures/service-account.json");
const FIXTURE_PUBLIC_KEY_DER: &[u8] = include_bytes!("../../fixtures/service-account.pub.der");

/// The running fake. Cheap accessors read its recorded state.
pub struct FakeGoogle {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeGoogle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGoogle")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl FakeGoogle {
    /// Starts the fake on `127.0.0.1` with a free port.
    pub fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(State {
            user_email: "user@example.com".to_owned(),
            ..State::default()
        }));
        let handler_state = state.clone();
        let server = Server::start("fake-google", move |request| {
            handle(&handler_state, request)
        })
        .expect("the fake Google server can bind 127.0.0.1");
        lock(&state).base = server.base_url();
        FakeGoogle { server, state }
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

    /// The authorization endpoint, `{base}/o/oauth2/auth`.
    pub fn auth_url(&self) -> String {
        format!("{}/o/oauth2/auth", self.base_url())
    }

    /// The token endpoint, `{base}/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// The revocation endpoint, `{base}/revoke`.
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.base_url())
    }

    /// The Gmail API root, `{base}/` (API paths are relative to it).
    pub fn gmail_url(&self) -> String {
        format!("{}/", self.base_url())
    }

    /// Registers an OAuth client.
    pub fn add_client(&self, id: &str, secret: &str) {
        lock(&self.state)
            .clients
            .insert(id.to_owned(), secret.to_owned());
    }

    /// The user who consents at the authorization endpoint (default
    /// `user@example.com`).
    pub fn set_user_email(&self, email: &str) {
        lock(&self.state).user_email = email.to_owned();
    }

    /// Makes the authorization endpoint answer `error=access_denied`.
    pub fn set_deny(&self, deny: bool) {
        lock(&self.state).deny = deny;
    }

    /// Makes the user untick `scope` on the consent screen: the grant,
    /// the redirect's `scope` and the token response's `scope` leave it
    /// out, as Google's granular consent does.
    pub fn untick_scope(&self, scope: &str) {
        lock(&self.state).unticked.insert(scope.to_owned());
    }

    /// Registers a service account by its RSA public key: SPKI or PKCS#1,
    /// as DER or PEM. Panics if the key cannot be read.
    pub fn add_service_account(&self, client_email: &str, public_key: &[u8]) {
        let key = oauth::rsa_public_key(public_key)
            .expect("an RSA public key in SPKI or PKCS#1, DER or PEM");
        lock(&self.state)
            .service_accounts
            .insert(client_email.to_owned(), key);
    }

    /// Registers the fixture service account ([`FIXTURE_SERVICE_ACCOUNT`]).
    pub fn register_fixture_service_account(&self) {
        self.add_service_account(FIXTURE_SERVICE_ACCOUNT, FIXTURE_PUBLIC_KEY_DER);
    }

    /// Lets service account `client_email` impersonate `user`.
    pub fn allow_delegation(&self, client_email: &str, user: &str) {
        lock(&self.state)
            .delegations
            .insert((client_email.to_owned(), user.to_lowercase()));
    }

    /// Issues an access token directly, as if granted to `user` for the
    /// space-separated `scope` (no refresh token).
    pub fn issue_access_token(&self, user: &str, scope: &str) -> String {
        oauth::issue_access(&mut lock(&self.state), user, scope, None)
    }

    /// The query parameters of every authorization request, in order.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.state).authorize_requests.clone()
    }

    /// Every form posted to the token endpoint, in order.
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

    /// How many requests reached the token endpoint.
    pub fn total_token_requests(&self) -> usize {
        lock(&self.state).total_token_requests
    }

    /// How many requests reached the revocation endpoint.
    pub fn revoke_requests(&self) -> usize {
        lock(&self.state).revoke_requests
    }

    /// Revokes every refresh token (and the access tokens issued from them).
    pub fn revoke_refresh_tokens(&self) {
        let mut state = lock(&self.state);
        for grant in state.refresh_tokens.values_mut() {
            grant.revoked = true;
        }
        for grant in state.access_tokens.values_mut() {
            if grant.refresh_token.is_some() {
                grant.revoked = true;
            }
        }
    }

    /// Revokes every access token issued so far.
    pub fn revoke_access_tokens(&self) {
        for grant in lock(&self.state).access_tokens.values_mut() {
            grant.revoked = true;
        }
    }

    /// Treats every access token issued so far as expired.
    pub fn expire_access_tokens(&self) {
        for grant in lock(&self.state).access_tokens.values_mut() {
            grant.expired = true;
        }
    }

    /// The messages delivered so far, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        lock(&self.state).messages.clone()
    }

    /// The copies `address` received of the messages delivered so far
    /// (see [`copy_for`](crate::fake_common::copy_for): no Bcc field).
    pub fn inbox(&self, address: &str) -> Vec<Vec<u8>> {
        let messages = self.messages();
        messages
            .iter()
            .filter_map(|m| crate::fake_common::copy_for(&m.raw, address))
            .collect()
    }

    /// How many requests reached the Gmail API paths (faulted ones too;
    /// resumable chunk requests not).
    pub fn send_requests(&self) -> usize {
        lock(&self.state).send_requests
    }

    /// How many resumable chunk requests carried an Authorization header.
    pub fn chunk_requests_with_authorization(&self) -> usize {
        lock(&self.state).chunks_with_authorization
    }

    /// Queues `fault` for the next Gmail send request.
    pub fn inject(&self, fault: Fault) {
        self.inject_n(fault, 1);
    }

    /// Queues `fault` for the next `n` Gmail send requests.
    pub fn inject_n(&self, fault: Fault, n: usize) {
        let mut state = lock(&self.state);
        state.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Applies `fault` to every Gmail send request (after any queued ones)
    /// until [`clear_faults`](Self::clear_faults).
    pub fn fail_forever(&self, fault: Fault) {
        lock(&self.state).forever = Some(fault);
    }

    /// Drops queued and permanent faults, and a pending chunk failure.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.state);
        state.faults.clear();
        state.forever = None;
        state.fail_chunk = false;
    }

    /// Enforces Gmail's per-user rate limit as `sends` `messages.send` a
    /// minute: `sends` × [`SEND_UNITS`] quota units in any 60 seconds, of
    /// which each send takes [`SEND_UNITS`] and each Sent list or get
    /// [`READ_UNITS`]. Over it, a request gets 429 `RESOURCE_EXHAUSTED`
    /// "User-rate limit exceeded.  Retry after TIME" and is counted by
    /// [`throttled`](Self::throttled). Gmail's own limit is 15,000 units
    /// a minute ([`UNITS_PER_MINUTE`]): `set_per_minute_limit(150)`.
    /// Off by default.
    pub fn set_per_minute_limit(&self, sends: u64) {
        lock(&self.state).quotas.per_minute = Some(sends * SEND_UNITS);
    }

    /// Enforces a daily sending limit: at most `messages` accepted per
    /// user in any 24 hours (Gmail's is 2,000 for Workspace, 500 for a
    /// consumer account, over a rolling 24 hours). Over it, a send gets 429
    /// "User-rate limit exceeded.  Retry after TIME (Mail sending)" and is
    /// counted by [`over_daily_limit`](Self::over_daily_limit). Off by
    /// default.
    pub fn set_daily_limit(&self, messages: u64) {
        lock(&self.state).quotas.daily = Some(messages);
    }

    /// Moves the clock of the fake's quotas forward (the times in its
    /// "Retry after" answers move with it).
    pub fn advance_clock(&self, by: std::time::Duration) {
        lock(&self.state).quotas.advance(by);
    }

    /// The fake's clock, in Unix seconds: the real time plus what
    /// [`advance_clock`](Self::advance_clock) added.
    pub fn clock_now(&self) -> f64 {
        lock(&self.state).quotas.now()
    }

    /// How many requests the per-minute limit refused.
    pub fn throttled(&self) -> usize {
        lock(&self.state).quotas.throttled
    }

    /// How many sends the daily limit refused.
    pub fn over_daily_limit(&self) -> usize {
        lock(&self.state).quotas.over_daily
    }

    /// Makes the next resumable chunk that carries data fail with 503 (its
    /// bytes are not kept; status queries are not affected).
    pub fn fail_chunk_once(&self) {
        lock(&self.state).fail_chunk = true;
    }
}

/// The fixture service-account key file (Google's JSON format) with its
/// `token_uri` set to `token_url`.
pub fn service_account_key_json(token_url: &str) -> String {
    let mut key: Value =
        serde_json::from_str(FIXTURE_KEY_JSON).expect("the fixture key file is JSON");
    key["token_uri"] = Value::String(token_url.to_owned());
    serde_json::to_string_pretty(&key).expect("JSON serializes")
}

/// Routes one request.
fn handle(state: &Mutex<State>, request: &Request) -> Reply {
    let path = request.path.as_str();
    match path {
        "/o/oauth2/auth" => oauth::authorize(state, request).into(),
        "/token" => oauth::token(state, request).into(),
        "/revoke" => oauth::revoke(state, request).into(),
        _ if path.starts_with("/upload-session/") => gmail::chunk(state, request).into(),
        _ if request.method == "GET" && path.starts_with("/gmail/v1/users/") => {
            gmail::read_messages(state, request)
                .unwrap_or_else(|r| r)
                .into()
        }
        _ if ["/gmail/", "/upload/", "/resumable/"]
            .iter()
            .any(|prefix| path.starts_with(prefix)) =>
        {
            gmail::gmail(state, request)
        }
        _ if path.starts_with("/gmail") => {
            gmail::google_error(404, "Not Found", "notFound", "NOT_FOUND").into()
        }
        _ => not_found_page(&request.path).into(),
    }
}

/// Google's front end answers a path it does not serve with an HTML page
/// ("Error 404 (Not Found)!!1"), not OAuth or API JSON.
fn not_found_page(path: &str) -> http::Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title>\n\
         <p><b>404.</b> <ins>That's an error.</ins>\n<p>The requested URL <code>{path}</code> was not \
         found on this server. <ins>That's all we know.</ins>\n"
    );
    http::Response::new(404)
        .with_header("Content-Type", "text/html; charset=UTF-8")
        .with_body(page.into_bytes())
}
