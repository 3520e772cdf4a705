//! One outbox, four ways in: `apimail send`, `apimail sendmail`, the relay
//! and the library's `Mailer` with `.outbox(dir)`, all on one data
//! directory and one Graph app (app-only, from the environment; the relay
//! through a configured app-only account with the same app). Their entries
//! carry the same metadata, their journal records the same kinds and keys,
//! each holds a lost answer under `APIMAIL_WHEN_UNKNOWN=hold`, and an
//! entry queued by one is flushed by another.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use apimail_core::SenderIdentity;
use apimail_core::outbox::{Entry, EntryState, Outbox};
use apimail_mailer::{Credentials, ErrorKind, Mailer, MessageBuilder, Secret};
use apimail_tests::fake_microsoft::{FakeMicrosoft, Fault};
use apimail_tests::{Process, free_port, run, run_with_stdin};

const TENANT: &str = "contoso.onmicrosoft.com";
const APP_ID: &str = "0a0b0c0d-1111-2222-3333-444455556666";
const APP_SECRET: &str = "app~secret~value~for~tests";
const MAILBOX: &str = "alerts@contoso.com";
/// The relay's account: the same app, configured.
const ACCOUNT: &str = "office";
/// `APIMAIL_QUEUE_MAX_AGE_DAYS` in every process of the test.
const MAX_AGE_DAYS: i64 = 2;

/// The four ways into the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path4 {
    Send,
    Sendmail,
    Relay,
    Mailer,
}

const PATHS: [Path4; 4] = [Path4::Send, Path4::Sendmail, Path4::Relay, Path4::Mailer];

impl Path4 {
    fn name(self) -> &'static str {
        match self {
            Path4::Send => "send",
            Path4::Sendmail => "sendmail",
            Path4::Relay => "relay",
            Path4::Mailer => "mailer",
        }
    }
}

/// Everything the processes share: the fake, the data directory and the
/// environment of every `apimail` started.
struct World {
    fake: FakeMicrosoft,
    _dir: tempfile::TempDir,
    data: PathBuf,
    env: Vec<(String, String)>,
    relay_addr: String,
    runtime: tokio::runtime::Runtime,
    mailer: Mailer,
}

