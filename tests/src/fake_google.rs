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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Value, json};

use crate::http::{self, Reply, Request, Response, Server, lock};
use crate::http::{STANDARD_ANY, URL_SAFE_ANY, form_decode, percent_decode};

/// The scope that allows `users.messages.send` and nothing else.
pub const GMAIL_SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";
/// Full access to Gmail.
pub const MAIL_SCOPE: &str = "https://mail.google.com/";
/// Largest message Gmail accepts: 35 MiB.
pub const MAX_MESSAGE_BYTES: usize = 36_700_160;
/// `client_email` of the fixture service account.
pub const FIXTURE_SERVICE_ACCOUNT: &str = "apimail-test@apimail-test.iam.gserviceaccount.com";
/// The JWT-bearer grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Scopes any one of which allows `users.messages.send` (per Gmail's docs).
const SEND_SCOPES: [&str; 5] = [
    GMAIL_SEND_SCOPE,
    MAIL_SCOPE,
    "https://www.googleapis.com/auth/gmail.compose",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.addons.current.action.compose",
];
const FIXTURE_KEY_JSON: &str = include_str!("../fixtures/service-account.json");
const FIXTURE_PUBLIC_KEY_DER: &[u8] = include_bytes!("../fixtures/service-account.pub.der");
const ISSUER: &str = "https://accounts.google.com";

/// A failure to inject into upcoming Gmail send requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `RESOURCE_EXHAUSTED` / `rateLimitExceeded`, with `Retry-After`
    /// if given.
    Status429 {
        /// Seconds for the `Retry-After` header.
        retry_after_secs: Option<u64>,
    },
    /// 403 `userRateLimitExceeded`, "User-rate limit exceeded.".
    RateLimit403,
    /// 503 `backendError` / `UNAVAILABLE`.
    Status503,
    /// 500 `backendError` / `INTERNAL`.
    Status500,
    /// Read the request, then close the connection without answering.
    DropConnection,
    /// Accept and store the message, then close the connection without
    /// answering: the client cannot know the message went through.
    AcceptThenDrop,
    /// Accept and store the message, then answer 504 as a gateway whose
    /// upstream answered too late would.
    AcceptThen504,
    /// Sleep this long, then handle the request normally.
    Slow(Duration),
}

/// A message the fake Gmail accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sending user (the access token's user).
    pub user: String,
    /// The RFC 5322 message bytes exactly as received.
    pub raw: Vec<u8>,
    /// Message id returned to the client.
    pub id: String,
    /// Thread id returned to the client.
    pub thread_id: String,
    /// `"multipart"`, `"media"`, `"resumable"` or `"json"`.
    pub upload_type: String,
    /// The access token the send was authorized with.
    pub access_token: String,
}

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

#[derive(Debug, Default)]
struct State {
    base: String,
    clients: HashMap<String, String>,
    user_email: String,
    deny: bool,
    /// client_email -> RSAPublicKey (PKCS#1) DER.
    service_accounts: HashMap<String, Vec<u8>>,
    /// (client_email, user) pairs allowed to impersonate.
    delegations: HashSet<(String, String)>,
    authorize_requests: Vec<HashMap<String, String>>,
    codes: HashMap<String, Code>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    access_tokens: HashMap<String, AccessGrant>,
    token_forms: Vec<HashMap<String, String>>,
    token_requests: HashMap<String, usize>,
    total_token_requests: usize,
    revoke_requests: usize,
    sessions: HashMap<String, Session>,
    messages: Vec<Delivered>,
    send_requests: usize,
    chunks_with_authorization: usize,
    faults: VecDeque<Fault>,
    forever: Option<Fault>,
    fail_chunk: bool,
}

#[derive(Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    user: String,
    used: bool,
}

#[derive(Debug)]
struct RefreshGrant {
    client_id: String,
    user: String,
    scope: String,
    revoked: bool,
}

#[derive(Debug)]
struct AccessGrant {
    user: String,
    scope: String,
    refresh_token: Option<String>,
    revoked: bool,
    expired: bool,
}

/// A resumable upload in progress (or finished: `result` is set).
#[derive(Debug)]
struct Session {
    user: String,
    access_token: String,
    thread_id: Option<String>,
    total: Option<usize>,
    received: Vec<u8>,
    result: Option<Response>,
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

