//! The delivery journal end to end: sends through the fake Gmail, then
//! `apimail log` as lines, JSON Lines and CSV, with its filters.

use std::io::Write;
use std::process::Stdio;

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::{Run, Sandbox, run};
use serde_json::Value;

const ACCOUNT: &str = "user@example.com";

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn send(sandbox: &Sandbox, extra: &[&str]) -> Run {
    run(sandbox
        .cmd()
        .args(["send", "--to", "rcpt@example.net", "--subject", "log"])
        .args(["--text", "hello"])
        .args(extra))
}

fn log(sandbox: &Sandbox, args: &[&str]) -> Run {
    let out = run(sandbox.cmd().arg("log").args(args));
    assert_eq!(out.code, 0, "log {args:?}: {}", out.stderr);
    out
}

/// `apimail log --json ARGS`, one value per line.
fn log_json(sandbox: &Sandbox, args: &[&str]) -> Vec<Value> {
    let out = log(sandbox, &[&["--json"], args].concat());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

fn outcomes<'a>(records: impl IntoIterator<Item = &'a Value>) -> Vec<&'a str> {
    records
        .into_iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect()
}

fn journal_file(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.path().join("data/journal/journal.jsonl")
}

/// `2026-11-29T08:15:00Z`: RFC 3339 in UTC, to the second.
fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'Z'
        && text
            .char_indices()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

#[test]
fn a_sent_message_shows_in_json_csv_and_lines() {
    let (fake, sandbox) = logged_in();
    let out = send(
        &sandbox,
        &[
            "--cc",
            "cc@example.net",
            "--message-id",
            "<log.1@example.com>",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // sendmail records its sends too.
    let mut child = sandbox
        .cmd()
        .args(["sendmail", "-t", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"To: other@example.org\nSubject: cron\nMessage-ID: <log.2@example.com>\n\nbody\n",
        )
        .unwrap();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let delivered = fake.messages();
    assert_eq!(delivered.len(), 2);

    let records = log_json(&sandbox, &[]);
    assert_eq!(records.len(), 2, "{records:?}");
    let first = &records[0];
    assert!(is_rfc3339_utc(first["time"].as_str().unwrap()), "{first}");
    let queue_id = first["queue_id"].as_str().unwrap();
    assert_eq!(queue_id.len(), 28, "an outbox id: {queue_id}");
    assert_eq!(first["message_id"], "<log.1@example.com>");
    assert_eq!(first["account"], ACCOUNT);
    assert_eq!(first["provider"], "gmail");
    assert_eq!(first["from"], ACCOUNT);
    assert_eq!(
        first["recipients"],
        serde_json::json!(["rcpt@example.net", "cc@example.net"])
    );
    assert_eq!(first["size"], delivered[0].raw.len());
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["possible_duplicate"], false);
    assert_eq!(first["outcome"], "sent");
    assert_eq!(first["provider_id"], delivered[0].id.as_str());
    assert!(first["error"].is_null());
    let second = &records[1];
    assert_eq!(second["message_id"], "<log.2@example.com>");
    assert_eq!(
        second["recipients"],
        serde_json::json!(["other@example.org"])
    );
    assert_eq!(second["provider_id"], delivered[1].id.as_str());
    assert_eq!(second["size"], delivered[1].raw.len());
    // The Subject, read from the outbox file before the send; no client:
    // not relayed.
    assert_eq!(first["subject"], "log");
    assert_eq!(second["subject"], "cron");
    assert!(first.get("client").is_none() && first.get("smtp_user").is_none());

    let csv = String::from_utf8(log(&sandbox, &["--csv"]).stdout).unwrap();
    let rows: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert_eq!(
        rows[0],
        "time,queue_id,message_id,account,provider,from,recipients,size,attempts,possible_duplicate,outcome,provider_id,error,original_from,subject,client,smtp_user"
    );
    assert_eq!(
        rows[1],
        format!(
            "{},{queue_id},<log.1@example.com>,{ACCOUNT},gmail,{ACCOUNT},\
             \"rcpt@example.net, cc@example.net\",{},1,false,sent,{},,,log,,",
            first["time"].as_str().unwrap(),
            delivered[0].raw.len(),
            delivered[0].id
        )
    );

    let lines = String::from_utf8(log(&sandbox, &[]).stdout).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, message) in lines.iter().zip(&delivered) {
        assert!(line.contains("  sent  "), "{line}");
        assert!(line.contains(&message.id), "{line}");
    }
    assert!(lines[0].contains("-> rcpt@example.net, cc@example.net"));

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&journal_file(&sandbox)), 0o600);
    assert_eq!(mode(&sandbox.path().join("data/journal")), 0o700);
}

