//! The console's routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::guard::security_headers;
use crate::state::Console;
use crate::{api, checks_page, live, pages, queue, relay_users, signin_page};

/// Every page and API endpoint, with the security headers on every answer.
pub fn router(console: Arc<Console>) -> Router {
    let api = Router::new()
        .route("/api/v1/messages", get(api::messages))
        .route("/api/v1/messages.csv", get(api::messages_csv))
        .route(
            "/api/v1/messages/{queue_id}",
            get(api::message).delete(api::drop_message),
        )
        .route("/api/v1/messages/{queue_id}/retry", post(api::retry))
        .route("/api/v1/stats", get(api::stats))
        .route("/api/v1/events", get(live::api_events))
        .route("/api/{*rest}", get(api::not_found).post(api::not_found));
    Router::new()
        .route("/healthz", get(pages::healthz))
        .route("/static/console.css", get(pages::stylesheet))
        .route("/static/console.js", get(pages::script))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/lang/{code}", get(pages::set_lang))
        .route("/", get(pages::overview))
        .route("/log", get(pages::log_page))
        .route("/log.csv", get(pages::log_csv))
        .route("/messages/{queue_id}", get(pages::message_page))
        .route("/queue", get(queue::queue_page))
        .route(
            "/queue/action",
            // A confirmed bulk action carries every id it applies to.
            post(queue::queue_action).layer(DefaultBodyLimit::max(queue::MAX_ACTION_BYTES)),
        )
        .route("/events", get(live::page_events))
        .route("/checks", get(checks_page::page))
        .route(
            "/accounts/{account}/sign-in",
            get(signin_page::page).post(signin_page::start),
        )
        .route(
            "/accounts/{account}/sign-in/paste",
            post(signin_page::paste),
        )
        .route(
            "/relay-users",
            get(relay_users::page).post(relay_users::action),
        )
        .merge(api)
        .fallback(pages::not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}
