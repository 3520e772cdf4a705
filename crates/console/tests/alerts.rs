//! Alerts: a revoked account (with mail held for it) and an expiring
//! authorization each send exactly one mail and one webhook POST to a
//! local test server when they start, and one more when they clear; a
//! report that cannot be sent is shown on the overview and sent later.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use apimail_console::alerts::{AlertConfig, AlertMail, Sending};
use apimail_core::now_unix;
use apimail_core::token_store::{StoredToken, TokenStore};
use axum::http::StatusCode;
use axum::routing::post;
use support::{call, get_as, login, open, queue};

/// The alert mail, as the test's mail server receives it.
#[derive(Default)]
struct Mailbox(Mutex<Vec<String>>);

impl AlertMail for Mailbox {
    fn send<'a>(&'a self, subject: &'a str, _body: &'a str) -> Sending<'a> {
        Box::pin(async move {
            self.0.lock().unwrap().push(subject.to_owned());
            Ok(())
        })
    }
}

/// A local webhook: the bodies it received; it answers `status`.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    status: Arc<AtomicU16>,
}

async fn webhook() -> Webhook {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(AtomicU16::new(200));
    let (kept, answer) = (Arc::clone(&bodies), Arc::clone(&status));
    let app = axum::Router::new().route(
        "/hook/secret-part",
        post(move |body: axum::Json<serde_json::Value>| {
            let (kept, answer) = (Arc::clone(&kept), Arc::clone(&answer));
            async move {
                let code = StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap();
                if code.is_success() {
                    kept.lock().unwrap().push(body.0);
                }
                code
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/secret-part", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Webhook {
        url,
        bodies,
        status,
    }
}

fn token(account: &str, provider: &str) -> StoredToken {
    let now = now_unix();
    StoredToken {
        account: account.to_owned(),
        provider: provider.to_owned(),
        address: None,
        client_id: "client".to_owned(),
        client_secret: None,
        token_url: "https://example.com/token".to_owned(),
        scopes: Vec::new(),
        refresh_token: Some(apimail_core::Secret::new("refresh")),
        access_token: None,
        expires_at: None,
        updated_at: now,
        authorized_at: Some(now - 100 * 86_400),
        refreshed_at: Some(now),
        refresh_refused: None,
    }
}

#[tokio::test]
async fn each_condition_is_reported_once_when_it_starts_and_once_when_it_clears() {
    let hook = webhook().await;
    let mail = Arc::new(Mailbox::default());
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path());
    // `work` (Gmail) was revoked, with a message held for it.
    let mut revoked = token("work", "gmail");
    revoked.refresh_refused = Some("invalid_grant".to_owned());
    store.save(&revoked).unwrap();
    // `tenant` (Graph) was last used 85 days ago: it ends in 5 days.
    let mut ending = token("tenant", "graph");
    ending.refreshed_at = Some(now_unix() - 85 * 86_400);
    store.save(&ending).unwrap();

    let config = |dir: &std::path::Path| AlertConfig {
        mail: Some(Arc::clone(&mail) as Arc<dyn AlertMail>),
        webhook: Some(hook.url.parse().unwrap()),
        queued_hours: 4,
        data_dir: dir.to_owned(),
        // No disk alert, whatever this machine's free space.
        disk_free_percent: 0.0,
    };
    let console = open(&dir).with_alerts(config(dir.path()));
    let f = support::fixture_from(dir, console);
    let held = queue(&f.outbox, "work", "a@example.com");
    f.outbox
        .claim(&held)
        .unwrap()
        .unwrap()
        .hold("invalid_grant")
        .unwrap();

    let mails = |m: &Mailbox| m.0.lock().unwrap().clone();
    let posts = |h: &Webhook| h.bodies.lock().unwrap().clone();
    f.console.alert_round().await;
    let sent = mails(&mail);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent.iter()
            .filter(|s| s.contains("account work") && s.contains("refused"))
            .count(),
        1
    );
    assert_eq!(
        sent.iter()
            .filter(|s| s.contains("account tenant") && s.contains("ends on"))
            .count(),
        1
    );
    let posted = posts(&hook);
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert!(posted.iter().all(|b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("apimail alert /"))
    }));

    // Nothing changed: nothing more, even after a restart of the console.
    f.console.alert_round().await;
    let restarted = Arc::new(open(&f.dir).with_alerts(config(f.dir.path())));
    restarted.alert_round().await;
    assert_eq!((mails(&mail).len(), posts(&hook).len()), (2, 2));

    // Both clear: a new sign-in (held mail released), a refresh.
    let mut signed_in = token("work", "gmail");
    signed_in.refresh_refused = None;
    f.token_store.save(&signed_in).unwrap();
    f.outbox.release_held(Some("work")).unwrap();
    f.token_store.save(&token("tenant", "graph")).unwrap();
    f.console.alert_round().await;
    let sent = mails(&mail);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(
        sent.iter()
            .filter(|s| s.contains("cleared") && s.contains("account work"))
            .count(),
        1
    );
    assert_eq!(
        sent.iter()
            .filter(|s| s.contains("cleared") && s.contains("account tenant"))
            .count(),
        1
    );
    assert_eq!(posts(&hook).len(), 4);
    f.console.alert_round().await;
    assert_eq!((mails(&mail).len(), posts(&hook).len()), (4, 4));
}

