//! `apimail doctor` against a real, throwaway PostgreSQL store (skipped,
//! saying why, where PostgreSQL is not installed): the connection, the
//! schema's version, and the clocks of this machine and the other nodes.

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::postgres::{PgCluster, skip_or_panic};
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, run};
use serde_json::Value;

/// A logged-in Gmail sandbox whose store is `url` (password from a file).
fn sandbox(fake: &FakeGoogle, cluster: &PgCluster, url: &str) -> Sandbox {
    let mut sandbox = Sandbox::new(fake);
    sandbox.login(fake, &[]);
    let file = sandbox.path().join("store-password");
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    sandbox.set_env("APIMAIL_STORE_URL", url);
    sandbox.set_env("APIMAIL_STORE_PASSWORD_FILE", &file.display().to_string());
    sandbox
}

/// `apimail doctor --json`, and its checks.
fn doctor(sandbox: &Sandbox) -> (Run, Vec<Value>) {
    let out = run(sandbox.cmd().args(["doctor", "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            out.stderr
        )
    });
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    (out, checks)
}

/// The check named `name`, which must be there.
fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {checks:#?}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[test]
fn doctor_reports_the_schema_then_the_clocks_of_the_nodes() {
    let test = "doctor_reports_the_schema_then_the_clocks_of_the_nodes";
    let Some(cluster) = skip_or_panic(test) else {
        return;
    };
    let db = cluster.new_database("doctor").unwrap();
    let fake = FakeGoogle::start();
    // The password in the URL itself: never shown.
    let sandbox = sandbox(&fake, cluster, &cluster.url_with_password(&db));

    // Unmigrated: connected, but the schema is behind.
    let (out, checks) = doctor(&sandbox);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let store = check(&checks, "store");
    assert_eq!(store["status"], "ok", "{store}");
    assert!(
        text(&store["detail"]).contains(&format!("127.0.0.1:{}/{db}", cluster.port())),
        "{store}"
    );
    let schema = check(&checks, "store schema");
    assert_eq!(schema["status"], "fail", "{schema}");
    assert!(text(&schema["detail"]).contains("version 0"), "{schema}");
    assert!(
        text(&schema["hint"]).contains("run `apimail store migrate`"),
        "{schema}"
    );
    assert!(
        checks.iter().all(|c| c["name"] != "store nodes"),
        "no nodes table before V2: {checks:#?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(cluster.password()), "{stdout}");
    assert!(!out.stderr.contains(cluster.password()), "{}", out.stderr);

    // Migrated: every check passes, the clock against the database's too.
    let migrate = run(sandbox.cmd().args(["store", "migrate"]));
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    assert!(migrate.stderr.contains("V2__nodes"), "{}", migrate.stderr);
    let (out, checks) = doctor(&sandbox);
    assert_eq!(out.code, 0, "{checks:#?}");
    let schema = check(&checks, "store schema");
    assert_eq!(schema["status"], "ok", "{schema}");
    assert!(text(&schema["detail"]).contains("(current)"), "{schema}");
    let clock = check(&checks, "store clock");
    assert_eq!(clock["status"], "ok", "{clock}");
    assert!(
        text(&clock["detail"]).contains("of the database's"),
        "{clock}"
    );
    let nodes = check(&checks, "store nodes");
    assert_eq!(nodes["status"], "ok", "{nodes}");
    assert!(text(&nodes["detail"]).contains("no node"), "{nodes}");

    // Two other nodes: one in step with the database, one 9.5 s ahead.
    cluster
        .execute(
            &db,
            "INSERT INTO apimail_nodes (node, seen_at, node_clock, offset_secs) VALUES \
             ('worker-a', now(), extract(epoch FROM now()) + 0.2, 0.2), \
             ('worker-b', now(), extract(epoch FROM now()) + 9.5, 9.5)",
        )
        .unwrap();
    let (out, checks) = doctor(&sandbox);
    assert_eq!(out.code, 0, "a warning fails nothing: {checks:#?}");
    let nodes = check(&checks, "store nodes");
    assert_eq!(nodes["status"], "warn", "{nodes}");
    let detail = text(&nodes["detail"]);
    assert!(detail.starts_with("2 nodes seen"), "{nodes}");
    assert!(detail.contains("worker-a (+0.2 s"), "{nodes}");
    assert!(detail.contains("worker-b is 9.5 s ahead of it"), "{nodes}");
    let hint = text(&nodes["hint"]);
    assert!(
        hint.contains("chrony") && hint.contains("on worker-b:"),
        "{nodes}"
    );
    assert!(!hint.contains("worker-a"), "{nodes}");

    // The plain report shows the warning and its hint.
    let plain = run(sandbox.cmd().arg("doctor"));
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(stdout.contains("WARN  store nodes"), "{stdout}");
    assert!(
        stdout.contains("hint: turn on time synchronization"),
        "{stdout}"
    );
    assert!(!stdout.contains(cluster.password()), "{stdout}");
}

#[test]
fn doctor_says_plainly_when_the_store_is_unreachable_and_shows_no_password() {
    let test = "doctor_says_plainly_when_the_store_is_unreachable";
    let Some(cluster) = skip_or_panic(test) else {
        return;
    };
    let fake = FakeGoogle::start();
    // Port 1 on loopback: nothing listens there.
    let sandbox = sandbox(
        &fake,
        cluster,
        "postgres://apimail:Pa55-never-shown@127.0.0.1:1/apimail",
    );
    let (out, checks) = doctor(&sandbox);
    assert_eq!(out.code, 75, "{checks:#?}");
    let store = check(&checks, "store");
    assert_eq!(store["status"], "fail", "{store}");
    assert!(
        text(&store["detail"]).contains("cannot reach the database"),
        "{store}"
    );
    let hint = text(&store["hint"]);
    assert!(hint.contains("is PostgreSQL running"), "{store}");
    assert!(hint.contains("apimail:***@127.0.0.1:1"), "{store}");
    assert!(checks.iter().all(|c| c["name"] != "store schema"));

    let plain = run(sandbox.cmd().arg("doctor"));
    let all = format!("{}{}", String::from_utf8_lossy(&plain.stdout), plain.stderr);
    assert!(all.contains("FAIL  store "), "{all}");
    assert!(!all.contains("Pa55-never-shown"), "{all}");
    assert!(!all.contains(cluster.password()), "{all}");
}
