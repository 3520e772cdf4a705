//! The Gmail provider end to end: the real `apimail` binary against the
//! fake Google (OAuth server and Gmail API) in `src/fake_google/`.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, Fault, service_account_key_json};
use apimail_tests::sandbox::{CLIENT_SECRET, Sandbox};
use apimail_tests::{Run, pseudo_random, run};

const ACCOUNT: &str = "user@example.com";
const PINNED: [&str; 2] = ["--message-id", "<e2e.1@example.com>"];

/// A fake, a sandbox, and a completed login.
fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn send_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "e2e",
        "--text",
        "hello",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn send(sandbox: &Sandbox, extra: &[&str]) -> Run {
    run(sandbox.cmd().args(send_args(extra)))
}

/// A refresh token the fake knows, obtained by logging in elsewhere.
fn refresh_token_from_a_login(fake: &FakeGoogle) -> String {
    let elsewhere = Sandbox::new(fake);
    elsewhere.login(fake, &[]);
    elsewhere.token_json(ACCOUNT)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

// 1. Login

#[test]
fn login_plays_the_browser_with_pkce_and_state() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let run = sandbox.login(&fake, &[]);
    assert!(
        run.stderr
            .contains("authorized user@example.com as account `user@example.com`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("tokens are stored in"),
        "{}",
        run.stderr
    );

    let authorize = &fake.authorize_requests()[0];
    assert_eq!(
        authorize["scope"], "openid email https://www.googleapis.com/auth/gmail.send",
        "gmail.send, and the non-sensitive sign-in scopes for the address"
    );
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert!(authorize["code_challenge"].len() >= 43);
    assert!(authorize["state"].len() >= 16);
    assert_eq!(authorize["access_type"], "offline");
    assert_eq!(authorize["prompt"], "consent");
    assert!(authorize["redirect_uri"].starts_with("http://127.0.0.1:"));
    assert!(authorize["redirect_uri"].ends_with("/callback"));
    // The fake checked the PKCE verifier against the challenge when it issued tokens.
    let form = &fake.token_forms()[0];
    assert_eq!(form["grant_type"], "authorization_code");
    assert!(form.contains_key("code_verifier"));

    let mode = std::fs::metadata(sandbox.token_file(ACCOUNT))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file is private");
    let config = std::fs::read_to_string(sandbox.path().join("config/config.toml")).unwrap();
    assert!(
        config.contains("default_account = \"user@example.com\""),
        "{config}"
    );
    assert!(
        !config.contains(CLIENT_SECRET),
        "no secret in the config file"
    );
}

#[test]
fn login_rejects_a_wrong_state() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let run = sandbox.login_with(&fake, &[], |url| {
        let mut url = url::Url::parse(&url).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "state" {
                    "forged".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url.to_string()
    });
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(run.stderr.contains("state"), "{}", run.stderr);
    assert_eq!(
        fake.token_requests("authorization_code"),
        0,
        "no code exchange after a forged state"
    );
    assert!(!sandbox.token_file(ACCOUNT).exists());
}

#[test]
fn login_denied_ends_with_a_clear_message() {
    let fake = FakeGoogle::start();
    fake.set_deny(true);
    let sandbox = Sandbox::new(&fake);
    let run = sandbox.login_with(&fake, &[], |url| url);
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(run.stderr.contains("denied"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
}

// 2. Bytes

/// Sends with pinned Date and Message-ID, and checks the fake received
/// exactly what --dry-run printed for the same command.
fn assert_send_matches_dry_run(fake: &FakeGoogle, sandbox: &Sandbox, extra: &[&str]) {
    let mut args = send_args(extra);
    args.extend(PINNED.iter().map(|s| s.to_string()));
    let dry = run(sandbox
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .args(&args)
        .arg("--dry-run"));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let sent = run(sandbox
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .args(&args));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let delivered = fake.messages();
    let last = delivered.last().expect("a delivered message");
    assert!(
        last.raw == dry.stdout,
        "the bytes Gmail received differ from --dry-run"
    );
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains(&last.id),
        "receipt names the id: {}",
        String::from_utf8_lossy(&sent.stdout)
    );
}

#[test]
fn small_and_large_sends_arrive_byte_identical() {
    let (fake, sandbox) = logged_in();
    assert_send_matches_dry_run(&fake, &sandbox, &[]);
    assert_eq!(fake.messages()[0].upload_type, "multipart");

    let big = sandbox.path().join("big.bin");
    std::fs::write(&big, pseudo_random(20 << 20)).unwrap();
    assert_send_matches_dry_run(&fake, &sandbox, &["--attach", big.to_str().unwrap()]);
    assert_eq!(
        fake.messages()[1].upload_type,
        "resumable",
        "large messages use a resumable session"
    );
    assert_eq!(fake.chunk_requests_with_authorization(), 0);
}

#[test]
fn over_35_mib_is_refused_before_any_request() {
    let (fake, sandbox) = logged_in();
    let tokens_before = fake.total_token_requests();
    let huge = sandbox.path().join("huge.bin");
    std::fs::write(&huge, pseudo_random(27 << 20)).unwrap(); // ~37 MB once base64-encoded
    let out = send(&sandbox, &["--attach", huge.to_str().unwrap()]);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(
        out.stderr.contains("36700160"),
        "names the limit: {}",
        out.stderr
    );
    assert_eq!(fake.send_requests(), 0);
    assert_eq!(fake.total_token_requests(), tokens_before);
}

#[test]
fn json_receipt() {
    let (fake, sandbox) = logged_in();
    let out = send(&sandbox, &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let delivered = &fake.messages()[0];
    assert_eq!(receipt["provider"], "gmail");
    assert_eq!(receipt["id"], delivered.id.as_str());
    assert_eq!(receipt["thread_id"], delivered.thread_id.as_str());
}

// 3. Tokens

#[test]
fn cached_token_means_no_token_request_and_expired_is_refreshed() {
    let (fake, sandbox) = logged_in();
    let after_login = fake.total_token_requests();
    assert_eq!(send(&sandbox, &[]).code, 0);
    assert_eq!(send(&sandbox, &[]).code, 0);
    assert_eq!(
        fake.total_token_requests(),
        after_login,
        "sends within the token's lifetime ask for no token"
    );
    assert_eq!(fake.send_requests(), 2, "one HTTPS request per send");

    sandbox.expire_stored_token(ACCOUNT);
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.token_requests("refresh_token"), 1);
    assert_eq!(fake.messages().len(), 3);
}

#[test]
fn a_401_refreshes_once_and_resends() {
    let (fake, sandbox) = logged_in();
    fake.expire_access_tokens();
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.token_requests("refresh_token"), 1);
    assert_eq!(fake.messages().len(), 1);
}

// 4. invalid_grant

#[test]
fn revoked_refresh_token_exits_77_with_the_relogin_command() {
    let (fake, sandbox) = logged_in();
    fake.revoke_refresh_tokens();
    sandbox.expire_stored_token(ACCOUNT);
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "hint: run `apimail auth login gmail --account user@example.com --client-secret "
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("\"Testing\""), "{}", out.stderr);
    assert!(out.stderr.contains("6 months"), "{}", out.stderr);
    assert!(out.stderr.contains("password"), "{}", out.stderr);
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    assert_eq!(fake.send_requests(), 0);
}

