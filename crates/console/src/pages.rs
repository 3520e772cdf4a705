//! The console's pages: login, overview, delivery log (and its CSV), a
//! message. Every value from a message goes through the templates'
//! autoescape; a message's body is never shown.

use std::sync::Arc;
use std::time::Duration;

use apimail_core::journal::{Outcome, Record};
use apimail_core::login_backoff::Gate;
use apimail_core::outbox::EntryState;
use apimail_core::{Secret, now_unix};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::chart::{Chart, chart};
use crate::export::csv_response;
use crate::filters::LogParams;
use crate::guard::{
    Admin, ClientIp, LANG_COOKIE, LOGIN_COOKIE, PageLang, SESSION_COOKIE, cookie, same_token,
    set_cookie,
};
use crate::i18n::{Lang, local_time, offset_at, zone_name};
use crate::sessions::random_token;
use crate::shared;
use crate::state::Console;
use crate::users::AdminUsers;

/// The most of a queued message's header section shown.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// The live updates' script (the only one; never inline: the CSP allows
/// scripts from the console itself only).
pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../templates/console.js"),
    )
        .into_response()
}

/// The stylesheet.
pub(crate) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../templates/console.css"),
    )
        .into_response()
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `/lang/{code}`: the switch; remembered in a cookie for a year.
pub(crate) async fn set_lang(
    State(console): State<Arc<Console>>,
    Path(code): Path<String>,
) -> Response {
    let lang = Lang::from_code(&code).unwrap_or_default();
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&console, LANG_COOKIE, lang.code(), "/", 365 * 86_400),
    );
    response
}

pub(crate) fn render(
    console: &Console,
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
) -> Response {
    match console
        .templates
        .get_template(name)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::warn!("the console cannot render {name}: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console could not draw this page",
            )
                .into_response()
        }
    }
}

/// The values every page has: texts, language, user, CSRF token.
pub(crate) fn common(console: &Console, lang: Lang, admin: Option<&Admin>) -> minijinja::Value {
    let other = if lang == Lang::Ja { Lang::En } else { Lang::Ja };
    context! {
        t => lang.texts(),
        lang => lang.code(),
        other_lang => other.code(),
        user => admin.map(|a| a.user.clone()),
        csrf => admin.map(|a| a.csrf.clone()),
        zone => zone_name(&console.zone, now_unix()),
    }
}

pub(crate) fn error_page(
    console: &Console,
    lang: Lang,
    status: StatusCode,
    message: &str,
) -> Response {
    let ctx =
        context! { message => message, status => status.as_u16(), ..common(console, lang, None) };
    render(console, status, "error.html", ctx)
}

/// The error page of `status` with the text `key`: the forms' and the
/// actions' refusals.
pub(crate) fn refusal(
    console: &Console,
    lang: Lang,
    status: StatusCode,
    key: &'static str,
) -> Response {
    error_page(console, lang, status, lang.text(key))
}

// ---- login ------------------------------------------------------------------

/// The login form's fields; the password is a `Secret` (never printed).
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: Option<Secret>,
    #[serde(default)]
    csrf: String,
}

/// The login form, with a fresh CSRF token in it and in a cookie.
fn login_form(console: &Console, lang: Lang, status: StatusCode, error: Option<&str>) -> Response {
    let Some(token) = random_token() else {
        return error_page(
            console,
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            lang.text("internal"),
        );
    };
    let ctx =
        context! { login_csrf => token.clone(), error => error, ..common(console, lang, None) };
    let mut response = render(console, status, "login.html", ctx);
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(console, LOGIN_COOKIE, &token, "/login", 3600),
    );
    response
}

pub(crate) async fn login_page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
) -> Response {
    login_form(&console, lang, StatusCode::OK, None)
}

