//! `apimail relay` over the shared PostgreSQL store (issue 25): the real
//! binary, Python's smtplib in front of it, the fake Gmail behind it and a
//! throwaway PostgreSQL cluster under it (skipped, saying why, where
//! PostgreSQL is not installed).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::postgres::{skip_or_panic, start_or_skip};
use apimail_tests::store_node::{delivered_ids, other_node, relay_config, sandbox_on};
use apimail_tests::{Process, free_port, run};

const ACCOUNT: &str = "user@example.com";

/// Python's smtplib: sends argv[4] (a file) from argv[2] to argv[3]
/// through argv[1]. Prints `sent {}` or the refusing reply.
const SMTPLIB: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
sender, rcpts, path = sys.argv[2], sys.argv[3].split(","), sys.argv[4]
data = open(path, "rb").read()
try:
    s = smtplib.SMTP(host, int(port), timeout=60)
    s.ehlo("python.test")
    refused = s.sendmail(sender, rcpts, data)
    print("sent", refused)
    s.quit()
except smtplib.SMTPResponseException as e:
    print("reply", e.smtp_code, e.smtp_error.decode(errors="replace"))
except smtplib.SMTPSenderRefused as e:
    print("reply", e.smtp_code, e.smtp_error.decode(errors="replace"))
"#;

/// Sends a message with Message-ID `<{tag}@example.com>` through the relay
/// at `addr`; what smtplib printed.
fn send(dir: &Path, addr: &str, tag: &str) -> String {
    send_body(dir, addr, tag, &format!("body of {tag}\r\n"))
}