    /// Registers a service account by its RSA public key: SPKI or PKCS#1,
    /// as DER or PEM. Panics if the key cannot be read.
    pub fn add_service_account(&self, client_email: &str, public_key: &[u8]) {
        let key =
            rsa_public_key(public_key).expect("an RSA public key in SPKI or PKCS#1, DER or PEM");
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
        issue_access(&mut lock(&self.state), user, scope, None)
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

/// The DER inside a PEM document (the first block), or `None`.
pub fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start..];
    let body_start = rest.find('\n')? + 1;
    let body_end = rest.find("-----END ")?;
    let body: String = rest
        .get(body_start..body_end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    general_purpose::STANDARD.decode(body).ok()
}

/// Routes one request.
fn handle(state: &Mutex<State>, request: &Request) -> Reply {
    let path = request.path.as_str();
    match path {
        "/o/oauth2/auth" => authorize(state, request).into(),
        "/token" => token(state, request).into(),
        "/revoke" => revoke(state, request).into(),
        _ if path.starts_with("/upload-session/") => chunk(state, request).into(),
        _ if request.method == "GET" && path.starts_with("/gmail/v1/users/") => {
            read_messages(state, request).unwrap_or_else(|r| r).into()
        }
        _ if ["/gmail/", "/upload/", "/resumable/"]
            .iter()
            .any(|prefix| path.starts_with(prefix)) =>
        {
            gmail(state, request)
        }
        _ => google_error(404, "Not Found", "notFound", "NOT_FOUND").into(),
    }
}

// ---- OAuth ------------------------------------------------------------

/// `GET /o/oauth2/auth`: checks the request and redirects with a code.
fn authorize(state: &Mutex<State>, request: &Request) -> Response {
    let params = request.query_map();
    let mut state = lock(state);
    state.authorize_requests.push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let client_id = param("client_id");
    if client_id.is_empty() || !state.clients.contains_key(client_id) {
        return Response::text(400, "invalid_client: The OAuth client was not found.\n");
    }
    let redirect_uri = param("redirect_uri");
    let Some(mut location) = url::Url::parse(redirect_uri)
        .ok()
        .filter(|url| url.fragment().is_none() && matches!(url.scheme(), "http" | "https"))
    else {
        return Response::text(400, "invalid_request: missing or invalid redirect_uri\n");
    };
    if param("response_type") != "code" {
        return Response::text(
            400,
            "unsupported_response_type: response_type must be code\n",
        );
    }
    if param("scope").trim().is_empty() {
        return Response::text(400, "invalid_request: Missing required parameter: scope\n");
    }
    if param("code_challenge_method") != "S256" {
        return Response::text(400, "invalid_request: code_challenge_method must be S256\n");
    }
    let challenge = param("code_challenge");
    let challenge_ok = (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !challenge_ok {
        return Response::text(400, "invalid_request: missing or invalid code_challenge\n");
    }
    let state_param = params.get("state");
    {
        let mut query = location.query_pairs_mut();
        if state.deny {
            query.append_pair("error", "access_denied");
        } else {
            let code = format!("4/fake-{}", random_hex(24));
            query.append_pair("code", &code);
            let user = state.user_email.clone();
            state.codes.insert(
                code,
                Code {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    challenge: challenge.to_owned(),
                    scope: param("scope").to_owned(),
                    user,
                    used: false,
                },
            );
        }
        if let Some(value) = state_param {
            query.append_pair("state", value);
        }
        if !state.deny {
            query.append_pair("scope", param("scope"));
        }
    }
    Response::new(302).with_header("Location", location.as_str())
}

/// `POST /token`: the three grant types.
fn token(state: &Mutex<State>, request: &Request) -> Response {
    let form = http::first_wins(
        url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect(),
    );
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let mut state = lock(state);
    state.total_token_requests += 1;
    *state.token_requests.entry(grant_type.clone()).or_default() += 1;
    state.token_forms.push(form.clone());
    let form_type = request.header("content-type").unwrap_or("");
    if !form_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return oauth_error(400, "invalid_request", "Invalid content type.");
    }
    let result = match grant_type.as_str() {
        "authorization_code" => authorization_code(&mut state, request, &form),
        "refresh_token" => refresh(&mut state, request, &form),
        JWT_BEARER => jwt_bearer(&mut state, &form),
        _ => Err(Response::json(
            400,
            &json!({"error": "unsupported_grant_type"}),
        )),
    };
    result.unwrap_or_else(|response| response)
}

fn authorization_code(
    state: &mut State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let client_id = client_auth(state, request, form)?;
    let Some(code_value) = form.get("code") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: code",
        ));
    };
    let Some(code) = state.codes.get_mut(code_value) else {
        return Err(oauth_error(400, "invalid_grant", "Malformed auth code."));
    };
    if code.used || code.client_id != client_id {
        return Err(oauth_error(400, "invalid_grant", "Bad Request"));
    }
    match form.get("redirect_uri") {
        None => {
            return Err(oauth_error(
                400,
                "invalid_request",
                "Missing parameter: redirect_uri",
            ));
        }
        Some(uri) if *uri != code.redirect_uri => {
            return Err(oauth_error(400, "redirect_uri_mismatch", "Bad Request"));
        }
        Some(_) => {}
    }
    let Some(verifier) = form.get("code_verifier") else {
        return Err(oauth_error(400, "invalid_grant", "Missing code verifier."));
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    if general_purpose::URL_SAFE_NO_PAD.encode(digest) != code.challenge {
        return Err(oauth_error(400, "invalid_grant", "Invalid code verifier."));
    }
    code.used = true;
    let (user, scope) = (code.user.clone(), code.scope.clone());
    let refresh_token = format!("1//fake-{}", random_hex(24));
    state.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshGrant {
            client_id: client_id.clone(),
            user: user.clone(),
            scope: scope.clone(),
            revoked: false,
        },
    );
    let access_token = issue_access(state, &user, &scope, Some(refresh_token.clone()));
    Ok(Response::json(
        200,
        &json!({
            "access_token": access_token,
            "expires_in": 3599,
            "refresh_token": refresh_token,
            "scope": scope,
            "token_type": "Bearer",
            "id_token": id_token(&user, &client_id),
        }),
    ))
}

