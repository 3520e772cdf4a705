//! `[alerts]` end to end, with the real `apimail admin serve` and the fake
//! Gmail: a revoked account (with mail held for it) and an authorization
//! that ends within 7 days each send exactly one alert mail (through the
//! default account, to the fake Gmail) and one webhook POST to a local
//! test server when they start, and one more of each when they clear (the
//! administrator signs both in again from the console); a restarted
//! console repeats nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apimail_tests::console::{self, AdminSession, between, csrf_field, unescape};
use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::http::{Reply, Response, Server};
use apimail_tests::{Sandbox, free_port, http, run, run_with_stdin};

const PASSWORD: &str = "correct horse battery";
/// The default account: its authorization ends in 4 days.
const ENDING: &str = "office@example.com";
/// Refused by Google, with a message held for it.
const REVOKED: &str = "scanner@example.com";

/// "Sign in again" for `account`, the test playing the browser on the
/// console's machine: the fake Google's consent redirects straight to the
/// login's loopback listener.
fn sign_in_again(session: &AdminSession, fake: &FakeGoogle, account: &str) {
    fake.set_user_email(account);
    let page = format!("/accounts/{}/sign-in", account.replace('@', "%40"));
    let csrf = csrf_field(&session.get(&page).body_text());
    let started = session.post(&page, &[("csrf", &csrf)]);
    assert_eq!(started.status, 303, "{}", started.body_text());
    let shown = session.wait_for(&page, "class=\"link\"");
    let link = unescape(between(&shown, "class=\"link\"><a href=\"", "\"").unwrap());
    let consent = http::get(&link);
    assert_eq!(consent.status, 302, "{}", consent.body_text());
    let back = http::get(consent.header("location").unwrap());
    assert_eq!(back.status, 200, "{}", back.body_text());
    session.wait_for(&page, "Signed in");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn edit_token(sandbox: &Sandbox, account: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut stored = sandbox.token_json(account);
    edit(&mut stored);
    std::fs::write(
        sandbox.token_file(account),
        serde_json::to_vec(&stored).unwrap(),
    )
    .unwrap();
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[test]
fn a_revoked_account_and_an_ending_authorization_each_report_once_when_they_start_and_once_when_they_clear()
 {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    // The first login is the default account, which sends the alert mail.
    fake.set_user_email(ENDING);
    sandbox.login(&fake, &[]);
    fake.set_user_email(REVOKED);
    sandbox.login(&fake, &[]);

    // ENDING was last used 178 days ago: Google ends it in 4 days.
    edit_token(&sandbox, ENDING, |t| {
        t["authorized_at"] = (now() - 178 * 86_400).into();
        t["refreshed_at"] = (now() - 178 * 86_400).into();
    });
    // REVOKED was refused, and a message waits for its sign-in.
    edit_token(&sandbox, REVOKED, |t| {
        t["refresh_refused"] = "invalid_grant".into();
    });
    let queued = run(sandbox.cmd().args([
        "send",
        "--account",
        REVOKED,
        "--queue",
        "--to",
        "rcpt@example.net",
        "--subject",
        "held",
        "--text",
        "hi",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let outbox = apimail_core::outbox::Outbox::open(sandbox.path().join("data/outbox")).unwrap();
    let entry = outbox.list().unwrap().pop().expect("the queued entry");
    outbox
        .claim(&entry.id)
        .unwrap()
        .expect("nobody else holds it")
        .hold("invalid_grant: Token has been expired or revoked.")
        .unwrap();

    let posts = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = Arc::clone(&posts);
    let hook = Server::start("webhook", move |request| {
        kept.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&request.body).into_owned());
        Reply::Respond(Response::text(200, "1"))
    })
    .unwrap();
    let config = sandbox.path().join("config/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        // No disk alert, whatever this machine's free space.
        "\n[alerts]\naddress = \"it@example.net\"\nwebhook = \"http://{}/hook\"\ndisk_free_percent = 0\n",
        hook.addr()
    ));
    std::fs::write(&config, text).unwrap();
    let added = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", "ann"]),
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);

    // Each report: its Subject (mail) or its text (webhook).
    let mails = || -> Vec<String> {
        fake.inbox("it@example.net")
            .iter()
            .map(|raw| {
                let mail = mail_parser::MessageParser::default().parse(raw).unwrap();
                assert!(String::from_utf8_lossy(raw).contains("Auto-Submitted: auto-generated"));
                mail.subject().unwrap_or_default().to_owned()
            })
            .collect()
    };
    let hooks = || -> Vec<String> {
        posts
            .lock()
            .unwrap()
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(p).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let wait_for = |what: &str, n: usize| {
        let until = Instant::now() + Duration::from_secs(90);
        while mails().len() < n || hooks().len() < n {
            assert!(
                Instant::now() < until,
                "no {what}: {:?} {:?}",
                mails(),
                hooks()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // How many reports of each kind: (revoked started, ending started,
    // revoked cleared, ending cleared).
    let kinds = |reports: &[String]| {
        let count = |prefix: &str, about: &str| {
            reports
                .iter()
                .filter(|r| r.starts_with(prefix) && r.contains(about))
                .count()
        };
        let revoked = format!("account {REVOKED}: the provider refused its authorization");
        let ending = format!("account {ENDING}: its authorization ends on");
        (
            count("apimail alert / apimail 警告: ", &revoked),
            count("apimail alert / apimail 警告: ", &ending),
            count("apimail alert cleared / apimail 警告解除: ", &revoked),
            count("apimail alert cleared / apimail 警告解除: ", &ending),
        )
    };

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let state = sandbox.path().join("data/admin/alerts.json");
    let served = console::serve(sandbox.cmd(), port);

    // The first round: both start.
    wait_for("reports of the start", 2);
    let session = AdminSession::sign_in(&base, "ann", PASSWORD);
    let overview = session.get("/").body_text();
    assert!(
        overview.contains("refused its authorization") && overview.contains("ends on"),
        "the overview shows both alerts:\n{overview}"
    );
    assert_eq!(kinds(&mails()), (1, 1, 0, 0), "{:?}", mails());
    assert_eq!(kinds(&hooks()), (1, 1, 0, 0), "{:?}", hooks());
    assert_eq!((mails().len(), hooks().len()), (2, 2));

    // The ending authorization is renewed: it clears alone.
    sign_in_again(&session, &fake, ENDING);
    wait_for("report of the renewal", 3);
    // The revoked account signs in again: its held mail goes out, and it
    // clears too.
    sign_in_again(&session, &fake, REVOKED);
    wait_for("report of the new sign-in", 4);
    let until = Instant::now() + Duration::from_secs(60);
    while outbox.get(entry.id.as_str()).unwrap().is_some() {
        assert!(Instant::now() < until, "the held message never went out");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kinds(&mails()), (1, 1, 1, 1), "{:?}", mails());
    assert_eq!(kinds(&hooks()), (1, 1, 1, 1), "{:?}", hooks());
    let overview = session.get("/").body_text();
    assert!(
        !overview.contains("class=\"alert"),
        "no alert left on the overview:\n{overview}"
    );

    // A restarted console looks again at once, and repeats nothing.
    drop(served);
    let before = modified(&state).expect("the alerts' state is kept");
    let _served = console::serve(sandbox.cmd(), port);
    let until = Instant::now() + Duration::from_secs(60);
    while modified(&state) == Some(before) {
        assert!(
            Instant::now() < until,
            "the restarted console made no round"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((mails().len(), hooks().len()), (4, 4), "{:?}", mails());
}
