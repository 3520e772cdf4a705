//! "Sign in again": the page shows what the login flow reports (a device
//! code; a link and the paste-back form, whose address reaches the flow),
//! then its end; CSRF-protected, for configured sign-in accounts only.

mod support;

use std::sync::Arc;
use std::time::Duration;

use apimail_console::signin::{Progress, SignIn, Signing};
use apimail_core::oauth::DeviceCode;
use axum::http::StatusCode;
use support::{call, get_as, login, open, post_as};

/// Shows a device code for `tenant`, a link for `work` and waits for the
/// pasted address, which it reports back.
struct Flow;

impl SignIn for Flow {
    fn run(&self, account: String, progress: Progress) -> Signing {
        Box::pin(async move {
            if account == "tenant" {
                progress.device_code(&DeviceCode {
                    verification_uri: "https://microsoft.com/devicelogin".to_owned(),
                    user_code: "ABCD-EFGH".to_owned(),
                    verification_uri_complete: None,
                    expires_in: Duration::from_secs(900),
                    message: None,
                });
                std::future::pending::<()>().await;
            }
            let mut pasted = progress.pasted();
            progress.authorize_link(
                &"https://accounts.example.com/auth?client_id=x&state=y"
                    .parse()
                    .unwrap(),
                "http://127.0.0.1:4000/callback",
            );
            match pasted.recv().await {
                Some(address) if address.contains("code=") => {
                    Ok(format!("{account} with {address}"))
                }
                _ => Err("no code in the address".to_owned()),
            }
        })
    }
}

async fn wait_for(f: &support::Fixture, session: &str, page: &str, needle: &str) -> String {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = call(&f.router, get_as(page, session)).await.body;
        if body.contains(needle) {
            return body;
        }
        assert!(tokio::time::Instant::now() < until, "no `{needle}`: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_page_shows_the_device_code_or_the_link_and_takes_the_pasted_address() {
    let dir = tempfile::tempdir().unwrap();
    let console = open(&dir).with_sign_in(Arc::new(Flow));
    let f = support::fixture_from(dir, console);
    let (session, csrf) = login(&f.router).await;

    let overview = call(&f.router, get_as("/", &session)).await;
    assert!(
        overview
            .body
            .contains("href=\"/accounts/work/sign-in\">Sign in again</a>"),
        "{}",
        overview.body
    );
    let unknown = call(&f.router, get_as("/accounts/nobody/sign-in", &session)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let forged = call(&f.router, post_as("/accounts/work/sign-in", &session, &[])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Microsoft: the device code.
    let started = call(
        &f.router,
        post_as("/accounts/tenant/sign-in", &session, &[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let page = wait_for(&f, &session, "/accounts/tenant/sign-in", "ABCD-EFGH").await;
    assert!(page.contains("devicelogin"));

    // Google: the link, then the pasted address.
    call(
        &f.router,
        post_as("/accounts/work/sign-in", &session, &[("csrf", &csrf)]),
    )
    .await;
    let page = wait_for(&f, &session, "/accounts/work/sign-in", "class=\"link\"").await;
    assert!(page.contains("127.0.0.1:4000"));
    let forged = call(
        &f.router,
        post_as(
            "/accounts/work/sign-in/paste",
            &session,
            &[("address", "x")],
        ),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let pasted = call(
        &f.router,
        post_as(
            "/accounts/work/sign-in/paste",
            &session,
            &[
                ("csrf", &csrf),
                ("address", "http://127.0.0.1:4000/callback?code=c1&state=y"),
            ],
        ),
    )
    .await;
    assert_eq!(pasted.status, StatusCode::SEE_OTHER, "{}", pasted.body);
    let done = wait_for(&f, &session, "/accounts/work/sign-in", "Signed in").await;
    assert!(done.contains("code=c1"), "{done}");
    // Nothing waits for an address any more.
    let late = call(
        &f.router,
        post_as(
            "/accounts/work/sign-in/paste",
            &session,
            &[("csrf", &csrf), ("address", "x")],
        ),
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT);

    let ja = call(
        &f.router,
        support::get_in("/accounts/tenant/sign-in", &session, "ja"),
    )
    .await;
    assert!(ja.body.contains("コードを入力してください"), "{}", ja.body);
}
