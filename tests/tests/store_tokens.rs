//! Accounts' OAuth tokens in the shared store (`[store] tokens = "store"`)
//! end to end: the real `apimail` binary, the fake Google and a real,
//! throwaway PostgreSQL cluster (skipped, saying why, without one). One
//! machine logs in; another, with no token file of its own, sends with the
//! tokens from the store; a third, given another key, is told so (78).

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::postgres::skip_or_panic;
use apimail_tests::{Sandbox, run};

const ACCOUNT: &str = "user@example.com";

fn send(sandbox: &Sandbox) -> apimail_tests::Run {
    run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "shared tokens",
        "--text",
        "hello",
    ]))
}

#[test]
fn one_login_serves_every_machine_and_another_key_exits_78() {
    let Some(cluster) = skip_or_panic("one_login_serves_every_machine") else {
        return;
    };
    let db = cluster.new_database("cli_tokens").unwrap();
    let fake = FakeGoogle::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("store.key");
    let key = key.to_str().unwrap();
    let password = keys.path().join("password");
    std::fs::write(&password, format!("{}\n", cluster.password())).unwrap();
    let url = cluster.url(&db);

    let machine = |key: &str| {
        let mut sandbox = Sandbox::new(&fake);
        sandbox.set_env("APIMAIL_STORE_URL", &url);
        sandbox.set_env("APIMAIL_STORE_PASSWORD_FILE", password.to_str().unwrap());
        sandbox.set_env("APIMAIL_STORE_TOKENS", "store");
        sandbox.set_env("APIMAIL_STORE_KEY_FILE", key);
        sandbox
    };
    let a = machine(key);

    let made = run(a.cmd().args(["store", "key", "new", "--output", key]));
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stderr.contains("key id "), "{}", made.stderr);
    let text = std::fs::read_to_string(key).unwrap();
    assert!(!made.stderr.contains(text.trim()), "the key is never shown");
    let again = run(a.cmd().args(["store", "key", "new", "--output", key]));
    assert_eq!(again.code, 64, "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(key).unwrap(), text, "kept");

    let migrated = run(a.cmd().args(["store", "migrate"]));
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);

    let login = a.login(&fake, &[]);
    let said = format!("{}{}", String::from_utf8_lossy(&login.stdout), login.stderr);
    assert!(said.contains("in the shared store"), "{said}");
    let refresh_token = a.token_json(ACCOUNT)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!said.contains(&refresh_token));
    let after_login = fake.total_token_requests();

    // Machine B: the same configuration, no token file.
    let b = machine(key);
    std::fs::create_dir_all(b.path().join("config")).unwrap();
    std::fs::copy(
        a.path().join("config/config.toml"),
        b.path().join("config/config.toml"),
    )
    .unwrap();
    assert!(!b.token_file(ACCOUNT).exists());
    let sent = send(&b);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(
        fake.total_token_requests(),
        after_login,
        "B used the access token the login stored"
    );
    assert!(!b.token_file(ACCOUNT).exists(), "nothing written locally");
    let status = run(b.cmd().args(["auth", "status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains(ACCOUNT), "{shown}");
    assert!(shown.contains("stored in:  the shared store"), "{shown}");
    assert!(!shown.contains(&refresh_token), "{shown}");

    // Machine C: another key.
    let other = keys.path().join("other.key");
    let other = other.to_str().unwrap();
    let c = machine(other);
    assert_eq!(
        run(c.cmd().args(["store", "key", "new", "--output", other])).code,
        0
    );
    std::fs::create_dir_all(c.path().join("config")).unwrap();
    std::fs::copy(
        a.path().join("config/config.toml"),
        c.path().join("config/config.toml"),
    )
    .unwrap();
    let refused = send(&c);
    assert_eq!(refused.code, 78, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("were encrypted with another key"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("hint: give this node the key file"),
        "{}",
        refused.stderr
    );
    assert_eq!(fake.messages().len(), 1, "nothing sent");

    // Pushing this machine's tokens again works; without tokens = "store"
    // the push is refused.
    let pushed = run(a.cmd().args(["store", "tokens", "push"]));
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert!(
        pushed.stderr.contains(&format!("account `{ACCOUNT}`")),
        "{}",
        pushed.stderr
    );
    let mut local = machine(key);
    local.set_env("APIMAIL_STORE_TOKENS", "local");
    let refused = run(local.cmd().args(["store", "tokens", "push"]));
    assert_eq!(refused.code, 78, "{}", refused.stderr);

    // Logging out on B removes the account from the store: no node has it.
    let out = run(b.cmd().args(["auth", "logout", "--account", ACCOUNT]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status = run(b.cmd().args(["auth", "status", "--account", ACCOUNT]));
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains("none stored"), "{shown}");
    let after = send(&a);
    assert_eq!(after.code, 77, "{}", after.stderr);
}
