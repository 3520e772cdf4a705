//! The checks page: the process's checks (the CLI's are `apimail
//! doctor`'s), run for the chosen account, each with its outcome and hint.

mod support;

use std::sync::{Arc, Mutex};

use apimail_console::checks::{CheckResult, CheckStatus, Checking, Checks};
use axum::http::StatusCode;
use support::{call, fixture, get_as, login, open};

#[derive(Default)]
struct Recorded(Mutex<Vec<Option<String>>>);

impl Checks for Recorded {
    fn run<'a>(&'a self, account: Option<&'a str>) -> Checking<'a> {
        Box::pin(async move {
            self.0.lock().unwrap().push(account.map(str::to_owned));
            vec![
                CheckResult {
                    name: "configuration".to_owned(),
                    status: CheckStatus::Ok,
                    detail: "config.toml parses".to_owned(),
                    hint: None,
                },
                CheckResult {
                    name: "authorization".to_owned(),
                    status: CheckStatus::Fail,
                    detail: "<b>refused</b>".to_owned(),
                    hint: Some("apimail auth login gmail".to_owned()),
                },
            ]
        })
    }
}

#[tokio::test]
async fn the_checks_page_shows_each_check_for_the_chosen_account() {
    let dir = tempfile::tempdir().unwrap();
    let checks = Arc::new(Recorded::default());
    let console = open(&dir).with_checks(Arc::clone(&checks) as Arc<dyn Checks>);
    let f = support::fixture_from(dir, console);
    let anonymous = call(&f.router, support::get("/checks")).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);

    let (session, _) = login(&f.router).await;
    let page = call(&f.router, get_as("/checks", &session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Checks failed: 1"), "{}", page.body);
    assert!(
        page.body
            .contains("<span class=\"mark fail\">failed</span> <strong>authorization</strong>")
    );
    assert!(
        page.body.contains("&lt;b&gt;refused&lt;&#x2f;b&gt;"),
        "escaped"
    );
    assert!(page.body.contains("hint: apimail auth login gmail"));
    let chosen = call(&f.router, get_as("/checks?account=tenant", &session)).await;
    assert!(chosen.body.contains("<option selected>tenant</option>"));
    assert_eq!(
        *checks.0.lock().unwrap(),
        vec![None, Some("tenant".to_owned())]
    );
    let ja = call(&f.router, support::get_in("/checks", &session, "ja")).await;
    assert!(ja.body.contains("失敗した診断: 1"), "{}", ja.body);
}

#[tokio::test]
async fn without_checks_the_page_says_to_run_doctor() {
    let f = fixture();
    let (session, _) = login(&f.router).await;
    let page = call(&f.router, get_as("/checks", &session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("run `apimail doctor`"), "{}", page.body);
}
