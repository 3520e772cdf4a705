//! The delivery engine end to end: who a queued message is sent as,
//! outcomes that cannot be known, and failures that need the user.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::fake_microsoft::{FakeMicrosoft, Fault as GraphFault};
use apimail_tests::sandbox::{CLIENT_ID, CLIENT_SECRET, Sandbox};
use apimail_tests::{Run, http, run, run_with_stdin};

const ACCOUNT: &str = "user@example.com";
const GRAPH_USER: &str = "user@contoso.com";

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn stdout(run: &Run) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// The Message-ID header of a raw message ("" when it has none).
fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id: "))
        .map(|l| l["Message-ID: ".len()..].trim().to_owned())
        .unwrap_or_default()
}

fn message_ids(fake: &FakeGoogle) -> Vec<String> {
    fake.messages().iter().map(|m| message_id(&m.raw)).collect()
}

/// A refresh token of [`ACCOUNT`] for the environment.
fn refresh_token(fake: &FakeGoogle) -> String {
    let elsewhere = Sandbox::new(fake);
    elsewhere.login(fake, &[]);
    elsewhere.token_json(ACCOUNT)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn with_env_credentials(command: &mut Command, client_id: &str, refresh: &str) {
    command
        .env("APIMAIL_GOOGLE_CLIENT_ID", client_id)
        .env("APIMAIL_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
        .env("APIMAIL_GOOGLE_REFRESH_TOKEN", refresh);
}

// Identity pinning

#[test]
fn a_message_queued_with_environment_credentials_goes_out_only_with_them() {
    let fake = FakeGoogle::start();
    let refresh = refresh_token(&fake);
    let sandbox = Sandbox::new(&fake);

    let mut queue = sandbox.cmd();
    with_env_credentials(&mut queue, CLIENT_ID, &refresh);
    let queued = run(queue.args([
        "send",
        "--provider",
        "gmail",
        "--from",
        ACCOUNT,
        "--to",
        "rcpt@example.net",
        "--subject",
        "pinned",
        "--text",
        "hi",
        "--queue",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let entry = &sandbox.outbox_entries("queue")[0];
    let id = entry["id"].as_str().unwrap().to_owned();
    assert_eq!(entry["identity"]["kind"], "environment", "{entry}");
    assert_eq!(entry["identity"]["credential"], "refresh_token");
    assert!(entry["identity"].to_string().contains(CLIENT_ID), "{entry}");
    assert!(
        !entry.to_string().contains(&refresh),
        "no secret in the outbox"
    );

    // Another sender is configured now (a logged-in default account), and
    // the variables are gone: the message must not go out as the account.
    sandbox.login(&fake, &[]);
    let flush = run(sandbox.cmd().args(["queue", "flush"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert!(fake.messages().is_empty(), "sent as someone else");
    let list = stdout(&run(sandbox.cmd().args(["queue", "list"])));
    assert!(list.contains("held"), "{list}");
    assert!(list.contains("no longer in the environment"), "{list}");

    // Other credentials in the environment: still not sent.
    fake.add_client("other-client.apps.googleusercontent.com", CLIENT_SECRET);
    let mut other = sandbox.cmd();
    with_env_credentials(
        &mut other,
        "other-client.apps.googleusercontent.com",
        &refresh,
    );
    let retried = run(other.args(["queue", "retry", &id]));
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert!(fake.messages().is_empty(), "sent with other credentials");
    let held = &sandbox.outbox_entries("queue")[0];
    assert!(
        held["last_error"].as_str().unwrap().contains("now holds"),
        "{held}"
    );

    // The same credentials again: it goes out.
    let mut same = sandbox.cmd();
    with_env_credentials(&mut same, CLIENT_ID, &refresh);
    let retried = run(same.args(["queue", "retry", &id]));
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert_eq!(fake.messages().len(), 1, "{}", retried.stderr);
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn a_message_held_for_its_environment_credentials_goes_out_once_they_are_back() {
    let fake = FakeGoogle::start();
    let refresh = refresh_token(&fake);
    let sandbox = Sandbox::new(&fake);
    let mut queue = sandbox.cmd();
    with_env_credentials(&mut queue, CLIENT_ID, &refresh);
    let queued = run(queue.args([
        "send",
        "--provider",
        "gmail",
        "--from",
        ACCOUNT,
        "--to",
        "rcpt@example.net",
        "--subject",
        "cron",
        "--text",
        "hi",
        "--queue",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);

    // A cron job whose environment lacked the variables, twice.
    for _ in 0..2 {
        let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
        assert_eq!(flush.code, 0, "{}", flush.stderr);
        assert!(flush.stderr.contains("1 held"), "{}", flush.stderr);
    }
    assert!(fake.messages().is_empty());
    let list = stdout(&run(sandbox.cmd().args(["queue", "list"])));
    assert!(list.contains("held for its sender"), "{list}");
    let json = stdout(&run(sandbox.cmd().args(["queue", "list", "--json"])));
    let listed: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(listed["state"], "held", "{json}");
    assert_eq!(listed["waits_for"], "identity", "{json}");
    let held = stdout(&run(sandbox
        .cmd()
        .args(["log", "--json", "--status", "held"])));
    assert_eq!(
        held.lines().count(),
        1,
        "held once, not once per flush: {held}"
    );

    // The variables are back: the next flush sends it, no person needed.
    let mut back = sandbox.cmd();
    with_env_credentials(&mut back, CLIENT_ID, &refresh);
    let flush = run(back.args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert!(flush.stderr.contains("1 sent"), "{}", flush.stderr);
    assert_eq!(fake.messages().len(), 1);
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn queue_list_says_what_a_login_hold_and_an_uncertain_hold_wait_for() {
    let (fake, sandbox) = logged_in();
    // The answer lost after acceptance, with `hold`: only a person.
    fake.inject(Fault::AcceptThen504);
    let uncertain = run_with_stdin(
        sandbox.cmd().env("APIMAIL_WHEN_UNKNOWN", "hold").args([
            "sendmail",
            "-i",
            "rcpt@example.net",
        ]),
        b"Subject: maybe\n\nbody\n",
    );
    assert_eq!(uncertain.code, 0, "{}", uncertain.stderr);
    // A refused authorization: a login.
    fake.revoke_refresh_tokens();
    fake.expire_access_tokens();
    let refused = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "refused",
        "--text",
        "hi",
    ]));
    assert_eq!(refused.code, 77, "{}", refused.stderr);

    let json = stdout(&run(sandbox.cmd().args(["queue", "list", "--json"])));
    let mut waits: Vec<(String, String)> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["state"].as_str().unwrap().to_owned(),
                v["waits_for"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    waits.sort();
    let held = |kind: &str| ("held".to_owned(), kind.to_owned());
    assert_eq!(waits, [held("login"), held("uncertain")], "{json}");
    let list = stdout(&run(sandbox.cmd().args(["queue", "list"])));
    assert!(list.contains("held for a login"), "{list}");
    assert!(list.contains("only a person releases it"), "{list}");

    // The login releases its hold, never the uncertain one.
    sandbox.login(&fake, &[]);
    assert_eq!(
        fake.messages().len(),
        2,
        "the uncertain one and the refused one"
    );
    let json = stdout(&run(sandbox.cmd().args(["queue", "list", "--json"])));
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.contains(r#""waits_for":"uncertain""#), "{json}");
}

// Outcomes that cannot be known
// Outcomes that cannot be known

#[test]
fn a_lost_answer_is_resent_once_with_the_same_message_id_and_said_so() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::AcceptThenDrop);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "lost",
        "--text",
        "hi",
        "--message-id",
        "<lost.1@example.com>",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        message_ids(&fake),
        ["<lost.1@example.com>", "<lost.1@example.com>"],
        "at least once, with the same Message-ID"
    );
    assert!(
        sent.stderr.contains("resending") && sent.stderr.contains("<lost.1@example.com>"),
        "{}",
        sent.stderr
    );
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn a_resend_after_a_lost_answer_is_journaled_as_uncertain_then_as_a_possible_duplicate() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::AcceptThenDrop);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "twice",
        "--text",
        "hi",
        "--message-id",
        "<twice.1@example.com>",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(message_ids(&fake).len(), 2, "resent once");

    let log = stdout(&run(sandbox.cmd().args(["log", "--json"])));
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary: Vec<(&str, u64, bool)> = records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["attempts"].as_u64().unwrap(),
                r["possible_duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("uncertain", 1, false), ("sent", 2, true)],
        "{log}"
    );
    assert_eq!(records[0]["queue_id"], records[1]["queue_id"]);
    assert!(!records[0]["error"].is_null(), "{log}");

    let uncertain = stdout(&run(sandbox.cmd().args([
        "log",
        "--status",
        "uncertain",
        "--json",
    ])));
    assert_eq!(uncertain.lines().count(), 1, "{uncertain}");
    let csv = stdout(&run(sandbox.cmd().args(["log", "--csv"])));
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert!(
        rows[0].contains(",attempts,possible_duplicate,outcome,"),
        "{csv}"
    );
    assert!(rows[1].contains(",1,false,uncertain,"), "{csv}");
    assert!(rows[2].contains(",2,true,sent,"), "{csv}");
    let lines = stdout(&run(sandbox.cmd().arg("log")));
    assert!(lines.contains("possible duplicate"), "{lines}");
}

#[test]
fn with_the_opt_in_sent_check_a_lost_answer_is_verified_and_not_resent() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let login = sandbox.login(&fake, &["--verify-sent"]);
    assert!(
        fake.authorize_requests()[0]["scope"].contains("gmail.metadata"),
        "{}",
        login.stderr
    );
    fake.inject(Fault::AcceptThenDrop);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "checked",
        "--text",
        "hi",
        "--message-id",
        "<checked.1@example.com>",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        message_ids(&fake),
        ["<checked.1@example.com>"],
        "exactly one copy"
    );
    assert!(
        stdout(&sent).contains("earlier attempt had gone through"),
        "{}",
        stdout(&sent)
    );
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn without_the_sent_check_gmail_cannot_look_and_the_fake_refuses_it_too() {
    let (fake, sandbox) = logged_in();
    // The default login is gmail.send only: reading Sent is refused.
    let token = sandbox.token_json(ACCOUNT)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "{}gmail/v1/users/me/messages?labelIds=SENT",
        fake.gmail_url()
    );
    let bearer = format!("Bearer {token}");
    let answer = http::request("GET", &url, &[("Authorization", &bearer)], b"").unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body_text());
}

/// A Graph account (`extra`: login flags) and its sandbox.
fn graph_logged_in(extra: &[&str]) -> (FakeMicrosoft, Sandbox) {
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let mut args = vec!["--login-hint", GRAPH_USER];
    args.extend_from_slice(extra);
    let out = sandbox.login_graph(&fake, &args);
    assert_eq!(out.code, 0, "login failed: {}", out.stderr);
    (fake, sandbox)
}

fn graph_message_ids(fake: &FakeMicrosoft) -> Vec<String> {
    fake.delivered()
        .iter()
        .map(|m| message_id(&m.mime))
        .collect()
}

#[test]
fn graph_with_mail_read_write_finds_a_lost_send_mail_in_sent_items() {
    let (fake, sandbox) = graph_logged_in(&["--large-messages"]);
    fake.inject(GraphFault::LoseAnswer);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "lost",
        "--text",
        "hi",
        "--message-id",
        "<graph-lost.1@example.com>",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        graph_message_ids(&fake),
        ["<graph-lost.1@example.com>"],
        "exactly one copy"
    );
    let log = stdout(&run(sandbox.cmd().args(["log", "--json"])));
    assert!(log.contains("\"outcome\":\"verified_sent\""), "{log}");
}

#[test]
fn graph_without_a_read_permission_resends_with_the_same_message_id_and_logs_it() {
    let (fake, sandbox) = graph_logged_in(&[]);
    fake.inject(GraphFault::LoseAnswer);
    let sent = run(sandbox.cmd().args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "lost",
        "--text",
        "hi",
        "--message-id",
        "<graph-lost.2@example.com>",
    ]));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(
        graph_message_ids(&fake),
        ["<graph-lost.2@example.com>", "<graph-lost.2@example.com>"]
    );
    assert!(sent.stderr.contains("resending"), "{}", sent.stderr);

    // With `hold`, the uncertain message waits, visible in the queue and log.
    fake.inject(GraphFault::LoseAnswer);
    let held = run(sandbox.cmd().env("APIMAIL_WHEN_UNKNOWN", "hold").args([
        "send",
        "--to",
        "rcpt@example.net",
        "--subject",
        "lost",
        "--text",
        "hi",
        "--message-id",
        "<graph-lost.3@example.com>",
    ]));
    assert_eq!(held.code, 75, "{}", held.stderr);
    assert!(held.stderr.contains("queue retry"), "{}", held.stderr);
    let list = stdout(&run(sandbox.cmd().args(["queue", "list"])));
    assert!(list.contains("uncertain"), "{list}");
    let log = stdout(&run(sandbox.cmd().args([
        "log",
        "--json",
        "--status",
        "uncertain",
    ])));
    assert!(log.contains("<graph-lost.3@example.com>"), "{log}");
}

#[test]
fn with_when_unknown_hold_a_504_after_acceptance_is_held_as_uncertain() {
    let (fake, sandbox) = logged_in();
    fake.inject(Fault::AcceptThen504);
    let accepted = run_with_stdin(
        sandbox.cmd().env("APIMAIL_WHEN_UNKNOWN", "hold").args([
            "sendmail",
            "-i",
            "rcpt@example.net",
        ]),
        b"Message-ID: <gw.1@example.com>\nSubject: gateway\n\nbody\n",
    );
    assert_eq!(
        accepted.code, 0,
        "sendmail accepted it: {}",
        accepted.stderr
    );
    assert!(accepted.stderr.contains("held"), "{}", accepted.stderr);
    assert_eq!(message_ids(&fake), ["<gw.1@example.com>"]);

    let list = stdout(&run(sandbox.cmd().args(["queue", "list"])));
    assert!(list.contains("uncertain"), "{list}");
    let entry = &sandbox.outbox_entries("queue")[0];
    assert_eq!(entry["outcome_unknown"], true);
    assert_eq!(entry["state"], "held");

    // Neither a flush nor a login sends it again on its own.
    let flush = run(sandbox
        .cmd()
        .env("APIMAIL_WHEN_UNKNOWN", "hold")
        .args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    sandbox.login(&fake, &[]);
    assert_eq!(fake.messages().len(), 1);

    // The user decides: resend, with the same Message-ID.
    let id = entry["id"].as_str().unwrap();
    let retry = run(sandbox.cmd().args(["queue", "retry", id]));
    assert_eq!(retry.code, 0, "{}", retry.stderr);
    assert_eq!(
        message_ids(&fake),
        ["<gw.1@example.com>", "<gw.1@example.com>"]
    );
    assert!(sandbox.outbox_entries("queue").is_empty());
}

#[test]
fn kill_9_mid_send_loses_nothing_and_every_resend_keeps_its_message_id() {
    let (fake, sandbox) = logged_in();
    // The fake stores each message, then takes a while to answer: kills
    // land before, during and after acceptance.
    fake.fail_forever(Fault::Slow(Duration::from_millis(200)));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut exited_ok = Vec::new();
    for i in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = sandbox
            .cmd()
            .args(["sendmail", "-i", "a@example.net"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let message = format!("Message-ID: <k9-{i}@example.com>\nSubject: {i}\n\nbody {i}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(seed % 500));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            exited_ok.push(format!("<k9-{i}@example.com>"));
        }
    }
    let queued: Vec<String> = sandbox
        .outbox_entries("queue")
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    fake.clear_faults();
    let flush = run(sandbox.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);

    let delivered = message_ids(&fake);
    // Every resend follows an attempt cut short, and the journal says so.
    let log = stdout(&run(sandbox.cmd().args([
        "log",
        "--json",
        "--status",
        "uncertain",
    ])));
    let uncertain: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|record| record["message_id"].as_str().unwrap().to_owned())
        .collect();
    for id in queued.iter().chain(&exited_ok) {
        assert!(
            delivered.contains(id),
            "{id} was accepted but never delivered"
        );
    }
    for id in &delivered {
        assert!(id.starts_with("<k9-"), "a copy with a new Message-ID: {id}");
        let copies = delivered.iter().filter(|d| *d == id).count();
        assert!(
            copies == 1 || uncertain.contains(id),
            "{id} went out {copies} times with no uncertain record in the journal"
        );
    }
    assert!(
        sandbox.outbox_entries("queue").is_empty(),
        "nothing left behind"
    );
}

// Failures that need the user

#[test]
fn a_corrupt_token_file_holds_the_message_and_spares_the_other_accounts() {
    let (fake, sandbox) = logged_in();
    sandbox.login(&fake, &["--account", "second"]);
    std::fs::write(sandbox.token_file("second"), b"{ not json").unwrap();

    let status = run(sandbox.cmd().args(["auth", "status"]));
    let shown = stdout(&status) + &status.stderr;
    assert!(
        shown.contains(&format!("{ACCOUNT}: gmail")) || shown.contains("refresh token stored"),
        "the healthy account is still shown: {shown}"
    );

    let accepted = run_with_stdin(
        sandbox
            .cmd()
            .env("APIMAIL_ACCOUNT", "second")
            .args(["sendmail", "-i", "rcpt@example.net"]),
        b"Subject: corrupt\n\nbody\n",
    );
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert!(accepted.stderr.contains("held"), "{}", accepted.stderr);
    let entry = &sandbox.outbox_entries("queue")[0];
    assert_eq!(entry["state"], "held", "{entry}");
    assert!(fake.messages().is_empty());
}

#[test]
fn queue_ids_that_are_wrong_or_unknown_get_their_own_errors() {
    let (_fake, sandbox) = logged_in();
    let invalid = run(sandbox.cmd().args(["queue", "drop", "nonsense"]));
    assert_eq!(invalid.code, 64, "{}", invalid.stderr);
    assert!(
        invalid.stderr.contains("is not an outbox entry id"),
        "{}",
        invalid.stderr
    );
    let unknown = run(sandbox
        .cmd()
        .args(["queue", "retry", "20261121T101500-3f9a0c1b2d4e"]));
    assert_eq!(unknown.code, 66, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("there is no message"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn queue_list_shows_a_page_and_says_how_to_see_the_next() {
    let (_fake, sandbox) = logged_in();
    for n in 0..3 {
        let queued = run(sandbox.cmd().args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            &format!("page {n}"),
            "--text",
            "hi",
            "--queue",
        ]));
        assert_eq!(queued.code, 0, "{}", queued.stderr);
    }
    let entries = |list: &str| -> Vec<String> {
        list.lines()
            .filter(|l| l.contains(" bytes  from "))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    let first = run(sandbox.cmd().args(["queue", "list", "--limit", "2"]));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let page = entries(&stdout(&first));
    assert_eq!(page.len(), 2, "{}", stdout(&first));
    assert!(first.stderr.contains("1–2 of 3 shown"), "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("`apimail queue list --offset 2` shows the next 1"),
        "{}",
        first.stderr
    );
    let next = run(sandbox.cmd().args(["queue", "list", "--offset", "2"]));
    assert_eq!(next.code, 0, "{}", next.stderr);
    let rest = entries(&stdout(&next));
    assert_eq!(rest.len(), 1, "{}", stdout(&next));
    assert!(page.iter().all(|id| *id < rest[0]), "oldest first");
    assert!(!next.stderr.contains("shown"), "{}", next.stderr);
    let all = entries(&stdout(&run(sandbox.cmd().args(["queue", "list"]))));
    assert_eq!(all, [page, rest].concat());
}

/// A data directory on a tiny tmpfs: a full disk is temporary (75), and
/// nothing half-written stays behind.
#[test]
#[allow(clippy::print_stderr, reason = "says why the test did nothing")]
fn a_full_disk_is_temporary_and_leaves_nothing_behind() {
    let (_fake, sandbox) = logged_in();
    let mount = sandbox.path().join("full");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: this machine cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    // The tokens stay where they are; only the outbox fills the disk.
    let data = sandbox.path().join("data");
    std::fs::create_dir_all(mount.join("outbox")).unwrap();
    let outbox = data.join("outbox");
    let _ = std::fs::remove_dir_all(&outbox);
    std::os::unix::fs::symlink(mount.join("outbox"), &outbox).unwrap();

    let attachment = sandbox.path().join("big.bin");
    std::fs::write(&attachment, apimail_tests::pseudo_random(256 * 1024)).unwrap();
    let sent = run(sandbox
        .cmd()
        .args([
            "send",
            "--to",
            "rcpt@example.net",
            "--subject",
            "big",
            "--text",
            "x",
            "--attach",
        ])
        .arg(&attachment));
    assert_eq!(sent.code, 75, "{}", sent.stderr);
    assert!(sent.stderr.contains("full"), "{}", sent.stderr);
    assert!(sent.stderr.contains("hint:"), "{}", sent.stderr);
    let left: u64 = walk_size(&mount);
    assert!(left < 8 * 1024, "{left} bytes left behind on the full disk");
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|read| {
            read.filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() {
                        walk_size(&e.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