fn refresh(
    state: &mut State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let client_id = client_auth(state, request, form)?;
    let Some(refresh_token) = form.get("refresh_token") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        ));
    };
    let grant = match state.refresh_tokens.get(refresh_token) {
        Some(grant) if !grant.revoked => grant,
        _ => {
            return Err(oauth_error(
                400,
                "invalid_grant",
                "Token has been expired or revoked.",
            ));
        }
    };
    if grant.client_id != client_id {
        return Err(oauth_error(400, "unauthorized_client", "Unauthorized"));
    }
    let (user, scope) = (grant.user.clone(), grant.scope.clone());
    let access_token = issue_access(state, &user, &scope, Some(refresh_token.clone()));
    Ok(Response::json(
        200,
        &json!({
            "access_token": access_token,
            "expires_in": 3599,
            "scope": scope,
            "token_type": "Bearer",
        }),
    ))
}

fn jwt_bearer(state: &mut State, form: &HashMap<String, String>) -> Result<Response, Response> {
    let invalid = |why: &str| oauth_error(400, "invalid_grant", why);
    let Some(assertion) = form.get("assertion") else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        ));
    };
    let segments: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = segments[..] else {
        return Err(invalid("Invalid JWT: malformed assertion."));
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
        return Err(invalid("Invalid JWT: malformed assertion."));
    };
    if header["alg"] != "RS256" {
        return Err(invalid(
            "Invalid JWT: unsupported algorithm, expected RS256.",
        ));
    }
    let issuer = claims["iss"].as_str().unwrap_or("");
    let Some(key) = state.service_accounts.get(issuer) else {
        return Err(invalid("Invalid grant: account not found"));
    };
    let signed = &assertion[..segments[0].len() + 1 + segments[1].len()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let token_url = format!("{}/token", state.base);
    if claims["aud"] != token_url.as_str() {
        return Err(invalid("Invalid JWT: Failed audience check."));
    }
    let now = now_secs();
    let times_ok = match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) => exp > now && exp > iat && exp - iat <= 3600 && iat <= now + 300,
        _ => false,
    };
    if !times_ok {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let scope = claims["scope"].as_str().unwrap_or("").trim();
    if scope.is_empty() {
        return Err(oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let subject = claims["sub"].as_str().unwrap_or("");
    if subject.is_empty() {
        return Err(invalid("Invalid email or User ID"));
    }
    if !state
        .delegations
        .contains(&(issuer.to_owned(), subject.to_lowercase()))
    {
        return Err(oauth_error(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not \
             authorized for any of the scopes requested.",
        ));
    }
    let (subject, scope) = (subject.to_owned(), scope.to_owned());
    let access_token = issue_access(state, &subject, &scope, None);
    Ok(Response::json(
        200,
        &json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}),
    ))
}