// 5. Concurrency

#[test]
fn ten_concurrent_sends_refresh_once() {
    let (fake, sandbox) = logged_in();
    sandbox.expire_stored_token(ACCOUNT);
    let children: Vec<_> = (0..10)
        .map(|i| {
            sandbox
                .cmd()
                .args(send_args(&["--header", &format!("X-Run: {i}")]))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out: Run = child.wait_with_output().unwrap().into();
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(
        fake.token_requests("refresh_token"),
        1,
        "one refresh for ten processes"
    );
    assert_eq!(fake.messages().len(), 10);
}

// 6. Other credentials

#[test]
fn service_account_with_subject_delivers() {
    let fake = FakeGoogle::start();
    fake.register_fixture_service_account();
    fake.allow_delegation(
        apimail_tests::fake_google::FIXTURE_SERVICE_ACCOUNT,
        "boss@example.com",
    );
    let sandbox = Sandbox::new(&fake);
    let key = sandbox.path().join("key.json");
    std::fs::write(&key, service_account_key_json(&fake.token_url())).unwrap();
    let out = run(sandbox
        .cmd()
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .env("APIMAIL_GMAIL_USER", "boss@example.com")
        .args(send_args(&["--provider", "gmail"])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let delivered = &fake.messages()[0];
    assert_eq!(delivered.user, "boss@example.com");
    assert!(String::from_utf8_lossy(&delivered.raw).contains("From: <boss@example.com>"));
    assert_eq!(
        fake.token_requests(apimail_tests::fake_google::JWT_BEARER),
        1
    );
}

#[test]
fn environment_refresh_token_delivers() {
    let fake = FakeGoogle::start();
    let refresh = refresh_token_from_a_login(&fake);

    let second = Sandbox::new(&fake);
    let out = run(second
        .cmd()
        .env(
            "APIMAIL_GOOGLE_CLIENT_ID",
            apimail_tests::sandbox::CLIENT_ID,
        )
        .env("APIMAIL_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
        .env("APIMAIL_GOOGLE_REFRESH_TOKEN", &refresh)
        .args(send_args(&["--provider", "gmail", "--from", ACCOUNT])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.messages().len(), 1);
    assert!(
        !second.path().join("data/tokens").exists(),
        "environment credentials are not written anywhere"
    );
}

#[test]
fn smail_ini_import_delivers() {
    let fake = FakeGoogle::start();
    let refresh = refresh_token_from_a_login(&fake);

    let second = Sandbox::new(&fake);
    let ini = second.path().join("smail_refreshtoken.ini");
    std::fs::write(
        &ini,
        format!(
            "[OAUTH2]\nUserID={ACCOUNT}\nClientID={}\nClientSecret={CLIENT_SECRET}\nRefreshToken={refresh}\nTokenURI={}\n",
            apimail_tests::sandbox::CLIENT_ID,
            fake.token_url()
        ),
    )
    .unwrap();
    let out = run(second
        .cmd()
        .args(["auth", "import-smail"])
        .arg(&ini)
        .args(["--account", "office"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = send(&second, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        String::from_utf8_lossy(&fake.messages()[0].raw).contains(&format!("From: <{ACCOUNT}>"))
    );
}

// 7. Faults

#[test]
fn rate_limit_then_success_delivers_once() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::Status429 {
        retry_after_secs: Some(1),
    });
    let started = Instant::now();
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.send_requests(), 2);
}

#[test]
fn user_rate_limit_403_is_retried() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::RateLimit403);
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_MAX_SECONDS", "10")
        .args(send_args(&[])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn dropped_connection_is_retried() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::DropConnection);
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn endless_503_ends_with_75_within_the_bound() {
    let (fake, sandbox) = logged_in();
    fake.fail_forever(Fault::Status503);
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_ATTEMPTS", "3")
        .env("APIMAIL_RETRY_MAX_SECONDS", "6")
        .args(send_args(&[])));
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("gave up after"), "{}", out.stderr);
    assert!(fake.send_requests() <= 3);
    assert!(fake.messages().is_empty());
}

#[test]
fn insufficient_scope_exits_77() {
    let (fake, sandbox) = logged_in();
    let readonly =
        fake.issue_access_token(ACCOUNT, "https://www.googleapis.com/auth/gmail.readonly");
    let mut token = sandbox.token_json(ACCOUNT);
    token["access_token"] = serde_json::json!(readonly);
    token["expires_at"] = serde_json::json!(4_000_000_000_i64);
    std::fs::write(sandbox.token_file(ACCOUNT), token.to_string()).unwrap();
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(
        out.stderr.contains("insufficientPermissions"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("gmail.send"), "{}", out.stderr);
    assert!(fake.messages().is_empty());
}

// 8. No leaks

#[test]
fn debug_output_never_shows_a_secret() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let login = sandbox.login(&fake, &["--debug"]);
    sandbox.expire_stored_token(ACCOUNT);
    let sent = send(&sandbox, &["--debug"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    fake.revoke_refresh_tokens();
    sandbox.expire_stored_token(ACCOUNT);
    let failed = send(&sandbox, &["--debug"]);
    assert_eq!(failed.code, 77);
    let status = run(sandbox.cmd().args(["auth", "status", "--debug"]));
    assert_eq!(status.code, 0, "{}", status.stderr);

    let mut secrets: Vec<String> = vec![CLIENT_SECRET.to_owned()];
    for form in fake.token_forms() {
        for key in ["code", "code_verifier", "refresh_token", "client_secret"] {
            if let Some(value) = form.get(key) {
                secrets.push(value.clone());
            }
        }
    }
    secrets.extend(fake.messages().iter().map(|m| m.access_token.clone()));
    let token = sandbox.token_json(ACCOUNT);
    for key in ["refresh_token", "access_token"] {
        if let Some(value) = token[key].as_str() {
            secrets.push(value.to_owned());
        }
    }
    assert!(
        secrets.len() >= 5,
        "the run produced secrets to look for: {secrets:?}"
    );
    for run in [&login, &sent, &failed, &status] {
        let output = format!("{}{}", String::from_utf8_lossy(&run.stdout), run.stderr);
        assert!(
            output.contains("POST ") || run.code == 0,
            "--debug logs requests"
        );
        for secret in &secrets {
            assert!(
                !output.contains(secret.as_str()),
                "a secret leaked into the output:\n{output}"
            );
        }
    }
    assert!(
        sent.stderr.contains("POST "),
        "--debug logs requests: {}",
        sent.stderr
    );
    let mode = std::fs::metadata(sandbox.token_file(ACCOUNT))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn status_and_logout() {
    let (fake, sandbox) = logged_in();
    let status = run(sandbox.cmd().args(["auth", "status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("user@example.com (default)"), "{text}");
    assert!(text.contains("provider:   gmail"), "{text}");
    assert!(
        text.contains("https://www.googleapis.com/auth/gmail.send"),
        "{text}"
    );
    assert!(text.contains("valid for"), "{text}");

    let out = run(sandbox.cmd().args(["auth", "logout", "--account", ACCOUNT]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    assert_eq!(fake.revoke_requests(), 1);
    assert!(!sandbox.token_file(ACCOUNT).exists());
    let out = send(&sandbox, &[]);
    assert_eq!(
        out.code, 77,
        "after logout, sending needs a login: {}",
        out.stderr
    );
}

#[test]
fn no_account_at_all_is_a_configuration_error() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let out = send(&sandbox, &["--from", ACCOUNT]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: run `apimail auth login gmail"),
        "{}",
        out.stderr
    );
}

#[test]
fn plain_http_endpoint_off_loopback_is_refused() {
    let (_fake, sandbox) = logged_in();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GMAIL_API_URL", "http://gmail.example.com/")
        .args(send_args(&[])));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("APIMAIL_GMAIL_API_URL"),
        "{}",
        out.stderr
    );
}
