//! The Microsoft Graph provider end to end: the real `apimail` binary
//! against the fake identity platform and Graph in `src/fake_microsoft/`.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use apimail_tests::fake_microsoft::{self, FakeMicrosoft, Fault};
use apimail_tests::sandbox::{MS_CLIENT_ID, Sandbox};
use apimail_tests::{Run, pseudo_random, run};

const USER: &str = "user@contoso.com";
const TENANT: &str = "contoso.onmicrosoft.com";
const APP_ID: &str = "0a0b0c0d-1111-2222-3333-444455556666";
const APP_SECRET: &str = "app~secret~value~for~tests";

fn logged_in(extra: &[&str]) -> (FakeMicrosoft, Sandbox) {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let mut args = vec!["--login-hint", USER];
    args.extend_from_slice(extra);
    let out = sandbox.login_graph(&fake, &args);
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    (fake, sandbox)
}

fn send_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "graph e2e",
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

// 1. Login

#[test]
fn loopback_login_with_pkce_and_state() {
    let (fake, sandbox) = logged_in(&[]);
    let authorize = &fake.authorize_requests()[0];
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert!(authorize["state"].len() >= 16);
    assert!(
        authorize["redirect_uri"].starts_with("http://localhost:"),
        "{authorize:?}"
    );
    assert!(authorize["redirect_uri"].ends_with("/callback"));
    assert_eq!(
        authorize["scope"], "openid email offline_access https://graph.microsoft.com/Mail.Send",
        "least privilege: sign-in, a refresh token, Mail.Send"
    );
    assert_eq!(fake.tenants()[0], "common");
    assert!(fake.token_forms()[0].contains_key("code_verifier"));
    let mode = std::fs::metadata(sandbox.token_file(USER))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn device_code_login_after_pending_polls() {
    let fake = FakeMicrosoft::start();
    fake.set_device_pending_polls(2);
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(sandbox
        .cmd()
        .args([
            "auth",
            "login",
            "graph",
            "--device-code",
            "--client-id",
            MS_CLIENT_ID,
        ])
        .args(["--tenant", "organizations", "--login-hint", USER]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(fake_microsoft::USER_CODE),
        "shows the code: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(fake_microsoft::VERIFICATION_URI),
        "{}",
        out.stderr
    );
    assert_eq!(
        fake.device_polls(),
        3,
        "two pending answers, then the token"
    );
    assert!(sandbox.token_file(USER).exists());
}

#[test]
fn device_code_declined_is_a_clear_error() {
    let fake = FakeMicrosoft::start();
    fake.set_device_outcome(fake_microsoft::DeviceOutcome::Decline);
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(sandbox.cmd().args([
        "auth",
        "login",
        "graph",
        "--device-code",
        "--client-id",
        MS_CLIENT_ID,
    ]));
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
}

// 2. Refresh rotation

#[test]
fn rotated_refresh_token_is_persisted() {
    let (fake, sandbox) = logged_in(&[]);
    let before = sandbox.token_json(USER)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sandbox.expire_stored_token(USER);
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.token_requests("refresh_token"), 1);
    let after = sandbox.token_json(USER)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(before, after, "the store holds the rotated refresh token");
    // The old one is dead at the fake; the stored one still works.
    sandbox.expire_stored_token(USER);
    assert_eq!(send(&sandbox, &[]).code, 0);
    assert_eq!(fake.delivered().len(), 2);
}

// 3. Small sends

fn assert_mime_send_matches_dry_run(fake: &FakeMicrosoft, sandbox: &Sandbox, extra: &[&str]) {
    let mut args = send_args(extra);
    args.extend([
        "--message-id".to_owned(),
        "<graph.1@contoso.com>".to_owned(),
    ]);
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
    let delivered = fake.delivered();
    let last = delivered.last().unwrap();
    assert_eq!(last.via, "sendMail-mime");
    assert!(
        last.mime == dry.stdout,
        "the MIME Graph decoded differs from --dry-run"
    );
}

#[test]
fn small_sends_go_as_mime_and_match_dry_run() {
    let (fake, sandbox) = logged_in(&[]);
    assert_mime_send_matches_dry_run(&fake, &sandbox, &[]);
    // A 2.5 MB message: the attachment grows by a third as base64.
    let file = sandbox.path().join("report.bin");
    std::fs::write(&file, pseudo_random(1_850_000)).unwrap();
    assert_mime_send_matches_dry_run(&fake, &sandbox, &["--attach", file.to_str().unwrap()]);
    let size = fake.delivered()[1].mime.len();
    assert!(
        (2_400_000..2_700_000).contains(&size),
        "the message is {size} bytes"
    );
    assert_eq!(fake.delivered().len(), 2);
    assert!(fake.drafts().is_empty());
    let (_, path, _) = &fake.graph_request_log()[0];
    assert!(path.ends_with("/me/sendMail"), "{path}");
}

// 4. Large send

#[test]
fn large_attachment_takes_draft_upload_session_and_resumes() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let data = pseudo_random(20 << 20);
    let file = sandbox.path().join("big.pdf");
    std::fs::write(&file, &data).unwrap();
    fake.fail_chunk_once_at(2);
    let out = send(&sandbox, &["--attach", file.to_str().unwrap(), "--debug"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].via, "draft");
    let attachment = &delivered[0].attachments[0];
    assert_eq!(attachment.name, "big.pdf");
    assert_eq!(attachment.via, "upload-session");
    assert!(attachment.bytes == data, "the attachment arrives intact");

    let chunks = fake.chunks();
    assert!(
        chunks.iter().all(|c| c.len <= 4 * 1024 * 1024),
        "every chunk is 4 MB or less"
    );
    assert!(
        chunks.iter().all(|c| !c.had_authorization),
        "no chunk carries Authorization"
    );
    assert_eq!(fake.upload_requests_with_authorization(), 0);
    let dropped = chunks
        .iter()
        .position(|c| c.status == 0)
        .expect("the injected failure happened");
    assert!(chunks[dropped].start > 0);
    assert!(
        chunks[dropped + 1..]
            .iter()
            .all(|c| c.start >= chunks[dropped].start),
        "resumed from where it failed, not restarted: {chunks:?}"
    );
    assert!(
        out.stderr.contains("upload session"),
        "--debug names the path taken: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("authtoken"),
        "upload URLs are never logged"
    );
    assert!(fake.drafts().is_empty());
}