#[test]
fn queued_held_and_failed_messages_are_recorded_and_filtered() {
    let (fake, sandbox) = logged_in();

    // Temporary failure: queued after one attempt.
    fake.fail_forever(Fault::Status503);
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_RETRY_ATTEMPTS", "1")
        .args(["send", "--to", "rcpt@example.net", "--subject", "log"])
        .args(["--text", "hello", "--message-id", "<queued@example.com>"]));
    assert_eq!(out.code, 75, "{}", out.stderr);

    // Queued without an attempt, with a maximum age it soon outlives; the
    // next flush then gives up on it.
    let out = run(sandbox
        .cmd()
        .env("APIMAIL_QUEUE_MAX_AGE_DAYS", "0.00001")
        .args([
            "send",
            "--queue",
            "--to",
            "rcpt@example.net",
            "--subject",
            "x",
        ])
        .args(["--text", "hello", "--message-id", "<expired@example.com>"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(sandbox.cmd().args(["queue", "flush"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    fake.clear_faults();

    // The token lacks gmail.send: held for a login.
    let readonly =
        fake.issue_access_token(ACCOUNT, "https://www.googleapis.com/auth/gmail.readonly");
    let mut token = sandbox.token_json(ACCOUNT);
    token["access_token"] = serde_json::json!(readonly);
    token["expires_at"] = serde_json::json!(4_000_000_000_i64);
    std::fs::write(sandbox.token_file(ACCOUNT), token.to_string()).unwrap();
    let out = send(&sandbox, &["--message-id", "<held@example.com>"]);
    assert_eq!(out.code, 77, "{}", out.stderr);

    let all = log_json(&sandbox, &[]);
    let by_id = |id: &str| {
        all.iter()
            .filter(|r| r["message_id"] == id)
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&all), ["queued", "queued", "failed", "held"]);
    let queued = by_id("<queued@example.com>");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["attempts"], 1);
    assert!(
        queued[0]["error"].as_str().unwrap().contains("503"),
        "{}",
        queued[0]
    );
    assert!(queued[0]["provider_id"].is_null());
    let expired = by_id("<expired@example.com>");
    assert_eq!(outcomes(expired.iter().copied()), ["queued", "failed"]);
    assert_eq!(expired[0]["attempts"], 0, "queued on purpose");
    assert!(expired[0]["error"].is_null());
    assert_eq!(expired[1]["attempts"], 1);
    assert!(
        expired[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("expired: ")
            && expired[1]["error"].as_str().unwrap().contains("503"),
        "{}",
        expired[1]
    );
    assert_eq!(expired[0]["queue_id"], expired[1]["queue_id"]);
    let held = by_id("<held@example.com>");
    assert!(
        held[0]["error"]
            .as_str()
            .unwrap()
            .contains("insufficientPermissions"),
        "{}",
        held[0]
    );
    let journal = std::fs::read_to_string(journal_file(&sandbox)).unwrap();
    assert!(!journal.contains(&readonly), "no token in the journal");

    // --status, alone and repeated.
    assert_eq!(
        outcomes(&log_json(&sandbox, &["--status", "failed"])),
        ["failed"]
    );
    assert_eq!(
        outcomes(&log_json(
            &sandbox,
            &["--status", "held", "--status", "failed"]
        )),
        ["failed", "held"]
    );
    assert!(log_json(&sandbox, &["--status", "sent"]).is_empty());
    // --account.
    assert_eq!(log_json(&sandbox, &["--account", ACCOUNT]).len(), 4);
    assert!(log_json(&sandbox, &["--account", "someone-else"]).is_empty());

    // --since: an old record (written as another process would) is left out.
    let mut old: Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    old["time"] = serde_json::json!(1_000_000_000);
    old["message_id"] = serde_json::json!("<old@example.com>");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_file(&sandbox))
        .unwrap();
    writeln!(file, "{old}").unwrap();
    // Older than the journal keeps (400 days by default): not read.
    assert_eq!(log_json(&sandbox, &[]).len(), 4);
    let config = sandbox.path().join("config/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str("\n[journal]\nkeep_days = 10000\n");
    std::fs::write(&config, text).unwrap();
    assert_eq!(log_json(&sandbox, &[]).len(), 5);
    for since in ["7d", "2h", "30m", "2020-01-01", "2020-01-01T00:00:00Z"] {
        let recent = log_json(&sandbox, &["--since", since]);
        assert_eq!(recent.len(), 4, "--since {since}");
        assert!(
            recent
                .iter()
                .all(|r| r["message_id"] != "<old@example.com>")
        );
    }
    assert_eq!(log_json(&sandbox, &["--since", "2001-01-01"]).len(), 5);
    assert!(log_json(&sandbox, &["--since", "2999-01-01T00:00:00+02:00"]).is_empty());
    let none = log(&sandbox, &["--status", "uncertain"]);
    assert!(none.stdout.is_empty());
    assert!(
        none.stderr.contains("no deliveries match"),
        "{}",
        none.stderr
    );
}

#[test]
fn bad_flags_exit_64_naming_the_flag_and_value() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    let usage = |args: &[&str]| {
        let out = run(sandbox.cmd().arg("log").args(args));
        assert_eq!(out.code, 64, "log {args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
        out.stderr
    };
    for since in ["2x", "yesterday", "2026-13-01", "-2h"] {
        let stderr = usage(&["--since", since]);
        assert!(stderr.contains(&format!("--since `{since}`")), "{stderr}");
        assert!(
            stderr.contains("hint: give a duration such as 30m"),
            "{stderr}"
        );
    }
    let stderr = usage(&["--status", "delivered"]);
    assert!(
        stderr.contains("delivered") && stderr.contains("--status"),
        "{stderr}"
    );
    assert!(
        stderr.contains("verified_sent"),
        "lists the values: {stderr}"
    );
    let stderr = usage(&["--json", "--csv"]);
    assert!(stderr.contains("--csv"), "{stderr}");

    // Nothing recorded yet is not an error.
    let out = log(&sandbox, &["--json"]);
    assert!(out.stdout.is_empty());
}

/// `apimail log | head -1` stops quietly.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let (_fake, sandbox) = logged_in();
    for n in 0..3 {
        let out = send(
            &sandbox,
            &["--message-id", &format!("<pipe.{n}@example.com>")],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let mut child = sandbox
        .cmd()
        .arg("log")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}