/// Authenticates the client (HTTP Basic, or `client_id`/`client_secret` in
/// the form) and returns its id.
fn client_auth(
    state: &State,
    request: &Request,
    form: &HashMap<String, String>,
) -> Result<String, Response> {
    let basic = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let (id, secret) = match basic {
        Some(credentials) => {
            let decoded = general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
                return Err(oauth_error(
                    400,
                    "invalid_request",
                    "Malformed HTTP Basic credentials.",
                ));
            };
            // RFC 6749 form-encodes both before Base64; some clients do not.
            let (decoded_id, decoded_secret) = (form_decode(id), form_decode(secret));
            if state.clients.get(&decoded_id) == Some(&decoded_secret) {
                (Some(decoded_id), Some(decoded_secret))
            } else {
                (Some(id.to_owned()), Some(secret.to_owned()))
            }
        }
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    };
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err(oauth_error(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        ));
    };
    let Some(expected) = state.clients.get(&id) else {
        return Err(oauth_error(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    match secret {
        None => Err(oauth_error(
            400,
            "invalid_request",
            "client_secret is missing.",
        )),
        Some(secret) if secret != *expected => {
            Err(oauth_error(401, "invalid_client", "Unauthorized"))
        }
        Some(_) => Ok(id),
    }
}

/// `POST /revoke` (or GET): revokes a refresh or an access token.
fn revoke(state: &Mutex<State>, request: &Request) -> Response {
    let mut params = request.query_map();
    for (name, value) in url::form_urlencoded::parse(&request.body).into_owned() {
        params.entry(name).or_insert(value);
    }
    let mut guard = lock(state);
    let state = &mut *guard;
    state.revoke_requests += 1;
    let Some(token) = params.get("token") else {
        return oauth_error(400, "invalid_request", "Missing required parameter: token");
    };
    let refresh_token = match state.refresh_tokens.get(token) {
        Some(grant) if !grant.revoked => Some(token.clone()),
        Some(_) => None,
        None => match state.access_tokens.get_mut(token) {
            Some(grant) if !grant.revoked && !grant.expired => {
                grant.revoked = true;
                // Revoking an access token revokes its refresh token too.
                Some(grant.refresh_token.clone().unwrap_or_default())
            }
            _ => None,
        },
    };
    let Some(refresh_token) = refresh_token else {
        return Response::json(
            400,
            &json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
        );
    };
    if let Some(grant) = state.refresh_tokens.get_mut(&refresh_token) {
        grant.revoked = true;
        for access in state.access_tokens.values_mut() {
            if access.refresh_token.as_deref() == Some(refresh_token.as_str()) {
                access.revoked = true;
            }
        }
    }
    Response::json(200, &json!({}))
}

fn issue_access(
    state: &mut State,
    user: &str,
    scope: &str,
    refresh_token: Option<String>,
) -> String {
    let token = format!("ya29.fake-{}", random_hex(24));
    state.access_tokens.insert(
        token.clone(),
        AccessGrant {
            user: user.to_owned(),
            scope: scope.to_owned(),
            refresh_token,
            revoked: false,
            expired: false,
        },
    );
    token
}

/// An unsigned (`alg: none`) but well-formed ID token for `email`.
fn id_token(email: &str, client_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, email.to_lowercase().as_bytes());
    let mut sub_bytes = [0; 8];
    sub_bytes.copy_from_slice(&digest.as_ref()[..8]);
    let sub = format!("1{:020}", u64::from_be_bytes(sub_bytes));
    let now = now_secs();
    let header = json!({"alg": "none", "typ": "JWT"});
    let payload = json!({
        "iss": ISSUER,
        "azp": client_id,
        "aud": client_id,
        "sub": sub,
        "email": email,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
    });
    let encode = |value: &Value| general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", encode(&header), encode(&payload))
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

// ---- Gmail ------------------------------------------------------------

/// The four ways to call `users.messages.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/gmail/v1/...`: JSON body with `raw`.
    Json,
    /// `/upload/gmail/v1/...`: media, multipart or resumable by `uploadType`.
    Upload,
    /// `/resumable/upload/gmail/v1/...`: starts a resumable upload.
    Resumable,
}

/// A request to a Gmail API path: counts it, applies faults, sends.
fn gmail(state: &Mutex<State>, request: &Request) -> Reply {
    let fault = {
        let mut state = lock(state);
        state.send_requests += 1;
        state.faults.pop_front().or_else(|| state.forever.clone())
    };
    match fault {
        None => {}
        Some(Fault::Slow(delay)) => std::thread::sleep(delay),
        Some(Fault::DropConnection) => return Reply::Drop,
        Some(Fault::AcceptThenDrop) => {
            let _ = send(state, request);
            return Reply::Drop;
        }
        Some(Fault::AcceptThen504) => {
            let _ = send(state, request);
            return Response::new(504)
                .with_header("Content-Type", "text/html; charset=UTF-8")
                .with_body(b"<html><body><h1>504 Gateway Timeout</h1></body></html>".to_vec())
                .into();
        }
        Some(Fault::Status429 { retry_after_secs }) => {
            let response = google_error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                "rateLimitExceeded",
                "RESOURCE_EXHAUSTED",
            );
            return match retry_after_secs {
                Some(secs) => response.with_header("Retry-After", &secs.to_string()),
                None => response,
            }
            .into();
        }
        Some(Fault::RateLimit403) => {
            return google_error(
                403,
                "User-rate limit exceeded.",
                "userRateLimitExceeded",
                "PERMISSION_DENIED",
            )
            .into();
        }
        Some(Fault::Status503) => return unavailable().into(),
        Some(Fault::Status500) => {
            return google_error(500, "Backend Error", "backendError", "INTERNAL").into();
        }
    }
    send(state, request)
        .unwrap_or_else(|response| response)
        .into()
}

