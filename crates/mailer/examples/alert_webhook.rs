//! A small HTTP service that turns a JSON alert webhook into a mail: the
//! "cloud function" case. One `Mailer` serves every request.
//!
//! ```sh
//! ALERT_FROM=alerts@example.com ALERT_TO=oncall@example.com \
//!     cargo run -p apimail-mailer --example alert_webhook
//! curl -d '{"title":"disk full","severity":"critical","text":"/var at 99%"}' \
//!     -H 'content-type: application/json' http://127.0.0.1:3000/alert
//! ```
//!
//! `LISTEN` sets the address (default `127.0.0.1:3000`; port 0 picks one).

#![allow(clippy::print_stdout, reason = "an example program")]

use std::time::Duration;

use apimail_mailer::{Mailbox, Mailer, MessageBuilder};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Clone)]
struct App {
    mailer: Mailer,
    from: Mailbox,
    to: Mailbox,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App {
        mailer: Mailer::from_env()
            .await?
            .with_deadline(Duration::from_secs(20)),
        from: std::env::var("ALERT_FROM")?.parse()?,
        to: std::env::var("ALERT_TO")?.parse()?,
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let router = Router::new().route("/alert", post(alert)).with_state(app);
    axum::serve(listener, router).await?;
    Ok(())
}

/// `{"title": …, "severity": …, "text": …}` → one mail; 202 with the
/// provider's id, 400 for a bad alert, 503 (retry) or 502 when sending fails.
async fn alert(State(app): State<App>, Json(alert): Json<Value>) -> (StatusCode, Json<Value>) {
    let field = |name: &str| alert.get(name).and_then(Value::as_str).unwrap_or("");
    let title = field("title");
    if title.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "the alert needs a title"})),
        );
    }
    let severity = match field("severity") {
        "" => "unknown",
        s => s,
    };
    let message = MessageBuilder::new()
        .from(app.from.clone())
        .to(app.to.clone())
        .subject(format!("[{severity}] {title}"))
        .text(format!("{}\n\nseverity: {severity}\n", field("text")))
        .build();
    let message = match message {
        Ok(message) => message,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            );
        }
    };
    match app.mailer.send(&message).await {
        Ok(receipt) => (StatusCode::ACCEPTED, Json(json!({"id": receipt.id}))),
        Err(e) if e.is_temporary() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        ),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": e.to_string()})),
        ),
    }
}
