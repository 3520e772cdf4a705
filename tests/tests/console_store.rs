//! The admin console over the shared PostgreSQL store (issue 25), against
//! a real, throwaway cluster (skipped, saying why, where PostgreSQL is not
//! installed) and the fake Gmail: what one data directory sends and queues
//! through the store, a console on another data directory shows and acts
//! on (its send log, CSV, API records and queue page).

use std::process::Command;

use apimail_tests::console::{self, AdminSession, csrf_field};
use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::postgres::{PgCluster, skip_or_panic};
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, free_port, http, run, run_with_stdin};

/// A logged-in sandbox whose store is `url`, its password in a file.
fn machine(fake: &FakeGoogle, cluster: &PgCluster, url: &str) -> Sandbox {
    let mut sandbox = Sandbox::new(fake);
    let login = sandbox.login(fake, &[]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let file = sandbox.path().join("store-password");
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    sandbox.set_env("APIMAIL_STORE_URL", url);
    sandbox.set_env("APIMAIL_STORE_PASSWORD_FILE", &file.display().to_string());
    sandbox
}

/// The same configuration as `first`, with a data directory of its own
/// (its tokens copied there): another machine on the store.
fn another_data_dir(first: &Sandbox) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tokens = data.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for entry in std::fs::read_dir(first.path().join("data/tokens")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tokens.join(entry.file_name())).unwrap();
    }
    let mut env: Vec<(String, String)> = first
        .env()
        .iter()
        .filter(|(k, _)| k != "APIMAIL_DATA_DIR")
        .cloned()
        .collect();
    env.push(("APIMAIL_DATA_DIR".into(), data.display().to_string()));
    (dir, env)
}

