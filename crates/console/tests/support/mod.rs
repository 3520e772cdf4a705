//! What the tests of the console's pages share: a console over a fresh
//! data directory with one administrator and two API tokens, requests
//! through the router, and a signed-in session.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use apimail_console::{
    AccountInfo, AdminUsers, ApiTokens, Console, ConsoleConfig, DEFAULT_LOGIN_LIMITS, router,
};
use apimail_core::Secret;
use apimail_core::journal::Journal;
use apimail_core::outbox::{EntryId, NewEntry, Outbox};
use apimail_core::token_store::TokenStore;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub console: Arc<Console>,
    pub router: Router,
    pub journal: Journal,
    pub outbox: Outbox,
    pub token_store: TokenStore,
    pub read_write: Secret,
    pub read_only: Secret,
}

/// The console before it is shared, for a test to add to.
pub fn open(dir: &tempfile::TempDir) -> Console {
    Console::open(config(dir)).unwrap()
}

/// The configuration [`open`] opens (the administrator `ann` added), for a
/// test to change.
pub fn config(dir: &tempfile::TempDir) -> ConsoleConfig {
    let data = dir.path();
    let admin = data.join("admin");
    let mut users = AdminUsers::load(&admin.join("users.json")).unwrap();
    users.add("ann", &Secret::new(PASSWORD)).unwrap();
    users.save().unwrap();
    ConsoleConfig {
        dir: admin,
        journal: Journal::open(data.join("journal")).unwrap(),
        outbox: Outbox::open(data.join("outbox")).unwrap(),
        token_store: TokenStore::new(data),
        accounts: vec![
            AccountInfo {
                name: "work".to_owned(),
                provider: "gmail".to_owned(),
                address: Some("ops@example.com".to_owned()),
                app_only: false,
            },
            AccountInfo {
                name: "tenant".to_owned(),
                provider: "graph".to_owned(),
                address: Some("ops@contoso.com".to_owned()),
                app_only: false,
            },
        ],
        zone: jiff::tz::TimeZone::UTC,
        tls: false,
        login_limits: DEFAULT_LOGIN_LIMITS,
    }
}

pub fn fixture_from(dir: tempfile::TempDir, console: Console) -> Fixture {
    let data = dir.path().to_owned();
    let mut tokens = ApiTokens::load(&data.join("admin/tokens.json")).unwrap();
    let read_write = tokens.create("ops", false).unwrap();
    let read_only = tokens.create("monitoring", true).unwrap();
    tokens.save().unwrap();
    let console = Arc::new(console);
    Fixture {
        router: router(Arc::clone(&console)),
        console,
        journal: Journal::open(data.join("journal")).unwrap(),
        outbox: Outbox::open(data.join("outbox")).unwrap(),
        token_store: TokenStore::new(&data),
        read_write,
        read_only,
        dir,
    }
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let console = open(&dir);
    fixture_from(dir, console)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The value of the cookie `name` this answer sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&format!("{name}="))
                    .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
            })
    }

    /// The whole `Set-Cookie` line of the cookie `name`.
    pub fn set_cookie_line(&self, name: &str) -> String {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    }

    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub async fn call(router: &Router, mut request: Request<Body>) -> Answer {
    let peer: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn get_as(uri: &str, session: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, format!("apimail_session={session}"))
        .body(Body::empty())
        .unwrap()
}

/// A GET as the session, in `lang` (the switch's cookie).
pub fn get_in(uri: &str, session: &str, lang: &str) -> Request<Body> {
    Request::get(uri)
        .header(
            header::COOKIE,
            format!("apimail_session={session}; apimail_lang={lang}"),
        )
        .body(Body::empty())
        .unwrap()
}

pub fn api(method: Method, uri: &str, token: &Secret) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.expose()))
        .body(Body::empty())
        .unwrap()
}

/// A form POST as the signed-in session; `fields` urlencoded.
pub fn post_as(uri: &str, session: &str, fields: &[(&str, &str)]) -> Request<Body> {
    form(
        uri,
        &format!("apimail_session={session}"),
        &serde_urlencoded::to_string(fields).unwrap(),
    )
}

/// A form POST with the `Cookie` header `cookie` and the urlencoded `body`.
pub fn form(uri: &str, cookie: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// The value of the first hidden field `name` in a page.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// Opens the login form and posts `ann`'s `password`; the answer.
pub async fn try_login(router: &Router, password: &str) -> Answer {
    let page = call(router, get("/login")).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = page.cookie("apimail_login").expect("a login cookie");
    assert_eq!(field(&page.body, "csrf"), token);
    let body =
        serde_urlencoded::to_string([("user", "ann"), ("password", password), ("csrf", &token)])
            .unwrap();
    call(
        router,
        form("/login", &format!("apimail_login={token}"), &body),
    )
    .await
}

/// Signs `ann` in; the session id.
pub async fn sign_in(router: &Router) -> String {
    let answer = try_login(router, PASSWORD).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    answer.cookie("apimail_session").expect("a session cookie")
}

/// Signs `ann` in; (session id, CSRF token).
pub async fn login(router: &Router) -> (String, String) {
    let session = sign_in(router).await;
    let overview = call(router, get_as("/", &session)).await;
    let csrf = field(&overview.body, "csrf");
    (session, csrf)
}

/// A queued entry from `from` for `account`.
pub fn queue(outbox: &Outbox, account: &str, from: &str) -> EntryId {
    let message = format!("From: {from}\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n");
    outbox
        .accept(
            message.as_bytes(),
            NewEntry {
                from: from.to_owned(),
                recipients: vec!["a@example.net".to_owned()],
                message_id: format!("<{from}>"),
                account: Some(account.to_owned()),
                ..NewEntry::default()
            },
        )
        .unwrap()
}
