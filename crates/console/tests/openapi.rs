//! `docs/console/openapi.json` against the server: every API route of
//! `router.rs` is documented and every documented operation exists; each
//! documented status is provoked and answered with the documented shape
//! (the JSON bodies checked against the file's schemas, objects closed:
//! no field the file does not name).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use apimail_console::Console;
use apimail_core::Secret;
use apimail_core::journal::{Outcome, Record};
use apimail_core::outbox::NewEntry;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec() -> Value {
    let path = root().join("docs/console/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (method, path) of every documented operation.
fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// (method, path) of every route `router.rs` declares under `/api/v1/` and
/// `/healthz`, read from its source: `.route("PATH", get(..).delete(..))`.
fn routed() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(root().join("crates/console/src/router.rs")).unwrap();
    let mut ops = BTreeSet::new();
    for part in source.split(".route(").skip(1) {
        let Some(path) = part.trim_start().strip_prefix('"') else {
            continue;
        };
        let (path, rest) = path.split_once('"').unwrap();
        if !(path.starts_with("/api/v1/") || path == "/healthz") {
            continue;
        }
        // The route's handlers run to the `)` that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let handlers = &rest[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && handlers.as_bytes()[i - 1] != b'_'
            });
            if called {
                ops.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    ops
}

#[test]
fn every_api_route_is_documented_and_every_documented_one_is_routed() {
    let routed = routed();
    assert!(
        routed.contains(&("GET".to_owned(), "/api/v1/messages".to_owned())),
        "the router's routes were read: {routed:?}"
    );
    let documented = documented(&spec());
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/console/openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented in docs/console/openapi.json but not routed: {unrouted:?}"
    );
}

/// Resolves `$ref`s into `spec`.
/// Every outcome enum of the file names exactly the journal's outcomes.
#[test]
fn every_documented_outcome_enum_names_every_outcome() {
    fn enums<'a>(value: &'a Value, found: &mut Vec<&'a Vec<Value>>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(names)) = map.get("enum")
                    && names.iter().any(|n| n == "sent")
                {
                    found.push(names);
                }
                map.values().for_each(|v| enums(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| enums(v, found)),
            _ => {}
        }
    }
    let spec = spec();
    let mut found = Vec::new();
    enums(&spec, &mut found);
    let outcomes: Vec<Value> = Outcome::ALL
        .iter()
        .map(|o| Value::from(o.as_str()))
        .collect();
    assert_eq!(
        found.len(),
        3,
        "the outcome enums of docs/console/openapi.json"
    );
    for names in found {
        assert_eq!(
            names, &outcomes,
            "an outcome enum of docs/console/openapi.json"
        );
    }
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(pointer) => resolve(spec, spec.pointer(pointer.trim_start_matches('#')).unwrap()),
        None => schema,
    }
}

/// The names of the properties `schema` (after allOf) declares.
fn declared(spec: &Value, schema: &Value, names: &mut BTreeSet<String>) {
    let schema = resolve(spec, schema);
    if let Some(properties) = schema["properties"].as_object() {
        names.extend(properties.keys().cloned());
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        declared(spec, part, names);
    }
}

/// Where `value` does not follow `schema`, as text in `faults`.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, faults: &mut Vec<String>) {
    check_part(spec, schema, value, at, faults, true);
}

