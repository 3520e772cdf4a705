//! The checks page (`/checks`): the process's [`Checks`], run when the
//! page is opened, for the account chosen (else the default).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use crate::checks::CheckStatus;
use crate::guard::{Admin, PageLang};
use crate::pages::{common, render};
use crate::state::Console;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChecksParams {
    account: String,
}

/// `GET /checks`.
pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Query(params): Query<ChecksParams>,
) -> Response {
    let account = Some(params.account.trim()).filter(|a| !a.is_empty());
    let results = match &console.checks {
        Some(checks) => Some(checks.0.run(account).await),
        None => None,
    };
    let accounts: Vec<String> = console.accounts.iter().map(|a| a.name.clone()).collect();
    let failed = results.as_ref().map_or(0, |r| {
        r.iter().filter(|c| c.status == CheckStatus::Fail).count()
    });
    let ctx = context! {
        page => "checks",
        results => results,
        failed => failed,
        accounts => accounts,
        account => account.unwrap_or_default(),
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "checks.html", ctx)
}