impl World {
    fn new() -> World {
        let fake = FakeMicrosoft::start();
        fake.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
        fake.add_mailbox(MAILBOX);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("config.toml");
        let secret = dir.path().join("client_secret.txt");
        std::fs::write(&secret, APP_SECRET).unwrap();
        let relay_addr = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            &config,
            format!(
                "[accounts.{ACCOUNT}]\nprovider = \"graph\"\napp_only = true\n\
                 tenant = \"{TENANT}\"\nclient_id = \"{APP_ID}\"\nuser = \"{MAILBOX}\"\n\
                 client_secret_file = \"{}\"\n\n\
                 [relay]\naccount = \"{ACCOUNT}\"\n\n\
                 [relay.listeners.main]\nlisten = \"{relay_addr}\"\n",
                secret.display()
            ),
        )
        .unwrap();
        let env = vec![
            ("APIMAIL_CONFIG".to_owned(), config.display().to_string()),
            ("APIMAIL_DATA_DIR".to_owned(), data.display().to_string()),
            (
                "HOME".to_owned(),
                dir.path().join("home").display().to_string(),
            ),
            ("AZURE_TENANT_ID".to_owned(), TENANT.to_owned()),
            ("AZURE_CLIENT_ID".to_owned(), APP_ID.to_owned()),
            ("AZURE_CLIENT_SECRET".to_owned(), APP_SECRET.to_owned()),
            ("APIMAIL_GRAPH_USER".to_owned(), MAILBOX.to_owned()),
            ("APIMAIL_GRAPH_API_URL".to_owned(), fake.graph_url()),
            ("APIMAIL_MS_AUTHORITY_URL".to_owned(), fake.authority_url()),
            // The command line drops inherited APIMAIL_*: given again.
            ("APIMAIL_WHEN_UNKNOWN".to_owned(), "hold".to_owned()),
            (
                "APIMAIL_QUEUE_MAX_AGE_DAYS".to_owned(),
                MAX_AGE_DAYS.to_string(),
            ),
        ];
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mailer = runtime
            .block_on(
                Mailer::builder(Credentials::GraphAppSecret {
                    tenant: TENANT.to_owned(),
                    client_id: APP_ID.to_owned(),
                    secret: Secret::new(APP_SECRET),
                    mailbox: MAILBOX.to_owned(),
                })
                .graph_api_url(fake.graph_url())
                .authority_url(fake.authority_url())
                .outbox(data.join("outbox"))
                .no_retries()
                .build(),
            )
            .unwrap();
        World {
            fake,
            _dir: dir,
            data,
            env,
            relay_addr,
            runtime,
            mailer,
        }
    }

    fn cmd(&self) -> Command {
        let mut command = apimail_tests::apimail();
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn outbox(&self) -> Outbox {
        Outbox::open(self.data.join("outbox")).unwrap()
    }

    fn queued(&self) -> Vec<Entry> {
        self.outbox().list().unwrap()
    }

    fn entry(&self, message_id: &str) -> Option<Entry> {
        self.queued()
            .into_iter()
            .find(|e| e.message_id == message_id)
    }

    /// Waits until the entry of `message_id` satisfies `done`.
    fn wait_entry(&self, message_id: &str, what: &str, done: impl Fn(Option<&Entry>) -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done(self.entry(message_id).as_ref()) {
            assert!(
                Instant::now() < until,
                "{message_id}: not {what}: {:?}",
                self.entry(message_id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many copies of `message_id` the fake Graph took.
    fn copies(&self, message_id: &str) -> usize {
        self.fake
            .delivered()
            .iter()
            .filter(|m| header(&m.mime, "Message-ID").as_deref() == Some(message_id))
            .count()
    }

    /// The journal's records of `message_id`, as `apimail log --json`.
    fn records(&self, message_id: &str) -> Vec<serde_json::Value> {
        let out = run(self.cmd().args(["log", "--json"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|r| r["message_id"] == message_id)
            .collect()
    }

    /// The journal's records of `message_id` once the last is `outcome`:
    /// the relay's workers append in batches, after the entry settled.
    fn records_until(&self, message_id: &str, outcome: &str) -> Vec<serde_json::Value> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let records = self.records(message_id);
            if records.last().is_some_and(|r| r["outcome"] == outcome) {
                return records;
            }
            assert!(
                Instant::now() < until,
                "{message_id}: no `{outcome}` record last: {records:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Puts one message into the outbox through `path`; what it printed.
    fn submit(&self, path: Path4, message_id: &str, relay: Option<&Process>) -> String {
        let subject = format!("via {}", path.name());
        match path {
            Path4::Send => {
                let out = run(self.cmd().args([
                    "send",
                    "--provider",
                    "graph",
                    "--from",
                    MAILBOX,
                    "--to",
                    "to@example.org",
                    "--subject",
                    &subject,
                    "--text",
                    "hi",
                    "--message-id",
                    message_id,
                ]));
                format!("exit {}: {}", out.code, out.stderr)
            }
            Path4::Sendmail => {
                let out = run_with_stdin(
                    self.cmd().args(["sendmail", "-i", "to@example.org"]),
                    raw(message_id, &subject).as_bytes(),
                );
                format!("exit {}: {}", out.code, out.stderr)
            }
            Path4::Relay => {
                let relay = relay.expect("the relay runs");
                let reply = smtp(&self.relay_addr, raw(message_id, &subject).as_bytes());
                format!("{reply}\n{}", relay.log())
            }
            Path4::Mailer => {
                let message = MessageBuilder::new()
                    .from(MAILBOX.parse().unwrap())
                    .to("to@example.org".parse().unwrap())
                    .subject(subject)
                    .message_id(message_id)
                    .text("hi")
                    .build()
                    .unwrap();
                match self.runtime.block_on(self.mailer.send(&message)) {
                    Ok(receipt) => format!("sent {receipt:?}"),
                    Err(error) => format!("{:?}: {error}", error.kind()),
                }
            }
        }
    }
}

fn raw(message_id: &str, subject: &str) -> String {
    format!(
        "From: {MAILBOX}\r\nTo: to@example.org\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n"
    )
}

/// The header field `name` of `raw`, trimmed.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    Some(message.header_raw(name)?.trim().to_owned())
}

/// One SMTP transaction on loopback; the reply to the message's data.
fn smtp(addr: &str, message: &[u8]) -> String {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return text;
            }
        }
    };
    assert!(reply().starts_with("220"));
    let mut say = |line: &str, want: &str| {
        writer.write_all(line.as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(want), "{line:?} → {got}");
        got
    };
    say("EHLO test\r\n", "250");
    say(&format!("MAIL FROM:<{MAILBOX}>\r\n"), "250");
    say("RCPT TO:<to@example.org>\r\n", "250");
    say("DATA\r\n", "354");
    let mut data = message.to_vec();
    data.extend_from_slice(b".\r\n");
    let done = say(std::str::from_utf8(&data).unwrap(), "250");
    say("QUIT\r\n", "221");
    done
}

/// The identity an entry of `path` is sent as.
fn identity_of(path: Path4) -> SenderIdentity {
    match path {
        Path4::Relay => SenderIdentity::account(ACCOUNT),
        _ => SenderIdentity::Environment {
            provider: "graph".into(),
            credential: "app_only".into(),
            principal: format!("client {APP_ID} of tenant {TENANT} as {MAILBOX}"),
        },
    }
}

/// The entry's metadata every path must write alike.
fn assert_metadata(path: Path4, entry: &Entry) {
    let name = path.name();
    assert_eq!(
        entry.max_age_secs,
        MAX_AGE_DAYS * 86_400,
        "{name}: the queue age is APIMAIL_QUEUE_MAX_AGE_DAYS's"
    );
    assert_eq!(entry.provider.as_deref(), Some("graph"), "{name}");
    assert_eq!(entry.identity.as_ref(), Some(&identity_of(path)), "{name}");
    if path == Path4::Relay {
        assert_eq!(entry.account.as_deref(), Some(ACCOUNT), "{name}");
    }
    assert_eq!(entry.from, MAILBOX, "{name}");
    assert_eq!(entry.recipients, ["to@example.org"], "{name}");
}

/// `(outcome, keys)` of each record: the journal's shape of one delivery.
type Shape = Vec<(String, BTreeSet<String>)>;

/// The [`Shape`] of `records`.
fn shape(records: &[serde_json::Value]) -> Shape {
    records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap_or_default().to_owned(),
                r.as_object().unwrap().keys().cloned().collect(),
            )
        })
        .collect()
}

