//! Tests of the fake Google server itself, driven with the helper HTTP
//! client and hand-built requests.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apimail_tests::fake_google::{
    FIXTURE_SERVICE_ACCOUNT, FakeGoogle, Fault, GMAIL_SEND_SCOPE, JWT_BEARER, MAIL_SCOPE,
    MAX_MESSAGE_BYTES, service_account_key_json,
};
use apimail_tests::http::{self, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

const CLIENT_ID: &str = "client-1.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-secret-1";
const REDIRECT: &str = "http://127.0.0.1:8765/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";
/// The boundary google-apis-common uses for multipart uploads.
const BOUNDARY: &str = "MDuXWGyeE33QFXGchb2VFWc4Z7945d";
const MESSAGE: &[u8] = b"From: user@example.com\r\nTo: friend@example.org\r\n\
Subject: Hello\r\n\r\nBody line\r\n--MDuXWGyeE33QFXGchb2VFWc4Z7945d\r\n\xff\xfe binary tail\r\n";

fn fake() -> FakeGoogle {
    let fake = FakeGoogle::start();
    fake.add_client(CLIENT_ID, CLIENT_SECRET);
    fake
}

fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// The authorization URL a client would open, with PKCE for `VERIFIER`.
fn authorize_url(fake: &FakeGoogle, redirect: &str, scope: &str) -> String {
    let mut url = url::Url::parse(&fake.auth_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect)
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("state", "xyz state")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("access_type", "offline")
        .append_pair("prompt", "consent")
        .append_pair("login_hint", "user@example.com");
    url.into()
}

/// Plays the browser: opens the authorization URL, returns the redirect's
/// query parameters.
fn authorize(fake: &FakeGoogle, redirect: &str, scope: &str) -> Vec<(String, String)> {
    let response = http::get(&authorize_url(fake, redirect, scope));
    assert_eq!(response.status, 302, "{}", response.body_text());
    let location = url::Url::parse(response.header("location").unwrap()).unwrap();
    location.query_pairs().into_owned().collect()
}

fn code_of(params: &[(String, String)]) -> String {
    param(params, "code").expect("the redirect carries a code")
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn exchange(fake: &FakeGoogle, code: &str, verifier: &str, redirect: &str) -> Response {
    http::post_form(
        &fake.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
}

/// Runs the whole consent flow; returns the token response's JSON.
fn login(fake: &FakeGoogle, scope: &str) -> Value {
    let code = code_of(&authorize(fake, REDIRECT, scope));
    let response = exchange(fake, &code, VERIFIER, REDIRECT);
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.body_json()
}

fn access_token(fake: &FakeGoogle) -> String {
    fake.issue_access_token("user@example.com", GMAIL_SEND_SCOPE)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A multipart body exactly as google-apis-common writes it: a CRLF before
/// the first boundary and a content-length in each part.
fn gmail_multipart(metadata: &str, message: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "\r\n--{BOUNDARY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{metadata}\
         \r\n--{BOUNDARY}\r\ncontent-type: message/rfc822\r\ncontent-length: {}\r\n\r\n",
        metadata.len(),
        message.len()
    )
    .into_bytes();
    body.extend_from_slice(message);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn send_multipart(fake: &FakeGoogle, token: &str, user: &str, body: &[u8]) -> Response {
    let url = format!(
        "{}upload/gmail/v1/users/{user}/messages/send?alt=json&uploadType=multipart",
        fake.gmail_url()
    );
    let content_type = format!("multipart/related;boundary={BOUNDARY}");
    let headers = [
        ("Authorization", bearer(token)),
        ("Content-Type", content_type),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    http::request("POST", &url, &headers, body).unwrap()
}

fn send_media(
    fake: &FakeGoogle,
    headers: &[(&str, &str)],
    message: &[u8],
) -> std::io::Result<Response> {
    let url = format!(
        "{}upload/gmail/v1/users/me/messages/send?uploadType=media",
        fake.gmail_url()
    );
    let mut all = vec![("Content-Type", "message/rfc822")];
    all.extend_from_slice(headers);
    http::request("POST", &url, &all, message)
}

fn send_json(fake: &FakeGoogle, token: &str, body: &Value) -> Response {
    let url = format!("{}gmail/v1/users/me/messages/send", fake.gmail_url());
    let auth = bearer(token);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    http::request("POST", &url, &headers, body.to_string().as_bytes()).unwrap()
}

fn send_ok(fake: &FakeGoogle, token: &str) -> Response {
    send_media(fake, &[("Authorization", &bearer(token))], MESSAGE).unwrap()
}

fn error_reason(response: &Response) -> String {
    response.body_json()["error"]["errors"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn is_hex_id(id: &Value) -> bool {
    id.as_str()
        .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---- Authorization code flow --------------------------------------------

#[test]
fn code_exchange_with_the_right_verifier_returns_tokens() {
    let fake = fake();
    fake.set_user_email("alice@example.com");
    let params = authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE);
    assert_eq!(param(&params, "state").as_deref(), Some("xyz state"));
    assert_eq!(param(&params, "scope").as_deref(), Some(GMAIL_SEND_SCOPE));

    let recorded = fake.authorize_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["redirect_uri"], REDIRECT);
    assert_eq!(recorded[0]["access_type"], "offline");
    assert_eq!(recorded[0]["login_hint"], "user@example.com");
    assert_eq!(recorded[0]["code_challenge"], challenge(VERIFIER));

    let response = exchange(&fake, &code_of(&params), VERIFIER, REDIRECT);
    assert_eq!(response.status, 200, "{}", response.body_text());
    let tokens = response.body_json();
    assert!(
        tokens["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ya29.fake-")
    );
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("1//fake-")
    );
    assert_eq!(tokens["expires_in"], 3599);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], GMAIL_SEND_SCOPE);

    // gmail.send alone is no identity scope: no id_token.
    assert!(tokens.get("id_token").is_none(), "{tokens}");

    assert_eq!(fake.token_requests("authorization_code"), 1);
    assert_eq!(fake.total_token_requests(), 1);
    assert_eq!(fake.token_forms()[0]["code_verifier"], VERIFIER);

    // The token works for the consenting user.
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(send_ok(&fake, access).status, 200);
    assert_eq!(fake.messages()[0].user, "alice@example.com");
}

#[test]
fn identity_scopes_give_an_id_token_with_the_address() {
    let fake = fake();
    fake.set_user_email("alice@example.com");
    let scope = format!("openid email {GMAIL_SEND_SCOPE}");
    let params = authorize(&fake, REDIRECT, &scope);
    let granted =
        format!("openid https://www.googleapis.com/auth/userinfo.email {GMAIL_SEND_SCOPE}");
    assert_eq!(param(&params, "scope").as_deref(), Some(granted.as_str()));
    let tokens = exchange(&fake, &code_of(&params), VERIFIER, REDIRECT).body_json();
    assert_eq!(tokens["scope"], granted.as_str());
    let id_token = tokens["id_token"].as_str().unwrap();
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2], "");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "none");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["aud"], CLIENT_ID);
    assert!(claims["sub"].is_string() && claims["exp"].as_i64() > claims["iat"].as_i64());

    // A refresh of an openid grant carries an id_token too.
    let refreshed = refresh(&fake, tokens["refresh_token"].as_str().unwrap()).body_json();
    assert!(refreshed["id_token"].is_string(), "{refreshed}");
}

