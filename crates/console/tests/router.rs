//! The console's router end to end, request by request (tower's
//! `oneshot`): authentication, CSRF, the login back-off, escaping, the
//! API's pagination and permissions, and the CSV.

mod support;

use std::time::Duration;

use apimail_console::{Console, ConsoleConfig, DEFAULT_LOGIN_LIMITS, LoginLimits};
use apimail_core::Secret;
use apimail_core::journal::{Filter, Outcome, Record};
use apimail_core::journal_csv;
use apimail_core::outbox::NewEntry;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use support::{Fixture, PASSWORD, api, call, field, form, get, get_as, sign_in, try_login};

fn fixture_with(login_limits: LoginLimits, tls: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::open(ConsoleConfig {
        tls,
        login_limits,
        ..support::config(&dir)
    })
    .unwrap();
    support::fixture_from(dir, console)
}

fn fixture() -> Fixture {
    fixture_with(DEFAULT_LOGIN_LIMITS, false)
}

fn record(n: u32, outcome: Outcome) -> Record {
    Record {
        time: 1_780_000_000 + i64::from(n) * 60,
        queue_id: Some(format!("20260528T000000-{n:012x}")),
        message_id: format!("<{n}@example.com>"),
        account: Some("work".to_owned()),
        client: Some("192.0.2.50".to_owned()),
        smtp_user: Some("scanner".to_owned()),
        provider: Some("gmail".to_owned()),
        from: "ops@example.com".to_owned(),
        recipients: vec![
            format!("user{n}@example.net"),
            "boss@example.net".to_owned(),
        ],
        subject: Some(format!("Scan {n}")),
        size: 2000 + u64::from(n),
        attempts: 1,
        possible_duplicate: false,
        original_from: None,
        outcome,
        provider_id: Some(format!("gm{n}")),
        error: (outcome == Outcome::Failed).then(|| "rejected: \"no\", sorry\nreally".to_owned()),
    }
}