/// Each path's outcomes, for messages.
fn outcomes_of(shapes: &[(Path4, Shape)]) -> Vec<(&str, Vec<&str>)> {
    shapes
        .iter()
        .map(|(path, shape)| (path.name(), shape.iter().map(|(o, _)| o.as_str()).collect()))
        .collect()
}

/// [`shape`] of a delivery's records. The relay answers 250 once the
/// message is queued and its workers deliver it afterwards: its first
/// record is that `queued`, with the same keys as every other; the rest is
/// what the other paths write, plus the relay client's address (and SMTP
/// user, after AUTH) on every record.
fn delivery_shape(path: Path4, records: &[serde_json::Value]) -> Shape {
    let mut shape = shape(records);
    if path == Path4::Relay {
        for (_, keys) in &mut shape {
            assert!(keys.remove("client"), "relay: {records:?}");
            keys.remove("smtp_user");
        }
        assert!(!shape.is_empty(), "relay: no record");
        let (outcome, keys) = shape.remove(0);
        assert_eq!(outcome, "queued", "relay: {records:?}");
        assert_eq!(
            Some(&keys),
            shape.first().map(|(_, keys)| keys),
            "relay: {records:?}"
        );
    }
    shape
}

/// Runs this test again in a child process with `env` set (the process's
/// environment cannot be changed safely while tests run); true in it.
fn in_child_with(name: &str, env: &[(&str, &str)]) -> bool {
    const CHILD: &str = "APIMAIL_FOUR_PATHS_CHILD";
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return true;
    }
    let out = run(Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .envs(env.iter().copied()));
    assert_eq!(
        out.code,
        0,
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.stderr
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran no test"
    );
    false
}

