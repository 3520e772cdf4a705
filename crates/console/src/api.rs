//! The JSON API, version 1, for a bearer token (`apimail admin token
//! create`): the log, one message with its events, counts, and the queue
//! actions (retry, drop) for tokens that may write.

use std::sync::Arc;

use apimail_core::journal::{Outcome, Record, rfc3339};
use apimail_core::now_unix;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::export::csv_response;
use crate::filters::{LogParams, parse_time};
use crate::guard::{ApiClient, api_error};
use crate::shared::{self, ActionError};
use crate::state::Console;

/// One message (or one event) as the API gives it: the journal record's
/// fields, the time in RFC 3339.
#[derive(Debug, Serialize)]
pub(crate) struct ApiMessage {
    time: String,
    queue_id: Option<String>,
    message_id: String,
    outcome: Outcome,
    account: Option<String>,
    provider: Option<String>,
    from: String,
    recipients: Vec<String>,
    subject: Option<String>,
    client: Option<String>,
    smtp_user: Option<String>,
    size: u64,
    attempts: u32,
    possible_duplicate: bool,
    provider_id: Option<String>,
    error: Option<String>,
    original_from: Option<String>,
}

impl From<&Record> for ApiMessage {
    fn from(r: &Record) -> Self {
        ApiMessage {
            time: rfc3339(r.time),
            queue_id: r.queue_id.clone(),
            message_id: r.message_id.clone(),
            outcome: r.outcome,
            account: r.account.clone(),
            provider: r.provider.clone(),
            from: r.from.clone(),
            recipients: r.recipients.clone(),
            subject: r.subject.clone(),
            client: r.client.clone(),
            smtp_user: r.smtp_user.clone(),
            size: r.size,
            attempts: r.attempts,
            possible_duplicate: r.possible_duplicate,
            provider_id: r.provider_id.clone(),
            error: r.error.clone(),
            original_from: r.original_from.clone(),
        }
    }
}

fn index_failed(error: impl std::fmt::Display) -> Response {
    tracing::warn!("{error}");
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the console's index cannot be read; see the console's log",
    )
}

/// `GET /api/v1/messages`: `{"messages": [...], "next_cursor": ...}`.
pub(crate) async fn messages(
    State(console): State<Arc<Console>>,
    _client: ApiClient,
    Query(params): Query<LogParams>,
) -> Response {
    let filters = match params.parse(now_unix(), &console.zone) {
        Ok(filters) => filters,
        Err(error) => return api_error(StatusCode::BAD_REQUEST, error.0),
    };
    let (query, cursor, limit) = (filters.query, filters.cursor, filters.limit);
    match console
        .with_index(true, move |index| index.page(&query, cursor, limit))
        .await
    {
        Ok(page) => {
            let messages: Vec<ApiMessage> = page
                .rows
                .iter()
                .map(|row| ApiMessage::from(&row.record))
                .collect();
            Json(serde_json::json!({
                "messages": messages,
                "next_cursor": page.next.map(|c| c.encode()),
            }))
            .into_response()
        }
        Err(error) => index_failed(error),
    }
}

/// `GET /api/v1/messages.csv`: the filtered rows as CSV.
pub(crate) async fn messages_csv(
    State(console): State<Arc<Console>>,
    _client: ApiClient,
    Query(params): Query<LogParams>,
) -> Response {
    match params.parse(now_unix(), &console.zone) {
        Ok(filters) => csv_response(console, filters.query),
        Err(error) => api_error(StatusCode::BAD_REQUEST, error.0),
    }
}

