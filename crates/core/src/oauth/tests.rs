//! Tests against a fake token endpoint on 127.0.0.1 and a fake browser.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimail_test_http::{Request, Response, Server};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

// ---------------------------------------------------------------------------
// The fake token endpoint

/// A scripted answer: status and JSON body.
type Answer = (u16, String);

fn json(status: u16, body: &str) -> Answer {
    (status, body.to_owned())
}

struct Fake {
    requests: Arc<Mutex<Vec<Request>>>,
    server: Server,
}

impl Fake {
    /// Starts a server that answers every request, whatever the path, with
    /// the next scripted answer (500 once the script runs out). Async only
    /// so that it reads like the rest of a test; the server has threads.
    async fn start(script: Vec<Answer>) -> Fake {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Mutex::new(VecDeque::from(script));
        let recorded = Arc::clone(&requests);
        let server = Server::start("token endpoint", move |request: &Request| {
            recorded.lock().unwrap().push(request.clone());
            let (status, body) = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((500, "script exhausted".to_owned()));
            let content_type = if body.starts_with('{') {
                "application/json"
            } else {
                "text/html"
            };
            Response::new(status)
                .with_header("Content-Type", content_type)
                .with_body(body.into_bytes())
                .into()
        })
        .unwrap();
        Fake { requests, server }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.server.base_url())).unwrap()
    }

    fn client(&self) -> OAuthClient {
        OAuthClient {
            client_id: "the-client".to_owned(),
            client_secret: Some(Secret::new("the-client-secret")),
            auth_url: Some(Url::parse("https://accounts.example.com/o/oauth2/auth").unwrap()),
            token_url: self.url("/token"),
            device_auth_url: Some(self.url("/devicecode")),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

const TOKEN: &str = r#"{"access_token":"ya29.new-access","token_type":"Bearer","expires_in":3599,
    "scope":"https://mail.google.com/ openid","refresh_token":"1//rotated-refresh",
    "id_token":"header.eyJlbWFpbCI6ImFAZXhhbXBsZS5jb20ifQ.sig"}"#;

fn token_json() -> Answer {
    json(200, &TOKEN.replace('\n', ""))
}

/// A port nobody listens on.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Every message of an error's chain, and its Debug form.
fn everything_about(error: &dyn std::error::Error) -> String {
    let mut text = format!("{error:?}");
    let mut next = Some(error);
    while let Some(e) = next {
        text.push('\n');
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

// ---------------------------------------------------------------------------
// The fake browser

/// Answers of the loopback listener, as the fake browser saw them.
type Seen = Arc<Mutex<Vec<String>>>;

/// A prompt that checks the authorization URL, then plays the browser:
/// asks for /favicon.ico, then for the callback with the query that
/// `callback` builds from the URL's `state`.
struct Browser {
    callback: fn(&str) -> String,
    url: Arc<Mutex<Option<(Url, String)>>>,
    seen: Seen,
    calls: usize,
}

impl Browser {
    fn new(callback: fn(&str) -> String) -> Self {
        Browser {
            callback,
            url: Arc::default(),
            seen: Arc::default(),
            calls: 0,
        }
    }

    fn param(&self, name: &str) -> Option<String> {
        let url = self.url.lock().unwrap();
        let (url, _) = url.as_ref()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

impl LoginPrompt for Browser {
    fn authorize_url(&mut self, url: &Url, redirect_uri: &str) {
        self.calls += 1;
        *self.url.lock().unwrap() = Some((url.clone(), redirect_uri.to_owned()));
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let query = (self.callback)(&state);
        let redirect = Url::parse(redirect_uri).unwrap();
        let port = redirect.port().unwrap();
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            // A speculative connection that never sends anything must not
            // hold up the real request.
            let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let favicon = get(port, "/favicon.ico").await;
            seen.lock().unwrap().push(favicon);
            let answer = get(port, &format!("/callback?{query}")).await;
            seen.lock().unwrap().push(answer);
        });
    }
}

/// The browser's two answers, once it has read both.
async fn pages(seen: &Seen) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pages = seen.lock().unwrap().clone();
        if pages.len() == 2 || Instant::now() > deadline {
            return pages;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get(port: u16, target: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

fn options() -> LoginOptions {
    let mut options = LoginOptions::new(["https://mail.google.com/", "openid", "email"]);
    options.extra_params = vec![
        ("access_type".to_owned(), "offline".to_owned()),
        ("prompt".to_owned(), "consent".to_owned()),
        ("login_hint".to_owned(), "a@example.com".to_owned()),
    ];
    options.timeout = Duration::from_secs(20);
    options
}

// ---------------------------------------------------------------------------
// login_with_browser

#[tokio::test]
async fn browser_login_exchanges_the_code_with_pkce() {
    let fake = Fake::start(vec![token_json()]).await;
    let mut browser = Browser::new(|state| format!("code=abc&state={state}&scope=x"));
    let tokens = login_with_browser(&fake.client(), &options(), &mut browser)
        .await
        .unwrap();
    assert_eq!(browser.calls, 1);

    // The authorization URL.
    let (url, redirect_uri) = browser.url.lock().unwrap().clone().unwrap();
    assert!(
        url.as_str()
            .starts_with("https://accounts.example.com/o/oauth2/auth?")
    );
    assert_eq!(browser.param("response_type").unwrap(), "code");
    assert_eq!(browser.param("client_id").unwrap(), "the-client");
    assert_eq!(browser.param("code_challenge_method").unwrap(), "S256");
    let challenge = browser.param("code_challenge").unwrap();
    assert_eq!(challenge.len(), 43);
    assert!(browser.param("state").unwrap().len() >= 16);
    assert_eq!(
        browser.param("scope").unwrap(),
        "https://mail.google.com/ openid email"
    );
    assert_eq!(browser.param("access_type").unwrap(), "offline");
    assert_eq!(browser.param("prompt").unwrap(), "consent");
    assert_eq!(browser.param("login_hint").unwrap(), "a@example.com");
    assert_eq!(browser.param("redirect_uri").unwrap(), redirect_uri);
    // Port 0 became a real port.
    let redirect = Url::parse(&redirect_uri).unwrap();
    assert_eq!(redirect.host_str(), Some("127.0.0.1"));
    assert_eq!(redirect.path(), "/callback");
    assert_ne!(redirect.port(), Some(0));
    assert!(redirect.port().is_some());

    // The browser's view.
    let seen = pages(&browser.seen).await;
    assert!(seen[0].starts_with("HTTP/1.1 404 "), "{}", seen[0]);
    assert!(seen[1].starts_with("HTTP/1.1 200 "), "{}", seen[1]);
    assert!(seen[1].contains("Connection: close"));
    assert!(seen[1].contains("apimail is authorized. You can close this tab"));

    // The code exchange.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/token");
    assert_eq!(
        requests[0].header("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert!(requests[0].header("authorization").is_none());
    let form = requests[0].form();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "abc");
    assert_eq!(form["redirect_uri"], redirect_uri);
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(form["client_secret"], "the-client-secret");
    let verifier = PkceCodeVerifier::new(form["code_verifier"].clone());
    assert_eq!(
        PkceCodeChallenge::from_code_verifier_sha256(&verifier).as_str(),
        challenge
    );

    // The tokens.
    assert_eq!(tokens.access_token.secret.expose(), "ya29.new-access");
    let expires_at = tokens.access_token.expires_at.unwrap();
    assert!((expires_at - crate::now_unix() - 3599).abs() <= 5);
    assert_eq!(
        tokens.refresh_token.as_ref().unwrap().expose(),
        "1//rotated-refresh"
    );
    assert_eq!(
        tokens.scopes.as_deref().unwrap(),
        ["https://mail.google.com/", "openid"]
    );
    assert_eq!(
        email_from_id_token(tokens.id_token.as_ref().unwrap()).as_deref(),
        Some("a@example.com")
    );
}

#[tokio::test]
async fn browser_login_public_client_on_localhost() {
    let fake = Fake::start(vec![json(
        200,
        r#"{"access_token":"t","token_type":"bearer"}"#,
    )])
    .await;
    let mut client = fake.client();
    client.client_secret = None;
    let mut options = options();
    options.redirect_host = RedirectHost::Localhost;
    let mut browser = Browser::new(|state| format!("state={state}&code=c%2F1"));
    let tokens = login_with_browser(&client, &options, &mut browser)
        .await
        .unwrap();
    let (_, redirect_uri) = browser.url.lock().unwrap().clone().unwrap();
    assert!(
        redirect_uri.starts_with("http://localhost:"),
        "{redirect_uri}"
    );
    let form = fake.requests()[0].form();
    assert_eq!(form["code"], "c/1");
    assert_eq!(form["client_id"], "the-client");
    assert!(!form.contains_key("client_secret"));
    assert_eq!(form["redirect_uri"], redirect_uri);
    assert_eq!(tokens.access_token.secret.expose(), "t");
    assert_eq!(tokens.access_token.expires_at, None);
    assert_eq!(tokens.refresh_token, None);
    assert_eq!(tokens.scopes, None);
    assert_eq!(tokens.id_token, None);
}

#[tokio::test]
async fn browser_login_wrong_state() {
    let fake = Fake::start(vec![token_json()]).await;
    let mut browser = Browser::new(|_| "code=abc&state=stale".to_owned());
    let error = login_with_browser(&fake.client(), &options(), &mut browser)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::StateMismatch), "{error:?}");
    assert!(error.to_string().contains("state mismatch"));
    let seen = pages(&browser.seen).await;
    assert!(seen[1].starts_with("HTTP/1.1 400 "), "{}", seen[1]);
    assert!(seen[1].contains("apimail auth login"));
    assert!(fake.requests().is_empty(), "no exchange");
}

#[tokio::test]
async fn browser_login_denied() {
    let fake = Fake::start(vec![]).await;
    let mut browser = Browser::new(|state| {
        format!("error=access_denied&error_description=User+said+no&state={state}")
    });
    let error = login_with_browser(&fake.client(), &options(), &mut browser)
        .await
        .unwrap_err();
    match &error {
        LoginError::Denied { description } => {
            assert_eq!(description.as_deref(), Some("User said no"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "the authorization was denied: User said no"
    );
    let seen = pages(&browser.seen).await;
    assert!(seen[1].contains("Authorization was denied. You can close this tab."));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn browser_login_provider_error() {
    let fake = Fake::start(vec![]).await;
    let mut browser = Browser::new(|state| format!("error=invalid_scope&state={state}"));
    let error = login_with_browser(&fake.client(), &options(), &mut browser)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LoginError::Provider { code, description: None } if code == "invalid_scope"),
        "{error:?}"
    );
}

#[tokio::test]
async fn browser_login_exchange_refused() {
    let fake = Fake::start(vec![json(
        400,
        r#"{"error":"invalid_grant","error_description":"Bad Request"}"#,
    )])
    .await;
    let mut browser = Browser::new(|state| format!("code=abc&state={state}"));
    let error = login_with_browser(&fake.client(), &options(), &mut browser)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            LoginError::Token(TokenError::InvalidGrant { description: Some(d) }) if d == "Bad Request"
        ),
        "{error:?}"
    );
    assert!(!everything_about(&error).contains("abc"));
}

#[tokio::test]
async fn browser_login_times_out() {
    let fake = Fake::start(vec![]).await;
    let mut options = options();
    options.timeout = Duration::from_millis(300);
    let mut nobody = |_: &Url, _: &str| {};
    let started = Instant::now();
    let error = login_with_browser(&fake.client(), &options, &mut nobody)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LoginError::TimedOut(d) if d == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        error.to_string(),
        "no answer from the browser within 300 ms"
    );
    assert_eq!(
        LoginError::TimedOut(LoginOptions::DEFAULT_TIMEOUT).to_string(),
        "no answer from the browser within 5 minutes"
    );
}

#[tokio::test]
async fn browser_login_on_a_fixed_port_and_a_busy_one() {
    let fake = Fake::start(vec![token_json()]).await;
    let port = dead_port().await;
    let mut options = options();
    options.port = port;
    let mut browser = Browser::new(|state| format!("code=abc&state={state}"));
    login_with_browser(&fake.client(), &options, &mut browser)
        .await
        .unwrap();
    let (_, redirect_uri) = browser.url.lock().unwrap().clone().unwrap();
    assert_eq!(redirect_uri, format!("http://127.0.0.1:{port}/callback"));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    options.port = busy.local_addr().unwrap().port();
    let mut nobody = |_: &Url, _: &str| panic!("no prompt when the port is busy");
    let error = login_with_browser(&fake.client(), &options, &mut nobody)
        .await
        .unwrap_err();
    match &error {
        LoginError::Listen { port, source } => {
            assert_eq!(*port, options.port);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot listen on 127.0.0.1:{}", options.port))
    );
}

#[tokio::test]
async fn browser_login_accepts_a_pasted_redirect() {
    let fake = Fake::start(vec![token_json()]).await;
    let (lines, pasted) = mpsc::unbounded_channel();
    // The user pastes garbage, a blank line, then the address bar.
    let mut prompt = move |url: &Url, redirect_uri: &str| {
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        lines.send("what now?\n".to_owned()).unwrap();
        lines.send("\n".to_owned()).unwrap();
        lines
            .send(format!("{redirect_uri}?state={state}&code=pasted-code\n"))
            .unwrap();
    };
    let tokens = browser_flow(&fake.client(), &options(), &mut prompt, || Some(pasted))
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "ya29.new-access");
    assert_eq!(fake.requests()[0].form()["code"], "pasted-code");
}

#[tokio::test]
async fn browser_login_pasted_input_ends_then_the_browser_answers() {
    let fake = Fake::start(vec![token_json()]).await;
    let (lines, pasted) = mpsc::unbounded_channel::<String>();
    drop(lines);
    let mut browser = Browser::new(|state| format!("code=abc&state={state}"));
    let tokens = browser_flow(&fake.client(), &options(), &mut browser, || Some(pasted))
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "ya29.new-access");
}

#[tokio::test]
async fn browser_login_needs_an_authorization_url() {
    let fake = Fake::start(vec![]).await;
    let mut client = fake.client();
    client.auth_url = None;
    let mut nobody = |_: &Url, _: &str| {};
    let error = login_with_browser(&client, &options(), &mut nobody)
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Config(_)), "{error:?}");
    client.auth_url = Some(Url::parse("http://accounts.example.com/auth").unwrap());
    let error = login_with_browser(&client, &options(), &mut nobody)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("https"), "{error}");
}

