//! Tests of the fake Microsoft identity platform and Graph, driven with the
//! helper HTTP client.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apimail_tests::fake_microsoft::{
    CLIENT_ASSERTION_TYPE, DEFAULT_USER, DEVICE_CODE_GRANT, DeviceOutcome, FakeMicrosoft, Fault,
    GRAPH_DEFAULT_SCOPE, MAIL_READWRITE, MAIL_SEND, MAX_CHUNK_BYTES, MAX_REQUEST_BYTES,
    UPLOAD_SESSION_MIN_BYTES, USER_CODE, USER_READ, VERIFICATION_URI, certificate_x5t,
    certificate_x5t_s256, fixture_certificate_der, fixture_certificate_pem,
    fixture_certificate_pem_path, fixture_private_key_pkcs8, pem_block,
};
use apimail_tests::http::{self, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const WEB_CLIENT: &str = "99999999-8888-7777-6666-555555555555";
const WEB_SECRET: &str = "web~secret~value";
const APP_ID: &str = "aaaaaaaa-1111-2222-3333-bbbbbbbbbbbb";
const APP_SECRET: &str = "app~secret~value";
const TENANT: &str = "contoso.onmicrosoft.com";
const REDIRECT: &str = "http://localhost:48888/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";
const SCOPES: &str = "offline_access https://graph.microsoft.com/Mail.Send";
const MESSAGE: &[u8] = b"From: user@contoso.com\r\nTo: friend@example.org\r\n\
Subject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nBody line \xc3\xa9\r\n\xff\xfe tail without newline";

// ---- Helpers ------------------------------------------------------------

fn fake() -> FakeMicrosoft {
    let fake = FakeMicrosoft::start();
    fake.add_public_client(CLIENT_ID);
    fake.add_redirect_uri(CLIENT_ID, "http://localhost/callback");
    fake
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn authorize_url(fake: &FakeMicrosoft, tenant: &str, client_id: &str, scope: &str) -> String {
    let mut url = url::Url::parse(&fake.authorize_url(tenant)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "xyz state")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", "user@contoso.com");
    url.into()
}

fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut url = url::Url::parse(url).unwrap();
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(n, _)| n != name)
        .collect();
    if let Some(value) = value {
        pairs.push((name.to_owned(), value.to_owned()));
    }
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.into()
}

/// Plays the browser: follows the authorization URL, returns the redirect's
/// location.
fn redirect_of(url: &str) -> url::Url {
    let response = http::get(url);
    assert_eq!(response.status, 302, "{}", response.body_text());
    url::Url::parse(response.header("location").unwrap()).unwrap()
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn code_for(fake: &FakeMicrosoft, client_id: &str, scope: &str) -> String {
    let location = redirect_of(&authorize_url(fake, "organizations", client_id, scope));
    param(&location, "code").expect("the redirect carries a code")
}

fn token(fake: &FakeMicrosoft, tenant: &str, form: &[(&str, &str)]) -> Response {
    http::post_form(&fake.token_url(tenant), form)
}

fn exchange(fake: &FakeMicrosoft, code: &str, verifier: &str) -> Response {
    token(
        fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("scope", SCOPES),
        ],
    )
}

/// Signs in through the browser flow; returns the token response.
fn login(fake: &FakeMicrosoft, scope: &str) -> Value {
    let code = code_for(fake, CLIENT_ID, scope);
    let response = exchange(fake, &code, VERIFIER);
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.body_json()
}

fn access_token(fake: &FakeMicrosoft, scopes: &str) -> String {
    fake.issue_access_token(DEFAULT_USER, scopes)
}

fn refresh(fake: &FakeMicrosoft, refresh_token: &str) -> Response {
    token(
        fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
}

/// The AADSTS number of an identity error.
fn aadsts(response: &Response) -> u64 {
    response.body_json()["error_codes"][0].as_u64().unwrap_or(0)
}

fn oauth_error(response: &Response) -> String {
    response.body_json()["error"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn graph_code(response: &Response) -> String {
    response.body_json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn graph_message(response: &Response) -> String {
    response.body_json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn graph_request(
    fake: &FakeMicrosoft,
    method: &str,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<Response> {
    let url = format!("{}{path}", fake.graph_url());
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(content_type) = content_type {
        headers.push(("Content-Type", content_type));
    }
    http::request(method, &url, &headers, body)
}

fn graph(
    fake: &FakeMicrosoft,
    method: &str,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    graph_request(fake, method, path, token, content_type, body).unwrap()
}

/// Base64 with CRLF every 76 characters, as MIME tools write it.
fn wrapped_base64(bytes: &[u8]) -> Vec<u8> {
    let encoded = STANDARD.encode(bytes);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    lines.join("\r\n").into_bytes()
}

fn send_mime(fake: &FakeMicrosoft, token: &str, mailbox: &str, mime: &[u8]) -> Response {
    graph(
        fake,
        "POST",
        &format!("/v1.0/{mailbox}/sendMail"),
        token,
        Some("text/plain"),
        &wrapped_base64(mime),
    )
}

fn send_ok(fake: &FakeMicrosoft, token: &str) -> std::io::Result<Response> {
    graph_request(
        fake,
        "POST",
        "/v1.0/me/sendMail",
        token,
        Some("text/plain"),
        STANDARD.encode(MESSAGE).as_bytes(),
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- Authorization code + PKCE -------------------------------------------

#[test]
fn auth_code_with_pkce_returns_rotatable_tokens() {
    let fake = fake();
    fake.set_user("alice@contoso.com");
    let scope = "offline_access openid profile https://graph.microsoft.com/Mail.Send User.Read";
    let location = redirect_of(&authorize_url(&fake, "organizations", CLIENT_ID, scope));
    assert_eq!(location.host_str(), Some("localhost"));
    assert_eq!(location.port(), Some(48888));
    assert_eq!(param(&location, "state").as_deref(), Some("xyz state"));
    assert!(param(&location, "session_state").is_some());
    let code = param(&location, "code").unwrap();

    let recorded = fake.authorize_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["login_hint"], "user@contoso.com");
    assert_eq!(recorded[0]["code_challenge"], challenge(VERIFIER));
    assert_eq!(fake.tenants(), ["organizations"]);

    let response = exchange(&fake, &code, VERIFIER);
    assert_eq!(response.status, 200, "{}", response.body_text());
    let tokens = response.body_json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], format!("{MAIL_SEND} {USER_READ}"));
    assert_eq!(tokens["expires_in"], 3599);
    assert_eq!(tokens["ext_expires_in"], 3599);
    let access = tokens["access_token"].as_str().unwrap();
    assert!(access.starts_with("eyJ0eXAi.fake-"), "{access}");
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert!(refresh_token.starts_with("0.AAA-fake-"), "{refresh_token}");

    let id_token = tokens["id_token"].as_str().unwrap();
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], "");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["preferred_username"], "alice@contoso.com");
    assert_eq!(claims["email"], "alice@contoso.com");
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["ver"], "2.0");

    assert_eq!(fake.token_requests("authorization_code"), 1);
    assert_eq!(fake.total_token_requests(), 1);
    assert_eq!(fake.token_forms()[0]["code_verifier"], VERIFIER);
    assert_eq!(fake.tenants(), ["organizations", "organizations"]);

    // The token works at Graph for the user who signed in.
    let me = graph(&fake, "GET", "/v1.0/me", access, None, b"");
    assert_eq!(me.status, 200, "{}", me.body_text());
    assert_eq!(me.body_json()["userPrincipalName"], "alice@contoso.com");
}

#[test]
fn refresh_and_id_tokens_need_offline_access_and_openid() {
    let fake = fake();
    let tokens = login(&fake, "https://graph.microsoft.com/Mail.Send");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    assert_eq!(tokens["scope"], MAIL_SEND);
    // Short names mean Graph.
    let tokens = login(&fake, "offline_access Mail.Send");
    assert_eq!(tokens["scope"], MAIL_SEND);
    assert!(tokens["refresh_token"].is_string());
}

#[test]
fn wrong_verifier_is_aadsts501481_in_the_aad_error_format() {
    let fake = fake();
    let code = code_for(&fake, CLIENT_ID, SCOPES);
    let response = exchange(
        &fake,
        &code,
        "another-verifier-of-sufficient-length-1234567",
    );
    assert_eq!(response.status, 400);
    let body = response.body_json();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([501481]));
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(
            "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the \
             authorization request."
        ),
        "{description}"
    );
    let trace_id = body["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 36);
    assert!(description.contains(&format!("Trace ID: {trace_id}")));
    assert!(description.contains("Correlation ID: "));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["error_uri"],
        "https://login.microsoftonline.com/error?code=501481"
    );
    // A missing verifier fails the same way; the right one still works.
    let response = token(
        &fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    );
    assert_eq!(aadsts(&response), 501481);
    assert_eq!(exchange(&fake, &code, VERIFIER).status, 200);
}