fn send(state: &Mutex<State>, request: &Request) -> Result<Response, Response> {
    let (endpoint, path_user) = parse_send_path(&request.path)
        .filter(|_| request.method == "POST")
        .ok_or_else(|| google_error(404, "Method not found.", "notFound", "NOT_FOUND"))?;
    let mut state = lock(state);
    let (access_token, user) = authenticate(&state, request, &path_user)?;
    let query = request.query_map();
    let upload_type = query.get("uploadType").map(String::as_str);
    match (endpoint, upload_type) {
        (Endpoint::Json, _) => {
            let body: Value = serde_json::from_slice(&request.body)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| invalid_argument("Invalid JSON payload received."))?;
            let raw = match body["raw"].as_str() {
                None | Some("") => {
                    return Err(invalid_argument(
                        "'raw' RFC822 payload message string or uploading message via /upload/* \
                         URL required",
                    ));
                }
                Some(raw) => decode_bytes(raw).ok_or_else(|| {
                    invalid_argument(
                        "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
                    )
                })?,
            };
            let thread_id = body["threadId"].as_str().map(str::to_owned);
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                thread_id,
                "json",
            ))
        }
        (Endpoint::Upload, Some("media")) => {
            check_media_type(request.header("content-type").unwrap_or(""))?;
            let raw = request.body.clone();
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                None,
                "media",
            ))
        }
        (Endpoint::Upload, Some("multipart")) => {
            let content_type = request.header("content-type").unwrap_or("");
            let (metadata, media_type, raw) = parse_multipart(content_type, &request.body)
                .map_err(|why| invalid_argument(&why))?;
            check_media_type(&media_type)?;
            let thread_id = parse_metadata(&metadata)?;
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                thread_id,
                "multipart",
            ))
        }
        (Endpoint::Upload | Endpoint::Resumable, Some("resumable")) => {
            start_session(&mut state, request, user, access_token)
        }
        _ => Err(invalid_argument(
            "Upload requests must include an uploadType URL parameter and a URL path beginning \
             with /upload/",
        )),
    }
}

/// Scopes any one of which allows `users.messages.list` and `.get`.
const READ_SCOPES: [&str; 4] = [
    "https://www.googleapis.com/auth/gmail.metadata",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
    MAIL_SCOPE,
];

