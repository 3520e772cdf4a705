//! The queue page: queued, held (with what each waits for), uncertain and
//! failed entries, filtered; retry now and drop, one entry or every entry
//! the filter matches, through the outbox's own `retry` and `drop_entry`
//! (as `apimail queue retry | drop` do). Drops and bulk actions ask first.

use std::sync::Arc;

use apimail_core::outbox::{Entry, EntryState, HoldKind};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::guard::{Admin, PageLang};
use crate::i18n::{Lang, local_time};
use crate::pages::{common, refusal, render};
use crate::shared::{self, ActionError};
use crate::state::Console;

/// Rows shown at most; actions still apply to every matching entry.
const MAX_ROWS: usize = 500;

/// The largest action form: a confirmed bulk action names each entry
/// (about 300,000 ids; only a signed-in session's form is read).
pub(crate) const MAX_ACTION_BYTES: usize = 8 << 20;

/// The queue page's filter (the query string, and hidden fields of the
/// action forms).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub(crate) struct QueueFilter {
    /// `queued`, `held`, `uncertain`, `failed`, or empty for all.
    pub state: String,
    /// An account name, or empty.
    pub account: String,
    /// Text the id, From, a recipient or the error contains.
    pub q: String,
}

/// An entry's state as the page groups them: uncertain before held, as the
/// overview counts them.
pub(crate) fn state_of(entry: &Entry) -> &'static str {
    if entry.is_failed() {
        "failed"
    } else if entry.is_uncertain() {
        "uncertain"
    } else if entry.state == EntryState::Held {
        "held"
    } else {
        "queued"
    }
}

impl QueueFilter {
    fn matches(&self, entry: &Entry) -> bool {
        if !self.state.is_empty() && self.state != state_of(entry) {
            return false;
        }
        if !self.account.is_empty() && entry.account.as_deref() != Some(self.account.as_str()) {
            return false;
        }
        let q = self.q.trim().to_lowercase();
        q.is_empty()
            || entry.id.as_str().contains(&q)
            || entry.from.to_lowercase().contains(&q)
            || entry
                .recipients
                .iter()
                .any(|r| r.to_lowercase().contains(&q))
            || entry
                .last_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains(&q))
    }

    fn query_string(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// The entries `filter` matches.
async fn matching(console: &Console, filter: QueueFilter) -> Result<Vec<Entry>, String> {
    let all = shared::all_entries(console).await?;
    Ok(all.into_iter().filter(|e| filter.matches(e)).collect())
}

/// One entry as the page shows it.
#[derive(Debug, Serialize)]
struct EntryView {
    id: String,
    state: &'static str,
    /// A text key for what it waits for.
    waits: &'static str,
    /// When it is due (queued) or given up (failed), in the zone.
    when: String,
    account: Option<String>,
    from: String,
    recipients: String,
    created: String,
    attempts: u32,
    error: Option<String>,
}

fn waits_key(entry: &Entry) -> &'static str {
    match (state_of(entry), entry.hold_kind()) {
        ("failed", _) => "w_failed",
        (_, Some(HoldKind::Identity)) => "w_identity",
        (_, Some(HoldKind::Login)) => "w_login",
        (_, Some(HoldKind::Uncertain)) => "w_person",
        ("uncertain", None) => "w_check",
        _ => "w_next_attempt",
    }
}

fn entry_view(console: &Console, entry: &Entry) -> EntryView {
    let when = if entry.state == EntryState::Queued && !entry.is_failed() {
        local_time(&console.zone, entry.next_attempt_at)
    } else {
        String::new()
    };
    EntryView {
        id: entry.id.as_str().to_owned(),
        state: state_of(entry),
        waits: waits_key(entry),
        when,
        account: entry.account.clone(),
        from: entry.from.clone(),
        recipients: entry.recipients.join(", "),
        created: local_time(&console.zone, entry.created_at),
        attempts: entry.attempts,
        error: entry.failed_reason.clone().or(entry.last_error.clone()),
    }
}

/// What a finished action reports on the page (`?done=`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Done {
    done: String,
    count: usize,
    busy: usize,
    gone: usize,
}

