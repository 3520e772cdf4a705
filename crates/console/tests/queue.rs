//! The queue page: every state with what it waits for, retry now, drop
//! with a confirmation, bulk actions on the filter's entries, CSRF.

mod support;

use apimail_core::outbox::{EntryId, Outbox};
use axum::http::{StatusCode, header};
use support::{call, fixture, get, get_as, login, post_as, queue};

fn hold(outbox: &Outbox, id: &EntryId) {
    outbox
        .claim(id)
        .unwrap()
        .unwrap()
        .hold("invalid_grant: the token was revoked")
        .unwrap();
}

fn hold_uncertain(outbox: &Outbox, id: &EntryId) {
    outbox
        .claim(id)
        .unwrap()
        .unwrap()
        .hold_uncertain("the answer was lost")
        .unwrap();
}

fn fail(outbox: &Outbox, id: &EntryId) {
    outbox
        .claim(id)
        .unwrap()
        .unwrap()
        .fail("550 no such user")
        .unwrap();
}

/// The `<tr data-id="…">` row of `id` on the page, if shown.
fn row<'a>(html: &'a str, id: &EntryId) -> Option<&'a str> {
    let at = html.find(&format!("<tr data-id=\"{}\"", id.as_str()))?;
    Some(&html[at..at + html[at..].find("</tr>").unwrap()])
}