// ---------------------------------------------------------------------------
// refresh

#[tokio::test]
async fn refresh_with_a_rotated_refresh_token() {
    let fake = Fake::start(vec![token_json()]).await;
    let tokens = refresh(
        &fake.client(),
        &Secret::new("1//old-refresh"),
        &["https://mail.google.com/".to_owned()],
    )
    .await
    .unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "ya29.new-access");
    assert_eq!(tokens.refresh_token.unwrap().expose(), "1//rotated-refresh");
    let form = fake.requests()[0].form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "1//old-refresh");
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(form["client_secret"], "the-client-secret");
    assert_eq!(form["scope"], "https://mail.google.com/");
}

#[tokio::test]
async fn refresh_without_a_new_refresh_token() {
    let fake = Fake::start(vec![json(
        200,
        r#"{"access_token":"ya29.b","token_type":"Bearer","expires_in":60}"#,
    )])
    .await;
    let tokens = refresh(&fake.client(), &Secret::new("1//old"), &[])
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "ya29.b");
    assert_eq!(tokens.refresh_token, None);
    assert!(!fake.requests()[0].form().contains_key("scope"));
}

#[tokio::test]
async fn refresh_invalid_grant() {
    let fake = Fake::start(vec![json(
        400,
        r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
    )])
    .await;
    let error = refresh(&fake.client(), &Secret::new("1//old-refresh"), &[])
        .await
        .unwrap_err();
    match &error {
        TokenError::InvalidGrant { description } => assert_eq!(
            description.as_deref(),
            Some("Token has been expired or revoked.")
        ),
        other => panic!("{other:?}"),
    }
    assert!(!everything_about(&error).contains("old-refresh"));
}

