//! `apimail store migrate` against a real, throwaway PostgreSQL cluster
//! (skipped, saying why, where PostgreSQL is not installed).

use std::path::Path;

use apimail_tests::postgres::{PgCluster, skip_or_panic};
use apimail_tests::{Run, apimail, run};

/// `apimail store ARGS` with a private configuration and HOME.
fn store(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = apimail();
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .arg("--config")
        .arg(home.join("config.toml"))
        .arg("store")
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command)
}

fn password_file(home: &Path, cluster: &PgCluster) -> String {
    let file = home.join("store-password");
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    file.to_string_lossy().into_owned()
}

#[test]
fn migrate_creates_the_schema_once_and_check_reports_it() {
    let Some(cluster) = skip_or_panic("migrate_creates_the_schema_once_and_check_reports_it")
    else {
        return;
    };
    let db = cluster.new_database("cli_migrate").unwrap();
    let home = tempfile::tempdir().unwrap();
    let url = cluster.url(&db);
    let file = password_file(home.path(), cluster);
    let env = [
        ("APIMAIL_STORE_URL", url.as_str()),
        ("APIMAIL_STORE_PASSWORD_FILE", file.as_str()),
    ];

    let behind = store(home.path(), &env, &["migrate", "--check"]);
    assert_eq!(behind.code, 78, "{}", behind.stderr);
    assert!(behind.stderr.contains("version 0"), "{}", behind.stderr);
    assert!(
        behind.stderr.contains("hint: run `apimail store migrate`"),
        "{}",
        behind.stderr
    );

    let first = store(home.path(), &env, &["migrate"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stderr.contains("applied V1__outbox_journal_pace"),
        "{}",
        first.stderr
    );

    let again = store(home.path(), &env, &["migrate"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("nothing to do"), "{}", again.stderr);

    let check = store(home.path(), &env, &["migrate", "--check"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stderr.contains("is current"), "{}", check.stderr);
}

#[test]
fn the_url_can_come_from_the_config_file_and_a_wrong_password_is_77_unshown() {
    let Some(cluster) = skip_or_panic("the_url_can_come_from_the_config_file") else {
        return;
    };
    let db = cluster.new_database("cli_config").unwrap();
    let home = tempfile::tempdir().unwrap();
    let wrong = home.path().join("wrong");
    std::fs::write(&wrong, "not-the-password-4711\n").unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[store]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            cluster.url(&db),
            wrong.display()
        ),
    )
    .unwrap();
    let refused = store(home.path(), &[], &["migrate"]);
    assert_eq!(refused.code, 77, "{}", refused.stderr);
    assert!(refused.stderr.contains("error: "), "{}", refused.stderr);
    assert!(refused.stderr.contains("hint: "), "{}", refused.stderr);
    assert!(
        !refused.stderr.contains("not-the-password-4711"),
        "{}",
        refused.stderr
    );

    // The password in the URL works too, and is never printed.
    let with_password = cluster.url_with_password(&db);
    let ok = store(
        home.path(),
        &[("APIMAIL_STORE_URL", with_password.as_str())],
        &["migrate"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(!ok.stderr.contains(cluster.password()), "{}", ok.stderr);
    assert!(ok.stderr.contains(":***@127.0.0.1"), "{}", ok.stderr);
}

#[test]
fn without_a_store_it_says_how_to_name_one() {
    let home = tempfile::tempdir().unwrap();
    let out = store(home.path(), &[], &["migrate"]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("error: no store is configured"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("APIMAIL_STORE_URL"), "{}", out.stderr);
}

#[test]
fn an_unreachable_store_is_temporary() {
    let home = tempfile::tempdir().unwrap();
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://apimail:pw-0815@127.0.0.1:{port}/none");
    let out = store(
        home.path(),
        &[("APIMAIL_STORE_URL", url.as_str())],
        &["migrate"],
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(!out.stderr.contains("pw-0815"), "{}", out.stderr);
}