#[tokio::test]
async fn the_queue_page_shows_each_state_and_what_it_waits_for() {
    let f = fixture();
    let queued = queue(&f.outbox, "work", "a@example.com");
    let held = queue(&f.outbox, "work", "b@example.com");
    hold(&f.outbox, &held);
    let uncertain = queue(&f.outbox, "work", "c@example.com");
    hold_uncertain(&f.outbox, &uncertain);
    let failed = queue(&f.outbox, "tenant", "d@example.com");
    fail(&f.outbox, &failed);

    let anonymous = call(&f.router, get("/queue")).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), "/login");

    let (session, _) = login(&f.router).await;
    let page = call(&f.router, get_as("/queue", &session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let queued_row = row(&page.body, &queued).expect("the queued row");
    assert!(queued_row.contains("o-queued") && queued_row.contains("its next attempt at"));
    let held_row = row(&page.body, &held).expect("the held row");
    assert!(
        held_row.contains("o-held") && held_row.contains("a new sign-in of its account"),
        "{held_row}"
    );
    assert!(held_row.contains("invalid_grant"));
    let uncertain_row = row(&page.body, &uncertain).expect("the uncertain row");
    assert!(
        uncertain_row.contains("o-uncertain") && uncertain_row.contains("it may have been sent")
    );
    let failed_row = row(&page.body, &failed).expect("the failed row");
    assert!(failed_row.contains("o-failed") && failed_row.contains("550 no such user"));

    // Filtered by state and account.
    let held_only = call(&f.router, get_as("/queue?state=held", &session)).await;
    assert!(row(&held_only.body, &held).is_some());
    assert!(row(&held_only.body, &queued).is_none() && row(&held_only.body, &failed).is_none());
    let tenant = call(&f.router, get_as("/queue?account=tenant", &session)).await;
    assert!(row(&tenant.body, &failed).is_some() && row(&tenant.body, &queued).is_none());

    // In Japanese.
    let ja = call(
        &f.router,
        axum::http::Request::get("/queue")
            .header(header::COOKIE, format!("apimail_session={session}"))
            .header(header::ACCEPT_LANGUAGE, "ja")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert!(ja.body.contains("アカウントの再ログイン"), "{}", ja.body);
    assert!(ja.body.contains("今すぐ再送"));
}

#[tokio::test]
async fn drop_asks_first_and_needs_the_csrf_token() {
    let f = fixture();
    let id = queue(&f.outbox, "work", "a@example.com");
    let (session, csrf) = login(&f.router).await;
    let ids = id.as_str();

    let forged = call(
        &f.router,
        post_as(
            "/queue/action",
            &session,
            &[("action", "drop"), ("ids", ids), ("confirm", "yes")],
        ),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(
        f.outbox.get(ids).unwrap().is_some(),
        "no CSRF token, nothing dropped"
    );

    let asked = call(
        &f.router,
        post_as(
            "/queue/action",
            &session,
            &[("csrf", &csrf), ("action", "drop"), ("ids", ids)],
        ),
    )
    .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert!(
        asked.body.contains("Drop these messages for good?"),
        "{}",
        asked.body
    );
    assert_eq!(support::field(&asked.body, "ids"), ids);
    assert_eq!(support::field(&asked.body, "confirm"), "yes");
    assert!(
        f.outbox.get(ids).unwrap().is_some(),
        "asked, not yet dropped"
    );

    let done = call(
        &f.router,
        post_as(
            "/queue/action",
            &session,
            &[
                ("csrf", &csrf),
                ("action", "drop"),
                ("ids", ids),
                ("confirm", "yes"),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location().contains("done=drop&count=1"),
        "{}",
        done.location()
    );
    assert!(f.outbox.get(ids).unwrap().is_none(), "dropped");
    let page = call(&f.router, get_as(&done.location(), &session)).await;
    assert!(page.body.contains("Dropped: 1"), "{}", page.body);
}

#[tokio::test]
async fn retry_now_makes_a_held_or_failed_entry_due() {
    let f = fixture();
    let held = queue(&f.outbox, "work", "a@example.com");
    hold(&f.outbox, &held);
    let failed = queue(&f.outbox, "work", "b@example.com");
    fail(&f.outbox, &failed);
    let (session, csrf) = login(&f.router).await;
    for id in [&held, &failed] {
        let done = call(
            &f.router,
            post_as(
                "/queue/action",
                &session,
                &[("csrf", &csrf), ("action", "retry"), ("ids", id.as_str())],
            ),
        )
        .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let entry = f.outbox.get(id.as_str()).unwrap().unwrap();
        assert!(entry.is_due(apimail_core::now_unix()), "{entry:?}");
    }
}

#[tokio::test]
async fn bulk_actions_apply_to_every_entry_the_filter_matches_after_a_confirmation() {
    let f = fixture();
    let work: Vec<EntryId> = (0..3)
        .map(|n| {
            let id = queue(&f.outbox, "work", &format!("w{n}@example.com"));
            hold(&f.outbox, &id);
            id
        })
        .collect();
    let other = queue(&f.outbox, "tenant", "t@example.com");
    hold(&f.outbox, &other);
    let (session, csrf) = login(&f.router).await;
    let filter = [("state", "held"), ("account", "work")];

    let mut fields = vec![("csrf", csrf.as_str()), ("action", "drop")];
    fields.extend(filter);
    let asked = call(&f.router, post_as("/queue/action", &session, &fields)).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert!(asked.body.contains("class=\"count\">3<"), "{}", asked.body);
    let ids = support::field(&asked.body, "ids");
    let mut confirmed: Vec<&str> = ids.split(' ').collect();
    confirmed.sort_unstable();
    let mut expected: Vec<&str> = work.iter().map(EntryId::as_str).collect();
    expected.sort_unstable();
    assert_eq!(confirmed, expected);
    for id in &work {
        assert!(f.outbox.get(id.as_str()).unwrap().is_some(), "asked only");
    }
    // An entry that starts matching after the question is left alone.
    let late = queue(&f.outbox, "work", "late@example.com");
    hold(&f.outbox, &late);

    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("action", "drop"),
        ("confirm", "yes"),
        ("ids", ids.as_str()),
    ];
    fields.extend(filter);
    let done = call(&f.router, post_as("/queue/action", &session, &fields)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(done.location().contains("count=3"), "{}", done.location());
    for id in &work {
        assert!(f.outbox.get(id.as_str()).unwrap().is_none(), "dropped");
    }
    assert!(
        f.outbox.get(other.as_str()).unwrap().is_some(),
        "another account's"
    );
    assert!(
        f.outbox.get(late.as_str()).unwrap().is_some(),
        "not confirmed"
    );

    // Bulk retry of the rest, all held.
    let fields = [
        ("csrf", csrf.as_str()),
        ("action", "retry"),
        ("state", "held"),
    ];
    let asked = call(&f.router, post_as("/queue/action", &session, &fields)).await;
    assert!(asked.body.contains("class=\"count\">2<"), "{}", asked.body);
    let ids = support::field(&asked.body, "ids");
    let fields = [
        ("csrf", csrf.as_str()),
        ("action", "retry"),
        ("state", "held"),
        ("confirm", "yes"),
        ("ids", ids.as_str()),
    ];
    call(&f.router, post_as("/queue/action", &session, &fields)).await;
    for id in [&other, &late] {
        let entry = f.outbox.get(id.as_str()).unwrap().unwrap();
        assert!(entry.is_due(apimail_core::now_unix()), "{entry:?}");
    }
}