/// `apimail` with `sandbox`'s binary and only `env`.
fn command_in(sandbox: &Sandbox, env: &[(String, String)]) -> Command {
    let mut cmd = sandbox.cmd();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn stdout(run: &Run) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// An API request with the bearer `token`: status and body.
fn api(method: &str, port: u16, path: &str, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let answer = http::request(
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        &[("Authorization", auth.as_str())],
        b"",
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (answer.status, answer.body_text())
}

/// `apimail log --csv` of `first`, newest first (as the console orders it).
fn log_csv_newest_first(first: &Sandbox) -> String {
    let log = run(first.cmd().args(["log", "--csv"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let log = stdout(&log);
    let mut rows: Vec<&str> = log.split_inclusive("\r\n").collect();
    let header = rows.remove(0);
    std::iter::once(header)
        .chain(rows.into_iter().rev())
        .collect()
}

#[test]
fn a_console_on_another_data_dir_shows_and_acts_on_the_stores_log_and_queue() {
    let test = "a_console_on_another_data_dir_shows_and_acts_on_the_stores_log_and_queue";
    let Some(cluster) = skip_or_panic(test) else {
        return;
    };
    let db = cluster.new_database("console_store").unwrap();
    let url = cluster.url(&db);
    let fake = FakeGoogle::start();
    let first = machine(&fake, cluster, &url);
    let migrated = run(first.cmd().args(["store", "migrate"]));
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);

    // The first machine sends one message and queues another, both through
    // the store (its local journal and outbox stay empty).
    let sent = run(first.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "one",
        "--text",
        "hi",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let queued = run(first.cmd().args([
        "send",
        "--queue",
        "--to",
        "a@example.net",
        "--subject",
        "later",
        "--text",
        "hi",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    assert!(first.outbox_entries("queue").is_empty(), "in the store");
    let listed = run(first.cmd().args(["queue", "list", "--json"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let entry: serde_json::Value =
        serde_json::from_str(stdout(&listed).lines().next().expect("one entry")).unwrap();
    let id = entry["id"].as_str().unwrap().to_owned();
    let expected = log_csv_newest_first(&first);
    assert_eq!(
        expected.matches("\r\n").count(),
        3,
        "a header, sent, queued: {expected}"
    );

    // The console of another machine: its own data directory, the store.
    let (second_dir, second) = another_data_dir(&first);
    let created = run(command_in(&first, &second).args(["admin", "token", "create", "ops"]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = stdout(&created).trim().to_owned();
    let added = run_with_stdin(
        command_in(&first, &second).args(["admin", "user", "add", "ann"]),
        b"correct horse battery\n",
    );
    assert_eq!(added.code, 0, "{}", added.stderr);
    let port = free_port();
    let served = console::serve(command_in(&first, &second), port);

    let (status, csv) = api("GET", port, "/api/v1/messages.csv", &token);
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv, expected,
        "the console's CSV is `apimail log --csv` of the store"
    );
    let (status, records) = api("GET", port, "/api/v1/messages", &token);
    assert_eq!(status, 200, "{records}");
    assert!(
        records.contains(&id) && records.contains("\"one\""),
        "{records}"
    );
    assert!(
        second_dir
            .path()
            .join("data/admin/store-index.sqlite3")
            .exists(),
        "the store's log is indexed apart from the local journal's"
    );

    let admin = AdminSession::sign_in(
        &format!("http://127.0.0.1:{port}"),
        "ann",
        "correct horse battery",
    );
    let log = admin.get("/log").body_text();
    assert!(log.contains("later") && log.contains("one"), "{log}");
    let queue = admin.get("/queue").body_text();
    assert!(
        queue.contains(&id),
        "the store's entry on the queue page: {queue}"
    );

    // Retry from the queue page, drop through the API: both act on the
    // store, and the drop is in the store's journal.
    let retried = admin.post(
        "/queue/action",
        &[
            ("csrf", &csrf_field(&queue)),
            ("action", "retry"),
            ("ids", &id),
        ],
    );
    assert_eq!(retried.status, 303, "{}", retried.body_text());
    let location = retried.header("location").unwrap_or_default().to_owned();
    assert!(location.contains("done=retry&count=1"), "{location}");
    let (status, body) = api("DELETE", port, &format!("/api/v1/messages/{id}"), &token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"dropped\":true"), "{body}");
    let after = run(first.cmd().args(["queue", "list", "--json"]));
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(stdout(&after), "", "the store's queue is empty");
    let log = run(first.cmd().args(["log", "--csv"]));
    assert!(stdout(&log).contains(",dropped,"), "{}", stdout(&log));
    // One row per message, holding its latest record: the drop.
    let (_, csv) = api("GET", port, "/api/v1/messages.csv", &token);
    let newest = log_csv_newest_first(&first);
    let lines: Vec<&str> = newest.split_inclusive("\r\n").collect();
    assert!(lines[1].contains(",dropped,"), "{newest}");
    let per_message: String = [lines[0], lines[1], lines[3]].concat();
    assert_eq!(csv, per_message, "the console follows the store's journal");

    // The live updates follow the store: another machine's new entry is a
    // `queue` event.
    let mut events = Events::open(port, &token);
    events.wait_for("hello", &served);
    let another = run(first.cmd().args([
        "send",
        "--queue",
        "--to",
        "b@example.net",
        "--subject",
        "live",
        "--text",
        "hi",
    ]));
    assert_eq!(another.code, 0, "{}", another.stderr);
    events.wait_for("queue", &served);
    drop(served);
}

/// `/api/v1/events` read as it streams, over a plain socket.
struct Events {
    stream: std::net::TcpStream,
    seen: String,
}

impl Events {
    fn open(port: u16, token: &str) -> Events {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        Events {
            stream,
            seen: String::new(),
        }
    }

    /// Reads until an event named `name` (a generous limit: the machine
    /// may be loaded), and forgets what came before it.
    fn wait_for(&mut self, name: &str, served: &apimail_tests::Process) {
        use std::io::Read as _;
        let marker = format!("event: {name}\n");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.seen.contains(&marker) {
            assert!(
                std::time::Instant::now() < until,
                "no `{name}` event within 20 s: {}\nthe console's log:\n{}",
                self.seen,
                served.log()
            );
            let mut buf = [0; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the event stream ended: {}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the event stream: {e}"),
            }
        }
        let at = self.seen.find(&marker).unwrap() + marker.len();
        self.seen.drain(..at);
    }
}

#[test]
fn the_console_does_not_start_on_an_unreachable_store_and_shows_no_password() {
    let fake = FakeGoogle::start();
    let mut sandbox = Sandbox::new(&fake);
    // Port 1 on loopback: nothing listens there.
    sandbox.set_env(
        "APIMAIL_STORE_URL",
        "postgres://apimail:Pa55-never-shown@127.0.0.1:1/apimail",
    );
    let port = free_port();
    let out = run(sandbox
        .cmd()
        .args(["admin", "serve", "--listen", &format!("127.0.0.1:{port}")]));
    assert_eq!(out.code, 75, "a temporary failure: {}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("\nhint: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("apimail:***@127.0.0.1:1"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Pa55-never-shown"), "{}", out.stderr);
}
