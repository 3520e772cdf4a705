//! Live updates: `/events` (a session) and `/api/v1/events` (a token)
//! stream a `log` event when the journal grows and a `queue` event when
//! the outbox changes, whoever wrote them.

mod support;

use std::time::Duration;

use apimail_core::journal::{Outcome, Record};
use apimail_core::outbox::Entry;
use axum::body::{Body, BodyDataStream};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::StreamExt as _;
use support::{api, call, fixture, login, queue};
use tower::ServiceExt;

/// Reads the stream until an event named `name` arrives (a generous
/// limit: the machine may be loaded); its data line.
async fn wait_for(stream: &mut BodyDataStream, seen: &mut String, name: &str) -> String {
    let marker = format!("event: {name}\n");
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(at) = seen.find(&marker) {
                let rest = &seen[at + marker.len()..];
                let data = rest.lines().next().unwrap_or_default().to_owned();
                let end = at + marker.len();
                seen.drain(..end);
                return data;
            }
            let chunk = stream.next().await.expect("the stream ended").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no `{name}` event within 60 s; got {seen:?}"))
}

async fn open(router: &axum::Router, request: Request<Body>) -> (StatusCode, BodyDataStream) {
    let mut request = request;
    request.extensions_mut().insert(ConnectInfo(
        "192.0.2.10:50000".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    if status == StatusCode::OK {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
    }
    (status, response.into_body().into_data_stream())
}

fn record(queue_id: &str) -> Record {
    let entry: Entry = serde_json::from_value(serde_json::json!({
        "id": queue_id, "state": "queued", "from": "ops@example.com",
        "recipients": ["a@example.net"], "message_id": "<live@example.com>",
        "size": 10, "created_at": 1_780_000_000, "attempts": 1,
        "next_attempt_at": 0, "max_age_secs": 86400
    }))
    .unwrap();
    Record::attempted(&entry, Outcome::Sent)
}

#[tokio::test]
async fn the_pages_stream_new_log_rows_and_queue_changes() {
    let f = fixture();
    let (session, _) = login(&f.router).await;
    let anonymous = call(&f.router, support::get("/events")).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);

    let (status, mut stream) = open(
        &f.router,
        Request::get("/events")
            .header(header::COOKIE, format!("apimail_session={session}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut seen = String::new();
    wait_for(&mut stream, &mut seen, "hello").await;

    // Another process appends to the journal.
    f.journal
        .append(&record("20260528T000000-000000000001"))
        .unwrap();
    let data = wait_for(&mut stream, &mut seen, "log").await;
    assert_eq!(data, "data: {\"added\":1}");

    // Another process queues a message.
    queue(&f.outbox, "work", "a@example.com");
    wait_for(&mut stream, &mut seen, "queue").await;
}

#[tokio::test]
async fn the_api_streams_the_same_for_a_token_and_401s_without() {
    let f = fixture();
    let refused = call(
        &f.router,
        Request::get("/api/v1/events").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let (status, mut stream) =
        open(&f.router, api(Method::GET, "/api/v1/events", &f.read_only)).await;
    assert_eq!(status, StatusCode::OK);
    let mut seen = String::new();
    wait_for(&mut stream, &mut seen, "hello").await;
    f.journal
        .append(&record("20260528T000000-000000000002"))
        .unwrap();
    wait_for(&mut stream, &mut seen, "log").await;
}

#[tokio::test]
async fn the_live_pages_load_their_script_from_the_console_only() {
    let f = fixture();
    let (session, _) = login(&f.router).await;
    for page in ["/log", "/queue"] {
        let answer = call(&f.router, support::get_as(page, &session)).await;
        assert!(
            answer
                .body
                .contains("<script src=\"/static/console.js\" defer></script>")
        );
        assert_eq!(
            answer.body.matches("<script").count(),
            1,
            "no inline script"
        );
        assert!(answer.body.contains("data-live="), "{page}");
    }
    let script = call(&f.router, support::get("/static/console.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("new EventSource(\"/events\")"));
}
