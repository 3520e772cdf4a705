//! The relay users page: list (account, last use, limits), add, reset a
//! password and remove (asked first), through `apimail_relay`'s `Users`,
//! the file `apimail relay user` reads and writes.

mod support;

use apimail_core::Secret;
use apimail_core::journal::{Outcome, Record};
use apimail_relay::users::{RelayUser, Users};
use axum::http::StatusCode;
use support::{call, get_as, login, open, post_as};

fn record(user: &str, time: i64) -> Record {
    Record {
        time,
        queue_id: Some("20260528T000000-000000000001".to_owned()),
        message_id: "<1@example.com>".to_owned(),
        account: Some("work".to_owned()),
        client: Some("192.0.2.50".to_owned()),
        smtp_user: Some(user.to_owned()),
        provider: Some("gmail".to_owned()),
        from: "ops@example.com".to_owned(),
        recipients: vec!["a@example.net".to_owned()],
        subject: None,
        size: 10,
        attempts: 1,
        possible_duplicate: false,
        original_from: None,
        outcome: Outcome::Sent,
        provider_id: None,
        error: None,
    }
}

#[tokio::test]
async fn relay_users_are_listed_added_reset_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay/users.json");
    let mut users = Users::load(&path).unwrap();
    users
        .add(
            RelayUser {
                name: "scanner".to_owned(),
                password_hash: String::new(),
                account: "work".to_owned(),
                allowed_from: vec!["*@example.com".to_owned()],
                rewrite_from: false,
                messages_per_minute: Some(30),
            },
            &Secret::new("old password"),
        )
        .unwrap();
    users.save().unwrap();
    let reloads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&reloads);
    let console = open(&dir).with_relay_users(
        path.clone(),
        Some(apimail_console::Hook::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })),
    );
    let f = support::fixture_from(dir, console);
    f.journal.append(&record("scanner", 1_780_000_000)).unwrap();
    f.journal.append(&record("scanner", 1_780_000_600)).unwrap();
    let (session, csrf) = login(&f.router).await;

    let page = call(&f.router, get_as("/relay-users", &session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let row = &page.body[page.body.find("data-user=\"scanner\"").expect("the row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("<td>work</td>"), "{row}");
    assert!(row.contains("2026-05-28 20:36:40"), "the latest use: {row}");
    assert!(row.contains("30 messages a minute") && row.contains("*@example.com"));
    assert!(row.contains("other senders refused"));
    assert!(!page.body.contains("$argon2"), "never a hash");

    // Add.
    let added = call(
        &f.router,
        post_as(
            "/relay-users",
            &session,
            &[
                ("csrf", &csrf),
                ("action", "add"),
                ("name", "printer"),
                ("account", "tenant"),
                ("password", "printer password"),
                ("again", "printer password"),
                ("messages_per_minute", "10"),
            ],
        ),
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let users = Users::load(&path).unwrap();
    let printer = users.verify("printer", "printer password").expect("added");
    assert_eq!(printer.account, "tenant");
    assert_eq!(printer.messages_per_minute, Some(10));
    assert!(printer.rewrite_from);

    // A mistyped password, a made-up account, no CSRF token: refused.
    for (fields, status) in [
        (
            vec![
                ("csrf", csrf.as_str()),
                ("action", "add"),
                ("name", "x"),
                ("account", "work"),
                ("password", "a"),
                ("again", "b"),
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("csrf", csrf.as_str()),
                ("action", "add"),
                ("name", "x"),
                ("account", "nope"),
                ("password", "a"),
                ("again", "a"),
            ],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("action", "add"),
                ("name", "x"),
                ("account", "work"),
                ("password", "a"),
                ("again", "a"),
            ],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let answer = call(&f.router, post_as("/relay-users", &session, &fields)).await;
        assert_eq!(answer.status, status, "{fields:?}");
    }
    assert!(Users::load(&path).unwrap().get("x").is_none());

    // Reset a password: the limits stay.
    let reset = call(
        &f.router,
        post_as(
            "/relay-users",
            &session,
            &[
                ("csrf", &csrf),
                ("action", "reset"),
                ("name", "scanner"),
                ("password", "new password"),
                ("again", "new password"),
            ],
        ),
    )
    .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    let users = Users::load(&path).unwrap();
    assert!(users.verify("scanner", "old password").is_none());
    let scanner = users
        .verify("scanner", "new password")
        .expect("the new password");
    assert_eq!(scanner.messages_per_minute, Some(30));
    assert!(!scanner.rewrite_from);

    // Remove: asked first.
    let asked = call(
        &f.router,
        post_as(
            "/relay-users",
            &session,
            &[("csrf", &csrf), ("action", "remove"), ("name", "scanner")],
        ),
    )
    .await;
    assert_eq!(asked.status, StatusCode::OK);
    assert!(asked.body.contains("Remove this relay user?"));
    assert!(Users::load(&path).unwrap().get("scanner").is_some());
    let removed = call(
        &f.router,
        post_as(
            "/relay-users",
            &session,
            &[
                ("csrf", &csrf),
                ("action", "remove"),
                ("name", "scanner"),
                ("confirm", "yes"),
            ],
        ),
    )
    .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert!(Users::load(&path).unwrap().get("scanner").is_none());
    assert_eq!(
        reloads.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "each change reloads"
    );

    let ja = call(&f.router, support::get_in("/relay-users", &session, "ja")).await;
    assert!(ja.body.contains("リレーユーザーを追加"), "{}", ja.body);
}
