//! `apimail sendmail`, `send`, `queue` and `log` over the shared
//! PostgreSQL store (issue 25), against a real, throwaway cluster (skipped,
//! saying why, where PostgreSQL is not installed) and the fake Gmail: what
//! one data directory accepts, another one lists, sends and logs.

use std::path::Path;

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::postgres::{PgCluster, skip_or_panic};
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, free_port, run, run_with_stdin};

/// A logged-in sandbox whose store is `url` (migrated), its password in a
/// file.
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

/// The same configuration and account as `first`, with a data directory
/// of its own (its tokens copied there): another machine on the store.
fn another_data_dir(first: &Sandbox) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&first.path().join("data/tokens"), &data.join("tokens"));
    let mut env: Vec<(String, String)> = first
        .env()
        .iter()
        .filter(|(k, _)| k != "APIMAIL_DATA_DIR")
        .cloned()
        .collect();
    env.push(("APIMAIL_DATA_DIR".into(), data.display().to_string()));
    (dir, env)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn apimail_in(sandbox: &Sandbox, env: &[(String, String)], args: &[&str]) -> Run {
    run(sandbox
        .cmd()
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args))
}

fn stdout(run: &Run) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A migrated database for `test`, or `None` (skipped) without PostgreSQL.
fn database(test: &str, prefix: &str) -> Option<(&'static PgCluster, String)> {
    let cluster = skip_or_panic(test)?;
    let db = cluster.new_database(prefix).unwrap();
    Some((cluster, cluster.url(&db)))
}

fn migrate(sandbox: &Sandbox) {
    let migrated = run(sandbox.cmd().args(["store", "migrate"]));
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
}