// 5. Missing Mail.ReadWrite

#[test]
fn large_message_without_mail_readwrite_exits_77_with_relogin() {
    let (fake, sandbox) = logged_in(&[]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(6 << 20)).unwrap();
    let out = send(&sandbox, &["--attach", file.to_str().unwrap()]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(out.stderr.contains("Mail.ReadWrite"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "apimail auth login graph --account {USER} --client-id {MS_CLIENT_ID} --large-messages"
        )),
        "{}",
        out.stderr
    );
    assert!(fake.drafts().is_empty() && fake.delivered().is_empty());
}

// 6. App-only

fn app_only_env(fake: &FakeMicrosoft, sandbox: &Sandbox) -> std::process::Command {
    fake.add_mailbox("alerts@contoso.com");
    let mut command = sandbox.cmd();
    command
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", APP_ID)
        .env("APIMAIL_GRAPH_USER", "alerts@contoso.com");
    command
}

#[test]
fn app_only_with_a_secret_sends_as_the_user() {
    let fake = FakeMicrosoft::start();
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(app_only_env(&fake, &sandbox)
        .env("AZURE_CLIENT_SECRET", APP_SECRET)
        .args(send_args(&["--provider", "graph"])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, path, status) = fake.graph_request_log().into_iter().last().unwrap();
    assert_eq!(status, 202);
    assert!(
        path.ends_with("/users/alerts@contoso.com/sendMail")
            || path.ends_with("/users/alerts%40contoso.com/sendMail"),
        "{path}"
    );
    assert_eq!(fake.delivered()[0].mailbox, "alerts@contoso.com");
    let form = &fake.token_forms()[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
}

#[test]
fn app_only_with_a_certificate_sends_as_the_user() {
    let fake = FakeMicrosoft::start();
    fake.add_app(
        TENANT,
        APP_ID,
        None,
        Some(fake_microsoft::fixture_certificate_der()),
    );
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(app_only_env(&fake, &sandbox)
        .env(
            "AZURE_CLIENT_CERTIFICATE_PATH",
            fake_microsoft::fixture_certificate_pem_path(),
        )
        .args(send_args(&["--provider", "graph"])));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.delivered()[0].mailbox, "alerts@contoso.com");
    let form = &fake.token_forms()[0];
    assert_eq!(
        form["client_assertion_type"],
        fake_microsoft::CLIENT_ASSERTION_TYPE
    );
    assert!(!form.contains_key("client_secret"));
}

#[test]
fn app_only_account_in_the_config_file() {
    let fake = FakeMicrosoft::start();
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    fake.add_mailbox("alerts@contoso.com");
    let sandbox = Sandbox::microsoft(&fake);
    let secret = sandbox.path().join("graph-secret");
    std::fs::write(&secret, format!("{APP_SECRET}\n")).unwrap();
    std::fs::create_dir_all(sandbox.path().join("config")).unwrap();
    std::fs::write(
        sandbox.path().join("config/config.toml"),
        format!(
            "default_account = \"alerts\"\n\n[accounts.alerts]\nprovider = \"graph\"\napp_only = true\ntenant = \"{TENANT}\"\nclient_id = \"{APP_ID}\"\nuser = \"alerts@contoso.com\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.delivered()[0].mailbox, "alerts@contoso.com");
}

// 7. Errors

#[test]
fn access_denied_exits_77() {
    let (fake, sandbox) = logged_in(&[]);
    fake.inject(Fault::Error {
        status: 403,
        code: "ErrorAccessDenied".into(),
        message: "Access is denied. Check credentials and try again.".into(),
    });
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(
        out.stderr.contains("ErrorAccessDenied: Access is denied"),
        "raw Graph message shown: {}",
        out.stderr
    );
}

#[test]
fn mailbox_not_enabled_exits_69() {
    let (fake, sandbox) = logged_in(&[]);
    fake.set_mailbox_not_enabled(USER);
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(
        out.stderr.contains("MailboxNotEnabledForRESTAPI"),
        "{}",
        out.stderr
    );
}

#[test]
fn throttled_then_success_delivers_once() {
    let (fake, sandbox) = logged_in(&[]);
    fake.inject(Fault::Status429 {
        retry_after_secs: Some(1),
    });
    let started = Instant::now();
    let out = send(&sandbox, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(fake.delivered().len(), 1);
}

#[test]
fn endless_503_exits_75_within_the_bound() {
    let (fake, sandbox) = logged_in(&[]);
    fake.fail_forever(Fault::Status503);
    let started = Instant::now();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_ATTEMPTS", "3")
        .env("APIMAIL_RETRY_MAX_SECONDS", "6")
        .args(send_args(&[])));
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(fake.delivered().is_empty());
}

#[test]
fn at_most_four_requests_in_flight_per_mailbox() {
    let (fake, sandbox) = logged_in(&[]);
    fake.inject_n(Fault::Slow(Duration::from_millis(300)), 8);
    let children: Vec<_> = (0..8)
        .map(|_| {
            sandbox
                .cmd()
                .args(send_args(&[]))
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
    assert_eq!(fake.delivered().len(), 8);
    assert!(
        fake.max_concurrent_graph_requests() >= 2,
        "the sends did overlap"
    );
    assert!(
        fake.max_concurrent_graph_requests() <= 4,
        "{} requests ran at once across processes",
        fake.max_concurrent_graph_requests()
    );
}

// 8. No leaks

#[test]
fn no_secret_token_code_or_upload_url_in_any_output() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(
        &fake,
        &["--login-hint", USER, "--large-messages", "--debug"],
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    sandbox.expire_stored_token(USER);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(5 << 20)).unwrap();
    let large = send(&sandbox, &["--attach", file.to_str().unwrap(), "--debug"]);
    assert_eq!(large.code, 0, "{}", large.stderr);
    fake.revoke_refresh_tokens();
    sandbox.expire_stored_token(USER);
    let failed = send(&sandbox, &["--debug"]);
    assert_eq!(failed.code, 77, "{}", failed.stderr);

    let mut secrets: Vec<String> = Vec::new();
    for form in fake.token_forms() {
        for key in [
            "code",
            "code_verifier",
            "refresh_token",
            "client_secret",
            "client_assertion",
        ] {
            secrets.extend(form.get(key).cloned());
        }
    }
    secrets.extend(fake.delivered().iter().map(|d| d.access_token.clone()));
    for chunk in fake.chunks() {
        secrets.push(chunk.session.clone());
    }
    let token = sandbox.token_json(USER);
    secrets.extend(token["refresh_token"].as_str().map(str::to_owned));
    assert!(secrets.len() >= 5, "{secrets:?}");
    for out in [&login, &large, &failed] {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), out.stderr);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "leaked `{secret}` in:\n{text}"
            );
        }
        assert!(
            !text.contains("authtoken="),
            "an upload URL leaked:\n{text}"
        );
    }
    assert!(
        large.stderr.contains("POST "),
        "--debug logs requests: {}",
        large.stderr
    );
    let mode = std::fs::metadata(sandbox.token_file(USER))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn logout_deletes_graph_tokens() {
    let (_fake, sandbox) = logged_in(&[]);
    let out = run(sandbox.cmd().args(["auth", "logout", "--account", USER]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!sandbox.token_file(USER).exists());
    let status = run(sandbox.cmd().args(["auth", "status"]));
    assert!(String::from_utf8_lossy(&status.stdout).contains("provider:   graph"));
}

#[test]
fn confidential_client_secret_comes_from_the_environment() {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let web_app = "9f8e7d6c-0000-4000-8000-123456789abc";
    fake.add_confidential_client(web_app, APP_SECRET);
    fake.add_redirect_uri(web_app, "http://localhost/callback");
    let mut command = sandbox.cmd();
    command
        .env("APIMAIL_GRAPH_CLIENT_SECRET", APP_SECRET)
        .args([
            "auth",
            "login",
            "graph",
            "--no-browser",
            "--port",
            "0",
            "--timeout",
            "20",
        ])
        .args(["--client-id", web_app, "--login-hint", USER]);
    let out = apimail_tests::sandbox::play_browser(command, &fake.authorize_url("common"), |u| u);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.token_forms()[0]["client_secret"], APP_SECRET);
    assert!(!out.stderr.contains(APP_SECRET));
    sandbox.expire_stored_token(USER);
    let sent = send(&sandbox, &[]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        fake.token_forms()[1]["client_secret"],
        APP_SECRET,
        "the refresh authenticates too"
    );
}

// 9. Large messages: byte-exact files, faults without leftovers or waste

/// Files that are not UTF-8 text, and must arrive as they are.
fn awkward_files() -> Vec<(&'static str, Vec<u8>)> {
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain("Grüße, 日本\r\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    vec![
        (
            "latin1.txt",
            b"caf\xe9 cr\xe8me br\xfbl\xe9e\r\n".repeat(60),
        ),
        ("utf16.txt", utf16),
        // 日本語のテキスト in Shift_JIS (CP932).
        (
            "sjis.txt",
            b"\x93\xfa\x96\x7b\x8c\xea\x82\xcc\x83\x65\x83\x4c\x83\x58\x83\x67\r\n".to_vec(),
        ),
        ("data.csv", b"\xff\xfeid,name\r\n1,\xe9\r\n".to_vec()),
        ("nuls.txt", b"a\x00b\x00\x00c\r\nend\x00".to_vec()),
    ]
}

/// A part's body with only its transfer encoding undone.
fn part_bytes(message: &mail_parser::Message<'_>, part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use mail_parser::decoders::base64::base64_decode;
    use mail_parser::decoders::quoted_printable::quoted_printable_decode;
    let raw = &message.raw_message[part.offset_body as usize..part.offset_end as usize];
    match part.encoding {
        mail_parser::Encoding::Base64 => base64_decode(raw).unwrap(),
        mail_parser::Encoding::QuotedPrintable => quoted_printable_decode(raw).unwrap(),
        mail_parser::Encoding::None => raw.to_vec(),
    }
}

fn attach_args(sandbox: &Sandbox, files: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut args = Vec::new();
    for (name, bytes) in files {
        let path = sandbox.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        args.extend(["--attach".to_owned(), path.display().to_string()]);
    }
    args
}

#[test]
fn files_in_other_charsets_arrive_byte_exact_by_send_mail_and_by_draft() {
    use mail_parser::MimeHeaders as _;
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let files = awkward_files();
    let args = attach_args(&sandbox, &files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Small: one sendMail with the MIME.
    let out = send(&sandbox, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let delivered = fake.delivered();
    assert_eq!(delivered[0].via, "sendMail-mime");
    let message = mail_parser::MessageParser::default()
        .parse(&delivered[0].mime)
        .unwrap();
    for (name, bytes) in &files {
        let part = message
            .attachments()
            .find(|p| p.attachment_name() == Some(*name))
            .unwrap_or_else(|| panic!("{name} is in the MIME"));
        assert!(
            part_bytes(&message, part) == *bytes,
            "{name} arrives byte-exact by sendMail"
        );
    }

    // Large: the same files next to a big one take the draft route.
    let mut large = files.clone();
    large.push(("big.bin", pseudo_random(3_200_000)));
    let args = attach_args(&sandbox, &large);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = send(&sandbox, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let delivered = fake.delivered();
    assert_eq!(delivered[1].via, "draft");
    for (name, bytes) in &large {
        let attachment = delivered[1]
            .attachments
            .iter()
            .find(|a| a.name == *name)
            .unwrap_or_else(|| panic!("{name} was attached"));
        assert!(
            attachment.bytes == *bytes,
            "{name} arrives byte-exact by draft"
        );
        assert!(
            !attachment.content_type.contains("utf-8"),
            "{name} keeps its own type: {}",
            attachment.content_type
        );
    }
    assert!(fake.drafts().is_empty());
}

/// The `hint:` line of a failure report.
fn hint_line(out: &Run) -> &str {
    out.stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_default()
}

fn count_requests(fake: &FakeMicrosoft, method: &str, path_end: &str) -> usize {
    fake.graph_request_log()
        .iter()
        .filter(|(m, path, _)| m == method && path.ends_with(path_end))
        .count()
}

#[test]
fn lost_chunk_answers_go_on_from_the_next_expected_range() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let data = pseudo_random(8 << 20);
    let file = sandbox.path().join("big.pdf");
    std::fs::write(&file, &data).unwrap();
    // The second chunk arrives, its answer does not.
    fake.lose_chunk_answer_at(1);
    let out = send(&sandbox, &["--attach", file.to_str().unwrap(), "--debug"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(fake.delivered()[0].attachments[0].bytes == data);
    let chunks = fake.chunks();
    assert!(
        chunks.iter().filter(|c| c.status == 416).count() <= 1,
        "{chunks:?}"
    );
    let uploaded: usize = chunks.iter().map(|c| c.len).sum();
    assert!(
        uploaded < data.len() + data.len() / 2,
        "{uploaded} bytes sent"
    );

    // The last chunk's answer lost: the session is gone, the attachment is
    // on the draft, nothing is sent twice.
    let before = fake.chunks().len();
    fake.lose_chunk_answer_at(before + 2);
    let out = send(&sandbox, &["--attach", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[1].attachments.len(), 1, "one attachment, not two");
    assert!(delivered[1].attachments[0].bytes == data);
    assert_eq!(fake.chunks().len(), before + 3, "no chunk was sent again");
    assert!(fake.drafts().is_empty());
}

#[test]
fn a_second_token_expiry_in_one_send_is_refreshed_too() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(4 << 20)).unwrap();
    let expired = || Fault::Error {
        status: 401,
        code: "InvalidAuthenticationToken".into(),
        message: "Access token has expired or is not yet valid.".into(),
    };
    // draft, createUploadSession (401, then again), send (401, then again).
    for fault in [
        Fault::Slow(Duration::ZERO),
        expired(),
        Fault::Slow(Duration::ZERO),
        expired(),
    ] {
        fake.inject(fault);
    }
    let out = send(&sandbox, &["--attach", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.token_requests("refresh_token"), 2);
    assert_eq!(fake.delivered().len(), 1);
    assert!(fake.drafts().is_empty());
}

fn queued_entry(sandbox: &Sandbox) -> serde_json::Value {
    sandbox
        .outbox_entries("queue")
        .into_iter()
        .next()
        .expect("an entry is queued")
}

#[test]
fn a_failed_send_keeps_the_complete_draft_and_only_sends_it_again() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let data = pseudo_random(5 << 20);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    // draft and createUploadSession pass; every send is 503 for now.
    fake.inject_n(Fault::Slow(Duration::ZERO), 2);
    fake.fail_forever(Fault::Status503);
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_ATTEMPTS", "3")
        .env("APIMAIL_RETRY_MAX_SECONDS", "10")
        .args(send_args(&["--attach", file.to_str().unwrap()])));
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(count_requests(&fake, "POST", "/send"), 3);
    assert_eq!(
        count_requests(&fake, "POST", "/me/messages"),
        1,
        "one draft"
    );
    assert_eq!(fake.drafts().len(), 1, "kept for the next attempt");
    let entry = queued_entry(&sandbox);
    assert_eq!(
        entry["notes"]["graph.draft_id"],
        fake.drafts()[0].id.as_str()
    );
    assert_eq!(entry["notes"]["graph.draft_complete"], "true");

    // The next attempt, in another process, only sends.
    fake.clear_faults();
    let uploaded = fake.chunks().iter().map(|c| c.len).sum::<usize>();
    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert_eq!(fake.delivered().len(), 1);
    assert!(fake.delivered()[0].attachments[0].bytes == data);
    assert_eq!(fake.chunks().iter().map(|c| c.len).sum::<usize>(), uploaded);
    assert!(
        (uploaded as f64) < data.len() as f64 * 1.1,
        "{uploaded} bytes uploaded for {} bytes",
        data.len()
    );
    assert_eq!(count_requests(&fake, "POST", "/me/messages"), 1);
    assert!(fake.drafts().is_empty());
}

#[test]
fn a_send_whose_answer_was_lost_is_found_in_sent_items() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(4 << 20)).unwrap();
    fake.inject_n(Fault::Slow(Duration::ZERO), 2);
    fake.inject(Fault::LoseAnswer);
    let out = send(&sandbox, &["--attach", file.to_str().unwrap(), "--debug"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.delivered().len(), 1, "sent once, not twice");
    assert_eq!(count_requests(&fake, "POST", "/send"), 1);
    assert!(
        fake.graph_request_log().iter().any(|(m, p, s)| m == "GET"
            && p.contains("/mailFolders/sentitems/messages")
            && *s == 200),
        "{:?}",
        fake.graph_request_log()
    );
    assert!(fake.drafts().is_empty());
    assert_eq!(fake.sent_items(USER).len(), 1);
}

#[test]
fn a_draft_whose_deletion_failed_goes_with_queue_drop() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(4 << 20)).unwrap();
    // The draft is created; the upload session is refused for good; the
    // clean-up DELETE fails.
    fake.inject(Fault::Slow(Duration::ZERO));
    fake.inject(Fault::Error {
        status: 403,
        code: "ErrorAccessDenied".into(),
        message: "Access is denied. Check credentials and try again.".into(),
    });
    fake.inject(Fault::Status503);
    let out = send(&sandbox, &["--attach", file.to_str().unwrap()]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert_eq!(fake.drafts().len(), 1);
    let entry = queued_entry(&sandbox);
    let id = entry["id"].as_str().unwrap().to_owned();
    assert!(entry["notes"]["graph.draft_id"].is_string(), "{entry}");

    let dropped = run(sandbox.cmd().args(["queue", "drop", &id]));
    assert_eq!(dropped.code, 0, "{}", dropped.stderr);
    assert!(fake.drafts().is_empty(), "queue drop deleted the draft");
}

#[test]
fn an_incomplete_draft_is_deleted_by_the_next_attempt() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let data = pseudo_random(4 << 20);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    // createUploadSession fails (503) and the DELETE too: the draft stays,
    // recorded.
    fake.inject(Fault::Slow(Duration::ZERO));
    fake.inject_n(Fault::Status503, 2);
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_ATTEMPTS", "1")
        .args(send_args(&["--attach", file.to_str().unwrap()])));
    assert_eq!(out.code, 75, "{}", out.stderr);
    let left = fake.drafts();
    assert_eq!(left.len(), 1);
    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert_eq!(fake.delivered().len(), 1);
    assert!(fake.delivered()[0].attachments[0].bytes == data);
    assert!(fake.drafts().is_empty(), "the old draft was deleted first");
    assert_eq!(fake.deleted_drafts(), 1);
}