#[test]
fn an_unticked_box_is_left_out_of_the_grant() {
    let fake = fake();
    fake.untick_scope(GMAIL_SEND_SCOPE);
    let params = authorize(&fake, REDIRECT, &format!("openid email {GMAIL_SEND_SCOPE}"));
    let granted = "openid https://www.googleapis.com/auth/userinfo.email";
    assert_eq!(param(&params, "scope").as_deref(), Some(granted));
    let tokens = exchange(&fake, &code_of(&params), VERIFIER, REDIRECT).body_json();
    assert_eq!(tokens["scope"], granted);
    // The token cannot send.
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(send_ok(&fake, access).status, 403);
}

#[test]
fn wrong_or_missing_verifier_fails() {
    let fake = fake();
    let code = code_of(&authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE));
    let response = exchange(
        &fake,
        &code,
        "another-verifier-of-sufficient-length-1234567",
        REDIRECT,
    );
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": "invalid_grant", "error_description": "Invalid code verifier."})
    );
    let response = http::post_form(
        &fake.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    );
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json()["error_description"],
        "Missing code verifier."
    );
}

#[test]
fn wrong_redirect_uri_fails() {
    let fake = fake();
    let code = code_of(&authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE));
    let response = exchange(&fake, &code, VERIFIER, "http://127.0.0.1:8766/callback");
    assert_eq!(response.status, 400);
    assert_eq!(response.body_json()["error"], "redirect_uri_mismatch");
}

#[test]
fn a_code_works_once() {
    let fake = fake();
    let code = code_of(&authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE));
    assert_eq!(exchange(&fake, &code, VERIFIER, REDIRECT).status, 200);
    let again = exchange(&fake, &code, VERIFIER, REDIRECT);
    assert_eq!(again.status, 400);
    assert_eq!(again.body_json()["error"], "invalid_grant");
    let unknown = exchange(&fake, "4/not-a-code", VERIFIER, REDIRECT);
    assert_eq!(unknown.body_json()["error"], "invalid_grant");
}

