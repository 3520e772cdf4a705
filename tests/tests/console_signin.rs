//! "Sign in again" from the admin console, end to end: the real binary's
//! console runs `auth login gmail`'s flow for a refused account, the page
//! shows Google's authorization link, the test plays the browser at the
//! fake Google and pastes the address it is sent back to, and the account
//! is authorized again: its held mail goes out.

use apimail_tests::console::{self, AdminSession, between, csrf_field, unescape};
use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::{Sandbox, free_port, http, run, run_with_stdin};

const PASSWORD: &str = "correct horse battery";

#[test]
fn a_refused_gmail_account_signs_in_again_from_the_console() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    let tokens = sandbox.path().join("data/tokens");
    let file = std::fs::read_dir(&tokens)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .expect("a token file")
        .path();
    let account = file.file_stem().unwrap().to_string_lossy().into_owned();
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["refresh_refused"] = "invalid_grant".into();
    let before = stored["refresh_token"].clone();
    std::fs::write(&file, serde_json::to_vec(&stored).unwrap()).unwrap();

    // A message held for the account's sign-in.
    let queued = run(sandbox.cmd().args([
        "send",
        "--queue",
        "--to",
        "rcpt@example.net",
        "--subject",
        "held",
        "--text",
        "hi",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    // Held for a login, as a refused attempt leaves it (the outbox's own hold).
    let outbox = apimail_core::outbox::Outbox::open(sandbox.path().join("data/outbox")).unwrap();
    let entry = outbox.list().unwrap().pop().expect("the queued entry");
    outbox
        .claim(&entry.id)
        .unwrap()
        .expect("nobody else holds it")
        .hold("invalid_grant: Token has been expired or revoked.")
        .unwrap();
    let list = run(sandbox.cmd().args(["queue", "list"]));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("held"),
        "{}",
        list.stderr
    );

    let added = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", "ann"]),
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let port = free_port();
    let _served = console::serve(sandbox.cmd(), port);
    let browser = AdminSession::sign_in(&format!("http://127.0.0.1:{port}"), "ann", PASSWORD);

    // The overview offers "Sign in again" for the refused account.
    let overview = browser.get("/").body_text();
    let page = unescape(
        between(
            &overview,
            "<a class=\"button danger\" href=\"",
            "\">Sign in again",
        )
        .unwrap_or_else(|| panic!("no Sign in again: {overview}")),
    );
    assert_eq!(
        page,
        format!("/accounts/{}/sign-in", account.replace('@', "%40"))
    );
    let start = browser.get(&page).body_text();
    let csrf = csrf_field(&start);
    let refused = browser.post(&page, &[]);
    assert_eq!(refused.status, 403, "no CSRF token");
    let started = browser.post(&page, &[("csrf", &csrf)]);
    assert_eq!(started.status, 303, "{}", started.body_text());

    // The page shows Google's link; the test is the browser.
    let shown = browser.wait_for(&page, "class=\"link\"");
    let link = unescape(between(&shown, "class=\"link\"><a href=\"", "\"").unwrap());
    assert!(link.starts_with(&fake.auth_url()), "{link}");
    assert!(
        !shown.contains("access_token") && !shown.contains("refresh"),
        "no token"
    );
    let consent = http::get(&link);
    assert_eq!(consent.status, 302, "{}", consent.body_text());
    let back = consent.header("location").unwrap().to_owned();
    let pasted = browser.post(
        &format!("{page}/paste"),
        &[("csrf", &csrf), ("address", &back)],
    );
    assert_eq!(pasted.status, 303, "{}", pasted.body_text());
    let done = browser.wait_for(&page, "Signed in");
    assert!(done.contains(&account), "{done}");

    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(stored.get("refresh_refused").is_none(), "{stored}");
    assert_ne!(stored["refresh_token"], before, "a new authorization");
    // The held message went out.
    assert!(
        outbox.get(entry.id.as_str()).unwrap().is_none(),
        "the held message was sent"
    );
    let log = run(sandbox.cmd().args(["log", "--csv"]));
    assert!(
        String::from_utf8_lossy(&log.stdout).contains(",sent,"),
        "{}",
        String::from_utf8_lossy(&log.stdout)
    );
    let status = run(sandbox.cmd().args(["auth", "status"]));
    assert!(!status.stderr.contains("refused"), "{}", status.stderr);
}