/// `GET .../users/{user}/messages` (the `SENT` label, newest first) and
/// `GET .../users/{user}/messages/{id}` (`format=metadata`), as far as a
/// Sent check needs them, with Google's scope rules: `gmail.send` reads
/// nothing, and `gmail.metadata` may not search (`q`).
fn read_messages(state: &Mutex<State>, request: &Request) -> Result<Response, Response> {
    let rest = request.path["/gmail/v1/users/".len()..].to_owned();
    let (path_user, tail) = rest
        .split_once("/messages")
        .ok_or_else(|| google_error(404, "Not Found", "notFound", "NOT_FOUND"))?;
    let state = lock(state);
    let token = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let grant = token
        .and_then(|token| state.access_tokens.get(token))
        .filter(|grant| !grant.revoked && !grant.expired)
        .ok_or_else(unauthenticated)?;
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    if !READ_SCOPES.iter().any(|scope| scopes.contains(scope)) {
        return Err(google_error_detail(
            403,
            "Request had insufficient authentication scopes.",
            "Insufficient Permission",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        ));
    }
    let user = percent_decode(path_user).unwrap_or_default();
    if user != "me" && !user.eq_ignore_ascii_case(&grant.user) {
        return Err(google_error(
            403,
            "Delegation denied",
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    let query = request.query_map();
    let metadata_only = !scopes.iter().any(|s| READ_SCOPES[1..].contains(s));
    if metadata_only && query.contains_key("q") {
        return Err(google_error(
            403,
            "Metadata scope does not support 'q' parameter",
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    let own: Vec<&Delivered> = state
        .messages
        .iter()
        .rev()
        .filter(|m| m.user.eq_ignore_ascii_case(&grant.user))
        .collect();
    match tail.strip_prefix('/') {
        None => {
            let max: usize = query
                .get("maxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            let listed: Vec<Value> = own
                .iter()
                .take(max)
                .map(|m| json!({"id": m.id, "threadId": m.thread_id}))
                .collect();
            Ok(Response::json(
                200,
                &json!({"messages": listed, "resultSizeEstimate": listed.len()}),
            ))
        }
        Some(id) => {
            let message = own.iter().find(|m| m.id == id).ok_or_else(|| {
                google_error(
                    404,
                    "Requested entity was not found.",
                    "notFound",
                    "NOT_FOUND",
                )
            })?;
            let text = String::from_utf8_lossy(&message.raw);
            let headers: Vec<Value> = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| name.eq_ignore_ascii_case("message-id"))
                .map(|(name, value)| json!({"name": name, "value": value.trim()}))
                .collect();
            Ok(Response::json(
                200,
                &json!({
                    "id": message.id,
                    "threadId": message.thread_id,
                    "labelIds": ["SENT"],
                    "payload": {"headers": headers},
                }),
            ))
        }
    }
}

/// Which endpoint a path is, and its percent-decoded user id.
fn parse_send_path(path: &str) -> Option<(Endpoint, String)> {
    let (endpoint, rest) = [
        (Endpoint::Json, "/gmail/v1/users/"),
        (Endpoint::Upload, "/upload/gmail/v1/users/"),
        (Endpoint::Resumable, "/resumable/upload/gmail/v1/users/"),
    ]
    .into_iter()
    .find_map(|(endpoint, prefix)| Some((endpoint, path.strip_prefix(prefix)?)))?;
    let user = rest.strip_suffix("/messages/send")?;
    if user.is_empty() || user.contains('/') {
        return None;
    }
    Some((endpoint, percent_decode(user)?))
}

/// Checks the bearer token and the user id; returns (token, sending user).
fn authenticate(
    state: &State,
    request: &Request,
    path_user: &str,
) -> Result<(String, String), Response> {
    let token = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let grant = token
        .and_then(|token| state.access_tokens.get(token))
        .filter(|grant| !grant.revoked && !grant.expired);
    let (Some(token), Some(grant)) = (token, grant) else {
        return Err(unauthenticated());
    };
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    if !SEND_SCOPES.iter().any(|scope| scopes.contains(scope)) {
        return Err(google_error_detail(
            403,
            "Request had insufficient authentication scopes.",
            "Insufficient Permission",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        )
        .with_header(
            "WWW-Authenticate",
            &format!(
                "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", \
                 scope=\"{GMAIL_SEND_SCOPE}\""
            ),
        ));
    }
    if path_user != "me" && !path_user.eq_ignore_ascii_case(&grant.user) {
        let message = format!("Delegation denied for {}", grant.user);
        return Err(google_error(
            403,
            &message,
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    Ok((token.to_owned(), grant.user.clone()))
}

/// Starts a resumable upload: answers with the session URL.
fn start_session(
    state: &mut State,
    request: &Request,
    user: String,
    access_token: String,
) -> Result<Response, Response> {
    if let Some(media_type) = request.header("x-upload-content-type") {
        check_media_type(media_type)?;
    }
    let total = match request.header("x-upload-content-length") {
        None => None,
        Some(length) => Some(
            length
                .parse::<usize>()
                .map_err(|_| invalid_argument("Invalid X-Upload-Content-Length header."))?,
        ),
    };
    if total.is_some_and(|total| total > MAX_MESSAGE_BYTES) {
        return Err(too_large());
    }
    let thread_id = parse_metadata(&request.body)?;
    let id = random_hex(16);
    state.sessions.insert(
        id.clone(),
        Session {
            user,
            access_token,
            thread_id,
            total,
            received: Vec::new(),
            result: None,
        },
    );
    let location = format!("{}/upload-session/{id}", state.base);
    Ok(Response::new(200)
        .with_header("Location", &location)
        .with_header("X-GUploader-UploadID", &id))
}

/// A request to a resumable session URL: a chunk or a status query.
fn chunk(state: &Mutex<State>, request: &Request) -> Response {
    let mut guard = lock(state);
    let state = &mut *guard;
    if request.header("authorization").is_some() {
        state.chunks_with_authorization += 1;
    }
    if !matches!(request.method.as_str(), "PUT" | "POST") {
        return google_error(405, "Method not allowed.", "badRequest", "INVALID_ARGUMENT");
    }
    let id = request
        .path
        .trim_start_matches("/upload-session/")
        .to_owned();
    let range = match request.header("content-range") {
        None => ContentRange::Whole,
        Some(value) => match parse_content_range(value) {
            Some(range) => range,
            None => return invalid_argument("Failed to parse Content-Range header."),
        },
    };
    let Some(session) = state.sessions.get_mut(&id) else {
        return google_error(404, "Upload session not found.", "notFound", "NOT_FOUND");
    };
    if let Some(result) = &session.result {
        return result.clone();
    }
    if !matches!(range, ContentRange::Query { .. }) && std::mem::take(&mut state.fail_chunk) {
        return unavailable();
    }
    let body = &request.body;
    let (start, total) = match range {
        ContentRange::Query { total } => {
            if let Some(total) = total {
                session.total.get_or_insert(total);
            }
            return incomplete(session.received.len());
        }
        ContentRange::Whole => (0, Some(body.len())),
        ContentRange::Bytes { start, end, total } => {
            if end + 1 - start != body.len() {
                return invalid_argument("Content-Range does not match the request body's length.");
            }
            (start, total)
        }
    };
    if start > session.received.len() {
        return invalid_argument(&format!(
            "Invalid request. According to the Content-Range header, the upload offset is {start} \
             byte(s), which exceeds already uploaded size of {} byte(s).",
            session.received.len()
        ));
    }
    if let Some(total) = total {
        if session.total.is_some_and(|known| known != total) {
            return invalid_argument(
                "The total size in Content-Range does not match the upload's size.",
            );
        }
        session.total = Some(total);
    }
    if session.total.is_some_and(|total| total > MAX_MESSAGE_BYTES)
        || start + body.len() > MAX_MESSAGE_BYTES
    {
        state.sessions.remove(&id);
        return too_large();
    }
    session.received.truncate(start);
    session.received.extend_from_slice(body);
    match session.total {
        Some(total) if session.received.len() > total => {
            invalid_argument("More bytes were uploaded than the Content-Range total.")
        }
        Some(total) if session.received.len() == total => {
            let raw = std::mem::take(&mut session.received);
            let (user, token) = (session.user.clone(), session.access_token.clone());
            let thread_id = session.thread_id.take();
            let result = deliver(state, &user, &token, raw, thread_id, "resumable");
            if let Some(session) = state.sessions.get_mut(&id) {
                session.result = Some(result.clone());
            }
            result
        }
        _ => incomplete(session.received.len()),
    }
}

/// A parsed `Content-Range` request header.
#[derive(Debug, Clone, Copy)]
enum ContentRange {
    /// `bytes */TOTAL`: how much has arrived?
    Query { total: Option<usize> },
    /// `bytes START-END/TOTAL` (TOTAL may be `*`).
    Bytes {
        start: usize,
        end: usize,
        total: Option<usize>,
    },
    /// No header: the body is the whole upload.
    Whole,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some(ContentRange::Query { total });
    }
    let (start, end) = range.trim().split_once('-')?;
    let (start, end): (usize, usize) = (start.parse().ok()?, end.parse().ok()?);
    if end < start || total.is_some_and(|total| end >= total) {
        return None;
    }
    Some(ContentRange::Bytes { start, end, total })
}

/// 308 "Resume Incomplete", with the bytes kept so far.
fn incomplete(received: usize) -> Response {
    let response = Response::new(308);
    if received == 0 {
        response
    } else {
        response.with_header("Range", &format!("bytes=0-{}", received - 1))
    }
}

/// Checks and stores a message, answering like Gmail.
fn deliver(
    state: &mut State,
    user: &str,
    access_token: &str,
    raw: Vec<u8>,
    thread_id: Option<String>,
    upload_type: &str,
) -> Response {
    if raw.len() > MAX_MESSAGE_BYTES {
        return too_large();
    }
    if !has_recipient(&raw) {
        return invalid_argument("Invalid To header");
    }
    let id = random_hex(8);
    let thread_id = thread_id.unwrap_or_else(|| id.clone());
    state.messages.push(Delivered {
        user: user.to_owned(),
        raw,
        id: id.clone(),
        thread_id: thread_id.clone(),
        upload_type: upload_type.to_owned(),
        access_token: access_token.to_owned(),
    });
    Response::json(
        200,
        &json!({"id": id, "threadId": thread_id, "labelIds": ["SENT"]}),
    )
}

/// Whether the message's header section has a non-empty To, Cc or Bcc.
fn has_recipient(raw: &[u8]) -> bool {
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
    fields.iter().any(|(name, value)| {
        matches!(name.as_str(), "to" | "cc" | "bcc") && !value.trim().is_empty()
    })
}

/// Splits a `multipart/related` body into (metadata, media type, media).
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<(Vec<u8>, String, Vec<u8>), String> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/related") {
        return Err(format!(
            "Invalid multipart request with content type {content_type:?}."
        ));
    }
    let boundary = params
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|boundary| !boundary.is_empty())
        .ok_or("Multipart request has no boundary.")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let malformed = || "Malformed multipart body.".to_owned();
    let mut pos = (0..body.len())
        .find(|&i| (i == 0 || body[i - 1] == b'\n') && body[i..].starts_with(&delimiter))
        .ok_or_else(malformed)?;
    let mut parts = Vec::new();
    loop {
        pos += delimiter.len();
        let rest = body.get(pos..).ok_or_else(malformed)?;
        if rest.starts_with(b"--") {
            break;
        }
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let rest = &rest[padding..];
        let newline = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else {
            return Err(malformed());
        };
        let headers_start = pos + padding + newline;
        let after_delimiter = &body[headers_start..];
        let headers_end = if after_delimiter.starts_with(b"\r\n") {
            (0, 2)
        } else if after_delimiter.starts_with(b"\n") {
            (0, 1)
        } else {
            let crlf = find(after_delimiter, b"\r\n\r\n").map(|i| (i, 4));
            let lf = find(after_delimiter, b"\n\n").map(|i| (i, 2));
            crlf.into_iter().chain(lf).min().ok_or_else(malformed)?
        };
        let head = String::from_utf8_lossy(&after_delimiter[..headers_end.0]);
        let headers: Vec<(String, String)> = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let content_start = headers_start + headers_end.0 + headers_end.1;
        let content_end = match header("content-length") {
            Some(length) => {
                let length: usize = length.parse().map_err(|_| malformed())?;
                content_start
                    .checked_add(length)
                    .filter(|&end| end <= body.len())
                    .ok_or_else(malformed)?
            }
            None => {
                let mut needle = b"\n".to_vec();
                needle.extend_from_slice(&delimiter);
                content_start + find(&body[content_start..], &needle).ok_or_else(malformed)?
            }
        };
        let mut content = &body[content_start..content_end];
        let after = &body[content_end..];
        pos = if after.starts_with(b"\r\n") && after[2..].starts_with(&delimiter) {
            content_end + 2
        } else if after.starts_with(b"\n") && after[1..].starts_with(&delimiter) {
            content_end + 1
        } else {
            return Err(malformed());
        };
        if header("content-length").is_none() {
            content = content.strip_suffix(b"\r").unwrap_or(content);
        }
        parts.push((header("content-type").unwrap_or_default(), content.to_vec()));
    }
    let [(metadata_type, metadata), (media_type, media)]: [(String, Vec<u8>); 2] =
        parts.try_into().map_err(|_| {
            "A multipart upload needs exactly two parts: metadata and media.".to_owned()
        })?;
    let metadata_mime = metadata_type.split(';').next().unwrap_or("").trim();
    if !metadata_mime.eq_ignore_ascii_case("application/json") {
        return Err("The first part of a multipart upload must be application/json.".to_owned());
    }
    Ok((metadata, media_type, media))
}

/// Parses upload metadata (empty or a JSON object); returns its `threadId`.
fn parse_metadata(metadata: &[u8]) -> Result<Option<String>, Response> {
    if metadata.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(metadata)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid_argument("Invalid JSON payload received."))?;
    Ok(value["threadId"].as_str().map(str::to_owned))
}

/// Gmail takes only `message/*` media.
fn check_media_type(media_type: &str) -> Result<(), Response> {
    let mime = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("message/") {
        Ok(())
    } else {
        Err(invalid_argument(&format!(
            "Media type '{mime}' is not supported. Valid media types: [message/*]"
        )))
    }
}

/// Decodes a proto `bytes` JSON value: base64 or base64url, padded or not.
fn decode_bytes(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '/']) {
        STANDARD_ANY.decode(text).ok()
    } else {
        URL_SAFE_ANY.decode(text).ok()
    }
}

fn google_error(code: u16, message: &str, reason: &str, status: &str) -> Response {
    google_error_detail(code, message, message, reason, status)
}

/// Google's JSON error, where the `errors[0].message` differs.
fn google_error_detail(
    code: u16,
    message: &str,
    detail: &str,
    reason: &str,
    status: &str,
) -> Response {
    Response::json(
        code,
        &json!({"error": {
            "code": code,
            "message": message,
            "errors": [{"message": detail, "domain": "global", "reason": reason}],
            "status": status,
        }}),
    )
}

fn invalid_argument(message: &str) -> Response {
    google_error(400, message, "invalidArgument", "INVALID_ARGUMENT")
}

fn unavailable() -> Response {
    google_error(
        503,
        "The service is currently unavailable.",
        "backendError",
        "UNAVAILABLE",
    )
}

fn too_large() -> Response {
    let message = "Request Too Large";
    Response::json(
        413,
        &json!({"error": {
            "code": 413,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "uploadTooLarge"}],
        }}),
    )
}

