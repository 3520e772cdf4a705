//! `[alerts]` end to end: `apimail admin serve` with an authorization that
//! ends within 7 days sends exactly one alert mail (through the account,
//! to the fake Gmail) and one webhook POST to a local test server.

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::http::{Reply, Response, Server};
use apimail_tests::{Sandbox, http};

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_ending_authorization_sends_one_alert_mail_and_one_webhook_post() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    // Last used 178 days ago: Google ends it in 4 days.
    let tokens = sandbox.path().join("data/tokens");
    let file = std::fs::read_dir(&tokens)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    stored["authorized_at"] = (now - 178 * 86_400).into();
    stored["refreshed_at"] = (now - 178 * 86_400).into();
    std::fs::write(&file, serde_json::to_vec(&stored).unwrap()).unwrap();

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
        "\n[alerts]\naddress = \"it@example.net\"\nwebhook = \"http://{}/hook\"\n",
        hook.addr()
    ));
    std::fs::write(&config, text).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = sandbox
        .cmd()
        .args(["admin", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _served = Served(child);

    let until = Instant::now() + Duration::from_secs(60);
    while fake.inbox("it@example.net").is_empty() || posts.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < until,
            "no alert within 60 s: {} mail(s), {:?}",
            fake.inbox("it@example.net").len(),
            posts.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The console is up and has said all it will until the next minute.
    assert_eq!(
        http::get(&format!("http://127.0.0.1:{port}/healthz")).status,
        200
    );
    let raw = fake.inbox("it@example.net").remove(0);
    let mail = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let subject = mail.subject().unwrap_or_default();
    assert!(
        subject.starts_with("apimail alert / apimail 警告: account"),
        "{subject}"
    );
    assert!(subject.contains("ends on"), "{subject}");
    assert!(mail.body_text(0).unwrap_or_default().contains("ends on"));
    assert!(String::from_utf8_lossy(&raw).contains("Auto-Submitted: auto-generated"));
    let posted = posts.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let body: serde_json::Value = serde_json::from_str(&posted[0]).unwrap();
    assert!(body["text"].as_str().unwrap().contains("ends on"), "{body}");
    assert_eq!(fake.inbox("it@example.net").len(), 1);
}