#[tokio::test]
async fn an_alert_that_cannot_be_sent_is_shown_on_the_overview_and_sent_later() {
    let hook = webhook().await;
    hook.status.store(500, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let console = open(&dir).with_alerts(AlertConfig {
        mail: None,
        webhook: Some(hook.url.parse().unwrap()),
        queued_hours: 0,
        data_dir: dir.path().to_owned(),
        disk_free_percent: 0.0,
    });
    let f = support::fixture_from(dir, console);
    // Queued longer than 0 hours once a second has passed.
    let id = queue(&f.outbox, "work", "a@example.com");
    let entry = f.outbox.get(id.as_str()).unwrap().unwrap();
    while now_unix() <= entry.created_at {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    f.console.alert_round().await;
    let (session, _) = login(&f.router).await;
    let overview = call(&f.router, get_as("/", &session)).await;
    assert!(
        overview
            .body
            .contains("An alert could not be sent (webhook)"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("HTTP 500"));
    assert!(overview.body.contains("queued longer than 0 hours"));
    assert!(
        !overview.body.contains("secret-part"),
        "never the webhook's URL"
    );

    hook.status.store(200, Ordering::SeqCst);
    f.console.alert_round().await;
    assert_eq!(hook.bodies.lock().unwrap().len(), 1);
    let overview = call(&f.router, get_as("/", &session)).await;
    assert!(!overview.body.contains("could not be sent"));
}

#[tokio::test]
async fn the_disk_alert_follows_its_threshold_not_this_machines_free_space() {
    let mail = Arc::new(Mailbox::default());
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path, percent: f64| AlertConfig {
        mail: Some(Arc::clone(&mail) as Arc<dyn AlertMail>),
        webhook: None,
        queued_hours: 4,
        data_dir: dir.to_owned(),
        disk_free_percent: percent,
    };
    // 100%: any disk with something on it has less free than that.
    let console = open(&dir).with_alerts(config(dir.path(), 100.0));
    let f = support::fixture_from(dir, console);
    f.console.alert_round().await;
    let sent = mail.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("the data disk of") && sent[0].contains("is almost full"),
        "{sent:?}"
    );

    // 0%: never almost full; the alert clears.
    let relaxed = Arc::new(open(&f.dir).with_alerts(config(f.dir.path(), 0.0)));
    relaxed.alert_round().await;
    let sent = mail.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].contains("cleared") && sent[1].contains("almost full"),
        "{sent:?}"
    );
}