pub(crate) async fn login_submit(
    State(console): State<Arc<Console>>,
    ClientIp(ip): ClientIp,
    PageLang(lang): PageLang,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_token(&form.csrf, expected) {
        return error_page(
            &console,
            lang,
            StatusCode::FORBIDDEN,
            lang.text("forbidden"),
        );
    }
    // Counted against the address before the check runs, so parallel
    // requests cannot run more checks than one could.
    let Ok(attempt) = console.backoff.begin(ip) else {
        return login_form(
            &console,
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            Some(lang.text("locked")),
        );
    };
    let path = console.users_path();
    let user = form.user.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let password = form.password.as_ref().map_or("", Secret::expose);
        AdminUsers::load(&path).map(|users| users.verify(&user, password))
    })
    .await;
    match checked {
        Ok(Ok(true)) => {
            attempt.succeeded();
            let Some(id) = console.sessions.start(&form.user) else {
                return error_page(
                    &console,
                    lang,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    lang.text("internal"),
                );
            };
            tracing::info!("admin console: {} signed in from {ip}", form.user);
            let mut response = Redirect::to("/").into_response();
            let lifetime = console.sessions.lifetime().as_secs();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                set_cookie(&console, SESSION_COOKIE, &id, "/", lifetime),
            );
            headers.append(
                header::SET_COOKIE,
                set_cookie(&console, LOGIN_COOKIE, "", "/login", 0),
            );
            response
        }
        Ok(Ok(false)) => {
            let (wait, _) = attempt.failed();
            tracing::warn!("admin console: a failed sign-in from {ip}");
            if wait > Duration::ZERO {
                tokio::time::sleep(wait).await;
            }
            if let Gate::Locked(_) = console.backoff.gate(ip) {
                login_form(
                    &console,
                    lang,
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(lang.text("locked")),
                )
            } else {
                login_form(
                    &console,
                    lang,
                    StatusCode::UNAUTHORIZED,
                    Some(lang.text("login_failed")),
                )
            }
        }
        Ok(Err(error)) => {
            tracing::warn!("admin console: {error}");
            error_page(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.text("internal"),
            )
        }
        Err(_) => error_page(
            &console,
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            lang.text("internal"),
        ),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn logout(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !admin.csrf_ok(&form.csrf) {
        return error_page(
            &console,
            lang,
            StatusCode::FORBIDDEN,
            lang.text("forbidden"),
        );
    }
    console.sessions.end(&admin.session);
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, "", "/", 0),
    );
    response
}

// ---- overview ---------------------------------------------------------------

#[derive(Debug, Serialize)]
struct AccountView {
    name: String,
    provider: String,
    address: Option<String>,
    /// A text key: `auth_ok`, `auth_refused`, ...
    state: &'static str,
    problem: bool,
    /// "Sign in again" is offered.
    sign_in: bool,
}

#[derive(Debug, Default, Serialize)]
struct QueueView {
    queued: usize,
    held: usize,
    uncertain: usize,
    failed: usize,
    unreadable: usize,
    error: Option<String>,
}

fn outcome_names(lang: Lang) -> [&'static str; Outcome::ALL.len()] {
    Outcome::ALL.map(|o| lang.text(outcome_key(o)))
}

pub(crate) fn outcome_key(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Sent => "o_sent",
        Outcome::Queued => "o_queued",
        Outcome::Held => "o_held",
        Outcome::Failed => "o_failed",
        Outcome::Uncertain => "o_uncertain",
        Outcome::VerifiedSent => "o_verified_sent",
        Outcome::Dropped => "o_dropped",
    }
}