/// `GET /api/v1/messages/{queue_id}`: the message and its `events`.
pub(crate) async fn message(
    State(console): State<Arc<Console>>,
    _client: ApiClient,
    Path(queue_id): Path<String>,
) -> Response {
    match console
        .with_index(true, move |index| index.message(&queue_id))
        .await
    {
        Ok(Some((row, events))) => {
            let mut value = serde_json::to_value(ApiMessage::from(&row.record)).unwrap_or_default();
            let events: Vec<ApiMessage> = events.iter().map(ApiMessage::from).collect();
            value["events"] = serde_json::to_value(events).unwrap_or_default();
            Json(value).into_response()
        }
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no message has that queue id"),
        Err(error) => index_failed(error),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StatsParams {
    since: String,
}

/// `GET /api/v1/stats?since=`: messages per outcome, in total and per
/// hour (default: the last 24 hours).
pub(crate) async fn stats(
    State(console): State<Arc<Console>>,
    _client: ApiClient,
    Query(params): Query<StatsParams>,
) -> Response {
    let now = now_unix();
    let since = if params.since.trim().is_empty() {
        now - 86_400
    } else {
        match parse_time(params.since.trim(), now, &console.zone) {
            Some(since) => since,
            None => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "since `{}` is neither a duration (2h, 7d), a date nor a time",
                        params.since
                    ),
                );
            }
        }
    };
    // At most 400 days of hours.
    let since = since.max(now - 400 * 86_400);
    let buckets = console
        .with_index(true, move |index| index.buckets(since, now + 1, 3600, 0))
        .await;
    match buckets {
        Ok(buckets) => {
            let mut totals = serde_json::Map::new();
            for (slot, outcome) in Outcome::ALL.iter().enumerate() {
                let total: u64 = buckets.iter().map(|b| b.counts[slot]).sum();
                totals.insert(outcome.as_str().to_owned(), total.into());
            }
            let hours: Vec<serde_json::Value> = buckets
                .iter()
                .filter(|b| b.counts.iter().any(|c| *c > 0))
                .map(|b| {
                    let counts: serde_json::Map<String, serde_json::Value> = Outcome::ALL
                        .iter()
                        .zip(b.counts)
                        .filter(|(_, c)| *c > 0)
                        .map(|(o, c)| (o.as_str().to_owned(), c.into()))
                        .collect();
                    serde_json::json!({ "hour": rfc3339(b.start), "counts": counts })
                })
                .collect();
            Json(serde_json::json!({
                "since": rfc3339(since),
                "until": rfc3339(now),
                "outcomes": totals,
                "hours": hours,
            }))
            .into_response()
        }
        Err(error) => index_failed(error),
    }
}

/// `POST /api/v1/messages/{queue_id}/retry`: due now (a failed one back in
/// the queue). The next flush sends it.
pub(crate) async fn retry(
    State(console): State<Arc<Console>>,
    client: ApiClient,
    Path(queue_id): Path<String>,
) -> Response {
    if let Some(refused) = client.write_refusal() {
        return refused;
    }
    let result = shared::retry(&console, queue_id.clone()).await;
    action_response(queue_id, "retried", result)
}

/// `DELETE /api/v1/messages/{queue_id}`: removes it from the outbox.
pub(crate) async fn drop_message(
    State(console): State<Arc<Console>>,
    client: ApiClient,
    Path(queue_id): Path<String>,
) -> Response {
    if let Some(refused) = client.write_refusal() {
        return refused;
    }
    let result = shared::drop_entry(&console, queue_id.clone()).await;
    action_response(queue_id, "dropped", result)
}

/// One queue action's answer: `{"queue_id": ..., done: true}`, 404 when
/// the outbox has no such entry.
fn action_response(
    queue_id: String,
    done: &'static str,
    result: Result<bool, ActionError>,
) -> Response {
    match result {
        Ok(true) => Json(serde_json::json!({ "queue_id": queue_id, done: true })).into_response(),
        Ok(false) => api_error(
            StatusCode::NOT_FOUND,
            "no message in the outbox has that queue id",
        ),
        Err(ActionError::InvalidId(error)) => api_error(StatusCode::BAD_REQUEST, error),
        Err(ActionError::Busy) => api_error(
            StatusCode::CONFLICT,
            "another apimail process is sending it; try again in a moment",
        ),
        Err(ActionError::Other(error)) => {
            tracing::warn!("{error}");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the outbox cannot be changed; see the console's log",
            )
        }
    }
}

/// Anything else under `/api/`.
pub(crate) async fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "no such API endpoint; see the README's API table",
    )
}