#[tokio::test]
async fn refresh_other_oauth_errors_are_refusals() {
    let fake = Fake::start(vec![json(
        401,
        r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#,
    )])
    .await;
    let error = refresh(&fake.client(), &Secret::new("1//old-refresh"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Refused { code, description: Some(_) } if code == "invalid_client"),
        "{error:?}"
    );
    assert!(!everything_about(&error).contains("old-refresh"));
    assert!(!everything_about(&error).contains("the-client-secret"));
}

#[tokio::test]
async fn refresh_server_errors_are_unreachable() {
    for (status, body) in [
        (500, "<html>oops</html>"),
        (503, r#"{"error":"temporarily_unavailable"}"#),
        (429, "slow down"),
    ] {
        let fake = Fake::start(vec![json(status, body)]).await;
        let error = refresh(&fake.client(), &Secret::new("1//old-refresh"), &[])
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::Unreachable(_)), "{error:?}");
        let text = everything_about(&error);
        assert!(text.contains(&format!("http {status}")), "{text}");
        assert!(!text.contains("old-refresh"));
    }
}

#[tokio::test]
async fn refresh_connection_refused_is_unreachable() {
    let port = dead_port().await;
    let mut client = Fake::start(vec![]).await.client();
    client.token_url = Url::parse(&format!("http://127.0.0.1:{port}/token")).unwrap();
    let error = refresh(&client, &Secret::new("1//old-refresh"), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Unreachable(_)), "{error:?}");
    assert_eq!(error.to_string(), "the token endpoint could not be reached");
    assert!(!everything_about(&error).contains("old-refresh"));
}