pub(crate) async fn overview(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
) -> Response {
    let accounts: Vec<AccountView> = console
        .accounts
        .iter()
        .map(|account| {
            let stored = console.token_store.load(&account.name);
            let (state, problem) = match &stored {
                _ if account.app_only => ("auth_app_only", false),
                Ok(Some(token)) if token.refresh_refused.is_some() => ("auth_refused", true),
                Ok(Some(_)) => ("auth_ok", false),
                Ok(None) => ("auth_missing", true),
                Err(_) => ("auth_unreadable", true),
            };
            let stored_address = stored.ok().flatten().and_then(|t| t.address);
            AccountView {
                name: account.name.clone(),
                provider: account.provider.clone(),
                address: account.address.clone().or(stored_address),
                state,
                problem,
                sign_in: console.sign_in.is_some() && !account.app_only,
            }
        })
        .collect();

    let queue = queue_view(&console)
        .await
        .unwrap_or_else(|error| QueueView {
            error: Some(error),
            ..QueueView::default()
        });

    let now = now_unix();
    let offset = offset_at(&console.zone, now);
    let buckets = console
        .with_index(true, move |index| {
            Ok((
                index.buckets(now - 23 * 3600, now + 1, 3600, offset)?,
                index.buckets(now - 6 * 86_400, now + 1, 86_400, offset)?,
            ))
        })
        .await;
    let (hours, days) = match buckets {
        Ok(b) => b,
        Err(error) => {
            tracing::warn!("{error}");
            return error_page(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.text("internal"),
            );
        }
    };
    let zone = console.zone.clone();
    let label = |format: &'static str| {
        let zone = zone.clone();
        move |start: i64| {
            let text = local_time(&zone, start);
            match format {
                "hour" => text[11..13].to_owned(),
                _ => text[5..10].to_owned(),
            }
        }
    };
    let names = outcome_names(lang);
    let hourly: Chart = chart(&hours, label("hour"), names);
    let daily: Chart = chart(&days, label("day"), names);
    let legend: Vec<(&str, &str)> = Outcome::ALL
        .iter()
        .map(|o| (o.as_str(), lang.text(outcome_key(*o))))
        .collect();
    let alerts = console
        .alerts
        .as_ref()
        .map(|a| a.active())
        .unwrap_or_default();
    let alert_failures = console
        .alerts
        .as_ref()
        .map(|a| a.failures())
        .unwrap_or_default();
    let ctx = context! {
        page => "overview",
        alerts => alerts,
        alert_failures => alert_failures,
        accounts => accounts,
        queue => queue,
        hourly => hourly,
        daily => daily,
        legend => legend,
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "overview.html", ctx)
}

// ---- the log ----------------------------------------------------------------

/// One message as the log and the message page show it.
#[derive(Debug, Serialize)]
struct RowView {
    time: String,
    outcome: &'static str,
    outcome_label: &'static str,
    from: String,
    recipients: String,
    subject: Option<String>,
    account: Option<String>,
    client: Option<String>,
    size: u64,
    attempts: u32,
    provider_id: Option<String>,
    error: Option<String>,
    queue_id: Option<String>,
    message_id: String,
    original_from: Option<String>,
    possible_duplicate: bool,
}

fn row_view(console: &Console, lang: Lang, record: &Record) -> RowView {
    let client = match (&record.client, &record.smtp_user) {
        (Some(addr), Some(user)) => Some(format!("{addr} ({user})")),
        (Some(addr), None) => Some(addr.clone()),
        (None, Some(user)) => Some(user.clone()),
        (None, None) => None,
    };
    RowView {
        time: local_time(&console.zone, record.time),
        outcome: record.outcome.as_str(),
        outcome_label: lang.text(outcome_key(record.outcome)),
        from: record.from.clone(),
        recipients: record.recipients.join(", "),
        subject: record.subject.clone(),
        account: record.account.clone(),
        client,
        size: record.size,
        attempts: record.attempts,
        provider_id: record.provider_id.clone(),
        error: record.error.clone(),
        queue_id: record.queue_id.clone(),
        message_id: record.message_id.clone(),
        original_from: record.original_from.clone(),
        possible_duplicate: record.possible_duplicate,
    }
}