fn interrupt_during_upload(signal: &str) {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(4 << 20)).unwrap();
    // The draft goes through; createUploadSession takes its time.
    fake.inject(Fault::Slow(Duration::ZERO));
    fake.inject(Fault::Slow(Duration::from_secs(4)));
    let child = sandbox
        .cmd()
        .args(send_args(&["--attach", file.to_str().unwrap()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while fake.drafts().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no draft");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let signalled = Instant::now();
    let out: Run = child.wait_with_output().unwrap().into();
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exits within the grace period"
    );
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted by a signal"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(signal), "{}", out.stderr);
    assert!(fake.drafts().is_empty(), "the half-built draft was deleted");
    assert!(fake.delivered().is_empty());
    assert!(
        queued_entry(&sandbox)["notes"].is_null(),
        "nothing left to clean up"
    );
}

#[test]
fn sigint_during_an_upload_deletes_the_draft() {
    interrupt_during_upload("INT");
}

#[test]
fn sigterm_during_an_upload_deletes_the_draft() {
    interrupt_during_upload("TERM");
}

// 10. Refusals no login can fix

#[test]
fn send_as_denied_names_the_fix_and_fails_the_message() {
    let (fake, sandbox) = logged_in(&[]);
    fake.inject(Fault::Error {
        status: 403,
        code: "ErrorSendAsDenied".into(),
        message: "The user account which was used to submit this request does not have the \
                  right to send mail on behalf of the specified sending account."
            .into(),
    });
    let out = send(&sandbox, &["--from", "boss@contoso.com"]);
    assert_eq!(out.code, 69, "{}", out.stderr);
    let hint = hint_line(&out);
    assert!(
        hint.contains("Send As") && hint.contains("own address"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("auth login"), "{}", out.stderr);
    assert!(!out.stderr.contains("held"), "{}", out.stderr);
    assert!(fake.drafts().is_empty());
    assert_eq!(sandbox.outbox_entries("failed").len(), 1);
}

#[test]
fn app_only_without_mail_read_write_names_the_application_permission() {
    let fake = FakeMicrosoft::start();
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    let sandbox = Sandbox::microsoft(&fake);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(4 << 20)).unwrap();
    let out = run(app_only_env(&fake, &sandbox)
        .env("AZURE_CLIENT_SECRET", APP_SECRET)
        .args(send_args(&[
            "--provider",
            "graph",
            "--attach",
            file.to_str().unwrap(),
        ])));
    assert_eq!(out.code, 78, "{}", out.stderr);
    let hint = hint_line(&out);
    assert!(
        hint.contains("Mail.ReadWrite application permission with admin consent"),
        "{}",
        out.stderr
    );
    assert!(!hint.contains('`') && !hint.contains("Mail.Send"), "{hint}");
    assert!(!out.stderr.contains("held"), "{}", out.stderr);
    assert_eq!(
        queued_entry(&sandbox)["state"],
        "queued",
        "retried on schedule, not held"
    );
    assert!(fake.drafts().is_empty());
}

// 11. Smaller points

#[test]
fn upload_sessions_start_at_3_mib_and_fall_back_when_graph_says_too_small() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let under = sandbox.path().join("under.bin");
    std::fs::write(&under, pseudo_random(3_100_000)).unwrap();
    let exactly = sandbox.path().join("exactly.bin");
    std::fs::write(&exactly, pseudo_random(3_145_728)).unwrap();
    let out = send(
        &sandbox,
        &[
            "--attach",
            under.to_str().unwrap(),
            "--attach",
            exactly.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let via: Vec<_> = fake.delivered()[0]
        .attachments
        .iter()
        .map(|a| (a.name.clone(), a.via.clone()))
        .collect();
    assert_eq!(
        via,
        [
            ("under.bin".to_owned(), "direct".to_owned()),
            ("exactly.bin".to_owned(), "upload-session".to_owned())
        ]
    );

    // A Graph that wants a bigger minimum gets a plain POST instead.
    fake.inject(Fault::Slow(Duration::ZERO));
    fake.inject(Fault::Error {
        status: 400,
        code: "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize".into(),
        message: "Attachment size must be at least 4 MB for an upload session.".into(),
    });
    let before = fake.graph_request_log().len();
    let out = send(&sandbox, &["--attach", exactly.to_str().unwrap()]);
    let log: Vec<_> = fake.graph_request_log()[before..]
        .iter()
        .map(|(m, p, s)| format!("{m} {} {s}", p.rsplit("/v1.0/").next().unwrap()))
        .collect();
    assert!(log[1].contains("createUploadSession 400"), "{log:?}");
    assert!(
        log[2].starts_with("POST") && log[2].ends_with("/attachments 413"),
        "{log:?}"
    );
    // 3 MiB as base64 JSON is over the fake's 4 MiB request limit too: the
    // message is refused, and the draft is gone.
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(fake.drafts().is_empty());
}

#[test]
fn a_retry_after_beyond_the_budget_schedules_the_queued_retry() {
    let (fake, sandbox) = logged_in(&[]);
    fake.fail_forever(Fault::Status429 {
        retry_after_secs: Some(300),
    });
    let started = Instant::now();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_MAX_SECONDS", "60")
        .args(send_args(&[])));
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no 300 s wait in-process"
    );
    let next = queued_entry(&sandbox)["next_attempt_at"].as_i64().unwrap();
    assert!(
        next >= before + 300,
        "due at {next}, asked for {}",
        before + 300
    );
}