#[tokio::test]
async fn refresh_unreadable_answers() {
    // A 404 page (a wrong URL, named without its query), and a token
    // response that does not parse: neither body is quoted (the second
    // holds a token).
    let fake = Fake::start(vec![
        json(404, "<html>not here</html>"),
        json(
            200,
            r#"{"access_token":"ya29.leak","token_type":"Bearer","expires_in":"3599"}"#,
        ),
    ])
    .await;
    let mut client = fake.client();
    client.token_url.set_query(Some("key=hidden"));
    let error = refresh(&client, &Secret::new("1//r"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(error, TokenError::NotTokenEndpoint { status: 404, .. }),
        "{error:?}"
    );
    let mut shown = client.token_url.clone();
    shown.set_query(None);
    assert_eq!(
        error.to_string(),
        format!("{shown} is not an OAuth token endpoint: it answered HTTP 404 with a web page")
    );
    assert!(!everything_about(&error).contains("hidden"));
    let error = refresh(&fake.client(), &Secret::new("1//r"), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Other(_)), "{error:?}");
    let text = everything_about(&error);
    assert!(text.contains("expires_in"), "{text}");
    assert!(!text.contains("ya29.leak"), "{text}");
}

#[tokio::test]
async fn refresh_does_not_follow_redirects() {
    let target = Fake::start(vec![token_json()]).await;
    let location = target.url("/token").to_string();
    let redirect = Server::start("redirect", move |_: &Request| {
        Response::new(307).with_header("Location", &location).into()
    })
    .unwrap();
    let mut client = target.client();
    client.token_url = Url::parse(&format!("{}/token", redirect.base_url())).unwrap();
    let error = refresh(&client, &Secret::new("1//r"), &[])
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Other(_)), "{error:?}");
    assert!(target.requests().is_empty(), "the redirect was followed");
}