#[test]
fn codes_work_once_and_unknown_codes_fail() {
    let fake = fake();
    let code = code_for(&fake, CLIENT_ID, SCOPES);
    assert_eq!(exchange(&fake, &code, VERIFIER).status, 200);
    let again = exchange(&fake, &code, VERIFIER);
    assert_eq!((again.status, aadsts(&again)), (400, 54005));
    let unknown = exchange(&fake, "1.AAAA-not-a-code", VERIFIER);
    assert_eq!(oauth_error(&unknown), "invalid_grant");
    assert_eq!(aadsts(&unknown), 70000);
    assert!(
        unknown.body_json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70000: The provided value for the 'code' parameter is not valid.")
    );
}

#[test]
fn loopback_redirect_uris_match_on_any_port_other_uris_exactly() {
    let fake = fake();
    let url = authorize_url(&fake, "common", CLIENT_ID, SCOPES);
    for redirect in [
        "http://localhost:1/callback",
        "http://localhost/callback",
        "http://localhost:61234/callback",
    ] {
        let location = redirect_of(&with_param(&url, "redirect_uri", Some(redirect)));
        assert_eq!(location.path(), "/callback");
    }
    for redirect in [
        "http://127.0.0.1:48888/callback",
        "http://localhost:48888/other",
        "https://localhost:48888/callback",
    ] {
        let response = http::get(&with_param(&url, "redirect_uri", Some(redirect)));
        assert_eq!(response.status, 400, "{redirect}");
        assert!(response.body_text().contains("AADSTS50011"), "{redirect}");
    }
    let unknown = http::get(&with_param(&url, "client_id", Some("nobody")));
    assert_eq!(unknown.status, 400);
    assert!(unknown.body_text().contains("AADSTS700016"));

    // A client with no reply address at all.
    fake.add_public_client("no-redirects");
    let none = http::get(&with_param(&url, "client_id", Some("no-redirects")));
    assert!(none.body_text().contains("AADSTS500113"));

    // At the token endpoint the redirect URI must be the authorization
    // request's.
    let code = code_for(&fake, CLIENT_ID, SCOPES);
    let response = token(
        &fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost:5000/callback"),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(response.status, 400);
    assert_eq!(aadsts(&response), 50011);
}

#[test]
fn denied_consent_and_bad_requests_redirect_with_errors() {
    let fake = fake();
    let url = authorize_url(&fake, "common", CLIENT_ID, SCOPES);
    let cases = [
        ("response_type", Some("token"), "unsupported_response_type"),
        ("code_challenge", None, "invalid_request"),
        ("code_challenge_method", Some("plain"), "invalid_request"),
        ("scope", None, "invalid_request"),
        (
            "scope",
            Some("https://graph.microsoft.com/Mail.Send https://outlook.office.com/Mail.Send"),
            "invalid_resource",
        ),
        (
            "scope",
            Some("https://graph.microsoft.com/Mail.Send https://graph.microsoft.us/Mail.Send"),
            "invalid_scope",
        ),
    ];
    for (name, value, error) in cases {
        let location = redirect_of(&with_param(&url, name, value));
        assert_eq!(
            param(&location, "error").as_deref(),
            Some(error),
            "{name}={value:?}"
        );
        assert!(
            param(&location, "error_description")
                .unwrap()
                .starts_with("AADSTS")
        );
        assert_eq!(param(&location, "state").as_deref(), Some("xyz state"));
        assert_eq!(param(&location, "code"), None);
    }
    fake.set_deny(true);
    let location = redirect_of(&url);
    assert_eq!(param(&location, "error").as_deref(), Some("access_denied"));
    assert!(
        param(&location, "error_description")
            .unwrap()
            .starts_with("AADSTS65004")
    );
    assert_eq!(param(&location, "state").as_deref(), Some("xyz state"));
}

#[test]
fn refresh_tokens_rotate_and_the_old_one_then_fails() {
    let fake = fake();
    let tokens = login(&fake, "offline_access Mail.Send Mail.ReadWrite");
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();

    let response = refresh(&fake, &first);
    assert_eq!(response.status, 200, "{}", response.body_text());
    let refreshed = response.body_json();
    let second = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(refreshed["scope"], format!("{MAIL_SEND} {MAIL_READWRITE}"));
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(send_ok(&fake, access).unwrap().status, 202);

    let old = refresh(&fake, &first);
    assert_eq!(old.status, 400);
    assert_eq!(oauth_error(&old), "invalid_grant");
    assert_eq!(aadsts(&old), 70000);

    // A narrower scope is allowed, a wider one is not.
    let narrow = token(
        &fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "refresh_token"),
            ("refresh_token", &second),
            (
                "scope",
                "offline_access https://graph.microsoft.com/Mail.Send",
            ),
        ],
    );
    assert_eq!(narrow.status, 200, "{}", narrow.body_text());
    assert_eq!(narrow.body_json()["scope"], MAIL_SEND);
    let third = narrow.body_json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wider = token(
        &fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("grant_type", "refresh_token"),
            ("refresh_token", &third),
            ("scope", "https://graph.microsoft.com/Mail.Send User.Read"),
        ],
    );
    assert_eq!(aadsts(&wider), 65001);

    fake.revoke_refresh_tokens();
    let revoked = refresh(&fake, &third);
    assert_eq!(
        (oauth_error(&revoked), aadsts(&revoked)),
        ("invalid_grant".into(), 50173)
    );
    let unknown = refresh(&fake, "0.AAA-unknown");
    assert_eq!(aadsts(&unknown), 9002313);
    assert_eq!(fake.token_requests("refresh_token"), 6);
}