#[test]
fn a_message_over_the_mailbox_limit_names_max_message_mb() {
    let (fake, sandbox) = logged_in(&["--large-messages"]);
    let file = sandbox.path().join("big.bin");
    std::fs::write(&file, pseudo_random(2 << 20)).unwrap();
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_GRAPH_MAX_MESSAGE_MB", "1")
        .args(send_args(&["--attach", file.to_str().unwrap()])));
    assert_eq!(out.code, 65, "{}", out.stderr);
    let hint = hint_line(&out);
    assert!(hint.contains("max_message_mb"), "{}", out.stderr);
    assert_eq!(fake.graph_requests(), 0);
}

#[test]
fn large_messages_login_fails_without_mail_read_write() {
    let fake = FakeMicrosoft::start();
    fake.withhold_consent("Mail.ReadWrite");
    let sandbox = Sandbox::microsoft(&fake);
    let out = sandbox.login_graph(&fake, &["--login-hint", USER, "--large-messages"]);
    assert_eq!(out.code, 77, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not grant Mail.ReadWrite"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: an administrator must consent"),
        "{}",
        out.stderr
    );
    assert!(
        !sandbox.token_file(USER).exists(),
        "no half-working login is saved"
    );
}

#[test]
fn me_and_the_same_users_address_share_four_requests() {
    let (fake, sandbox) = logged_in(&[]);
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    fake.inject_n(Fault::Slow(Duration::from_millis(400)), 12);
    let children: Vec<_> = (0..6)
        .map(|n| {
            let mut command = if n % 2 == 0 {
                sandbox.cmd()
            } else {
                let mut command = sandbox.cmd();
                command
                    .env("AZURE_TENANT_ID", TENANT)
                    .env("AZURE_CLIENT_ID", APP_ID)
                    .env("AZURE_CLIENT_SECRET", APP_SECRET)
                    .env("APIMAIL_GRAPH_USER", USER);
                command
            };
            let provider: &[&str] = if n % 2 == 0 {
                &[]
            } else {
                &["--provider", "graph"]
            };
            command
                .args(send_args(provider))
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
    let log = fake.graph_request_log();
    assert!(log.iter().any(|(_, p, _)| p.contains("/me/")));
    assert!(log.iter().any(|(_, p, _)| p.contains("/users/")));
    assert!(
        fake.max_concurrent_graph_requests() <= 4,
        "{} requests ran at once for one mailbox",
        fake.max_concurrent_graph_requests()
    );
}

#[test]
fn environment_credentials_are_not_held_for_a_login_that_cannot_happen() {
    let fake = FakeMicrosoft::start();
    fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
    let sandbox = Sandbox::microsoft(&fake);
    let out = run(app_only_env(&fake, &sandbox)
        .env("AZURE_CLIENT_SECRET", "not-the-secret")
        .args(send_args(&["--provider", "graph"])));
    assert_eq!(out.code, 77, "{}", out.stderr);
    let hint = hint_line(&out);
    assert!(hint.contains("AZURE_CLIENT_SECRET"), "{}", out.stderr);
    assert!(!hint.contains("run `"), "not a command: {hint}");
    assert!(!out.stderr.contains("held"), "{}", out.stderr);
    assert_eq!(
        queued_entry(&sandbox)["state"],
        "queued",
        "retried on schedule"
    );
    assert!(fake.delivered().is_empty() && fake.drafts().is_empty());
}