// ---------------------------------------------------------------------------
// device code

const DEVICE: &str = r#"{"device_code":"dev-123","user_code":"ABCD-EFGH",
    "verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":1,
    "message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate."}"#;

fn device_json() -> Answer {
    json(200, &DEVICE.replace('\n', ""))
}

fn pending() -> Answer {
    json(
        400,
        r#"{"error":"authorization_pending","error_description":"AADSTS70016: pending"}"#,
    )
}

/// Runs the device flow with a sleep that only records its durations.
async fn run_device(
    fake: &Fake,
) -> (
    Result<TokenResponse, LoginError>,
    Vec<DeviceCode>,
    Vec<Duration>,
) {
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&sleeps);
    let mut shown = Vec::new();
    let mut show = |code: &DeviceCode| shown.push(code.clone());
    let scopes = ["offline_access".to_owned(), "Mail.Send".to_owned()];
    let result = device_flow(&fake.client(), &scopes, &mut show, move |interval| {
        recorded.lock().unwrap().push(interval);
        std::future::ready(())
    })
    .await;
    let sleeps = sleeps.lock().unwrap().clone();
    (result, shown, sleeps)
}

#[tokio::test]
async fn device_code_polling_gives_up_after_failures_in_a_row() {
    // One failure, then a pending answer (the count starts again), then
    // three failures in a row: the login ends with the last one.
    let fake = Fake::start(vec![
        device_json(),
        json(503, "busy"),
        pending(),
        json(503, "busy"),
        json(502, "bad gateway"),
        json(503, "busy"),
        token_json(),
    ])
    .await;
    let (result, shown, _) = run_device(&fake).await;
    assert_eq!(shown.len(), 1);
    let error = result.unwrap_err();
    assert!(
        matches!(&error, LoginError::Token(TokenError::Unreachable(_))),
        "{error:?}"
    );
    assert_eq!(
        fake.requests().len(),
        2 + 1 + client::MAX_FAILED_POLLS as usize
    );
}

