//! App-only tokens against a loopback token endpoint: the client
//! credentials form with a secret or a signed certificate assertion, and
//! the in-memory cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apimail_core::oauth::JWT_BEARER_ASSERTION;
use apimail_core::{Secret, TokenSource};
use apimail_graph::{AppOnlyTokens, Cloud};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::json;

mod common;

use common::{Fake, Request, RequestExt, reply};

const PEM: &[u8] = include_bytes!("fixtures/test-app.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/test-app-rsapublickey.der");

fn form_fields(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn token_endpoint() -> Fake {
    let issued = AtomicUsize::new(0);
    Fake::start(Duration::ZERO, move |_| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        reply(
            200,
            json!({"access_token": format!("at{n}"), "token_type": "Bearer", "expires_in": 3599}),
        )
    })
    .await
}

#[tokio::test]
async fn certificate_assertion_and_cache() {
    let fake = token_endpoint().await;
    let token_url = apimail_graph::cloud::token_url(
        &url::Url::parse(&fake.base).unwrap(),
        "contoso.onmicrosoft.com",
    );
    let tokens = AppOnlyTokens::with_certificate(
        "00000000-1111-2222-3333-444444444444",
        PEM,
        token_url.clone(),
        Cloud::UsGov,
    )
    .unwrap();

    let first = tokens.token().await.unwrap();
    assert_eq!(first.secret.expose(), "at1");
    assert_eq!(tokens.token().await.unwrap(), first, "cached");
    assert_eq!(fake.requests().len(), 1);

    let request = &fake.requests()[0];
    assert_eq!(
        request.line(),
        "POST /contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(request.header("authorization"), None);
    let form = form_fields(request);
    assert_eq!(field(&form, "grant_type"), Some("client_credentials"));
    assert_eq!(
        field(&form, "scope"),
        Some("https://graph.microsoft.us/.default")
    );
    assert_eq!(
        field(&form, "client_id"),
        Some("00000000-1111-2222-3333-444444444444")
    );
    assert_eq!(field(&form, "client_secret"), None);
    assert_eq!(
        field(&form, "client_assertion_type"),
        Some(JWT_BEARER_ASSERTION)
    );
    let jwt = field(&form, "client_assertion").unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], token_url.as_str());
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, PUBLIC_KEY)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .unwrap();

    // A rejected token is replaced, with a fresh assertion...
    let second = tokens.refresh_after_rejection(&first).await.unwrap();
    assert_eq!(second.secret.expose(), "at2");
    let requests = fake.requests();
    assert_ne!(
        field(&form_fields(&requests[1]), "client_assertion"),
        Some(jwt),
        "a new assertion per request"
    );
    // ...but only once: another send that saw the old one gets the new one.
    assert_eq!(
        tokens.refresh_after_rejection(&first).await.unwrap(),
        second
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn client_secret() {
    let fake = token_endpoint().await;
    let token_url =
        apimail_graph::cloud::token_url(&url::Url::parse(&fake.base).unwrap(), "tenant-id");
    let tokens = AppOnlyTokens::with_secret("app", Secret::new("s3cr3t"), token_url, Cloud::Global);
    assert_eq!(tokens.token().await.unwrap().secret.expose(), "at1");
    let form = form_fields(&fake.requests()[0]);
    assert_eq!(field(&form, "client_secret"), Some("s3cr3t"));
    assert_eq!(field(&form, "client_assertion"), None);
    assert_eq!(
        field(&form, "scope"),
        Some("https://graph.microsoft.com/.default")
    );
}