#[test]
fn redirect_keeps_an_existing_query() {
    let fake = fake();
    let response = http::get(&authorize_url(
        &fake,
        "http://127.0.0.1:9/cb?session=a%20b",
        "openid email",
    ));
    let location = url::Url::parse(response.header("location").unwrap()).unwrap();
    assert_eq!(location.path(), "/cb");
    let params: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(params[0], ("session".to_owned(), "a b".to_owned()));
    assert!(params.iter().any(|(name, _)| name == "code"));
    assert_eq!(
        param(&params, "scope").as_deref(),
        Some("openid https://www.googleapis.com/auth/userinfo.email")
    );
}

#[test]
fn denied_consent_redirects_with_access_denied() {
    let fake = fake();
    fake.set_deny(true);
    let params = authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE);
    assert_eq!(param(&params, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&params, "state").as_deref(), Some("xyz state"));
    assert_eq!(param(&params, "code"), None);
}

#[test]
fn bad_authorization_requests_get_400_naming_the_problem() {
    let fake = fake();
    let good = authorize_url(&fake, REDIRECT, GMAIL_SEND_SCOPE);
    let cases = [
        ("client_id", "unknown-client", "invalid_client"),
        ("response_type", "token", "response_type"),
        ("code_challenge_method", "plain", "code_challenge_method"),
        ("code_challenge", "", "code_challenge"),
        ("redirect_uri", "", "redirect_uri"),
    ];
    for (name, value, expected) in cases {
        let mut url = url::Url::parse(&good).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(n, v)| {
                if n == name {
                    (n, value.to_owned())
                } else {
                    (n, v)
                }
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let response = http::get(url.as_str());
        assert_eq!(response.status, 400, "{name}={value}");
        assert!(
            response.body_text().contains(expected),
            "{}",
            response.body_text()
        );
    }
    assert_eq!(fake.authorize_requests().len(), cases.len());
}

#[test]
fn client_credentials_by_basic_auth_or_form() {
    let fake = fake();
    let code = code_of(&authorize(&fake, REDIRECT, GMAIL_SEND_SCOPE));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
        ])
        .finish();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let headers = [
        ("Authorization", basic.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let response = http::request("POST", &fake.token_url(), &headers, body.as_bytes()).unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());

    let wrong_secret = http::post_form(
        &fake.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//whatever"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
        ],
    );
    assert_eq!(wrong_secret.status, 401);
    assert_eq!(wrong_secret.body_json()["error"], "invalid_client");
    let unknown = http::post_form(
        &fake.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//whatever"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
        ],
    );
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.body_json(),
        json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})
    );
}

#[test]
fn unknown_grant_type_is_unsupported() {
    let fake = fake();
    let response = http::post_form(&fake.token_url(), &[("grant_type", "password")]);
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": "unsupported_grant_type"})
    );
    assert_eq!(fake.token_requests("password"), 1);
}

// ---- Refresh and revocation ---------------------------------------------