#[tokio::test]
async fn device_code_polls_until_authorized() {
    let fake = Fake::start(vec![device_json(), pending(), pending(), token_json()]).await;
    let (result, shown, sleeps) = run_device(&fake).await;
    let tokens = result.unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "ya29.new-access");
    assert_eq!(
        shown,
        [DeviceCode {
            verification_uri: "https://microsoft.com/devicelogin".to_owned(),
            user_code: "ABCD-EFGH".to_owned(),
            verification_uri_complete: None,
            expires_in: Duration::from_secs(900),
            message: Some(
                "To sign in, use a web browser to open the page \
                 https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate."
                    .to_owned()
            ),
        }]
    );
    assert_eq!(sleeps, [Duration::from_secs(1); 2]);

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].path, "/devicecode");
    let form = requests[0].form();
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(form["scope"], "offline_access Mail.Send");
    for poll in &requests[1..] {
        assert_eq!(poll.path, "/token");
        let form = poll.form();
        assert_eq!(
            form["grant_type"],
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(form["device_code"], "dev-123");
        assert_eq!(form["client_id"], "the-client");
    }
}

#[tokio::test]
async fn device_code_slow_down_adds_five_seconds() {
    let fake = Fake::start(vec![
        device_json(),
        pending(),
        json(400, r#"{"error":"slow_down"}"#),
        pending(),
        token_json(),
    ])
    .await;
    let (result, _, sleeps) = run_device(&fake).await;
    result.unwrap();
    assert_eq!(
        sleeps,
        [1, 6, 6].map(Duration::from_secs),
        "pending keeps the interval, slow_down adds 5 s for good"
    );
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn device_code_declined() {
    for error in ["access_denied", "authorization_declined"] {
        let body = format!(r#"{{"error":"{error}","error_description":"AADSTS70000: declined"}}"#);
        let fake = Fake::start(vec![device_json(), pending(), json(400, &body)]).await;
        let (result, _, _) = run_device(&fake).await;
        match result {
            Err(LoginError::Denied { description }) => {
                assert_eq!(description.as_deref(), Some("AADSTS70000: declined"));
            }
            other => panic!("{error}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn device_code_expired() {
    let fake = Fake::start(vec![
        device_json(),
        pending(),
        json(400, r#"{"error":"expired_token"}"#),
    ])
    .await;
    let (result, _, _) = run_device(&fake).await;
    let error = result.unwrap_err();
    assert!(matches!(error, LoginError::Expired), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the device code expired before the sign-in was completed"
    );
}

#[tokio::test]
async fn device_code_other_errors() {
    // The device authorization itself refused (Google's answer for Gmail
    // scopes).
    let fake = Fake::start(vec![json(
        400,
        r#"{"error":"invalid_scope","error_description":"Invalid device flow scope"}"#,
    )])
    .await;
    let (result, shown, _) = run_device(&fake).await;
    assert!(shown.is_empty());
    assert!(
        matches!(
            result,
            Err(LoginError::Token(TokenError::Refused { ref code, .. })) if code == "invalid_scope"
        ),
        "{result:?}"
    );
    // A poll refused for another reason.
    let fake = Fake::start(vec![
        device_json(),
        json(400, r#"{"error":"bad_verification_code"}"#),
    ])
    .await;
    let (result, _, _) = run_device(&fake).await;
    assert!(
        matches!(
            result,
            Err(LoginError::Token(TokenError::Refused { ref code, .. })) if code == "bad_verification_code"
        ),
        "{result:?}"
    );
    // No device endpoint configured.
    let mut client = fake.client();
    client.device_auth_url = None;
    let error = login_with_device_code(&client, &[], &mut |_: &DeviceCode| {})
        .await
        .unwrap_err();
    assert!(matches!(error, LoginError::Config(_)), "{error:?}");
}

// ---------------------------------------------------------------------------
// client credentials, revocation

#[tokio::test]
async fn client_credentials_with_a_secret() {
    let fake = Fake::start(vec![json(
        200,
        r#"{"access_token":"app","token_type":"Bearer","expires_in":3599,"ext_expires_in":3599}"#,
    )])
    .await;
    let scopes = ["https://graph.microsoft.com/.default".to_owned()];
    let tokens = client_credentials(&fake.client(), &scopes, None)
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret.expose(), "app");
    let form = fake.requests()[0].form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(form["client_secret"], "the-client-secret");
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
    assert!(!form.contains_key("client_assertion"));
}

#[tokio::test]
async fn client_credentials_with_an_assertion() {
    let fake = Fake::start(vec![
        json(200, r#"{"access_token":"app","token_type":"Bearer"}"#),
        json(
            400,
            r#"{"error":"invalid_client","error_description":"AADSTS700027: bad assertion"}"#,
        ),
    ])
    .await;
    let scopes = ["https://graph.microsoft.com/.default".to_owned()];
    let assertion = Secret::new("eyJhbGciOiJSUzI1NiJ9.e30.signature");
    client_credentials(&fake.client(), &scopes, Some(&assertion))
        .await
        .unwrap();
    let form = fake.requests()[0].form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "the-client");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_assertion"], assertion.expose());
    assert!(!form.contains_key("client_secret"));

    let error = client_credentials(&fake.client(), &scopes, Some(&assertion))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::Refused { code, .. } if code == "invalid_client"),
        "{error:?}"
    );
    assert!(!everything_about(&error).contains("signature"));
}

#[tokio::test]
async fn revoke_posts_the_token() {
    let fake = Fake::start(vec![
        json(200, ""),
        json(
            400,
            r#"{"error":"invalid_token","error_description":"Token expired or revoked"}"#,
        ),
        json(503, "busy"),
    ])
    .await;
    let url = fake.url("/revoke");
    revoke(&url, &Secret::new("1//refresh+/=")).await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/revoke");
    assert_eq!(
        request.header("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(request.form()["token"], "1//refresh+/=");

    let error = revoke(&url, &Secret::new("1//gone")).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::Refused { code, .. } if code == "invalid_token"),
        "{error:?}"
    );
    let error = revoke(&url, &Secret::new("1//gone")).await.unwrap_err();
    assert!(matches!(error, TokenError::Unreachable(_)), "{error:?}");
    assert!(!everything_about(&error).contains("1//gone"));
}

// ---------------------------------------------------------------------------
// id tokens, odds and ends

fn jwt(claims: &str) -> Secret {
    Secret::new(format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"1"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    ))
}

#[test]
fn email_from_id_tokens() {
    assert_eq!(
        email_from_id_token(&jwt(
            r#"{"iss":"https://accounts.google.com","email":"a@example.com","email_verified":true}"#
        ))
        .as_deref(),
        Some("a@example.com")
    );
    assert_eq!(
        email_from_id_token(&jwt(r#"{"preferred_username":"b@contoso.com","upn":"x"}"#)).as_deref(),
        Some("b@contoso.com")
    );
    assert_eq!(
        email_from_id_token(&jwt(r#"{"email":"","upn":"c@contoso.com"}"#)).as_deref(),
        Some("c@contoso.com")
    );
    // Padded base64 is tolerated.
    let padded = Secret::new(format!(
        "h.{}.s",
        base64::engine::general_purpose::URL_SAFE.encode(r#"{"email":"d@e.f"}"#)
    ));
    assert_eq!(email_from_id_token(&padded).as_deref(), Some("d@e.f"));
    assert_eq!(email_from_id_token(&jwt(r#"{"sub":"123"}"#)), None);
    assert_eq!(email_from_id_token(&Secret::new("not a jwt")), None);
    assert_eq!(email_from_id_token(&Secret::new("a.%%%.c")), None);
    assert_eq!(email_from_id_token(&jwt("[1]")), None);
}

#[test]
fn the_flows_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let client = OAuthClient {
        client_id: "c".to_owned(),
        client_secret: None,
        auth_url: None,
        token_url: Url::parse("https://example.com/token").unwrap(),
        device_auth_url: None,
    };
    let options = LoginOptions::new(["s"]);
    let mut prompt = |_: &Url, _: &str| {};
    let mut show = |_: &DeviceCode| {};
    let secret = Secret::new("s");
    assert_send(&login_with_browser(&client, &options, &mut prompt));
    assert_send(&login_with_device_code(&client, &[], &mut show));
    assert_send(&refresh(&client, &secret, &[]));
    assert_send(&client_credentials(&client, &[], Some(&secret)));
    assert_send(&revoke(&client.token_url, &secret));
}

#[test]
fn login_options_defaults() {
    let options = LoginOptions::new(["a", "b"]);
    assert_eq!(options.scopes, ["a", "b"]);
    assert_eq!(options.port, 0);
    assert_eq!(options.redirect_host, RedirectHost::Ip127);
    assert_eq!(options.timeout, Duration::from_secs(300));
    assert!(!options.accept_pasted_redirect);
    assert_eq!(RedirectHost::Localhost.to_string(), "localhost");
}