#[test]
fn send_sendmail_the_relay_and_the_mailer_share_one_outbox_alike() {
    let name = "send_sendmail_the_relay_and_the_mailer_share_one_outbox_alike";
    let days = MAX_AGE_DAYS.to_string();
    if !in_child_with(
        name,
        &[
            ("APIMAIL_WHEN_UNKNOWN", "hold"),
            ("APIMAIL_QUEUE_MAX_AGE_DAYS", &days),
        ],
    ) {
        return;
    }
    let world = World::new();

    // 1. Sent at once: the same journal records on each path.
    let mut sent_shapes = Vec::new();
    {
        let relay = Process::relay(world.cmd(), &[]);
        for path in PATHS {
            let id = format!("<sent.{}@contoso.com>", path.name());
            let said = world.submit(path, &id, Some(&relay));
            world.wait_entry(&id, "delivered", |e| e.is_none());
            assert_eq!(world.copies(&id), 1, "{}: {said}", path.name());
            let records = world.records_until(&id, "sent");
            sent_shapes.push((path, delivery_shape(path, &records)));
        }
    }
    for (path, shape) in &sent_shapes {
        assert_eq!(
            shape,
            &sent_shapes[0].1,
            "{} journals a send as {} does",
            path.name(),
            sent_shapes[0].0.name()
        );
    }
    assert_eq!(sent_shapes[0].1.len(), 1, "{sent_shapes:?}");
    assert_eq!(sent_shapes[0].1[0].0, "sent");

    // 2. The answer is lost and the app cannot read the mailbox: with
    // APIMAIL_WHEN_UNKNOWN=hold each path holds the entry, never resends.
    let mut held_shapes = Vec::new();
    {
        let relay = Process::relay(world.cmd(), &[]);
        for path in PATHS {
            let id = format!("<lost.{}@contoso.com>", path.name());
            world.fake.inject(Fault::LoseAnswer);
            let said = world.submit(path, &id, Some(&relay));
            world.wait_entry(&id, &format!("held after: {said}"), |e| {
                e.is_some_and(|e| e.state == EntryState::Held)
            });
            let entry = world.entry(&id).unwrap();
            assert!(entry.outcome_unknown, "{}: {entry:?}", path.name());
            assert_metadata(path, &entry);
            assert_eq!(
                world.copies(&id),
                1,
                "{}: no second copy: {said}",
                path.name()
            );
            let records = world.records_until(&id, "held");
            held_shapes.push((path, delivery_shape(path, &records)));
        }
        // The relay's workers leave a held entry alone too.
        std::thread::sleep(Duration::from_secs(2));
        for path in PATHS {
            let id = format!("<lost.{}@contoso.com>", path.name());
            assert_eq!(world.copies(&id), 1, "{}", path.name());
        }
    }
    for (path, shape) in &held_shapes {
        assert_eq!(
            shape,
            &held_shapes[0].1,
            "{} journals a held lost answer as {} does; all: {:?}",
            path.name(),
            held_shapes[0].0.name(),
            outcomes_of(&held_shapes)
        );
    }
    let outcomes: Vec<&str> = held_shapes[0].1.iter().map(|(o, _)| o.as_str()).collect();
    assert!(outcomes.contains(&"uncertain"), "{held_shapes:?}");
    // No flush sends them: they wait for a person.
    let flush = run(world.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    let report = world.runtime.block_on(world.mailer.flush_all()).unwrap();
    assert_eq!(report.sent, 0, "{report:?}");
    for path in PATHS {
        let id = format!("<lost.{}@contoso.com>", path.name());
        assert_eq!(world.copies(&id), 1, "{}", path.name());
        let entry = world.entry(&id).unwrap();
        let dropped = run(world.cmd().args(["queue", "drop", entry.id.as_str()]));
        assert_eq!(dropped.code, 0, "{}", dropped.stderr);
        // The log ends its story there, subject and all.
        let records = world.records(&id);
        let last = records.last().unwrap();
        assert_eq!(last["outcome"], "dropped", "{}: {records:?}", path.name());
        assert_eq!(last["subject"], records[0]["subject"], "{records:?}");
    }

    // 3. Queued by one path, flushed by another.
    // `apimail send --queue` → the relay's workers.
    let by_send = "<queued.send@contoso.com>";
    let queued = run(world.cmd().args([
        "send",
        "--provider",
        "graph",
        "--from",
        MAILBOX,
        "--to",
        "to@example.org",
        "--subject",
        "queued",
        "--text",
        "hi",
        "--message-id",
        by_send,
        "--queue",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    assert_metadata(Path4::Send, &world.entry(by_send).unwrap());
    let by_relay = "<queued.relay@contoso.com>";
    {
        let relay = Process::relay(world.cmd(), &[]);
        world.wait_entry(by_send, "flushed by the relay", |e| e.is_none());
        assert_eq!(world.copies(by_send), 1, "{}", relay.log());

        // The relay's entry, not sent (503) → `apimail sendmail -q` cannot
        // (not due yet), `apimail queue flush --all` can.
        world.fake.inject(Fault::Status503);
        world.submit(Path4::Relay, by_relay, Some(&relay));
        world.wait_entry(by_relay, "tried once", |e| {
            e.is_some_and(|e| e.attempts == 1 && e.state == EntryState::Queued)
        });
    }
    assert_metadata(Path4::Relay, &world.entry(by_relay).unwrap());

    // sendmail's entry, not sent (503) → the mailer's flush.
    let by_sendmail = "<queued.sendmail@contoso.com>";
    world.fake.inject(Fault::Status503);
    let said = world.submit(Path4::Sendmail, by_sendmail, None);
    assert!(said.starts_with("exit 0"), "{said}");
    assert_metadata(Path4::Sendmail, &world.entry(by_sendmail).unwrap());

    // The mailer's entry, not sent (503) → the command line's flush.
    let by_mailer = "<queued.mailer@contoso.com>";
    world.fake.inject(Fault::Status503);
    let said = world.submit(Path4::Mailer, by_mailer, None);
    assert!(
        said.starts_with(&format!("{:?}", ErrorKind::Temporary)),
        "{said}"
    );
    assert_metadata(Path4::Mailer, &world.entry(by_mailer).unwrap());

    let report = world.runtime.block_on(world.mailer.flush_all()).unwrap();
    assert_eq!(report.sent, 2, "its own and sendmail's: {report:?}");
    assert_eq!(world.copies(by_sendmail), 1);
    assert_eq!(world.copies(by_mailer), 1);
    assert!(
        world.entry(by_relay).is_some(),
        "another sender's: left alone"
    );

    let flush = run(world.cmd().args(["queue", "flush", "--all"]));
    assert_eq!(flush.code, 0, "{}", flush.stderr);
    assert_eq!(world.copies(by_relay), 1, "{}", flush.stderr);

    // And `apimail sendmail -q` flushes what is due, whoever queued it.
    let by_send_again = "<queued.send.2@contoso.com>";
    let queued = run(world.cmd().args([
        "send",
        "--provider",
        "graph",
        "--from",
        MAILBOX,
        "--to",
        "to@example.org",
        "--subject",
        "queued again",
        "--text",
        "hi",
        "--message-id",
        by_send_again,
        "--queue",
    ]));
    assert_eq!(queued.code, 0, "{}", queued.stderr);
    let flushed = run(world.cmd().args(["sendmail", "-q"]));
    assert_eq!(flushed.code, 0, "{}", flushed.stderr);
    assert_eq!(world.copies(by_send_again), 1, "{}", flushed.stderr);
    assert!(world.queued().is_empty(), "{:?}", world.queued());

    // Every flushed entry's journal ends in the same `sent` record shape
    // (the relay's with its client, too).
    for id in [by_send, by_relay, by_sendmail, by_mailer, by_send_again] {
        let records = world.records(id);
        let mut last = shape(&records).pop().unwrap();
        if id == by_relay {
            assert!(last.1.remove("client"), "{id}: {records:?}");
        }
        assert_eq!(last.0, "sent", "{id}: {records:?}");
        assert_eq!(last.1, sent_shapes[0].1[0].1, "{id}: {records:?}");
    }
}

/// What each way in adds to a message that has neither a Message-ID nor a
/// Date: one generator (`<32 random hex digits@domain of From>`, a new one
/// per message) and one date format. Before the one intake, sendmail made
/// `<unix time.pid@…>`, the relay `<unix time.random@…>` and the composer
/// `<hex time.random@…>`.
#[test]
fn every_way_in_adds_a_random_message_id_at_the_from_domain_and_one_date_format() {
    let world = World::new();
    let relay = Process::relay(world.cmd(), &[]);
    let domain = MAILBOX.split_once('@').unwrap().1;
    let raw = |subject: &str| {
        format!("From: {MAILBOX}\r\nTo: to@example.org\r\nSubject: {subject}\r\n\r\nhi\r\n")
    };
    let ways = [
        "send",
        "sendmail",
        "relay",
        "mailer send",
        "mailer send_raw",
    ];
    for way in ways {
        for n in 1..=2 {
            let subject = format!("ids via {way} {n}");
            let said = match way {
                "send" => {
                    let out = run(world.cmd().args([
                        "send",
                        "--provider",
                        "graph",
                        "--from",
                        MAILBOX,
                        "--to",
                        "to@example.org",
                        "--subject",
                        &subject,
                        "--text",
                        "hi",
                    ]));
                    format!("exit {}: {}", out.code, out.stderr)
                }
                "sendmail" => {
                    let out = run_with_stdin(
                        world.cmd().args(["sendmail", "-i", "to@example.org"]),
                        raw(&subject).as_bytes(),
                    );
                    format!("exit {}: {}", out.code, out.stderr)
                }
                "relay" => smtp(&world.relay_addr, raw(&subject).as_bytes()),
                "mailer send" => {
                    let message = MessageBuilder::new()
                        .from(MAILBOX.parse().unwrap())
                        .to("to@example.org".parse().unwrap())
                        .subject(subject.clone())
                        .text("hi")
                        .build()
                        .unwrap();
                    match world.runtime.block_on(world.mailer.send(&message)) {
                        Ok(_) => "exit 0".to_owned(),
                        Err(error) => format!("{error}"),
                    }
                }
                _ => {
                    let envelope = apimail_mailer::Envelope::new(
                        MAILBOX.parse().unwrap(),
                        vec!["to@example.org".parse().unwrap()],
                    );
                    let sent = world
                        .runtime
                        .block_on(world.mailer.send_raw(raw(&subject).as_bytes(), &envelope));
                    match sent {
                        Ok(_) => "exit 0".to_owned(),
                        Err(error) => format!("{error}"),
                    }
                }
            };
            assert!(
                said.starts_with("exit 0") || said.starts_with("250"),
                "{way}: {said}\n{}",
                relay.log()
            );
        }
    }
    // The relay's workers deliver after its 250.
    let wanted = ways.len() * 2;
    let until = Instant::now() + Duration::from_secs(60);
    while world.fake.delivered().len() < wanted {
        assert!(
            Instant::now() < until,
            "{} of {wanted} delivered:\n{}",
            world.fake.delivered().len(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered = world.fake.delivered();
    for way in ways {
        let mut ids = Vec::new();
        for n in 1..=2 {
            let subject = format!("ids via {way} {n}");
            let message = delivered
                .iter()
                .find(|m| header(&m.mime, "Subject").as_deref() == Some(subject.as_str()))
                .unwrap_or_else(|| panic!("{way}: `{subject}` was not delivered"));
            let id = header(&message.mime, "Message-ID").expect("a Message-ID");
            let (local, at) = id
                .strip_prefix('<')
                .and_then(|id| id.strip_suffix('>'))
                .and_then(|id| id.split_once('@'))
                .unwrap_or_else(|| panic!("{way}: Message-ID {id} is not <local@domain>"));
            assert_eq!(at, domain, "{way}: {id} is not at From's domain");
            assert!(
                local.len() == 32
                    && local
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{way}: {id} is not 32 random hex digits"
            );
            ids.push(id);
            let date = header(&message.mime, "Date").expect("a Date");
            assert!(is_rfc5322_date(&date), "{way}: Date `{date}`");
        }
        assert_ne!(ids[0], ids[1], "{way}: two messages, one Message-ID");
    }
}

/// `Thu, 1 Jan 1970 00:00:00 +0000`: core's `rfc5322_date`, the format
/// every way in writes.
fn is_rfc5322_date(date: &str) -> bool {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    time::PrimitiveDateTime::parse(date, &format).is_ok()
}