#[tokio::test]
async fn health_and_headers_need_no_session_and_pages_redirect_to_login() {
    let f = fixture();
    let health = call(&f.router, get("/healthz")).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok")
    );
    let csp = health.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(health.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(health.headers[header::REFERRER_POLICY], "no-referrer");
    for page in [
        "/",
        "/log",
        "/log.csv",
        "/messages/20260528T000000-000000000001",
    ] {
        let answer = call(&f.router, get(page)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(answer.headers[header::LOCATION], "/login", "{page}");
        let stale = call(&f.router, get_as(page, "made-up-session")).await;
        assert_eq!(stale.status, StatusCode::SEE_OTHER, "{page}");
    }
}

#[tokio::test]
async fn the_api_wants_a_valid_token() {
    let f = fixture();
    for uri in [
        "/api/v1/messages",
        "/api/v1/messages.csv",
        "/api/v1/stats",
        "/api/v1/messages/x",
    ] {
        let answer = call(&f.router, get(uri)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(answer.json()["error"].is_string());
        let wrong = call(
            &f.router,
            api(Method::GET, uri, &Secret::new("apimail_guess")),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let ok = call(
        &f.router,
        api(Method::GET, "/api/v1/messages", &f.read_only),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.json()["messages"], Value::Array(vec![]));
    assert_eq!(ok.json()["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_read_only_token_cannot_write() {
    let f = fixture();
    let id = f
        .outbox
        .accept(
            b"From: ops@example.com\r\nTo: a@example.net\r\nSubject: held\r\n\r\nbody\r\n",
            NewEntry {
                from: "ops@example.com".to_owned(),
                recipients: vec!["a@example.net".to_owned()],
                message_id: "<held@example.com>".to_owned(),
                account: Some("work".to_owned()),
                ..NewEntry::default()
            },
        )
        .unwrap();
    let retry = format!("/api/v1/messages/{id}/retry");
    let one = format!("/api/v1/messages/{id}");
    let refused = call(&f.router, api(Method::POST, &retry, &f.read_only)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let refused = call(&f.router, api(Method::DELETE, &one, &f.read_only)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(f.outbox.get(id.as_str()).unwrap().is_some(), "still queued");

    let retried = call(&f.router, api(Method::POST, &retry, &f.read_write)).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    let dropped = call(&f.router, api(Method::DELETE, &one, &f.read_write)).await;
    assert_eq!(dropped.status, StatusCode::OK, "{}", dropped.body);
    assert!(f.outbox.get(id.as_str()).unwrap().is_none(), "dropped");
    let again = call(&f.router, api(Method::DELETE, &one, &f.read_write)).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_api_pages_by_cursor_and_filters() {
    let f = fixture();
    for n in 0..120u32 {
        let outcome = if n.is_multiple_of(10) {
            Outcome::Failed
        } else {
            Outcome::Sent
        };
        f.journal.append(&record(n, outcome)).unwrap();
    }
    let mut seen = Vec::new();
    let mut uri = "/api/v1/messages?limit=50".to_owned();
    let mut pages = 0;
    loop {
        let answer = call(&f.router, api(Method::GET, &uri, &f.read_only)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let json = answer.json();
        let messages = json["messages"].as_array().unwrap();
        pages += 1;
        seen.extend(
            messages
                .iter()
                .map(|m| m["message_id"].as_str().unwrap().to_owned()),
        );
        match json["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/messages?limit=50&cursor={cursor}"),
            None => break,
        }
        // A message settled meanwhile does not shift later pages.
        if pages == 1 {
            f.journal.append(&record(500, Outcome::Sent)).unwrap();
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..120)
        .rev()
        .map(|n| format!("<{n}@example.com>"))
        .collect();
    assert_eq!(seen, expected, "newest first, each once");

    let failed = call(
        &f.router,
        api(
            Method::GET,
            "/api/v1/messages?outcome=failed&limit=500",
            &f.read_only,
        ),
    )
    .await;
    let failed = failed.json();
    assert_eq!(failed["messages"].as_array().unwrap().len(), 12);
    let first = &failed["messages"][0];
    assert_eq!(first["outcome"], "failed");
    assert_eq!(first["subject"], "Scan 110");
    assert_eq!(first["client"], "192.0.2.50");
    assert_eq!(first["time"], "2026-05-28T22:16:40Z");

    let search = call(
        &f.router,
        api(
            Method::GET,
            "/api/v1/messages?q=scan%2011&recipient=USER117@example.net",
            &f.read_only,
        ),
    )
    .await;
    let search = search.json();
    assert_eq!(search["messages"].as_array().unwrap().len(), 1, "{search}");

    let bad = call(
        &f.router,
        api(
            Method::GET,
            "/api/v1/messages?cursor=nonsense",
            &f.read_only,
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().contains("cursor"));

    let one = call(
        &f.router,
        api(
            Method::GET,
            "/api/v1/messages/20260528T000000-000000000005",
            &f.read_only,
        ),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["events"].as_array().unwrap().len(), 1);
    let stats = call(
        &f.router,
        api(
            Method::GET,
            "/api/v1/stats?since=2026-05-28T00:00:00Z",
            &f.read_only,
        ),
    )
    .await;
    let stats = stats.json();
    assert_eq!(stats["outcomes"]["failed"], 12, "{stats}");
    assert_eq!(stats["outcomes"]["sent"], 109, "{stats}");
}

#[tokio::test]
async fn forms_without_their_csrf_token_get_403() {
    let f = fixture();
    // The login form: no token, a token not matching the cookie.
    let body = format!("user=ann&password={PASSWORD}");
    let answer = call(&f.router, form("/login", "", &body)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = call(
        &f.router,
        form("/login", "apimail_login=abc", &format!("{body}&csrf=abd")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.cookie("apimail_session").is_none());

    let session = sign_in(&f.router).await;
    let overview = call(&f.router, get_as("/", &session)).await;
    assert_eq!(overview.status, StatusCode::OK);
    let csrf = field(&overview.body, "csrf");
    let cookie = format!("apimail_session={session}");
    let refused = call(&f.router, form("/logout", &cookie, "")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = call(&f.router, form("/logout", &cookie, "csrf=wrong")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&f.router, get_as("/", &session)).await.status,
        StatusCode::OK,
        "still signed in"
    );
    let out = call(&f.router, form("/logout", &cookie, &format!("csrf={csrf}"))).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        call(&f.router, get_as("/", &session)).await.status,
        StatusCode::SEE_OTHER,
        "signed out"
    );
}

#[tokio::test]
async fn sessions_are_strict_http_only_cookies_with_an_expiry() {
    let f = fixture();
    let answer = try_login(&f.router, PASSWORD).await;
    let line = answer.set_cookie_line("apimail_session");
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(line.contains(part), "{line}");
    }
    assert!(!line.contains("Secure"), "not over plain HTTP: {line}");
    let over_tls = fixture_with(DEFAULT_LOGIN_LIMITS, true);
    let answer = try_login(&over_tls.router, PASSWORD).await;
    let line = answer.set_cookie_line("apimail_session");
    assert!(line.ends_with("; Secure"), "{line}");
    let wrong = try_login(&f.router, "wrong horse").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.cookie("apimail_session").is_none());
}

#[tokio::test]
async fn failed_logins_lock_the_address_out() {
    let f = fixture_with(
        LoginLimits {
            free_failures: 1,
            delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            lock_after: 3,
            lock_for: Duration::from_secs(600),
        },
        false,
    );
    for attempt in 1..=3 {
        let answer = try_login(&f.router, "wrong horse").await;
        let expected = if attempt < 3 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(answer.status, expected, "attempt {attempt}");
    }
    // Locked: even the right password is refused, without a session.
    let answer = try_login(&f.router, PASSWORD).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(answer.cookie("apimail_session").is_none());
    assert!(
        answer.body.contains("Too many failed sign-ins"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn everything_from_a_message_is_escaped() {
    let f = fixture();
    let mut evil = record(1, Outcome::Failed);
    evil.subject = Some("<script>alert(1)</script>".to_owned());
    evil.from = "\"><img src=x onerror=alert(2)>@example.com".to_owned();
    evil.error = Some("<b>bold</b>".to_owned());
    f.journal.append(&evil).unwrap();
    let session = sign_in(&f.router).await;
    for page in ["/log", "/messages/20260528T000000-000000000001"] {
        let answer = call(&f.router, get_as(page, &session)).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}");
        assert!(!answer.body.contains("<script>alert(1)"), "{page}");
        assert!(
            answer
                .body
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{page}: {}",
            answer.body
        );
        assert!(!answer.body.contains("<img"), "{page}");
        assert!(!answer.body.contains("<b>bold"), "{page}");
    }
}

#[tokio::test]
async fn pages_show_the_log_in_the_chosen_language() {
    let f = fixture();
    f.journal.append(&record(1, Outcome::Queued)).unwrap();
    let mut sent = record(1, Outcome::Sent);
    sent.time += 120;
    sent.attempts = 2;
    f.journal.append(&sent).unwrap();
    let session = sign_in(&f.router).await;

    let overview = call(&f.router, get_as("/", &session)).await;
    assert!(overview.body.contains("ops@example.com"), "the account");
    assert!(overview.body.contains("not signed in"), "no tokens stored");
    assert!(overview.body.contains("<svg"), "the charts");
    let log = call(&f.router, get_as("/log?outcome=sent", &session)).await;
    assert!(log.body.contains("Scan 1") && log.body.contains("192.0.2.50 (scanner)"));
    let message = call(
        &f.router,
        get_as("/messages/20260528T000000-000000000001", &session),
    )
    .await;
    assert_eq!(
        message.body.matches("class=\"outcome o-").count(),
        3,
        "the row and two events"
    );

    let japanese = Request::get("/log")
        .header(header::COOKIE, format!("apimail_session={session}"))
        .header(header::ACCEPT_LANGUAGE, "ja,en;q=0.5")
        .body(Body::empty())
        .unwrap();
    let answer = call(&f.router, japanese).await;
    assert!(answer.body.contains("送信ログ") && answer.body.contains("送信済み"));
    let switch = call(&f.router, get_as("/lang/en", &session)).await;
    assert_eq!(switch.cookie("apimail_lang").as_deref(), Some("en"));
    let english = Request::get("/log")
        .header(
            header::COOKIE,
            format!("apimail_session={session}; apimail_lang=en"),
        )
        .header(header::ACCEPT_LANGUAGE, "ja")
        .body(Body::empty())
        .unwrap();
    assert!(call(&f.router, english).await.body.contains("Delivery log"));
    let bad = call(&f.router, get_as("/log?since=someday", &session)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_csv_is_the_journal_csv_of_the_filtered_rows() {
    let f = fixture();
    for n in 0..1200 {
        let outcome = match n % 7 {
            0 => Outcome::Failed,
            1 => Outcome::Queued,
            _ => Outcome::Sent,
        };
        f.journal.append(&record(n, outcome)).unwrap();
        if n % 7 == 1 {
            let mut later = record(n, Outcome::Sent);
            later.time += 30;
            later.attempts = 2;
            f.journal.append(&later).unwrap();
        }
    }
    // What `apimail log --csv` writes (the same writer over Journal::read),
    // each message's latest record, newest first.
    let expected = |keep: &dyn Fn(&Record) -> bool| {
        let mut latest: Vec<Record> = Vec::new();
        for record in f.journal.read(&Filter::default()).unwrap() {
            let record = record.unwrap();
            latest.retain(|r| r.queue_id != record.queue_id);
            latest.push(record);
        }
        let mut text = journal_csv::header_row();
        for record in latest.iter().rev().filter(|r| keep(r)) {
            text.extend(journal_csv::record_row(record));
        }
        String::from_utf8(text).unwrap()
    };
    let all = call(
        &f.router,
        api(Method::GET, "/api/v1/messages.csv", &f.read_only),
    )
    .await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(all.body, expected(&|_| true));
    assert!(
        all.body
            .contains(",\"rejected: \"\"no\"\", sorry\nreally\","),
        "quoted as RFC 4180"
    );

    let session = sign_in(&f.router).await;
    let failed = call(
        &f.router,
        get_as("/log.csv?outcome=failed&cursor=ignored", &session),
    )
    .await;
    assert_eq!(
        failed.status,
        StatusCode::BAD_REQUEST,
        "a bad cursor is still refused"
    );
    let failed = call(&f.router, get_as("/log.csv?outcome=failed", &session)).await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(failed.body, expected(&|r| r.outcome == Outcome::Failed));
}