/// `GET /queue`.
pub(crate) async fn queue_page(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Query(filter): Query<QueueFilter>,
    Query(done): Query<Done>,
) -> Response {
    let entries = match matching(&console, filter.clone()).await {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!("{error}");
            return refusal(
                &console,
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            );
        }
    };
    let total = entries.len();
    let rows: Vec<EntryView> = entries
        .iter()
        .take(MAX_ROWS)
        .map(|e| entry_view(&console, e))
        .collect();
    let done_text = match done.done.as_str() {
        "retry" => Some(lang.text("done_retry")),
        "drop" => Some(lang.text("done_drop")),
        _ => None,
    };
    let accounts: Vec<String> = console.accounts.iter().map(|a| a.name.clone()).collect();
    let ctx = context! {
        page => "queue",
        rows => rows,
        total => total,
        more => total.saturating_sub(MAX_ROWS),
        filter => filter,
        states => STATES.iter().map(|s| (*s, lang.text(state_key(s)))).collect::<Vec<_>>(),
        accounts => accounts,
        done => done_text,
        done_count => done.count,
        done_busy => done.busy,
        done_gone => done.gone,
        ..common(&console, lang, Some(&admin))
    };
    render(&console, StatusCode::OK, "queue.html", ctx)
}

const STATES: [&str; 4] = ["queued", "held", "uncertain", "failed"];

fn state_key(state: &str) -> &'static str {
    match state {
        "queued" => "o_queued",
        "held" => "o_held",
        "uncertain" => "o_uncertain",
        _ => "o_failed",
    }
}

/// The action forms: `action` (`retry` or `drop`), the filter, and on the
/// confirmation `confirm=yes` with the `ids` (space-separated) confirmed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ActionForm {
    csrf: String,
    action: String,
    ids: String,
    confirm: String,
    state: String,
    account: String,
    q: String,
}

/// `POST /queue/action`: without `ids`, every entry the filter matches;
/// a drop or a bulk action is first shown for confirmation, and only the
/// entries confirmed are acted on.
pub(crate) async fn queue_action(
    State(console): State<Arc<Console>>,
    PageLang(lang): PageLang,
    admin: Admin,
    Form(form): Form<ActionForm>,
) -> Response {
    if !admin.csrf_ok(&form.csrf) {
        return refusal(&console, lang, StatusCode::FORBIDDEN, "forbidden");
    }
    if form.action != "retry" && form.action != "drop" {
        return refusal(&console, lang, StatusCode::BAD_REQUEST, "bad_request");
    }
    let filter = QueueFilter {
        state: form.state.clone(),
        account: form.account.clone(),
        q: form.q.clone(),
    };
    let ids: Vec<String> = form.ids.split_whitespace().map(str::to_owned).collect();
    let single_retry = form.action == "retry" && ids.len() == 1;
    if form.confirm != "yes" && !single_retry {
        return confirm_page(&console, lang, &admin, &form.action, ids, filter).await;
    }
    let (count, busy, gone) = apply(&console, &form.action, ids).await;
    console.events.queue_changed();
    let back = format!(
        "/queue?{}&done={}&count={count}&busy={busy}&gone={gone}",
        filter.query_string(),
        form.action
    );
    Redirect::to(&back).into_response()
}

async fn confirm_page(
    console: &Console,
    lang: Lang,
    admin: &Admin,
    action: &str,
    ids: Vec<String>,
    filter: QueueFilter,
) -> Response {
    let entries = match matching(console, filter.clone()).await {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!("{error}");
            return refusal(console, lang, StatusCode::INTERNAL_SERVER_ERROR, "internal");
        }
    };
    // Named entries (a row's button), else all the filter matches.
    let entries: Vec<&Entry> = entries
        .iter()
        .filter(|e| ids.is_empty() || ids.iter().any(|id| id == e.id.as_str()))
        .collect();
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let rows: Vec<EntryView> = entries
        .iter()
        .take(MAX_ROWS)
        .map(|e| entry_view(console, e))
        .collect();
    let ctx = context! {
        page => "queue",
        action => action,
        question => lang.text(if action == "drop" { "confirm_drop" } else { "confirm_retry" }),
        rows => rows,
        count => ids.len(),
        more => ids.len().saturating_sub(MAX_ROWS),
        ids => ids.join(" "),
        filter => filter,
        ..common(console, lang, Some(admin))
    };
    render(console, StatusCode::OK, "queue_confirm.html", ctx)
}

/// Retries or drops each entry: (done, busy with another process, gone).
async fn apply(console: &Console, action: &str, ids: Vec<String>) -> (usize, usize, usize) {
    let drop = action == "drop";
    let (mut done, mut busy, mut gone) = (0, 0, 0);
    for id in ids {
        let result = if drop {
            shared::drop_entry(console, id).await
        } else {
            shared::retry(console, id).await
        };
        match result {
            Ok(true) => done += 1,
            Ok(false) | Err(ActionError::InvalidId(_)) => gone += 1,
            Err(ActionError::Busy) => busy += 1,
            Err(ActionError::Other(error)) => {
                tracing::warn!("admin console: {error}");
                busy += 1;
            }
        }
    }
    (done, busy, gone)
}