fn refresh(fake: &FakeGoogle, refresh_token: &str) -> Response {
    http::post_form(
        &fake.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
}

#[test]
fn refresh_gives_a_new_access_token_and_keeps_the_refresh_token() {
    let fake = fake();
    let tokens = login(&fake, &format!("openid {GMAIL_SEND_SCOPE}"));
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let response = refresh(&fake, refresh_token);
    assert_eq!(response.status, 200, "{}", response.body_text());
    let refreshed = response.body_json();
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    assert_eq!(refreshed["scope"], tokens["scope"]);
    assert!(refreshed.get("refresh_token").is_none());
    assert_eq!(refresh(&fake, refresh_token).status, 200);
    assert_eq!(fake.token_requests("refresh_token"), 2);
    assert_eq!(fake.total_token_requests(), 3);
    assert_eq!(
        send_ok(&fake, refreshed["access_token"].as_str().unwrap()).status,
        200
    );
}

#[test]
fn revoked_refresh_token_is_invalid_grant() {
    let fake = fake();
    let tokens = login(&fake, GMAIL_SEND_SCOPE);
    fake.revoke_refresh_tokens();
    let response = refresh(&fake, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    assert_eq!(
        refresh(&fake, "1//never-issued").body_json()["error"],
        "invalid_grant"
    );
}

#[test]
fn revoke_endpoint_revokes_a_grant() {
    let fake = fake();
    let tokens = login(&fake, GMAIL_SEND_SCOPE);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let response = http::post_form(&fake.revoke_url(), &[("token", refresh_token)]);
    assert_eq!(response.status, 200);
    assert_eq!(response.body_json(), json!({}));
    assert_eq!(send_ok(&fake, access).status, 401);
    assert_eq!(refresh(&fake, refresh_token).status, 400);

    // Revoking again, or an unknown token, is invalid_token; by query too.
    let again = http::post_form(&fake.revoke_url(), &[("token", refresh_token)]);
    assert_eq!(again.status, 400);
    assert_eq!(again.body_json()["error"], "invalid_token");
    let by_query = http::request(
        "POST",
        &format!("{}?token=nope", fake.revoke_url()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(by_query.body_json()["error"], "invalid_token");
    assert_eq!(fake.revoke_requests(), 3);
}

#[test]
fn revoking_an_access_token_revokes_its_refresh_token() {
    let fake = fake();
    let tokens = login(&fake, GMAIL_SEND_SCOPE);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        http::post_form(&fake.revoke_url(), &[("token", access)]).status,
        200
    );
    assert_eq!(
        refresh(&fake, tokens["refresh_token"].as_str().unwrap()).status,
        400
    );
}

#[test]
fn revoked_and_expired_access_tokens_get_401() {
    let fake = fake();
    let first = access_token(&fake);
    fake.expire_access_tokens();
    assert_eq!(send_ok(&fake, &first).status, 401);
    let second = access_token(&fake);
    assert_eq!(send_ok(&fake, &second).status, 200);
    fake.revoke_access_tokens();
    assert_eq!(send_ok(&fake, &second).status, 401);
}

// ---- Gmail send -------------------------------------------------------

#[test]
fn multipart_send_stores_the_exact_bytes() {
    let fake = fake();
    let token = access_token(&fake);
    let response = send_multipart(&fake, &token, "me", &gmail_multipart("{}", MESSAGE));
    assert_eq!(response.status, 200, "{}", response.body_text());
    let body = response.body_json();
    assert!(is_hex_id(&body["id"]) && is_hex_id(&body["threadId"]));
    assert_eq!(body["labelIds"], json!(["SENT"]));

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.raw, MESSAGE);
    assert_eq!(message.user, "user@example.com");
    assert_eq!(message.upload_type, "multipart");
    assert_eq!(message.access_token, token);
    assert_eq!(body["id"], message.id.as_str());
    assert_eq!(message.thread_id, message.id);
    assert_eq!(fake.send_requests(), 1);
}

#[test]
fn multipart_send_keeps_the_thread_id_from_metadata() {
    let fake = fake();
    let token = access_token(&fake);
    let body = gmail_multipart(r#"{"threadId":"18c0ffee00000001"}"#, MESSAGE);
    let response = send_multipart(&fake, &token, "user%40example.com", &body);
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.body_json()["threadId"], "18c0ffee00000001");
    assert_eq!(fake.messages()[0].thread_id, "18c0ffee00000001");
}

#[test]
fn multipart_without_part_lengths_is_parsed_too() {
    let fake = fake();
    let token = access_token(&fake);
    let mut body = b"--frontier\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n\
--frontier\r\nContent-Type: message/rfc822\r\n\r\n"
        .to_vec();
    body.extend_from_slice(MESSAGE);
    body.extend_from_slice(b"\r\n--frontier--");
    let url = format!(
        "{}upload/gmail/v1/users/me/messages/send?uploadType=multipart",
        fake.gmail_url()
    );
    let auth = bearer(&token);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "multipart/related; boundary=\"frontier\""),
    ];
    let response = http::request("POST", &url, &headers, &body).unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(fake.messages()[0].raw, MESSAGE);
}

#[test]
fn media_send_to_another_user_is_delegation_denied() {
    let fake = fake();
    let token = access_token(&fake);
    let url = format!(
        "{}upload/gmail/v1/users/boss%40example.com/messages/send?uploadType=media",
        fake.gmail_url()
    );
    let auth = bearer(&token);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "message/rfc822"),
    ];
    let response = http::request("POST", &url, &headers, MESSAGE).unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(error_reason(&response), "forbidden");
    assert_eq!(
        response.body_json()["error"]["message"],
        "Delegation denied for user@example.com"
    );
    assert!(fake.messages().is_empty());

    let response = send_media(&fake, &[("Authorization", &auth)], MESSAGE).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(fake.messages()[0].upload_type, "media");
    assert_eq!(fake.messages()[0].raw, MESSAGE);
}

#[test]
fn json_raw_send_accepts_padded_and_unpadded_base64url() {
    let fake = fake();
    let token = access_token(&fake);
    for raw in [
        URL_SAFE.encode(MESSAGE),
        URL_SAFE_NO_PAD.encode(MESSAGE),
        STANDARD.encode(MESSAGE),
    ] {
        let response = send_json(&fake, &token, &json!({ "raw": raw }));
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let messages = fake.messages();
    assert_eq!(messages.len(), 3);
    assert!(
        messages
            .iter()
            .all(|m| m.raw == MESSAGE && m.upload_type == "json")
    );

    let response = send_json(&fake, &token, &json!({}));
    assert_eq!(response.status, 400);
    let response = send_json(&fake, &token, &json!({"raw": "!!!"}));
    assert_eq!(response.status, 400);
}

#[test]
fn message_without_recipients_is_invalid_to_header() {
    let fake = fake();
    let token = access_token(&fake);
    let message =
        b"From: user@example.com\r\nSubject: nobody\r\n\r\nTo: not-a-header@example.com\r\n";
    let response = send_json(&fake, &token, &json!({"raw": URL_SAFE.encode(message)}));
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": {
            "code": 400,
            "message": "Invalid To header",
            "errors": [{"message": "Invalid To header", "domain": "global", "reason": "invalidArgument"}],
            "status": "INVALID_ARGUMENT",
        }})
    );
    // A folded Bcc counts.
    let message = b"From: user@example.com\r\nBcc:\r\n hidden@example.com\r\n\r\nhi\r\n";
    let response = send_json(&fake, &token, &json!({"raw": URL_SAFE.encode(message)}));
    assert_eq!(response.status, 200, "{}", response.body_text());
}