#[test]
fn confidential_clients_must_authenticate_and_public_ones_must_not() {
    let fake = fake();
    fake.add_confidential_client(WEB_CLIENT, WEB_SECRET);
    fake.add_redirect_uri(WEB_CLIENT, REDIRECT);
    let redeem = |code: &str, secret: Option<&str>, basic: bool| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        if !basic {
            form.push(("client_id", WEB_CLIENT));
        }
        if let (Some(secret), false) = (secret, basic) {
            form.push(("client_secret", secret));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let authorization = format!(
            "Basic {}",
            STANDARD.encode(format!("{WEB_CLIENT}:{}", secret.unwrap_or("")))
        );
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if basic {
            headers.push(("Authorization", authorization.as_str()));
        }
        http::request(
            "POST",
            &fake.token_url("organizations"),
            &headers,
            body.as_bytes(),
        )
        .unwrap()
    };
    let code = code_for(&fake, WEB_CLIENT, SCOPES);
    let missing = redeem(&code, None, false);
    assert_eq!((missing.status, aadsts(&missing)), (401, 7000218));
    assert_eq!(oauth_error(&missing), "invalid_client");
    let wrong = redeem(&code, Some("wrong"), false);
    assert_eq!((wrong.status, aadsts(&wrong)), (401, 7000215));
    assert_eq!(redeem(&code, Some(WEB_SECRET), true).status, 200);
    let code = code_for(&fake, WEB_CLIENT, SCOPES);
    assert_eq!(redeem(&code, Some(WEB_SECRET), false).status, 200);

    // A public client presenting a secret.
    let code = code_for(&fake, CLIENT_ID, SCOPES);
    let response = token(
        &fake,
        "organizations",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", "anything"),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!((response.status, aadsts(&response)), (401, 700025));
    let unknown = token(
        &fake,
        "organizations",
        &[
            ("client_id", "nobody"),
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
        ],
    );
    assert_eq!(
        (unknown.status, oauth_error(&unknown)),
        (400, "unauthorized_client".into())
    );
    assert_eq!(aadsts(&unknown), 700016);
}

#[test]
fn unsupported_grants_and_content_types_are_refused() {
    let fake = fake();
    let response = token(&fake, "common", &[("grant_type", "password")]);
    assert_eq!(
        (oauth_error(&response), aadsts(&response)),
        ("unsupported_grant_type".into(), 70003)
    );
    let response = http::request(
        "POST",
        &fake.token_url("common"),
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .unwrap();
    assert_eq!((response.status, aadsts(&response)), (400, 90004));
    assert_eq!(fake.total_token_requests(), 2);
}

// ---- Client credentials ----------------------------------------------------

fn client_credentials(fake: &FakeMicrosoft, tenant: &str, extra: &[(&str, &str)]) -> Response {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", APP_ID),
        ("scope", GRAPH_DEFAULT_SCOPE),
    ];
    for (name, value) in extra {
        form.retain(|(n, _)| n != name);
        form.push((name, value));
    }
    token(fake, tenant, &form)
}

#[test]
fn client_credentials_with_a_secret_give_an_app_only_token() {
    let fake = fake();
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    fake.add_mailbox("shared@contoso.com");
    let response = client_credentials(&fake, TENANT, &[("client_secret", APP_SECRET)]);
    assert_eq!(response.status, 200, "{}", response.body_text());
    let body = response.body_json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("id_token").is_none());
    let access = body["access_token"].as_str().unwrap();
    let sent = send_mime(&fake, access, "users/shared@contoso.com", MESSAGE);
    assert_eq!(sent.status, 202, "{}", sent.body_text());
    assert_eq!(fake.delivered()[0].mailbox, "shared@contoso.com");
    // Only Mail.Send by default: no drafts.
    let draft = graph(
        &fake,
        "POST",
        "/v1.0/users/shared@contoso.com/messages",
        access,
        Some("application/json"),
        br#"{"subject":"x"}"#,
    );
    assert_eq!(
        (draft.status, graph_code(&draft)),
        (403, "ErrorAccessDenied".into())
    );

    let scope = client_credentials(
        &fake,
        TENANT,
        &[("client_secret", APP_SECRET), ("scope", MAIL_SEND)],
    );
    assert_eq!(
        (scope.status, oauth_error(&scope), aadsts(&scope)),
        (400, "invalid_scope".into(), 1002012)
    );
    let wrong_tenant = client_credentials(&fake, "common", &[("client_secret", APP_SECRET)]);
    assert_eq!(aadsts(&wrong_tenant), 700016);
    let wrong_secret = client_credentials(&fake, TENANT, &[("client_secret", "nope")]);
    assert_eq!((wrong_secret.status, aadsts(&wrong_secret)), (401, 7000215));
    let public = token(
        &fake,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("scope", GRAPH_DEFAULT_SCOPE),
        ],
    );
    assert_eq!((public.status, aadsts(&public)), (401, 7000218));
    assert_eq!(fake.token_requests("client_credentials"), 5);
}

/// Signs a client assertion with the fixture key.
fn sign_assertion(header: &Value, claims: &Value, pss: bool) -> String {
    let key = ring::signature::RsaKeyPair::from_pkcs8(&fixture_private_key_pkcs8()).unwrap();
    let head = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    let algorithm: &dyn ring::signature::RsaEncoding = if pss {
        &ring::signature::RSA_PSS_SHA256
    } else {
        &ring::signature::RSA_PKCS1_SHA256
    };
    key.sign(
        algorithm,
        &ring::rand::SystemRandom::new(),
        head.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn assertion_header() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "x5t": certificate_x5t(fixture_certificate_der())})
}

