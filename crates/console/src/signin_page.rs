//! The sign-in pages: `/accounts/{account}/sign-in` (where it stands;
//! POST starts it) and `.../paste` (the address the browser shows after
//! the consent), over the [`SignIn`](crate::signin::SignIn) flows.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;

use crate::guard::{Admin, PageLang};
use crate::pages::{common, refusal, render};
use crate::signin::{Flow, Progress, Step};
use crate::state::Console;

/// The longest pasted address taken.
const MAX_PASTED: usize = 8192;

fn known(console: &Console, account: &str) -> bool {
    console
        .accounts
        .iter()
        .any(|a| a.name == account && !a.app_only)
}

/// `GET /accounts/{name}/sign-in`: where the sign-in stands.
pub(crate) async fn page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Path(account): Path<String>,
) -> Response {
    if console.sign_in.is_none() || !known(&console, &account) {
        return refusal(&console, lang, StatusCode::NOT_FOUND, "not_found");
    }
    let step = console
        .flows
        .0
        .lock()
        .ok()
        .and_then(|flows| flows.get(&account).map(|f| f.step.clone()));
    let running = matches!(
        step,
        Some(Step::Starting | Step::DeviceCode { .. } | Step::Link { .. })
    );
    let ctx = context! {
        page => "overview",
        account => account,
        step => step,
        running => running,
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "signin.html", ctx)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SignInForm {
    csrf: String,
    address: String,
}

/// `POST /accounts/{name}/sign-in`: starts it (once at a time).
pub(crate) async fn start(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Path(account): Path<String>,
    Form(form): Form<SignInForm>,
) -> Response {
    if !admin.csrf_ok(&form.csrf) {
        return refusal(&console, lang, StatusCode::FORBIDDEN, "forbidden");
    }
    let Some(sign_in) = console.sign_in.clone() else {
        return refusal(&console, lang, StatusCode::NOT_FOUND, "not_found");
    };
    if !known(&console, &account) {
        return refusal(&console, lang, StatusCode::NOT_FOUND, "not_found");
    }
    let back = format!("/accounts/{account}/sign-in");
    {
        let Ok(mut flows) = console.flows.0.lock() else {
            return refusal(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            );
        };
        let running = flows.get(&account).is_some_and(|f| {
            matches!(
                f.step,
                Step::Starting | Step::DeviceCode { .. } | Step::Link { .. }
            )
        });
        if running {
            return Redirect::to(&back).into_response();
        }
        flows.insert(
            account.clone(),
            Flow {
                step: Step::Starting,
                paste: None,
            },
        );
    }
    tracing::info!(
        "admin console: {} signs account {account} in again",
        admin.user
    );
    let progress = Progress {
        flows: Arc::clone(&console.flows),
        events: Arc::clone(&console.events),
        account: account.clone(),
    };
    let flows = Arc::clone(&console.flows);
    let events = Arc::clone(&console.events);
    let signing = sign_in.0.run(account.clone(), progress);
    tokio::spawn(async move {
        let step = match signing.await {
            Ok(text) => Step::Done { text },
            Err(error) => Step::Failed { error },
        };
        if let Ok(mut all) = flows.0.lock()
            && let Some(flow) = all.get_mut(&account)
        {
            flow.step = step;
            flow.paste = None;
        }
        events.signin_changed();
    });
    Redirect::to(&back).into_response()
}

/// `POST /accounts/{name}/sign-in/paste`: the address the browser shows
/// after the consent, for the running login.
pub(crate) async fn paste(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Path(account): Path<String>,
    Form(form): Form<SignInForm>,
) -> Response {
    if !admin.csrf_ok(&form.csrf) {
        return refusal(&console, lang, StatusCode::FORBIDDEN, "forbidden");
    }
    let address = form.address.trim();
    if address.is_empty() || address.len() > MAX_PASTED {
        return refusal(&console, lang, StatusCode::BAD_REQUEST, "bad_request");
    }
    let sent = console
        .flows
        .0
        .lock()
        .ok()
        .and_then(|flows| flows.get(&account).and_then(|f| f.paste.clone()))
        .is_some_and(|paste| paste.send(address.to_owned()).is_ok());
    if !sent {
        return refusal(&console, lang, StatusCode::CONFLICT, "si_not_waiting");
    }
    Redirect::to(&format!("/accounts/{account}/sign-in")).into_response()
}