#[test]
fn missing_or_unknown_token_is_401() {
    let fake = fake();
    for headers in [vec![], vec![("Authorization", "Bearer ya29.forged")]] {
        let response = send_media(&fake, &headers, MESSAGE).unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"https://accounts.google.com/\"")
        );
        let error = &response.body_json()["error"];
        assert_eq!(error["status"], "UNAUTHENTICATED");
        assert_eq!(error["errors"][0]["reason"], "authError");
        assert_eq!(error["errors"][0]["location"], "Authorization");
    }
    assert_eq!(fake.send_requests(), 2);
}

#[test]
fn token_without_a_send_scope_is_403() {
    let fake = fake();
    let token = fake.issue_access_token("user@example.com", "openid email");
    let response = send_ok(&fake, &token);
    assert_eq!(response.status, 403);
    assert_eq!(
        response.body_json(),
        json!({"error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
            "status": "PERMISSION_DENIED",
        }})
    );
    let full = fake.issue_access_token("user@example.com", "https://mail.google.com/");
    assert_eq!(send_ok(&fake, &full).status, 200);
}

#[test]
fn message_over_35_mib_is_413() {
    let fake = fake();
    let token = access_token(&fake);
    let mut message = b"To: friend@example.org\r\nSubject: big\r\n\r\n".to_vec();
    message.resize(MAX_MESSAGE_BYTES + 1, b'x');
    let response = send_media(&fake, &[("Authorization", &bearer(&token))], &message).unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(error_reason(&response), "uploadTooLarge");
    assert_eq!(
        response.body_json()["error"]["message"],
        "Request Too Large"
    );
    assert!(fake.messages().is_empty());
}

// ---- Resumable uploads ------------------------------------------------

/// Starts a resumable upload like google-gmail1 does; returns the session URL.
fn start_resumable(fake: &FakeGoogle, token: &str, total: usize) -> String {
    let url = format!(
        "{}resumable/upload/gmail/v1/users/me/messages/send?alt=json&uploadType=resumable",
        fake.gmail_url()
    );
    let auth = bearer(token);
    let total = total.to_string();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("X-Upload-Content-Type", "message/rfc822"),
        ("X-Upload-Content-Length", total.as_str()),
    ];
    let response = http::request("POST", &url, &headers, b"{}").unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let location = response.header("location").unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/upload-session/", fake.base_url())));
    location
}

fn put_chunk(session: &str, range: &str, bytes: &[u8]) -> Response {
    let headers = [("Content-Range", range), ("Content-Type", "message/rfc822")];
    http::request("PUT", session, &headers, bytes).unwrap()
}

#[test]
fn resumable_upload_in_two_chunks() {
    let fake = fake();
    let token = access_token(&fake);
    let total = MESSAGE.len();
    let session = start_resumable(&fake, &token, total);

    let first = put_chunk(&session, &format!("bytes 0-19/{total}"), &MESSAGE[..20]);
    assert_eq!(first.status, 308);
    assert_eq!(first.header("range"), Some("bytes=0-19"));
    assert!(first.body.is_empty());

    let status = put_chunk(&session, &format!("bytes */{total}"), b"");
    assert_eq!(status.status, 308);
    assert_eq!(status.header("range"), Some("bytes=0-19"));

    let last = put_chunk(
        &session,
        &format!("bytes 20-{}/{total}", total - 1),
        &MESSAGE[20..],
    );
    assert_eq!(last.status, 200, "{}", last.body_text());
    assert!(is_hex_id(&last.body_json()["id"]));

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].raw, MESSAGE);
    assert_eq!(messages[0].upload_type, "resumable");
    assert_eq!(messages[0].access_token, token);
    assert_eq!(fake.chunk_requests_with_authorization(), 0);
    assert_eq!(fake.send_requests(), 1, "chunks are not send requests");

    // Asking again after completion returns the final answer.
    let again = put_chunk(&session, &format!("bytes */{total}"), b"");
    assert_eq!(again.status, 200);
    assert_eq!(again.body_json(), last.body_json());
}