fn unauthenticated() -> Response {
    Response::json(
        401,
        &json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access \
                        token, login cookie or other valid authentication credential.",
            "errors": [{
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }],
            "status": "UNAUTHENTICATED",
        }}),
    )
    .with_header(
        "WWW-Authenticate",
        "Bearer realm=\"https://accounts.google.com/\"",
    )
}

// ---- Small helpers ----------------------------------------------------

/// Reads an RSA public key (SPKI or PKCS#1, DER or PEM) as PKCS#1 DER,
/// which is what `ring` verifies with.
fn rsa_public_key(key: &[u8]) -> Option<Vec<u8>> {
    let der = match std::str::from_utf8(key) {
        Ok(text) if text.contains("-----BEGIN") => pem_decode(text)?,
        _ => key.to_vec(),
    };
    // SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID, params }, BIT STRING }
    let spki = der_element(&der, 0x30)
        .and_then(|(contents, _)| {
            let (_, rest) = der_element(contents, 0x30)?;
            let (bits, _) = der_element(rest, 0x03)?;
            bits.strip_prefix(&[0])
        })
        .map(<[u8]>::to_vec);
    let pkcs1 = spki.unwrap_or(der);
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (contents, _) = der_element(&pkcs1, 0x30)?;
    let (_, rest) = der_element(contents, 0x02)?;
    der_element(rest, 0x02)?;
    Some(pkcs1)
}

/// Splits one DER element with tag `tag` off `input`: (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
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
    rest.split_at_checked(len)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