#[test]
fn sendmail_queues_in_the_store_and_another_data_dir_lists_flushes_and_logs_it() {
    let test = "sendmail_queues_in_the_store_and_another_data_dir_lists_flushes_and_logs_it";
    let Some((cluster, url)) = database(test, "cli_sendmail") else {
        return;
    };
    let fake = FakeGoogle::start();
    let first = machine(&fake, cluster, &url);
    migrate(&first);

    fake.inject(Fault::Status503);
    let queued = run_with_stdin(
        first.cmd().args(["sendmail", "-i", "a@example.net"]),
        b"Subject: shared\n\nfrom the store\n",
    );
    assert_eq!(queued.code, 0, "accepted: {}", queued.stderr);
    assert!(queued.stderr.contains("queued"), "{}", queued.stderr);
    assert!(fake.messages().is_empty(), "the 503 sent nothing");
    assert!(
        first.outbox_entries("queue").is_empty(),
        "the entry is in the store, not in the local outbox"
    );

    // Another machine: its own data directory, the same store.
    let (_second_dir, second) = another_data_dir(&first);
    let listed = apimail_in(&first, &second, &["queue", "list", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let lines: Vec<serde_json::Value> = stdout(&listed)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&listed));
    assert_eq!(lines[0]["state"], "queued");
    assert_eq!(lines[0]["recipients"], serde_json::json!(["a@example.net"]));
    let id = lines[0]["id"].as_str().unwrap().to_owned();

    // sendmail's own listing (mailq) reads the same store.
    let mailq = apimail_in(&first, &second, &["sendmail", "-bp"]);
    assert_eq!(mailq.code, 0, "{}", mailq.stderr);
    assert!(stdout(&mailq).starts_with(&id), "{}", stdout(&mailq));
    assert!(
        stdout(&mailq).contains("a@example.net"),
        "{}",
        stdout(&mailq)
    );

    let shown = apimail_in(&first, &second, &["queue", "show", &id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        stdout(&shown).contains("Subject: shared"),
        "{}",
        stdout(&shown)
    );

    let flushed = apimail_in(&first, &second, &["queue", "flush", "--all"]);
    assert_eq!(flushed.code, 0, "{}", flushed.stderr);
    assert!(flushed.stderr.contains("1 sent"), "{}", flushed.stderr);
    let delivered = fake.messages();
    assert_eq!(delivered.len(), 1, "sent once");
    assert!(String::from_utf8_lossy(&delivered[0].raw).contains("from the store"));

    // Back on the first machine: nothing left, and the journal says sent.
    let again = run(first.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(fake.messages().len(), 1, "not sent twice");
    let empty = run(first.cmd().args(["queue", "list"]));
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert_eq!(stdout(&empty), "the outbox is empty\n");

    let log = run(first.cmd().args(["log", "--json"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let records: Vec<serde_json::Value> = stdout(&log)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_id: Vec<&str> = records
        .iter()
        .filter(|r| r["queue_id"] == id.as_str())
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(of_id.last(), Some(&"sent"), "{}", stdout(&log));
    let human = apimail_in(&first, &second, &["log", "--status", "sent"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert_eq!(stdout(&human).lines().count(), 1, "{}", stdout(&human));
    assert!(stdout(&human).contains(&id), "{}", stdout(&human));
    let csv = apimail_in(&first, &second, &["log", "--csv"]);
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    assert_eq!(
        stdout(&csv).lines().count(),
        records.len() + 1,
        "a header, then the same records: {}",
        stdout(&csv)
    );
}

#[test]
fn send_sends_through_the_store_and_queue_retry_and_drop_act_on_it() {
    let test = "send_sends_through_the_store_and_queue_retry_and_drop_act_on_it";
    let Some((cluster, url)) = database(test, "cli_send") else {
        return;
    };
    let fake = FakeGoogle::start();
    let sandbox = machine(&fake, cluster, &url);
    migrate(&sandbox);

    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "b@example.net",
        "--subject",
        "now",
        "--text",
        "hi",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        stdout(&sent).starts_with("sent through gmail"),
        "{}",
        stdout(&sent)
    );
    assert_eq!(fake.messages().len(), 1);

    let queued = run(sandbox.cmd().args([
        "send",
        "--to",
        "c@example.net",
        "--text",
        "later",
        "--queue",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let id = queued
        .stderr
        .strip_prefix("queued as ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("a queue id: {}", queued.stderr))
        .to_owned();
    assert!(sandbox.outbox_entries("queue").is_empty(), "in the store");
    let listed = run(sandbox.cmd().args(["queue", "list"]));
    assert!(stdout(&listed).starts_with(&id), "{}", stdout(&listed));

    let dropped = run(sandbox.cmd().args(["queue", "drop", &id]));
    assert_eq!(dropped.code, 0, "{}", dropped.stderr);
    let gone = run(sandbox.cmd().args(["queue", "retry", &id]));
    assert_eq!(gone.code, 66, "{}", gone.stderr);
    assert_eq!(fake.messages().len(), 1, "the dropped one was never sent");

    let log = run(sandbox.cmd().args(["log", "--json"]));
    let outcomes: Vec<String> = stdout(&log)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["sent", "queued", "dropped"], "{}", stdout(&log));
}

#[test]
fn an_unreachable_store_is_75_and_nothing_is_accepted_or_shown() {
    let test = "an_unreachable_store_is_75_and_nothing_is_accepted_or_shown";
    let Some((cluster, _)) = database(test, "cli_unreachable") else {
        return;
    };
    let fake = FakeGoogle::start();
    // Nothing listens there: the connection is refused.
    let closed = free_port();
    let password = "store-secret-password-4711";
    let url = format!("postgres://apimail:{password}@127.0.0.1:{closed}/mail");
    let sandbox = machine(&fake, cluster, &url);

    let out = run_with_stdin(
        sandbox.cmd().args(["sendmail", "-i", "a@example.net"]),
        b"Subject: lost?\n\nno\n",
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(!out.stderr.contains("queued"), "{}", out.stderr);
    assert!(!out.stderr.contains(password), "{}", out.stderr);
    assert!(!out.stderr.contains(cluster.password()), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(fake.messages().is_empty());
    assert!(sandbox.outbox_entries("queue").is_empty());

    let send = run(sandbox
        .cmd()
        .args(["send", "--to", "a@example.net", "--text", "x"]));
    assert_eq!(send.code, 75, "{}", send.stderr);
    assert!(!send.stderr.contains("queued as"), "{}", send.stderr);
    assert!(!send.stderr.contains(password), "{}", send.stderr);
    for args in [&["queue", "list"][..], &["log"]] {
        let out = run(sandbox.cmd().args(args));
        assert_eq!(out.code, 75, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains(password), "{}", out.stderr);
    }
    assert!(fake.messages().is_empty());
}

#[test]
fn a_store_whose_schema_is_behind_refuses_to_accept_and_says_to_migrate() {
    let test = "a_store_whose_schema_is_behind_refuses_to_accept_and_says_to_migrate";
    let Some((cluster, url)) = database(test, "cli_behind") else {
        return;
    };
    let fake = FakeGoogle::start();
    let sandbox = machine(&fake, cluster, &url);
    // Not migrated.
    let out = run_with_stdin(
        sandbox.cmd().args(["sendmail", "-i", "a@example.net"]),
        b"Subject: early\n\nx\n",
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: run `apimail store migrate`"),
        "{}",
        out.stderr
    );
    assert!(fake.messages().is_empty());
    assert!(sandbox.outbox_entries("queue").is_empty());

    let bad = {
        migrate(&sandbox);
        run(sandbox.cmd().args(["queue", "show", "not-an-id"]))
    };
    assert_eq!(bad.code, 64, "{}", bad.stderr);
    assert!(bad.stderr.contains("apimail queue list"), "{}", bad.stderr);
}