pub(crate) async fn log_page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Query(params): Query<LogParams>,
) -> Response {
    let filters = match params.parse(now_unix(), &console.zone) {
        Ok(filters) => filters,
        Err(error) => return error_page(&console, lang, StatusCode::BAD_REQUEST, &error.0),
    };
    let (query, cursor, limit) = (filters.query, filters.cursor, filters.limit);
    let page = console
        .with_index(true, move |index| index.page(&query, cursor, limit))
        .await;
    let page = match page {
        Ok(page) => page,
        Err(error) => {
            tracing::warn!("{error}");
            return error_page(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.text("internal"),
            );
        }
    };
    let rows: Vec<RowView> = page
        .rows
        .iter()
        .map(|row| row_view(&console, lang, &row.record))
        .collect();
    let outcomes: Vec<(&str, &str)> = Outcome::ALL
        .iter()
        .map(|o| (o.as_str(), lang.text(outcome_key(*o))))
        .collect();
    let accounts: Vec<String> = console.accounts.iter().map(|a| a.name.clone()).collect();
    let ctx = context! {
        page => "log",
        rows => rows,
        params => params.clone(),
        outcomes => outcomes,
        accounts => accounts,
        next => page.next.map(|c| params.with_cursor(Some(&c.encode()))),
        first => params.with_cursor(None),
        paged => cursor.is_some(),
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "log.html", ctx)
}

pub(crate) async fn log_csv(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    _admin: Admin,
    Query(params): Query<LogParams>,
) -> Response {
    match params.parse(now_unix(), &console.zone) {
        Ok(filters) => csv_response(console, filters.query),
        Err(error) => error_page(&console, lang, StatusCode::BAD_REQUEST, &error.0),
    }
}

// ---- a message --------------------------------------------------------------

/// The header section of `message` (up to the first empty line), as text.
fn header_section(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len())
        .min(MAX_HEADER_BYTES);
    String::from_utf8_lossy(&message[..end]).replace("\r\n", "\n")
}

pub(crate) async fn message_page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Path(queue_id): Path<String>,
) -> Response {
    let id = queue_id.clone();
    let found = console
        .with_index(true, move |index| index.message(&id))
        .await;
    let (row, events) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            return error_page(
                &console,
                lang,
                StatusCode::NOT_FOUND,
                lang.text("not_found"),
            );
        }
        Err(error) => {
            tracing::warn!("{error}");
            return error_page(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.text("internal"),
            );
        }
    };
    let headers = shared::read_message(&console, queue_id.clone())
        .await
        .map(|bytes| header_section(&bytes));
    let message = row_view(&console, lang, &row.record);
    let events: Vec<RowView> = events
        .iter()
        .map(|record| row_view(&console, lang, record))
        .collect();
    let ctx = context! {
        page => "log",
        message => message,
        events => events,
        headers => headers,
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "message.html", ctx)
}

/// The overview's queue counts: the outbox's (with its unreadable
/// entries), or the shared store's.
async fn queue_view(console: &Console) -> Result<QueueView, String> {
    let (failed, entries, unreadable) = if console.store.is_some() {
        let all = shared::all_entries(console).await?;
        let (failed, entries) = all.into_iter().partition::<Vec<_>, _>(|e| e.is_failed());
        (failed.len(), entries, 0)
    } else {
        let outbox = console.outbox.clone();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let entries = outbox.list().map_err(|e| e.to_string())?;
            let failed = outbox.list_failed().map_err(|e| e.to_string())?;
            let summary = outbox.summary().map_err(|e| e.to_string())?;
            Ok((failed.len(), entries, summary.unreadable))
        })
        .await
        .unwrap_or_else(|_| Err("the outbox listing stopped".to_owned()))?
    };
    let mut view = QueueView {
        failed,
        unreadable,
        ..QueueView::default()
    };
    for entry in &entries {
        if entry.is_uncertain() {
            view.uncertain += 1;
        } else if entry.state == EntryState::Held {
            view.held += 1;
        } else {
            view.queued += 1;
        }
    }
    Ok(view)
}

/// Anything else.
pub(crate) async fn not_found(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
) -> Response {
    error_page(
        &console,
        lang,
        StatusCode::NOT_FOUND,
        lang.text("not_found"),
    )
}