/// `closed`: a field no part of `schema` declares is a fault (off for the
/// parts of an `allOf`, which the whole is checked against).
fn check_part(
    spec: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    faults: &mut Vec<String>,
    closed: bool,
) {
    let schema = resolve(spec, schema);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        check_part(spec, part, value, at, faults, false);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            faults.push(format!("{at}: {actual}, documented {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        faults.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        faults.push(format!("{at}: {value}, documented {constant}"));
    }
    if let Value::Object(object) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                faults.push(format!("{at}: `{name}` is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => {
                    check(spec, field_schema, field, &format!("{at}.{name}"), faults)
                }
                None => {
                    if let Some(extra) = schema.get("additionalProperties") {
                        check(spec, extra, field, &format!("{at}.{name}"), faults);
                    }
                }
            }
        }
        // Closed objects: a field no part of the schema declares.
        let mut names = BTreeSet::new();
        declared(spec, schema, &mut names);
        if closed && schema.get("additionalProperties").is_none() && !names.is_empty() {
            for name in object.keys().filter(|n| !names.contains(*n)) {
                faults.push(format!("{at}: `{name}` is not documented"));
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (n, element) in items.iter().enumerate() {
            check(spec, item, element, &format!("{at}[{n}]"), faults);
        }
    }
}

struct Fixture {
    base: support::Fixture,
    /// In the outbox and in the journal.
    queued: String,
    /// Another one, to drop.
    droppable: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config(&dir);
    let (journal, outbox) = (&config.journal, &config.outbox);
    let mut ids = Vec::new();
    for n in 0..2 {
        let meta = NewEntry {
            account: Some("work".to_owned()),
            from: "scanner@example.com".to_owned(),
            recipients: vec!["boss@example.org".to_owned()],
            message_id: format!("<{n}@example.com>"),
            original_from: Some("scanner@printer.local".to_owned()),
            ..NewEntry::default()
        };
        let message = format!(
            "From: ops@example.com\r\nTo: boss@example.org\r\nSubject: Scan {n}\r\nMessage-ID: <{n}@example.com>\r\n\r\nhi\r\n"
        );
        let id = outbox.accept(message.as_bytes(), meta).unwrap();
        let entry = outbox.get(id.as_str()).unwrap().unwrap();
        let queued = Record {
            subject: Some(format!("Scan {n}")),
            client: Some("192.0.2.7".to_owned()),
            smtp_user: Some("scanner".to_owned()),
            ..Record::without_attempt(&entry, Outcome::Queued)
        };
        journal.append(&queued).unwrap();
        journal
            .append(&Record::attempted(&entry, Outcome::Uncertain).error("no answer"))
            .unwrap();
        ids.push(id.to_string());
    }
    let console = Console::open(config).unwrap();
    Fixture {
        base: support::fixture_from(dir, console),
        droppable: ids.pop().unwrap(),
        queued: ids.pop().unwrap(),
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

async fn call(router: &Router, method: &str, uri: &str, token: Option<&Secret>) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let request = match token {
        Some(token) => support::api(method, uri, token),
        None => Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap(),
    };
    let answer = support::call(router, request).await;
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Answer {
        status: answer.status,
        content_type,
        body: answer.body,
    }
}

/// A documented answer: (method, path template, status).
type Answered = (&'static str, &'static str, u16);

/// The requests that provoke each documented status: the answer, the URI
/// and the token.
fn provocations(f: &Fixture) -> Vec<(Answered, String, Option<Secret>)> {
    let (rw, ro) = (
        Some(f.base.read_write.clone()),
        Some(f.base.read_only.clone()),
    );
    let one = |id: &str| format!("/api/v1/messages/{id}");
    let missing = "20200101T000000-000000000000";
    vec![
        (("get", "/healthz", 200), "/healthz".to_owned(), None),
        (
            ("get", "/api/v1/messages", 200),
            "/api/v1/messages?limit=1".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/messages", 400),
            "/api/v1/messages?limit=0".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/messages", 401),
            "/api/v1/messages".to_owned(),
            None,
        ),
        (
            ("get", "/api/v1/messages.csv", 200),
            "/api/v1/messages.csv?q=Scan".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/messages.csv", 400),
            "/api/v1/messages.csv?since=someday".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/messages.csv", 401),
            "/api/v1/messages.csv".to_owned(),
            None,
        ),
        (
            ("get", "/api/v1/messages/{queue_id}", 200),
            one(&f.queued),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/messages/{queue_id}", 401),
            one(&f.queued),
            None,
        ),
        (
            ("get", "/api/v1/messages/{queue_id}", 404),
            one(missing),
            ro.clone(),
        ),
        (
            ("post", "/api/v1/messages/{queue_id}/retry", 200),
            format!("{}/retry", one(&f.queued)),
            rw.clone(),
        ),
        (
            ("post", "/api/v1/messages/{queue_id}/retry", 400),
            format!("{}/retry", one("nope")),
            rw.clone(),
        ),
        (
            ("post", "/api/v1/messages/{queue_id}/retry", 401),
            format!("{}/retry", one(&f.queued)),
            None,
        ),
        (
            ("post", "/api/v1/messages/{queue_id}/retry", 403),
            format!("{}/retry", one(&f.queued)),
            ro.clone(),
        ),
        (
            ("post", "/api/v1/messages/{queue_id}/retry", 404),
            format!("{}/retry", one(missing)),
            rw.clone(),
        ),
        (
            ("delete", "/api/v1/messages/{queue_id}", 200),
            one(&f.droppable),
            rw.clone(),
        ),
        (
            ("delete", "/api/v1/messages/{queue_id}", 400),
            one("nope"),
            rw.clone(),
        ),
        (
            ("delete", "/api/v1/messages/{queue_id}", 401),
            one(&f.queued),
            None,
        ),
        (
            ("delete", "/api/v1/messages/{queue_id}", 403),
            one(&f.queued),
            ro.clone(),
        ),
        (
            ("delete", "/api/v1/messages/{queue_id}", 404),
            one(missing),
            rw.clone(),
        ),
        (
            ("get", "/api/v1/stats", 200),
            "/api/v1/stats?since=7d".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/stats", 400),
            "/api/v1/stats?since=someday".to_owned(),
            ro.clone(),
        ),
        (
            ("get", "/api/v1/stats", 401),
            "/api/v1/stats".to_owned(),
            None,
        ),
        (
            ("get", "/api/v1/events", 401),
            "/api/v1/events".to_owned(),
            None,
        ),
    ]
}

/// Statuses the file documents that a test cannot provoke on demand.
const NOT_PROVOKED: [Answered; 3] = [
    // Another process holding the entry's claim at that very moment.
    ("post", "/api/v1/messages/{queue_id}/retry", 409),
    ("delete", "/api/v1/messages/{queue_id}", 409),
    // A stream that never ends; `tests/events.rs` reads its events.
    ("get", "/api/v1/events", 200),
];

#[tokio::test]
async fn every_documented_answer_has_its_documented_status_and_shape() {
    let spec = spec();
    let f = fixture();
    let mut covered = BTreeSet::new();
    let mut faults = Vec::new();
    for ((method, path, status), uri, token) in provocations(&f) {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        let documented = &operation["responses"][status.to_string()];
        assert!(documented.is_object(), "{method} {path} documents {status}");
        let answer = call(&f.base.router, &method.to_uppercase(), &uri, token.as_ref()).await;
        let at = format!("{} {uri}", method.to_uppercase());
        if answer.status.as_u16() != status {
            faults.push(format!(
                "{at}: {} ({}), documented {status}",
                answer.status, answer.body
            ));
            continue;
        }
        let content = documented["content"].as_object().unwrap();
        let (media, body) = content
            .iter()
            .find(|(media, _)| answer.content_type.starts_with(media.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{at}: Content-Type {} is not documented",
                    answer.content_type
                )
            });
        let value = if media == "application/json" {
            serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{at}: {e}"))
        } else {
            Value::String(answer.body.clone())
        };
        check(&spec, &body["schema"], &value, &at, &mut faults);
        covered.insert((method, path, status));
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));

    // Every documented status was provoked, or is named as not provokable.
    let mut missing = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                let status: u16 = status.parse().unwrap();
                let key = (method.as_str(), path.as_str(), status);
                if !covered.contains(&key) && !NOT_PROVOKED.contains(&key) {
                    missing.insert(format!("{method} {path}"), status);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented answers this test does not provoke: {missing:?}"
    );
}

#[tokio::test]
async fn the_checker_finds_an_undocumented_field_and_a_wrong_type() {
    let spec = spec();
    let mut faults = Vec::new();
    let page = serde_json::json!({ "messages": [{ "time": 1 }], "next_cursor": null, "total": 3 });
    check(
        &spec,
        &serde_json::json!({ "$ref": "#/components/schemas/MessagePage" }),
        &page,
        "page",
        &mut faults,
    );
    let text = faults.join("\n");
    assert!(text.contains("page: `total` is not documented"), "{text}");
    assert!(text.contains("page.messages[0].time: integer"), "{text}");
    assert!(text.contains("`message_id` is missing"), "{text}");
}