#[test]
fn resumable_chunk_failure_can_be_resumed() {
    let fake = fake();
    let token = access_token(&fake);
    let total = MESSAGE.len();
    let session = start_resumable(&fake, &token, total);
    fake.fail_chunk_once();
    let failed = put_chunk(&session, &format!("bytes 0-{}/{total}", total - 1), MESSAGE);
    assert_eq!(failed.status, 503);
    assert_eq!(error_reason(&failed), "backendError");

    let status = put_chunk(&session, &format!("bytes */{total}"), b"");
    assert_eq!(status.status, 308);
    assert_eq!(status.header("range"), None, "nothing was kept");

    // A client that sends Authorization on the session URL is noticed.
    let headers = [
        ("Content-Range", format!("bytes 0-{}/{total}", total - 1)),
        ("Authorization", bearer(&token)),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let done = http::request("POST", &session, &headers, MESSAGE).unwrap();
    assert_eq!(done.status, 200, "{}", done.body_text());
    assert_eq!(fake.messages()[0].raw, MESSAGE);
    assert_eq!(fake.chunk_requests_with_authorization(), 1);
}

#[test]
fn resumable_chunk_past_the_received_bytes_is_rejected() {
    let fake = fake();
    let token = access_token(&fake);
    let total = MESSAGE.len();
    let session = start_resumable(&fake, &token, total);
    let gap = put_chunk(&session, &format!("bytes 10-19/{total}"), &MESSAGE[10..20]);
    assert_eq!(gap.status, 400);
    let garbled = put_chunk(&session, "bytes 0-x/y", b"");
    assert_eq!(garbled.status, 400);
    let unknown = put_chunk(
        &format!("{}/upload-session/nope", fake.base_url()),
        "bytes */1",
        b"",
    );
    assert_eq!(unknown.status, 404);
}

#[test]
fn resumable_start_over_35_mib_is_413() {
    let fake = fake();
    let token = access_token(&fake);
    let url = format!(
        "{}upload/gmail/v1/users/me/messages/send?uploadType=resumable",
        fake.gmail_url()
    );
    let auth = bearer(&token);
    let too_big = (MAX_MESSAGE_BYTES + 1).to_string();
    let headers = [
        ("Authorization", auth.as_str()),
        ("X-Upload-Content-Length", too_big.as_str()),
    ];
    let response = http::request("POST", &url, &headers, b"").unwrap();
    assert_eq!(response.status, 413);
}

// ---- Faults -------------------------------------------------------------

#[test]
fn each_fault_answers_like_google() {
    let fake = fake();
    let token = access_token(&fake);
    let cases = [
        (
            Fault::Status429 {
                retry_after_secs: Some(7),
            },
            429,
            "rateLimitExceeded",
            "RESOURCE_EXHAUSTED",
        ),
        (
            Fault::RateLimit403,
            403,
            "userRateLimitExceeded",
            "PERMISSION_DENIED",
        ),
        (Fault::Status503, 503, "backendError", "UNAVAILABLE"),
        (Fault::Status500, 500, "backendError", "INTERNAL"),
    ];
    for (fault, status, reason, google_status) in cases {
        fake.inject(fault);
        let response = send_ok(&fake, &token);
        assert_eq!(response.status, status);
        assert_eq!(error_reason(&response), reason);
        assert_eq!(response.body_json()["error"]["status"], google_status);
        assert_eq!(response.body_json()["error"]["code"], status);
        if status == 429 {
            assert_eq!(response.header("retry-after"), Some("7"));
        }
    }
    fake.inject(Fault::RateLimit403);
    assert_eq!(
        send_ok(&fake, &token).body_json()["error"]["message"],
        "User-rate limit exceeded."
    );
    fake.inject(Fault::Status429 {
        retry_after_secs: None,
    });
    assert_eq!(send_ok(&fake, &token).header("retry-after"), None);
    assert_eq!(send_ok(&fake, &token).status, 200);
    assert_eq!(fake.send_requests(), 7);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn dropped_connection_closes_without_a_response() {
    let fake = fake();
    let token = access_token(&fake);
    fake.inject(Fault::DropConnection);
    let result = send_media(&fake, &[("Authorization", &bearer(&token))], MESSAGE);
    assert!(
        result.is_err(),
        "expected a closed connection, got {result:?}"
    );
    assert!(fake.messages().is_empty());
    assert_eq!(send_ok(&fake, &token).status, 200);
    assert_eq!(fake.send_requests(), 2);
}

#[test]
fn slow_fault_delays_then_succeeds() {
    let fake = fake();
    let token = access_token(&fake);
    fake.inject(Fault::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(send_ok(&fake, &token).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn faults_queue_in_order_and_forever_lasts_until_cleared() {
    let fake = fake();
    let token = access_token(&fake);
    fake.inject_n(Fault::Status503, 2);
    fake.inject(Fault::Status500);
    let statuses: Vec<u16> = (0..4).map(|_| send_ok(&fake, &token).status).collect();
    assert_eq!(statuses, [503, 503, 500, 200]);

    fake.fail_forever(Fault::Status429 {
        retry_after_secs: None,
    });
    for _ in 0..3 {
        assert_eq!(send_ok(&fake, &token).status, 429);
    }
    // Token requests are not faulted.
    assert_eq!(refresh(&fake, "1//unknown").status, 400);
    fake.clear_faults();
    assert_eq!(send_ok(&fake, &token).status, 200);
}

// ---- Service accounts (JWT bearer) ----------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `claims` with the fixture's private key, like yup-oauth2 does
/// (URL-safe base64, padded unless `padded` is false).
fn sign_jwt(claims: &Value, padded: bool) -> String {
    let key: Value = serde_json::from_str(&service_account_key_json("unused")).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let base64: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let pkcs8 = STANDARD.decode(base64).unwrap();
    let key_pair = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
    let encode = |bytes: &[u8]| {
        if padded {
            URL_SAFE.encode(bytes)
        } else {
            URL_SAFE_NO_PAD.encode(bytes)
        }
    };
    let head = format!(
        "{}.{}",
        encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        encode(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key_pair.public().modulus_len()];
    key_pair
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            head.as_bytes(),
            &mut signature,
        )
        .unwrap();
    format!("{head}.{}", encode(&signature))
}

fn claims(fake: &FakeGoogle, sub: Option<&str>) -> Value {
    let iat = now();
    json!({
        "iss": FIXTURE_SERVICE_ACCOUNT,
        "aud": fake.token_url(),
        "exp": iat + 3595,
        "iat": iat,
        "sub": sub,
        "scope": GMAIL_SEND_SCOPE,
    })
}

fn jwt_grant(fake: &FakeGoogle, assertion: &str) -> Response {
    http::post_form(
        &fake.token_url(),
        &[("grant_type", JWT_BEARER), ("assertion", assertion)],
    )
}

fn service_account_fake() -> FakeGoogle {
    let fake = fake();
    fake.register_fixture_service_account();
    fake.allow_delegation(FIXTURE_SERVICE_ACCOUNT, "boss@example.com");
    fake
}

#[test]
fn jwt_bearer_grant_with_the_fixture_key() {
    let fake = service_account_fake();
    for padded in [true, false] {
        let response = jwt_grant(
            &fake,
            &sign_jwt(&claims(&fake, Some("boss@example.com")), padded),
        );
        assert_eq!(response.status, 200, "{}", response.body_text());
        let tokens = response.body_json();
        assert_eq!(tokens["token_type"], "Bearer");
        assert!(tokens.get("refresh_token").is_none());
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(send_ok(&fake, access).status, 200);
    }
    let messages = fake.messages();
    assert!(messages.iter().all(|m| m.user == "boss@example.com"));
    assert_eq!(fake.token_requests(JWT_BEARER), 2);
}

#[test]
fn jwt_bearer_grant_without_sub_is_invalid_grant() {
    let fake = service_account_fake();
    let response = jwt_grant(&fake, &sign_jwt(&claims(&fake, None), true));
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": "invalid_grant", "error_description": "Invalid email or User ID"})
    );
}

#[test]
fn jwt_bearer_grant_for_an_undelegated_user_is_unauthorized_client() {
    let fake = service_account_fake();
    let response = jwt_grant(
        &fake,
        &sign_jwt(&claims(&fake, Some("intern@example.com")), true),
    );
    assert_eq!(response.status, 401);
    assert_eq!(response.body_json()["error"], "unauthorized_client");
    assert_eq!(
        response.body_json()["error_description"],
        "Client is unauthorized to retrieve access tokens using this method, or client not \
         authorized for any of the scopes requested."
    );
}

#[test]
fn jwt_bearer_grant_checks_signature_audience_and_times() {
    let fake = service_account_fake();
    let boss = Some("boss@example.com");

    let good = sign_jwt(&claims(&fake, boss), true);
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered_claims = claims(&fake, boss);
    tampered_claims["sub"] = json!("boss@example.com ");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE.encode(tampered_claims.to_string()),
        parts[2]
    );
    let response = jwt_grant(&fake, &tampered);
    assert_eq!(
        response.body_json()["error_description"],
        "Invalid JWT Signature."
    );

    let mut wrong_audience = claims(&fake, boss);
    wrong_audience["aud"] = json!("https://oauth2.googleapis.com/token");
    let response = jwt_grant(&fake, &sign_jwt(&wrong_audience, true));
    assert_eq!(response.status, 400);
    assert_eq!(response.body_json()["error"], "invalid_grant");

    let mut expired = claims(&fake, boss);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    assert_eq!(jwt_grant(&fake, &sign_jwt(&expired, true)).status, 400);

    let mut too_long = claims(&fake, boss);
    too_long["exp"] = json!(now() + 7200);
    assert_eq!(jwt_grant(&fake, &sign_jwt(&too_long, true)).status, 400);

    let mut stranger = claims(&fake, boss);
    stranger["iss"] = json!("someone@else.iam.gserviceaccount.com");
    assert_eq!(jwt_grant(&fake, &sign_jwt(&stranger, true)).status, 400);
}

#[test]
fn service_account_key_json_points_at_the_token_url() {
    let fake = fake();
    let key: Value = serde_json::from_str(&service_account_key_json(&fake.token_url())).unwrap();
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["token_uri"], fake.token_url());
    assert_eq!(key["client_email"], FIXTURE_SERVICE_ACCOUNT);
    for field in [
        "project_id",
        "private_key_id",
        "client_id",
        "auth_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    ] {
        assert!(key[field].is_string(), "{field}");
    }
}

// ---- The HTTP server ------------------------------------------------------

#[test]
fn keep_alive_chunked_bodies_and_connection_close() {
    let fake = fake();
    let token = access_token(&fake);
    let mut stream = TcpStream::connect(fake.base_url().trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());

    // A chunked body, on a connection that stays open.
    let form = "grant_type=password";
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        &form[..5],
        form.len() - 5,
        &form[5..]
    );
    stream.write_all(request.as_bytes()).unwrap();
    let response = http::read_response(&mut reader, false).unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body_json(),
        json!({"error": "unsupported_grant_type"})
    );
    assert_eq!(fake.token_forms()[0]["grant_type"], "password");

    // Second request on the same connection, asking to close.
    let body = json!({"raw": URL_SAFE_NO_PAD.encode(MESSAGE)}).to_string();
    let request = format!(
        "POST /gmail/v1/users/me/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let response = http::read_response(&mut reader, false).unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    assert!(rest.is_empty(), "the server closed the connection");
}

#[test]
fn garbage_gets_400_and_the_server_keeps_serving() {
    let fake = fake();
    let mut stream = TcpStream::connect(fake.base_url().trim_start_matches("http://")).unwrap();
    stream.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let response = http::read_response(&mut BufReader::new(stream), false).unwrap();
    assert_eq!(response.status, 400);

    let response = http::get(&format!("{}/nowhere", fake.base_url()));
    assert_eq!(response.status, 404);
    let response = http::request(
        "POST",
        &format!("{}/token", fake.base_url()),
        &[("Content-Length", "nope")],
        b"",
    )
    .unwrap();
    assert_eq!(response.status, 400);
}

#[test]
fn dropping_the_fake_stops_the_server() {
    let fake = fake();
    let addr = fake.base_url().trim_start_matches("http://").to_owned();
    let idle = TcpStream::connect(&addr).unwrap();
    drop(fake);
    assert!(TcpStream::connect(&addr).is_err());
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0; 1];
    let read = std::io::Read::read(&mut &idle, &mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "idle connections are closed"
    );
}

