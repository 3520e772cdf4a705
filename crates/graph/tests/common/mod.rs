//! The shared test HTTP server (`apimail-test-http`) as a scriptable Graph:
//! it records every request and answers as a handler says (or drops the
//! connection), and counts the requests in flight.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use apimail_test_http::{Reply, Request, Response};
use apimail_test_http::{Server, lock};
use serde_json::{Value, json};
use url::Url;

/// What the tests read off a recorded request.
pub trait RequestExt {
    /// `METHOD target`, the target with its query.
    fn line(&self) -> String;
    /// The body parsed as JSON; panics if it is not.
    fn json(&self) -> Value;
    /// How many headers are called `name` (case-insensitive).
    fn header_count(&self, name: &str) -> usize;
}

impl RequestExt for Request {
    fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// A JSON answer (`Content-Type: application/json`); `Value::Null` is an
/// empty body.
pub fn reply(status: u16, body: Value) -> Reply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    Response::new(status)
        .with_header("Content-Type", "application/json")
        .with_body(body)
        .into()
}

pub fn graph_error(status: u16, code: &str, message: &str) -> Reply {
    reply(status, json!({"error": {"code": code, "message": message}}))
}

pub struct Fake {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    _server: Server,
}

impl Fake {
    /// Serves `handler` after `delay` per request. Async only so that it
    /// reads like the rest of a `#[tokio::test]`; the server has threads.
    pub async fn start(
        delay: Duration,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Fake {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let (r, i, m) = (requests.clone(), in_flight.clone(), max_in_flight.clone());
        let server = Server::start("graph", move |request: &Request| {
            assert!(
                request.header("transfer-encoding").is_none(),
                "bodies have a known length"
            );
            let now = i.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(delay);
            lock(&r).push(request.clone());
            let answer = handler(request);
            i.fetch_sub(1, Ordering::SeqCst);
            answer
        })
        .expect("a loopback port is free");
        Fake {
            base: server.base_url(),
            requests,
            in_flight,
            max_in_flight,
            _server: server,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(RequestExt::line).collect()
    }

    pub fn api(&self) -> Url {
        Url::parse(&format!("{}/graph", self.base)).unwrap()
    }
}