/// [`send`] with `body`.
fn send_body(dir: &Path, addr: &str, tag: &str, body: &str) -> String {
    let message = format!(
        "From: {ACCOUNT}\r\nTo: to@example.net\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@example.com>\r\n\r\n{body}"
    );
    let path = dir.join(format!("{tag}.eml"));
    std::fs::write(&path, message).unwrap();
    let out = run(Command::new("python3").arg("-c").arg(SMTPLIB).args([
        addr,
        ACCOUNT,
        "to@example.net",
        path.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 0, "python3: {}", out.stderr);
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the fake holds `count` messages (at most 60 s).
fn wait_delivered(fake: &FakeGoogle, count: usize, logs: &[&Process]) {
    let until = Instant::now() + Duration::from_secs(60);
    while fake.messages().len() < count {
        assert!(
            Instant::now() < until,
            "{} of {count} delivered; logs:\n{}",
            fake.messages().len(),
            logs.iter()
                .map(|p| p.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pacer's name for the test account's mailbox (its sender identity).
const MAILBOX: &str = "account `user@example.com`";

#[test]
fn two_relays_on_one_store_deliver_each_accepted_message_once() {
    let test = "two_relays_on_one_store_deliver_each_accepted_message_once";
    let Some(cluster) = skip_or_panic(test) else {
        return;
    };
    let db = cluster.new_database("relay_two").unwrap();
    let fake = FakeGoogle::start();
    let sandbox = sandbox_on(&fake, cluster, &db);
    // The mailbox's next start is an hour away, for every node.
    cluster
        .sql(
            &db,
            &format!(
                "INSERT INTO apimail_pace (mailbox, next_start) \
                 VALUES ('{MAILBOX}', now() + interval '1 hour')"
            ),
        )
        .unwrap();

    // Relay A accepts five messages; the pace keeps them queued.
    let addr_a = format!("127.0.0.1:{}", free_port());
    let mut relay_a = Process::relay(other_node(&sandbox, "a", &addr_a), &[]);
    relay_a.wait_log("shared store", Duration::from_secs(10));
    let tags_a: Vec<String> = (0..5).map(|i| format!("a-{i}")).collect();
    for tag in &tags_a {
        let out = send(sandbox.path(), &addr_a, tag);
        assert!(out.starts_with("sent {}"), "{out}\n{}", relay_a.log());
    }
    assert!(
        fake.messages().is_empty(),
        "the mailbox's pace holds: {}",
        relay_a.log()
    );
    let local = sandbox.path().join("data-a/outbox/queue");
    assert!(
        std::fs::read_dir(&local).map_or(true, |mut d| d.next().is_none()),
        "relay A kept nothing in its local outbox"
    );
    relay_a.signal("TERM");
    assert_eq!(
        relay_a.wait(Duration::from_secs(30)),
        0,
        "{}",
        relay_a.log()
    );

    // Relay B, another data directory, sends what A accepted once the
    // pace allows.
    let addr_b = format!("127.0.0.1:{}", free_port());
    relay_config(
        &sandbox,
        &sandbox.path().join("config/config.toml"),
        &addr_b,
    );
    cluster
        .sql(
            &db,
            &format!("UPDATE apimail_pace SET next_start = 'epoch' WHERE mailbox = '{MAILBOX}'"),
        )
        .unwrap();
    let relay_b = Process::relay(sandbox.cmd(), &[]);
    wait_delivered(&fake, 5, &[&relay_a, &relay_b]);
    for tag in &tags_a {
        assert_eq!(
            delivered_ids(&fake).get(&format!("<{tag}@example.com>")),
            Some(&1),
            "{tag}: sent once, by relay B"
        );
    }

    // Both at once: each message accepted by either is sent once.
    let relay_a = Process::relay(other_node(&sandbox, "a", &addr_a), &[]);
    let mut tags = tags_a.clone();
    for i in 0..4 {
        for (node, addr) in [("a", &addr_a), ("b", &addr_b)] {
            let tag = format!("both-{node}-{i}");
            let out = send(sandbox.path(), addr, &tag);
            assert!(out.starts_with("sent {}"), "{out}");
            tags.push(tag);
        }
    }
    wait_delivered(&fake, tags.len(), &[&relay_a, &relay_b]);
    // Every delivery is logged by the relay that made it.
    let until = Instant::now() + Duration::from_secs(30);
    let logged = || {
        relay_a.log().matches("delivered ").count() + relay_b.log().matches("delivered ").count()
    };
    while logged() < tags.len() {
        assert!(Instant::now() < until, "{}", relay_b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected: BTreeMap<String, usize> = tags
        .iter()
        .map(|tag| (format!("<{tag}@example.com>"), 1))
        .collect();
    assert_eq!(delivered_ids(&fake), expected, "each message exactly once");
    assert_eq!(logged(), tags.len(), "one delivery per message");
}

#[test]
fn with_the_database_away_the_relay_answers_451_and_loses_nothing_it_accepted() {
    let test = "with_the_database_away_the_relay_answers_451_and_loses_nothing_it_accepted";
    let Some(cluster) = start_or_skip(test) else {
        return;
    };
    let db = cluster.new_database("relay_away").unwrap();
    let fake = FakeGoogle::start();
    let sandbox = sandbox_on(&fake, &cluster, &db);
    // Nothing goes out before the test lets the mailbox's pace go.
    cluster
        .sql(
            &db,
            &format!(
                "INSERT INTO apimail_pace (mailbox, next_start) \
                 VALUES ('{MAILBOX}', now() + interval '1 hour')"
            ),
        )
        .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    relay_config(&sandbox, &sandbox.path().join("config/config.toml"), &addr);
    let relay = Process::relay(sandbox.cmd(), &[]);

    // Accepted before the database goes away: about 2.5 MB, so it waits
    // in a file during DATA and streams into the store in chunks.
    let body: String = (0..40_000)
        .map(|i| format!("line {i:08} of a large message, padded to 64 bytes .........\r\n"))
        .collect();
    let out = send_body(sandbox.path(), &addr, "kept", &body);
    assert!(out.starts_with("sent {}"), "{out}\n{}", relay.log());

    cluster.stop().unwrap();
    for i in 0..3 {
        let out = send(sandbox.path(), &addr, &format!("away-{i}"));
        assert!(
            out.starts_with("reply 451 "),
            "never 250 while the database is away: {out}\n{}",
            relay.log()
        );
    }

    cluster.restart().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    let accepted = loop {
        tries += 1;
        let tag = format!("back-{tries}");
        let out = send(sandbox.path(), &addr, &tag);
        if out.starts_with("sent {}") {
            break tag;
        }
        assert!(out.starts_with("reply 451 "), "{out}\n{}", relay.log());
        assert!(
            Instant::now() < until,
            "still refused: {out}\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    cluster
        .sql(
            &db,
            &format!("UPDATE apimail_pace SET next_start = 'epoch' WHERE mailbox = '{MAILBOX}'"),
        )
        .unwrap();
    wait_delivered(&fake, 2, &[&relay]);
    let expected: BTreeMap<String, usize> = ["kept".to_owned(), accepted]
        .iter()
        .map(|tag| (format!("<{tag}@example.com>"), 1))
        .collect();
    assert_eq!(
        delivered_ids(&fake),
        expected,
        "what was accepted is sent once; what was answered 451 was not accepted"
    );
    let kept = fake
        .messages()
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.raw).contains("<kept@example.com>"))
        .unwrap();
    assert!(
        kept.raw.ends_with(body.as_bytes()),
        "the large message arrives byte-exact"
    );
}