fn assertion_claims(fake: &FakeMicrosoft) -> Value {
    let now = now();
    json!({
        "aud": fake.token_url(TENANT),
        "iss": APP_ID,
        "sub": APP_ID,
        "jti": "5f9d6e1c-0000-4000-8000-000000000001",
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

fn assertion_grant(fake: &FakeMicrosoft, assertion: &str) -> Response {
    client_credentials(
        fake,
        TENANT,
        &[
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
}

#[test]
fn fixture_files_hold_one_certificate_and_its_key() {
    let pem = fixture_certificate_pem();
    assert_eq!(
        pem_block(pem, "CERTIFICATE").unwrap(),
        fixture_certificate_der()
    );
    assert_eq!(
        std::fs::read_to_string(fixture_certificate_pem_path()).unwrap(),
        pem
    );
    let key = ring::signature::RsaKeyPair::from_pkcs8(&fixture_private_key_pkcs8()).unwrap();
    assert_eq!(key.public().modulus_len(), 256);
    // x5t is the base64url SHA-1 thumbprint openssl prints as
    // 4B:08:1D:88:E0:67:F7:8B:76:DD:85:1F:5A:E6:02:FA:92:62:AF:63.
    let sha1 = [
        0x4b, 0x08, 0x1d, 0x88, 0xe0, 0x67, 0xf7, 0x8b, 0x76, 0xdd, 0x85, 0x1f, 0x5a, 0xe6, 0x02,
        0xfa, 0x92, 0x62, 0xaf, 0x63,
    ];
    assert_eq!(
        certificate_x5t(fixture_certificate_der()),
        URL_SAFE_NO_PAD.encode(sha1)
    );
}

#[test]
fn client_credentials_with_a_certificate_assertion() {
    let fake = fake();
    fake.add_app(TENANT, APP_ID, None, Some(fixture_certificate_der()));
    fake.set_app_roles(APP_ID, &["Mail.Send", "Mail.ReadWrite"]);
    let claims = assertion_claims(&fake);

    let response = assertion_grant(&fake, &sign_assertion(&assertion_header(), &claims, false));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let access = response.body_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let draft = graph(
        &fake,
        "POST",
        &format!("/v1.0/users/{DEFAULT_USER}/messages"),
        &access,
        Some("application/json"),
        br#"{"subject":"app draft"}"#,
    );
    assert_eq!(draft.status, 201, "{}", draft.body_text());

    // x5t#S256 alone, and PS256, are accepted too.
    let s256 = json!({
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": certificate_x5t_s256(fixture_certificate_der()),
    });
    let response = assertion_grant(&fake, &sign_assertion(&s256, &claims, true));
    assert_eq!(response.status, 200, "{}", response.body_text());

    let mut cases: Vec<(&str, String, u64)> = Vec::new();
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!(fake.token_url("common"));
    cases.push((
        "wrong aud",
        sign_assertion(&assertion_header(), &wrong_aud, false),
        700023,
    ));
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 10);
    cases.push((
        "expired",
        sign_assertion(&assertion_header(), &expired, false),
        700024,
    ));
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("someone-else");
    cases.push((
        "issuer",
        sign_assertion(&assertion_header(), &other_issuer, false),
        700021,
    ));
    let mut no_jti = claims.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    cases.push((
        "no jti",
        sign_assertion(&assertion_header(), &no_jti, false),
        50027,
    ));
    let unknown_key = json!({"alg": "RS256", "x5t": URL_SAFE_NO_PAD.encode([7u8; 20])});
    cases.push((
        "unknown x5t",
        sign_assertion(&unknown_key, &claims, false),
        700027,
    ));
    let good = sign_assertion(&assertion_header(), &claims, false);
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([1u8; 256]));
    cases.push(("bad signature", forged, 700027));
    cases.push(("garbage", "not.a.jwt".to_owned(), 50027));
    for (what, assertion, code) in cases {
        let response = assertion_grant(&fake, &assertion);
        assert_eq!(response.status, 401, "{what}: {}", response.body_text());
        assert_eq!(oauth_error(&response), "invalid_client", "{what}");
        assert_eq!(aadsts(&response), code, "{what}");
    }

    // An app without a certificate cannot use an assertion.
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    let response = assertion_grant(&fake, &good);
    assert_eq!(aadsts(&response), 700027);
}

// ---- Device code -------------------------------------------------------------

fn start_device_code(fake: &FakeMicrosoft) -> Value {
    let response = http::post_form(
        &fake.device_code_url("consumers"),
        &[("client_id", CLIENT_ID), ("scope", SCOPES)],
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.body_json()
}

fn poll(fake: &FakeMicrosoft, device_code: &str) -> Response {
    token(
        fake,
        "consumers",
        &[
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", CLIENT_ID),
            ("device_code", device_code),
        ],
    )
}

#[test]
fn device_code_is_pending_then_signs_in() {
    let fake = fake();
    let started = start_device_code(&fake);
    assert_eq!(started["user_code"], USER_CODE);
    assert_eq!(started["verification_uri"], VERIFICATION_URI);
    assert_eq!(started["expires_in"], 900);
    assert_eq!(started["interval"], 1);
    assert!(
        started["message"]
            .as_str()
            .unwrap()
            .contains("enter the code ABCD-EFGH")
    );
    let device_code = started["device_code"].as_str().unwrap();
    for _ in 0..2 {
        let pending = poll(&fake, device_code);
        assert_eq!(pending.status, 400);
        assert_eq!(oauth_error(&pending), "authorization_pending");
        assert_eq!(aadsts(&pending), 70016);
    }
    let done = poll(&fake, device_code);
    assert_eq!(done.status, 200, "{}", done.body_text());
    assert_eq!(done.body_json()["scope"], MAIL_SEND);
    assert!(done.body_json()["refresh_token"].is_string());
    assert_eq!(fake.device_polls(), 3);
    assert_eq!(fake.device_code_requests(), 1);
    assert_eq!(fake.token_requests(DEVICE_CODE_GRANT), 3);
    // A device code works once.
    assert_eq!(oauth_error(&poll(&fake, device_code)), "invalid_grant");
    assert_eq!(oauth_error(&poll(&fake, "unknown")), "invalid_grant");
}

#[test]
fn device_code_outcomes() {
    let fake = fake();
    fake.set_device_pending_polls(0);
    fake.set_device_outcome(DeviceOutcome::Decline);
    let code = start_device_code(&fake)["device_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let declined = poll(&fake, &code);
    assert_eq!(oauth_error(&declined), "authorization_declined");

    fake.set_device_outcome(DeviceOutcome::Expire);
    let code = start_device_code(&fake)["device_code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(oauth_error(&poll(&fake, &code)), "expired_token");

    fake.set_device_pending_polls(1);
    fake.set_device_outcome(DeviceOutcome::SlowDownOnce);
    let code = start_device_code(&fake)["device_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let errors: Vec<String> = (0..2).map(|_| oauth_error(&poll(&fake, &code))).collect();
    assert_eq!(errors, ["slow_down", "authorization_pending"]);
    assert_eq!(poll(&fake, &code).status, 200);
    assert_eq!(fake.device_polls(), 5);

    let missing_scope =
        http::post_form(&fake.device_code_url("common"), &[("client_id", CLIENT_ID)]);
    assert_eq!(aadsts(&missing_scope), 900144);
}

// ---- sendMail ------------------------------------------------------------------

#[test]
fn send_mail_mime_is_accepted_and_stored_byte_for_byte() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    let response = send_mime(&fake, &token, "me", MESSAGE);
    assert_eq!(response.status, 202, "{}", response.body_text());
    assert!(response.body.is_empty());
    assert!(response.header("request-id").is_some());
    // The user's own mailbox by (percent-encoded) address works too.
    let response = send_mime(&fake, &token, "users/USER%40contoso.com", MESSAGE);
    assert_eq!(response.status, 202, "{}", response.body_text());

    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].mime, MESSAGE);
    assert_eq!(delivered[0].via, "sendMail-mime");
    assert_eq!(delivered[0].mailbox, DEFAULT_USER);
    assert_eq!(delivered[0].access_token, token);
    assert_eq!(delivered[0].json, None);
    assert!(delivered[0].attachments.is_empty());
    assert_eq!(delivered[1].mailbox, DEFAULT_USER);
    assert_eq!(fake.graph_requests(), 2);
    assert_eq!(
        fake.graph_request_log(),
        [
            ("POST".to_owned(), "/graph/v1.0/me/sendMail".to_owned(), 202),
            (
                "POST".to_owned(),
                "/graph/v1.0/users/USER%40contoso.com/sendMail".to_owned(),
                202
            ),
        ]
    );
}

#[test]
fn send_mail_rejects_bad_base64_missing_recipients_and_other_types() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    let post = |content_type: &str, body: &[u8]| {
        graph(
            &fake,
            "POST",
            "/v1.0/me/sendMail",
            &token,
            Some(content_type),
            body,
        )
    };
    for body in [
        &b"not base64!"[..],
        b"",
        URL_SAFE_NO_PAD.encode([0xfb; 10]).as_bytes(),
    ] {
        let response = post("text/plain", body);
        assert_eq!(response.status, 400, "{body:?}");
        assert_eq!(graph_code(&response), "ErrorMimeContentInvalidBase64String");
        assert_eq!(
            graph_message(&response),
            "Invalid base64 string for MIME content."
        );
    }
    let no_recipients = b"From: user@contoso.com\r\nTo: \r\nSubject: x\r\n\r\nbody\r\n";
    let response = post("text/plain", STANDARD.encode(no_recipients).as_bytes());
    assert_eq!(response.status, 400);
    assert_eq!(graph_code(&response), "ErrorInvalidRecipients");
    assert_eq!(
        graph_message(&response),
        "At least one recipient is not valid., A message can't be sent because it contains no \
         recipients."
    );
    // Bcc alone is a recipient.
    let bcc_only = b"From: user@contoso.com\r\nBcc: hidden@example.org\r\n\r\nbody\r\n";
    assert_eq!(
        post(
            "text/plain; charset=us-ascii",
            STANDARD.encode(bcc_only).as_bytes()
        )
        .status,
        202
    );
    let response = post("message/rfc822", MESSAGE);
    assert_eq!(response.status, 415);
    assert_eq!(fake.delivered().len(), 1);
}

#[test]
fn send_mail_json_is_stored_as_json() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    let body = json!({
        "message": {
            "subject": "Hi",
            "body": {"contentType": "Text", "content": "Hello"},
            "toRecipients": [{"emailAddress": {"address": "friend@example.org"}}],
        },
        "saveToSentItems": false,
    });
    let response = graph(
        &fake,
        "POST",
        "/v1.0/me/sendMail",
        &token,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(response.status, 202, "{}", response.body_text());
    let delivered = fake.delivered();
    assert_eq!(delivered[0].via, "sendMail-json");
    assert_eq!(delivered[0].json.as_ref(), Some(&body));
    assert!(delivered[0].mime.is_empty());

    let empty = json!({"message": {"subject": "Hi", "toRecipients": []}});
    let response = graph(
        &fake,
        "POST",
        "/v1.0/me/sendMail",
        &token,
        Some("application/json"),
        empty.to_string().as_bytes(),
    );
    assert_eq!(graph_code(&response), "ErrorInvalidRecipients");
    let response = graph(
        &fake,
        "POST",
        "/v1.0/me/sendMail",
        &token,
        Some("application/json"),
        b"{not json",
    );
    assert_eq!(response.status, 400);
}

#[test]
fn requests_over_4_mib_are_413() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    // Exactly 4 MiB of base64 (3 MiB of MIME) is fine ...
    let header = b"To: friend@example.org\r\nSubject: big\r\n\r\n";
    let mut mime = header.to_vec();
    mime.resize(3 * 1024 * 1024, b'a');
    let encoded = STANDARD.encode(&mime);
    assert_eq!(encoded.len(), MAX_REQUEST_BYTES);
    let post = |body: &[u8]| {
        graph(
            &fake,
            "POST",
            "/v1.0/me/sendMail",
            &token,
            Some("text/plain"),
            body,
        )
    };
    assert_eq!(post(encoded.as_bytes()).status, 202);
    // ... one byte more is not.
    let response = post(format!("{encoded}\n").as_bytes());
    assert_eq!(response.status, 413);
    assert_eq!(graph_code(&response), "RequestEntityTooLarge");
    assert_eq!(
        graph_message(&response),
        "The maximum request length supported is 4MB."
    );
    assert_eq!(fake.delivered().len(), 1);
}

// ---- Tokens and mailboxes at Graph ---------------------------------------------

#[test]
fn bad_tokens_are_401_and_missing_permissions_403() {
    let fake = fake();
    let url = format!("{}/v1.0/me/sendMail", fake.graph_url());
    let body = STANDARD.encode(MESSAGE);
    let response = http::request(
        "POST",
        &url,
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(graph_code(&response), "InvalidAuthenticationToken");
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(send_ok(&fake, "eyJ0eXAi.unknown").unwrap().status, 401);

    let read_only = access_token(&fake, "User.Read");
    let response = send_ok(&fake, &read_only).unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(graph_code(&response), "ErrorAccessDenied");
    assert_eq!(
        graph_message(&response),
        "Access is denied. Check credentials and try again."
    );

    let token = access_token(&fake, "Mail.Send");
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    fake.expire_access_tokens();
    let expired = send_ok(&fake, &token).unwrap();
    assert_eq!(expired.status, 401);
    assert_eq!(
        graph_message(&expired),
        "Access token has expired or is not yet valid."
    );
}

#[test]
fn graph_errors_carry_inner_error_ids() {
    let fake = fake();
    let token = access_token(&fake, "User.Read");
    let url = format!("{}/v1.0/me/sendMail", fake.graph_url());
    let auth = format!("Bearer {token}");
    let client_request_id = "0e5e6a7b-1111-4222-8333-944455556666";
    let response = http::request(
        "POST",
        &url,
        &[
            ("Authorization", &auth),
            ("Content-Type", "text/plain"),
            ("client-request-id", client_request_id),
        ],
        STANDARD.encode(MESSAGE).as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 403);
    let inner = &response.body_json()["error"]["innerError"];
    assert_eq!(inner["client-request-id"], client_request_id);
    assert_eq!(inner["request-id"].as_str(), response.header("request-id"));
    assert_eq!(
        response.header("client-request-id"),
        Some(client_request_id)
    );
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), "2026-11-21T10:00:00".len(), "{date}");
    assert_eq!(&date[10..11], "T");

    // Unknown paths and versions.
    let token = access_token(&fake, "Mail.Send");
    let response = graph(&fake, "POST", "/v1.0/me/sendEmail", &token, None, b"");
    assert_eq!(response.status, 400);
    assert_eq!(
        graph_message(&response),
        "Resource not found for the segment 'sendEmail'."
    );
    let response = graph(&fake, "GET", "/v1.0/me/sendMail", &token, None, b"");
    assert_eq!(response.status, 405);
    let response = graph(&fake, "GET", "/beta/me", &token, None, b"");
    assert_eq!(graph_message(&response), "Invalid version: beta");
}

#[test]
fn app_only_tokens_cannot_use_me() {
    let fake = fake();
    let token = fake.issue_app_token(APP_ID, &["Mail.Send"]);
    let response = send_ok(&fake, &token).unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(graph_code(&response), "BadRequest");
    assert_eq!(
        graph_message(&response),
        "/me request is only valid with delegated authentication flow."
    );
}

#[test]
fn delegated_tokens_are_limited_to_their_own_mailbox() {
    let fake = fake();
    fake.add_mailbox("boss@contoso.com");
    let token = access_token(&fake, "Mail.Send");
    let response = send_mime(&fake, &token, "users/boss@contoso.com", MESSAGE);
    assert_eq!(response.status, 403);
    assert_eq!(graph_code(&response), "ErrorAccessDenied");
}

#[test]
fn app_access_can_be_restricted_to_some_mailboxes() {
    let fake = fake();
    fake.add_mailbox("allowed@contoso.com");
    fake.add_mailbox("other@contoso.com");
    fake.restrict_app_to("Allowed@contoso.com");
    let token = fake.issue_app_token(APP_ID, &["Mail.Send"]);
    let ok = send_mime(&fake, &token, "users/allowed@contoso.com", MESSAGE);
    assert_eq!(ok.status, 202, "{}", ok.body_text());
    let denied = send_mime(&fake, &token, "users/other@contoso.com", MESSAGE);
    assert_eq!(denied.status, 403);
    assert_eq!(graph_code(&denied), "ErrorAccessDenied");
    assert_eq!(fake.delivered().len(), 1);
    assert_eq!(fake.delivered()[0].mailbox, "allowed@contoso.com");
}

#[test]
fn unknown_users_and_mailboxes_without_exchange_are_404() {
    let fake = fake();
    fake.set_mailbox_not_enabled("guest@contoso.com");
    let token = fake.issue_app_token(APP_ID, &["Mail.Send"]);
    let response = send_mime(&fake, &token, "users/guest@contoso.com", MESSAGE);
    assert_eq!(response.status, 404);
    assert_eq!(graph_code(&response), "MailboxNotEnabledForRESTAPI");
    assert_eq!(
        graph_message(&response),
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
    );
    let response = send_mime(&fake, &token, "users/nobody@contoso.com", MESSAGE);
    assert_eq!(response.status, 404);
    assert_eq!(graph_code(&response), "ErrorInvalidUser");
    assert_eq!(
        graph_message(&response),
        "The requested user 'nobody@contoso.com' is invalid."
    );

    // A delegated user without a mailbox.
    let delegated = fake.issue_access_token("guest@contoso.com", "Mail.Send");
    let response = send_mime(&fake, &delegated, "me", MESSAGE);
    assert_eq!(graph_code(&response), "MailboxNotEnabledForRESTAPI");
}

#[test]
fn national_cloud_tokens_must_name_that_cloud() {
    let fake = fake();
    fake.set_graph_resource("https://graph.microsoft.us");
    let global = fake.issue_access_token(DEFAULT_USER, MAIL_SEND);
    let response = send_ok(&fake, &global).unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(
        graph_message(&response),
        "Access token validation failure. Invalid audience."
    );
    let tokens = login(&fake, "offline_access https://graph.microsoft.us/Mail.Send");
    assert_eq!(tokens["scope"], "https://graph.microsoft.us/Mail.Send");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(send_ok(&fake, access).unwrap().status, 202);
    // Short names follow the configured cloud.
    let tokens = login(&fake, "offline_access Mail.Send");
    assert_eq!(tokens["scope"], "https://graph.microsoft.us/Mail.Send");
}

// ---- Drafts and upload sessions ---------------------------------------------------

const DRAFT_MIME: &[u8] = b"From: user@contoso.com\r\nTo: friend@example.org\r\n\
Subject: Big one\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
See attached.\r\n";

fn create_mime_draft(fake: &FakeMicrosoft, token: &str, mailbox: &str) -> Value {
    let response = graph(
        fake,
        "POST",
        &format!("/v1.0/{mailbox}/messages"),
        token,
        Some("text/plain"),
        &wrapped_base64(DRAFT_MIME),
    );
    assert_eq!(response.status, 201, "{}", response.body_text());
    response.body_json()
}

/// `/messages/{id}` with the id percent-encoded as a path segment.
fn message_path(mailbox: &str, id: &str, rest: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("/v1.0/{mailbox}/messages/{id}{rest}")
}

fn create_upload_session(
    fake: &FakeMicrosoft,
    token: &str,
    draft_id: &str,
    name: &str,
    size: usize,
) -> Response {
    let body = json!({"AttachmentItem": {
        "attachmentType": "file",
        "name": name,
        "size": size,
        "contentType": "application/pdf",
        "isInline": false,
    }});
    graph(
        fake,
        "POST",
        &message_path("me", draft_id, "/attachments/createUploadSession"),
        token,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn put_chunk(
    upload_url: &str,
    bytes: &[u8],
    start: usize,
    total: usize,
    authorization: Option<&str>,
) -> std::io::Result<Response> {
    let range = format!("bytes {start}-{}/{total}", start + bytes.len() - 1);
    let mut headers = vec![
        ("Content-Type", "application/octet-stream"),
        ("Content-Range", range.as_str()),
    ];
    if let Some(authorization) = authorization {
        headers.push(("Authorization", authorization));
    }
    http::request("PUT", upload_url, &headers, bytes)
}

/// The single next-byte offset of an upload session status.
fn next_expected(body: &Value) -> usize {
    let ranges = body["nextExpectedRanges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{body}");
    let range = ranges[0].as_str().unwrap();
    range.trim_end_matches('-').parse().unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn draft_with_a_resumed_upload_session_is_sent_with_its_attachments() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send Mail.ReadWrite");
    let draft = create_mime_draft(&fake, &token, "me");
    let id = draft["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("AAMkAD"), "{id}");
    assert_eq!(draft["isDraft"], true);
    assert_eq!(draft["subject"], "Big one");
    assert_eq!(fake.drafts().len(), 1);
    assert_eq!(fake.drafts()[0].mime, DRAFT_MIME);

    // A small inline attachment, directly.
    let logo = pattern(1000, 3);
    let attachment = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "logo.png",
        "contentType": "image/png",
        "contentBytes": STANDARD.encode(&logo),
        "isInline": true,
        "contentId": "logo@apimail",
    });
    let response = graph(
        &fake,
        "POST",
        &message_path("me", &id, "/attachments"),
        &token,
        Some("application/json"),
        attachment.to_string().as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.body_text());
    assert_eq!(response.body_json()["size"], 1000);
    assert!(response.body_json()["id"].is_string());

    // A large one through an upload session, in 4 MiB chunks; the second
    // chunk's connection drops and is resumed.
    let total = 2 * MAX_CHUNK_BYTES + 12_345;
    let report = pattern(total, 7);
    let session = create_upload_session(&fake, &token, &id, "report.pdf", total);
    assert_eq!(session.status, 201, "{}", session.body_text());
    let session = session.body_json();
    assert_eq!(session["nextExpectedRanges"], json!(["0-"]));
    assert!(session["expirationDateTime"].is_string());
    let upload_url = session["uploadUrl"].as_str().unwrap().to_owned();
    assert!(upload_url.starts_with(&format!("{}/upload/", fake.base_url())));
    assert!(upload_url.contains("?authtoken="));

    fake.fail_chunk_once_at(1);
    let mut offset = 0;
    let mut attempts = 0;
    let mut location = None;
    while offset < total {
        attempts += 1;
        assert!(attempts < 10, "too many attempts");
        let end = (offset + MAX_CHUNK_BYTES).min(total);
        match put_chunk(&upload_url, &report[offset..end], offset, total, None) {
            Ok(response) if response.status == 200 => offset = next_expected(&response.body_json()),
            Ok(response) if response.status == 201 => {
                assert!(response.body.is_empty());
                location = response.header("location").map(str::to_owned);
                offset = total;
            }
            Ok(response) => panic!("chunk failed: {} {}", response.status, response.body_text()),
            Err(_) => {
                // Resume from what the session says it has.
                let status = http::get(&upload_url);
                assert_eq!(status.status, 200, "{}", status.body_text());
                offset = next_expected(&status.body_json());
            }
        }
    }
    let location = location.expect("the final chunk answers 201 with a Location");
    assert!(location.contains("/attachments('"), "{location}");
    let statuses: Vec<u16> = fake.chunks().iter().map(|chunk| chunk.status).collect();
    assert_eq!(statuses, [200, 0, 200, 201]);
    let chunks = fake.chunks();
    assert!(chunks.iter().all(|chunk| chunk.len <= MAX_CHUNK_BYTES));
    assert!(chunks.iter().all(|chunk| !chunk.had_authorization));
    assert_eq!((chunks[1].start, chunks[2].start), (4_194_304, 4_194_304));
    assert_eq!(chunks[3].end as usize, total - 1);
    assert_eq!(chunks[0].total as usize, total);
    assert_eq!(fake.upload_requests_with_authorization(), 0);

    let response = graph(
        &fake,
        "POST",
        &message_path("me", &id, "/send"),
        &token,
        None,
        b"",
    );
    assert_eq!(response.status, 202, "{}", response.body_text());
    assert!(fake.drafts().is_empty());
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    let sent = &delivered[0];
    assert_eq!(sent.via, "draft");
    assert_eq!(sent.mime, DRAFT_MIME);
    assert_eq!(sent.attachments.len(), 2);
    let (inline, big) = (&sent.attachments[0], &sent.attachments[1]);
    assert_eq!(
        (inline.name.as_str(), inline.content_type.as_str()),
        ("logo.png", "image/png")
    );
    assert_eq!(inline.content_id.as_deref(), Some("logo@apimail"));
    assert!(inline.is_inline);
    assert_eq!(inline.bytes, logo);
    assert_eq!(inline.via, "direct");
    assert_eq!(
        (big.name.as_str(), big.content_type.as_str()),
        ("report.pdf", "application/pdf")
    );
    assert!(!big.is_inline);
    assert_eq!(big.via, "upload-session");
    assert!(big.bytes == report, "the uploaded bytes differ");
    // Graph requests: draft, attachment, session, send (not the chunks).
    assert_eq!(fake.graph_requests(), 4);
}

#[test]
fn upload_urls_refuse_authorization_and_enforce_ranges() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send Mail.ReadWrite");
    let id = create_mime_draft(&fake, &token, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let total = 5 * 1024 * 1024 + 10;
    let data = pattern(total, 1);
    let session = create_upload_session(&fake, &token, &id, "a.bin", total).body_json();
    let upload_url = session["uploadUrl"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");

    let response = put_chunk(&upload_url, &data[..1000], 0, total, Some(&bearer)).unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(graph_code(&response), "InvalidAuthenticationToken");
    assert!(graph_message(&response).contains("pre-authenticated"));
    assert_eq!(fake.upload_requests_with_authorization(), 1);
    assert!(fake.chunks()[0].had_authorization);
    assert_eq!(fake.chunks()[0].status, 401);

    // Too big a chunk, a gap, a wrong total.
    let big = put_chunk(&upload_url, &data[..MAX_CHUNK_BYTES + 1], 0, total, None).unwrap();
    assert_eq!(big.status, 400);
    assert_eq!(graph_code(&big), "InvalidRequest");
    let gap = put_chunk(&upload_url, &data[10..20], 10, total, None).unwrap();
    assert_eq!(gap.status, 416);
    assert_eq!(graph_code(&gap), "InvalidRange");
    assert_eq!(gap.body_json()["nextExpectedRanges"], json!(["0"]));
    let wrong_total = put_chunk(&upload_url, &data[..10], 0, total + 1, None).unwrap();
    assert_eq!(wrong_total.status, 400);

    // Progress, status, replay of an old range.
    let first = put_chunk(&upload_url, &data[..100], 0, total, None).unwrap();
    assert_eq!(first.status, 200, "{}", first.body_text());
    assert_eq!(first.body_json()["nextExpectedRanges"], json!(["100"]));
    assert_eq!(next_expected(&http::get(&upload_url).body_json()), 100);
    assert_eq!(
        put_chunk(&upload_url, &data[..100], 0, total, None)
            .unwrap()
            .status,
        416
    );

    // A tampered authtoken, then cancel the session.
    let tampered = upload_url.replace("authtoken=", "authtoken=x");
    assert_eq!(http::get(&tampered).status, 401);
    let deleted = http::request("DELETE", &upload_url, &[], b"").unwrap();
    assert_eq!(deleted.status, 204);
    assert_eq!(http::get(&upload_url).status, 404);
    assert_eq!(fake.graph_requests(), 2);
}

#[test]
fn attachment_size_rules() {
    let fake = fake();
    let token = access_token(&fake, "Mail.ReadWrite");
    let id = create_mime_draft(&fake, &token, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let small = create_upload_session(&fake, &token, &id, "small.txt", 1000);
    assert_eq!(small.status, 400);
    assert_eq!(
        graph_code(&small),
        "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    );
    fake.allow_small_upload_sessions(true);
    assert_eq!(
        create_upload_session(&fake, &token, &id, "small.txt", 1000).status,
        201
    );
    let huge = create_upload_session(&fake, &token, &id, "huge.iso", 150 * 1024 * 1024 + 1);
    assert_eq!(huge.status, 400);

    // Direct attachments must stay under 3 MiB (and the request under 4 MiB,
    // which leaves a little less in practice).
    let attachment = |len: u64| {
        json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "x.bin",
            "contentBytes": STANDARD.encode(vec![0u8; len as usize]),
        })
        .to_string()
    };
    let post = |body: &str| {
        graph(
            &fake,
            "POST",
            &message_path("me", &id, "/attachments"),
            &token,
            Some("application/json"),
            body.as_bytes(),
        )
    };
    let response = post(&attachment(UPLOAD_SESSION_MIN_BYTES - 1024));
    assert_eq!(response.status, 201, "{}", response.body_text());
    let response = post(&attachment(UPLOAD_SESSION_MIN_BYTES));
    assert_eq!(response.status, 413);
    assert_eq!(graph_code(&response), "RequestEntityTooLarge");
    let response = post(r#"{"name":"x.bin","contentBytes":"AAAA"}"#);
    assert_eq!(response.status, 400);
    assert_eq!(fake.drafts()[0].attachments.len(), 1);
}

#[test]
fn drafts_need_mail_readwrite_and_sending_needs_mail_send() {
    let fake = fake();
    let send_only = access_token(&fake, "Mail.Send");
    let response = graph(
        &fake,
        "POST",
        "/v1.0/me/messages",
        &send_only,
        Some("text/plain"),
        &wrapped_base64(DRAFT_MIME),
    );
    assert_eq!(response.status, 403);
    assert_eq!(graph_code(&response), "ErrorAccessDenied");

    let readwrite = access_token(&fake, "Mail.ReadWrite");
    let id = create_mime_draft(&fake, &readwrite, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |token: &str| {
        graph(
            &fake,
            "POST",
            &message_path("me", &id, "/send"),
            token,
            None,
            b"",
        )
    };
    assert_eq!(send(&readwrite).status, 403);
    assert_eq!(send(&send_only).status, 202);
    assert_eq!(fake.delivered()[0].access_token, send_only);
    let again = send(&send_only);
    assert_eq!(
        (again.status, graph_code(&again)),
        (404, "ErrorItemNotFound".into())
    );
}

#[test]
fn drafts_can_be_deleted() {
    let fake = fake();
    fake.add_mailbox("other@contoso.com");
    let token = access_token(&fake, "Mail.ReadWrite");
    let first = create_mime_draft(&fake, &token, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = create_mime_draft(&fake, &token, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    let get = graph(
        &fake,
        "GET",
        &message_path("me", &first, ""),
        &token,
        None,
        b"",
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.body_json()["id"], first.as_str());

    let delete = |mailbox: &str, token: &str| {
        graph(
            &fake,
            "DELETE",
            &message_path(mailbox, &first, ""),
            token,
            None,
            b"",
        )
    };
    // Another mailbox does not have it.
    let app = fake.issue_app_token(APP_ID, &["Mail.ReadWrite"]);
    assert_eq!(delete("users/other@contoso.com", &app).status, 404);
    assert_eq!(delete("me", &token).status, 204);
    assert_eq!(fake.deleted_drafts(), 1);
    let remaining = fake.drafts();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].id, second);
    let again = delete("me", &token);
    assert_eq!(
        (again.status, graph_code(&again)),
        (404, "ErrorItemNotFound".into())
    );
    assert_eq!(fake.deleted_drafts(), 1);
}

#[test]
fn json_drafts_of_an_app_are_sent_as_json() {
    let fake = fake();
    fake.add_mailbox("shared@contoso.com");
    let token = fake.issue_app_token(APP_ID, &["Mail.Send", "Mail.ReadWrite"]);
    let message = json!({
        "subject": "From the app",
        "body": {"contentType": "HTML", "content": "<p>Hi</p>"},
        "toRecipients": [{"emailAddress": {"address": "friend@example.org"}}],
    });
    let response = graph(
        &fake,
        "POST",
        "/v1.0/users/shared%40contoso.com/messages",
        &token,
        Some("application/json"),
        message.to_string().as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.body_text());
    assert_eq!(response.body_json()["subject"], "From the app");
    let id = response.body_json()["id"].as_str().unwrap().to_owned();
    let response = graph(
        &fake,
        "POST",
        &message_path("users/shared@contoso.com", &id, "/send"),
        &token,
        None,
        b"",
    );
    assert_eq!(response.status, 202, "{}", response.body_text());
    let sent = &fake.delivered()[0];
    assert_eq!(sent.mailbox, "shared@contoso.com");
    assert_eq!(sent.json.as_ref(), Some(&message));
    assert!(sent.mime.is_empty());

    // A draft without recipients can be saved but not sent.
    let response = graph(
        &fake,
        "POST",
        "/v1.0/users/shared@contoso.com/messages",
        &token,
        Some("application/json"),
        br#"{"subject":"nobody"}"#,
    );
    let id = response.body_json()["id"].as_str().unwrap().to_owned();
    let response = graph(
        &fake,
        "POST",
        &message_path("users/shared@contoso.com", &id, "/send"),
        &token,
        None,
        b"",
    );
    assert_eq!(graph_code(&response), "ErrorInvalidRecipients");
}

// ---- Faults and concurrency ------------------------------------------------

#[test]
fn each_fault_answers_like_graph() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    let cases = [
        (
            Fault::Status429 {
                retry_after_secs: Some(3),
            },
            429,
            "ApplicationThrottled",
        ),
        (Fault::Status503, 503, "ServiceNotAvailable"),
        (Fault::Status504, 504, "GatewayTimeout"),
        (
            Fault::Error {
                status: 403,
                code: "ErrorSendAsDenied".to_owned(),
                message: "The user account which was used to submit this request does not have \
                          the right to send mail on behalf of the specified sending account., \
                          Cannot submit message."
                    .to_owned(),
            },
            403,
            "ErrorSendAsDenied",
        ),
    ];
    for (fault, status, code) in cases {
        fake.inject(fault);
        let response = send_ok(&fake, &token).unwrap();
        assert_eq!(response.status, status);
        assert_eq!(graph_code(&response), code);
        assert!(response.body_json()["error"]["innerError"]["request-id"].is_string());
        if status == 429 {
            assert_eq!(response.header("retry-after"), Some("3"));
            assert_eq!(
                graph_message(&response),
                "Application is over its MailboxConcurrency limit."
            );
        }
    }
    fake.inject(Fault::Status429 {
        retry_after_secs: None,
    });
    assert_eq!(send_ok(&fake, &token).unwrap().header("retry-after"), None);

    fake.inject(Fault::DropConnection);
    let dropped = send_ok(&fake, &token);
    assert!(
        dropped.is_err(),
        "expected a dropped connection: {dropped:?}"
    );

    fake.inject(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let statuses: Vec<u16> = fake
        .graph_request_log()
        .iter()
        .map(|(_, _, status)| *status)
        .collect();
    assert_eq!(statuses, [429, 503, 504, 403, 429, 0, 202]);
    assert_eq!(fake.graph_requests(), 7);
    assert_eq!(fake.delivered().len(), 1);
}

#[test]
fn faults_queue_in_order_and_spare_identity_and_uploads() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send Mail.ReadWrite");
    let id = create_mime_draft(&fake, &token, "me")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let total = UPLOAD_SESSION_MIN_BYTES as usize;
    let session = create_upload_session(&fake, &token, &id, "a.bin", total).body_json();
    let upload_url = session["uploadUrl"].as_str().unwrap().to_owned();

    fake.inject_n(Fault::Status503, 2);
    fake.inject(Fault::Status504);
    let statuses: Vec<u16> = (0..4)
        .map(|_| send_ok(&fake, &token).unwrap().status)
        .collect();
    assert_eq!(statuses, [503, 503, 504, 202]);

    fake.fail_forever(Fault::Status429 {
        retry_after_secs: Some(1),
    });
    for _ in 0..3 {
        assert_eq!(send_ok(&fake, &token).unwrap().status, 429);
    }
    // Identity and upload URLs are not faulted.
    assert_eq!(refresh(&fake, "0.AAA-unknown").status, 400);
    let chunk = put_chunk(&upload_url, &pattern(total, 0), 0, total, None).unwrap();
    assert_eq!(chunk.status, 201, "{}", chunk.body_text());
    fake.clear_faults();
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert_eq!(fake.graph_requests(), 2 + 4 + 3 + 1);
}

#[test]
fn concurrent_graph_requests_are_tracked() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send");
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert_eq!(fake.max_concurrent_graph_requests(), 1);

    fake.fail_forever(Fault::Slow(Duration::from_millis(400)));
    let fake = Arc::new(fake);
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (fake, barrier, token) = (fake.clone(), barrier.clone(), token.clone());
            std::thread::spawn(move || {
                barrier.wait();
                send_ok(&fake, &token).unwrap().status
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 202);
    }
    assert_eq!(fake.max_concurrent_graph_requests(), 6);
    assert_eq!(fake.delivered().len(), 8);
}

#[test]
fn dropping_the_fake_stops_the_server() {
    let fake = fake();
    let url = fake.token_url("common");
    drop(fake);
    assert!(http::request("POST", &url, &[], b"").is_err());
}

#[test]
fn sent_items_hold_what_was_sent_and_filter_by_internet_message_id() {
    let fake = fake();
    let token = access_token(&fake, "Mail.Send Mail.ReadWrite");
    let mime = b"From: user@contoso.com\r\nTo: friend@example.org\r\n\
Message-ID: <it's.1@contoso.com>\r\nSubject: s\r\n\r\nbody\r\n";
    assert_eq!(send_mime(&fake, &token, "me", mime).status, 202);
    let draft = create_mime_draft(&fake, &token, "me");
    let draft_id = draft["id"].as_str().unwrap();
    let message_id = draft["internetMessageId"].as_str().unwrap().to_owned();
    let send = graph(
        &fake,
        "POST",
        &message_path("me", draft_id, "/send"),
        &token,
        None,
        b"",
    );
    assert_eq!(send.status, 202);
    assert_eq!(
        fake.sent_items(DEFAULT_USER),
        ["<it's.1@contoso.com>".to_owned(), message_id.clone()]
    );

    let find = |token: &str, id: &str| {
        let filter: String = url::form_urlencoded::byte_serialize(
            format!("internetMessageId eq '{}'", id.replace('\'', "''")).as_bytes(),
        )
        .collect();
        graph(
            &fake,
            "GET",
            &format!(
                "/v1.0/users/{DEFAULT_USER}/mailFolders/sentitems/messages?$filter={filter}&$select=id"
            ),
            token,
            None,
            b"",
        )
    };
    let found = find(&token, "<it's.1@contoso.com>");
    assert_eq!(found.status, 200, "{}", found.body_text());
    let value = found.body_json()["value"].as_array().unwrap().clone();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["internetMessageId"], "<it's.1@contoso.com>");
    assert_eq!(
        find(&token, &message_id).body_json()["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        find(&token, "<other@x>").body_json()["value"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Mail.Read is enough to look; Mail.Send alone is not.
    let read = access_token(&fake, "Mail.Read");
    assert_eq!(find(&read, &message_id).status, 200);
    let send_only = access_token(&fake, "Mail.Send");
    let denied = find(&send_only, &message_id);
    assert_eq!(
        (denied.status, graph_code(&denied).as_str()),
        (403, "ErrorAccessDenied")
    );
}

#[test]
fn draft_attachments_can_be_listed_with_their_sizes() {
    let fake = fake();
    let token = access_token(&fake, "Mail.ReadWrite");
    let draft = create_mime_draft(&fake, &token, "me");
    let id = draft["id"].as_str().unwrap();
    let body = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.txt",
        "contentType": "text/plain; charset=iso-8859-1",
        "contentBytes": STANDARD.encode(b"caf\xe9"),
    });
    let added = graph(
        &fake,
        "POST",
        &message_path("me", id, "/attachments"),
        &token,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(added.status, 201);
    let listed = graph(
        &fake,
        "GET",
        &message_path("me", id, "/attachments?$select=name,size"),
        &token,
        None,
        b"",
    );
    assert_eq!(listed.status, 200, "{}", listed.body_text());
    let value = &listed.body_json()["value"];
    assert_eq!(value[0]["name"], "a.txt");
    assert_eq!(value[0]["size"], 4);
    assert_eq!(fake.drafts()[0].attachments[0].bytes, b"caf\xe9");
}

#[test]
fn withheld_consent_is_left_out_of_the_grant() {
    let fake = fake();
    fake.withhold_consent("Mail.ReadWrite");
    let tokens = login(
        &fake,
        "offline_access https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/Mail.ReadWrite",
    );
    let scope = tokens["scope"].as_str().unwrap();
    assert!(scope.contains("Mail.Send"), "{scope}");
    assert!(!scope.contains("Mail.ReadWrite"), "{scope}");
}

// ---- Quotas -----------------------------------------------------------------

#[test]
fn the_message_rate_answers_429_with_retry_after_and_the_recipient_rate_refuses_the_day() {
    let fake = fake();
    let token = access_token(&fake, MAIL_SEND);
    fake.set_per_minute_limit(2);
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    let throttled = send_ok(&fake, &token).unwrap();
    assert_eq!(throttled.status, 429);
    assert_eq!(graph_code(&throttled), "TooManyRequests");
    let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=61).contains(&wait), "Retry-After: {wait}");
    assert_eq!(fake.throttled(), 1);
    assert_eq!(fake.delivered().len(), 2, "a refused send is not delivered");

    // The day counts recipients: the third message's one is over 3 - 2.
    fake.advance_clock(Duration::from_secs(61));
    fake.set_daily_recipient_limit(3);
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    let over = send_ok(&fake, &token).unwrap();
    assert_eq!(over.status, 429);
    assert_eq!(graph_code(&over), "ErrorSubmissionQuotaExceeded");
    assert_eq!(fake.over_daily_limit(), 1);
    fake.advance_clock(Duration::from_secs(86_400));
    assert_eq!(send_ok(&fake, &token).unwrap().status, 202);
    assert_eq!(fake.delivered().len(), 4);
}