// ---- Quotas -----------------------------------------------------------------

#[test]
fn the_per_minute_and_daily_limits_answer_429_with_the_time_to_retry() {
    let fake = fake();
    let token = access_token(&fake);
    fake.set_per_minute_limit(2);
    assert_eq!(send_ok(&fake, &token).status, 200);
    assert_eq!(send_ok(&fake, &token).status, 200);
    let throttled = send_ok(&fake, &token);
    assert_eq!(throttled.status, 429);
    let error = &throttled.body_json()["error"];
    assert_eq!(error["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(error_reason(&throttled), "rateLimitExceeded");
    let message = error["message"].as_str().unwrap();
    let stamp = message
        .strip_prefix("User-rate limit exceeded.  Retry after ")
        .unwrap_or_else(|| panic!("{message}"));
    let at = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp() as f64;
    let now = fake.clock_now();
    assert!(
        at > now + 58.0 && at <= now + 61.0,
        "retry at {at}, now {now}"
    );
    assert_eq!(fake.throttled(), 1);
    assert_eq!(fake.messages().len(), 2, "a refused send is not delivered");

    // A Sent read costs 5 units of the same minute: 200 units allow no more.
    let list = http::request(
        "GET",
        &format!("{}gmail/v1/users/me/messages", fake.gmail_url()),
        &[(
            "Authorization",
            &bearer(&fake.issue_access_token("user@example.com", MAIL_SCOPE)),
        )],
        b"",
    )
    .unwrap();
    assert_eq!(list.status, 429);
    assert_eq!(fake.throttled(), 2);

    // A minute later the window is free; the daily limit then stops the
    // fourth message of the day, with Gmail's "(Mail sending)".
    fake.set_daily_limit(3);
    fake.advance_clock(Duration::from_secs(61));
    assert_eq!(send_ok(&fake, &token).status, 200);
    let over = send_ok(&fake, &token);
    assert_eq!(over.status, 429);
    let message = over.body_json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.ends_with("(Mail sending)"), "{message}");
    assert_eq!(fake.over_daily_limit(), 1);
    fake.advance_clock(Duration::from_secs(86_400));
    assert_eq!(send_ok(&fake, &token).status, 200);
    assert_eq!(fake.messages().len(), 4);
}
