//! The PostgreSQL store against a real, throwaway PostgreSQL cluster
//! (`apimail-test-postgres`). Without PostgreSQL each test says why and
//! skips (fails instead under `APIMAIL_PG_REQUIRED`, as `cargo xtask ci`
//! sets it once PostgreSQL is installed).

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apimail_core::journal::{Filter, Outcome as Status, Record};
use apimail_core::outbox::{EntryState, HoldKind, NewEntry, Outcome};
use apimail_core::{Pace, Secret, SenderIdentity, now_unix};
use apimail_store_postgres::{CHUNK_BYTES, Start, Store, StoreConfig, StoreError, latest_version};
use apimail_test_postgres::{PgCluster, skip_or_panic};
use tokio::io::{AsyncRead, ReadBuf};

/// A fresh database on the shared cluster, or `None` (skipped).
fn database(test: &str) -> Option<(&'static PgCluster, String)> {
    let cluster = skip_or_panic(test)?;
    let db = cluster.new_database(test).expect("create a database");
    Some((cluster, db))
}

fn config(cluster: &PgCluster, db: &str, node: &str) -> StoreConfig {
    let mut config = StoreConfig::new(cluster.url(db)).password(Secret::new(cluster.password()));
    config.node = Some(node.to_owned());
    config
}

/// A migrated store for `node`.
async fn store(cluster: &PgCluster, db: &str, node: &str) -> Store {
    let store = Store::new(&config(cluster, db, node)).unwrap();
    store.migrate().await.unwrap();
    store
}

/// A plain connection for looking at the tables directly.
async fn sql(cluster: &PgCluster, db: &str) -> tokio_postgres::Client {
    let url = cluster.url_with_password(db);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn meta(n: usize) -> NewEntry {
    NewEntry {
        identity: Some(SenderIdentity::account("work")),
        account: Some("work".into()),
        provider: Some("graph".into()),
        from: "scanner@example.com".into(),
        recipients: vec![format!("r{n}@example.com")],
        message_id: format!("<m{n}@example.com>"),
        ..NewEntry::default()
    }
}

fn message(n: usize) -> Vec<u8> {
    format!("Message-ID: <m{n}@example.com>\r\nSubject: {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

/// Polls `check` every 50 ms until it gives `Some`, for at most 60 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn migrations_are_versioned_and_run_once() {
    let Some((cluster, db)) = database("migrations") else {
        return;
    };
    let store = Store::new(&config(cluster, &db, "a")).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 0);
    match Store::open(&config(cluster, &db, "a")).await {
        Err(StoreError::SchemaBehind { found: 0, needed }) => assert_eq!(needed, latest_version()),
        other => panic!("an unmigrated store opened: {other:?}"),
    }
    let first = store.migrate().await.unwrap();
    assert_eq!(first.applied[..2], ["V1__outbox_journal_pace", "V2__nodes"]);
    assert!(first.applied.iter().any(|m| m == "V3__tokens"), "{first:?}");
    assert_eq!(first.version, latest_version());
    let again = store.migrate().await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    Store::open(&config(cluster, &db, "a")).await.unwrap();
}

#[tokio::test]
async fn opening_records_a_heartbeat_with_the_nodes_clock_offset() {
    let Some((cluster, db)) = database("heartbeat") else {
        return;
    };
    store(cluster, &db, "a").await;
    let a = Store::open(&config(cluster, &db, "a")).await.unwrap();
    // A node whose clock was 30 s ahead when it was last seen, an hour ago.
    sql(cluster, &db)
        .await
        .execute(
            "INSERT INTO apimail_nodes VALUES ('b', now() - interval '1 hour', \
             extract(epoch FROM now()) - 3570, 30)",
            &[],
        )
        .await
        .unwrap();
    let seen = a.nodes_seen(Duration::from_secs(7200)).await.unwrap();
    let names: Vec<&str> = seen.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // This machine and the database share a clock.
    assert!(seen[0].offset_secs.abs() < 1.0, "{seen:?}");
    assert_eq!(seen[1].offset_secs, 30.0);
    assert!(seen[1].seen_secs_ago >= 3600.0, "{seen:?}");
    let recent = a.nodes_seen(Duration::from_secs(600)).await.unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");

    // A heartbeat updates the node's row; one a week old is forgotten.
    sql(cluster, &db)
        .await
        .execute(
            "UPDATE apimail_nodes SET seen_at = now() - interval '8 days' WHERE node = 'b'",
            &[],
        )
        .await
        .unwrap();
    let offset = a.heartbeat().await.unwrap();
    assert!(offset.offset_secs.abs() < 1.0, "{offset:?}");
    let all = a.nodes_seen(Duration::from_secs(30 * 86400)).await.unwrap();
    assert_eq!(all.len(), 1, "b forgotten: {all:?}");
    assert_eq!(all[0].node, "a");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let Some((cluster, db)) = database("wrong_password") else {
        return;
    };
    let config = StoreConfig::new(cluster.url(&db)).password(Secret::new("not-the-password"));
    let error = Store::new(&config)
        .unwrap()
        .schema_version()
        .await
        .unwrap_err();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_never_get_the_same_entry() {
    let Some((cluster, db)) = database("two_claimers") else {
        return;
    };
    let a = store(cluster, &db, "node-a").await;
    let b = store(cluster, &db, "node-b").await;
    let mut all = HashSet::new();
    for n in 0..40 {
        all.insert(a.accept(&message(n), meta(n)).await.unwrap());
    }
    let now = now_unix();
    // Each node claims until nothing is left, holding every claim.
    let drain = |store: Store| {
        tokio::spawn(async move {
            let mut claims = Vec::new();
            while let Some(claim) = store.claim_next_due(now, None).await.unwrap() {
                claims.push(claim);
            }
            claims
        })
    };
    let (from_a, from_b) = tokio::join!(drain(a.clone()), drain(b.clone()));
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    let ids_a: HashSet<_> = from_a.iter().map(|c| c.entry().id.clone()).collect();
    let ids_b: HashSet<_> = from_b.iter().map(|c| c.entry().id.clone()).collect();
    assert_eq!(ids_a.len(), from_a.len(), "node a got an entry twice");
    assert_eq!(ids_b.len(), from_b.len(), "node b got an entry twice");
    assert!(
        ids_a.is_disjoint(&ids_b),
        "both nodes hold {:?}",
        ids_a.intersection(&ids_b)
    );
    assert_eq!(&ids_a | &ids_b, all);
    // While they are held, nobody else gets any of them, by id either.
    let id = from_a
        .first()
        .or(from_b.first())
        .unwrap()
        .entry()
        .id
        .clone();
    assert!(b.claim(&id).await.unwrap().is_none());
    assert!(matches!(
        b.drop_entry(id.as_str()).await,
        Err(StoreError::Busy { .. })
    ));
    assert!(matches!(
        b.retry(id.as_str()).await,
        Err(StoreError::Busy { .. })
    ));
    for claim in from_a.into_iter().chain(from_b) {
        claim.delivered().await.unwrap();
    }
    let summary = a.summary().await.unwrap();
    assert_eq!((summary.queued, summary.held, summary.failed), (0, 0, 0));
    let left: i64 = sql(cluster, &db)
        .await
        .query_one("SELECT count(*) FROM apimail_chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a delivered entry's message stays behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_of_one_entry_give_it_to_one() {
    let Some((cluster, db)) = database("racing_claims") else {
        return;
    };
    let a = store(cluster, &db, "node-a").await;
    let b = store(cluster, &db, "node-b").await;
    for round in 0..20 {
        let id = a.accept(&message(round), meta(round)).await.unwrap();
        let (x, y) = tokio::join!(a.claim(&id), b.claim(&id));
        let won: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} claims of one entry",
            won.len()
        );
        for claim in won {
            claim.delivered().await.unwrap();
        }
    }
}

/// Node a claims and begins an attempt, then "dies" (its runtime is gone,
/// so it neither renews nor releases); node b gets the entry once the
/// lease runs out, uncertain; node a, back, can write nothing.
#[test]
fn an_expired_lease_hands_the_entry_over_as_uncertain() {
    let Some((cluster, db)) = database("lease_expiry") else {
        return;
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let node_a = runtime();
    let (id, mut claim) = node_a.block_on(async {
        let a = store(cluster, &db, "node-a")
            .await
            .with_lease(Duration::from_secs(2));
        let id = a.accept(&message(1), meta(1)).await.unwrap();
        let mut claim = a.claim_next_due(now_unix(), None).await.unwrap().unwrap();
        assert_eq!(claim.entry().id, id);
        claim.begin_attempt(now_unix()).await.unwrap();
        (id, claim)
    });
    drop(node_a);

    let node_b = runtime();
    let taken = node_b.block_on(async {
        let b = store(cluster, &db, "node-b").await;
        let taken = eventually("the lease to expire", || async {
            b.claim_next_due(now_unix(), None).await.unwrap()
        })
        .await;
        let entry = taken.entry();
        assert_eq!(entry.id, id);
        assert!(entry.in_flight_since.is_some(), "{entry:?}");
        assert!(entry.is_uncertain());
        assert_eq!(
            entry.attempts, 0,
            "the cut-short attempt is counted by the engine"
        );
        taken
    });

    // Node a comes back: its lease is gone, so nothing it writes lands.
    let back = runtime();
    back.block_on(async {
        assert!(matches!(
            claim.begin_attempt(now_unix()).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            claim.fail("late").await,
            Err(StoreError::LeaseLost { .. })
        ));
    });
    node_b.block_on(async {
        let b = store(cluster, &db, "node-b").await;
        let entry = b.get(id.as_str()).await.unwrap().unwrap();
        assert!(entry.failed_reason.is_none(), "the old node's write landed");
        match taken
            .uncertain("lost answer", now_unix(), true)
            .await
            .unwrap()
        {
            Outcome::Held => {}
            other => panic!("{other:?}"),
        }
        let entry = b.get(id.as_str()).await.unwrap().unwrap();
        assert_eq!(entry.hold_kind(), Some(HoldKind::Uncertain));
        assert!(entry.in_flight_since.is_none());
    });
}

#[tokio::test]
async fn a_live_lease_is_renewed_past_its_length() {
    let Some((cluster, db)) = database("lease_renewal") else {
        return;
    };
    let a = store(cluster, &db, "node-a")
        .await
        .with_lease(Duration::from_secs(1));
    let b = store(cluster, &db, "node-b").await;
    let id = a.accept(&message(1), meta(1)).await.unwrap();
    let claim = a.claim(&id).await.unwrap().unwrap();
    let client = sql(cluster, &db).await;
    let deadline = || async {
        let row = client
            .query_one(
                "SELECT extract(epoch FROM lease_until)::float8 FROM apimail_entries WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .unwrap();
        row.get::<_, f64>(0)
    };
    let first = deadline().await;
    // The renewal task moves the deadline on by itself.
    eventually("a renewal", || async {
        (deadline().await > first).then_some(())
    })
    .await;
    assert!(!claim.is_lost());
    assert!(b.claim(&id).await.unwrap().is_none());
    claim.release().await.unwrap();
    assert!(b.claim(&id).await.unwrap().is_some());
}

/// A generator of `len` bytes that differ at every offset, read in odd
/// sizes.
struct Pattern {
    at: u64,
    len: u64,
}

fn byte_at(at: u64) -> u8 {
    (at.wrapping_mul(2_654_435_761) >> 13) as u8
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.len - self.at).min(70_001) as usize;
        let bytes: Vec<u8> = (self.at..self.at + n as u64).map(byte_at).collect();
        buf.put_slice(&bytes);
        self.at += n as u64;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_large_message_goes_in_and_out_in_bounded_chunks_byte_exact() {
    let Some((cluster, db)) = database("chunks") else {
        return;
    };
    let store = store(cluster, &db, "node-a").await;
    let len = 16 * CHUNK_BYTES as u64 + 12_345;
    let mut incoming = store.begin().await.unwrap();
    incoming
        .copy_from(&mut Pattern { at: 0, len })
        .await
        .unwrap();
    assert_eq!(incoming.size(), len);
    assert!(
        incoming.largest_buffer() <= CHUNK_BYTES,
        "held {} bytes at once",
        incoming.largest_buffer()
    );
    let id = incoming.commit(meta(1)).await.unwrap();
    assert_eq!(store.get(id.as_str()).await.unwrap().unwrap().size, len);

    let rows = sql(cluster, &db)
        .await
        .query(
            "SELECT octet_length(data)::bigint FROM apimail_chunks c \
             JOIN apimail_entries e ON e.message = c.message WHERE e.id = $1 ORDER BY seq",
            &[&id.as_str()],
        )
        .await
        .unwrap();
    let sizes: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(sizes.len(), 17);
    assert!(
        sizes[..16].iter().all(|&s| s == CHUNK_BYTES as i64),
        "{sizes:?}"
    );
    assert_eq!(sizes[16], 12_345);

    let mut reader = store.open_message(id.as_str()).await.unwrap().unwrap();
    assert_eq!(reader.chunks(), 17);
    let (mut at, mut chunks) = (0u64, 0);
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        assert!(chunk.len() <= CHUNK_BYTES);
        let expected: Vec<u8> = (at..at + chunk.len() as u64).map(byte_at).collect();
        assert!(chunk == expected, "chunk {chunks} differs");
        at += chunk.len() as u64;
        chunks += 1;
    }
    assert_eq!((at, chunks), (len, 17));

    // Small chunks, odd sizes, and the empty message, through the claim.
    let small = store.clone().with_chunk_bytes(1000);
    for size in [0usize, 1, 999, 1000, 1001, 4321] {
        let bytes: Vec<u8> = (0..size as u64).map(byte_at).collect();
        let id = small.accept(&bytes, meta(size)).await.unwrap();
        let claim = small.claim(&id).await.unwrap().unwrap();
        let mut out = Vec::new();
        let written = claim
            .open_message()
            .await
            .unwrap()
            .copy_to(&mut out)
            .await
            .unwrap();
        assert_eq!(written, size as u64);
        assert!(out == bytes, "a {size}-byte message came back changed");
        assert_eq!(
            claim.open_message().await.unwrap().chunks(),
            size.div_ceil(1000)
        );
        claim.delivered().await.unwrap();
    }
}

#[tokio::test]
async fn nothing_is_accepted_before_the_commit() {
    let Some((cluster, db)) = database("uncommitted") else {
        return;
    };
    let store = store(cluster, &db, "node-a").await.with_chunk_bytes(1000);
    let client = sql(cluster, &db).await;
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let mut incoming = store.begin().await.unwrap();
    incoming.write(&[b'x'; 3500]).await.unwrap();
    // Three chunks are written, but no other connection sees them.
    assert_eq!(count("apimail_chunks").await, 0);
    assert_eq!(store.summary().await.unwrap().queued, 0);
    drop(incoming);
    // The dropped connection's transaction is rolled back.
    eventually("the rollback", || async {
        let idle: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (idle == 0).then_some(())
    })
    .await;
    assert_eq!(count("apimail_chunks").await, 0);
    assert_eq!(count("apimail_messages").await, 0);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn settling_follows_the_local_outbox() {
    let Some((cluster, db)) = database("settling") else {
        return;
    };
    let store = store(cluster, &db, "node-a").await;
    let id = store.accept(&message(1), meta(1)).await.unwrap();
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Queued);
    assert_eq!(entry.identity, Some(SenderIdentity::account("work")));
    assert_eq!(
        store.read_message(id.as_str()).await.unwrap().unwrap(),
        message(1)
    );

    // A temporary failure: rescheduled, not due now.
    let now = now_unix();
    let claim = store.claim_due(&id, now).await.unwrap().unwrap();
    claim.set_note("graph.draft_id", Some("AAA")).await.unwrap();
    let outcome = claim.retry_later("429", now).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Rescheduled {
            next_attempt_at: now + 60
        }
    );
    assert!(store.claim_due(&id, now).await.unwrap().is_none());
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        (entry.attempts, entry.last_error.as_deref()),
        (1, Some("429"))
    );
    assert_eq!(
        entry.notes.get("graph.draft_id").map(String::as_str),
        Some("AAA")
    );

    // Refused credentials: held for a login, released by one.
    store
        .claim(&id)
        .await
        .unwrap()
        .unwrap()
        .hold("401")
        .await
        .unwrap();
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(entry.hold_kind(), Some(HoldKind::Login));
    assert_eq!(store.summary().await.unwrap().held, 1);
    assert_eq!(store.release_held(Some("other")).await.unwrap(), 0);
    assert_eq!(store.release_held(Some("work")).await.unwrap(), 1);

    // An unknown outcome held for the user: a login does not release it,
    // `queue retry` does, and marks the next copy a possible duplicate.
    let outcome = store
        .claim(&id)
        .await
        .unwrap()
        .unwrap()
        .uncertain("timeout", now_unix(), true)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Held);
    assert_eq!(store.release_held(None).await.unwrap(), 0);
    assert!(store.retry(id.as_str()).await.unwrap());
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert!(entry.retried_unknown && !entry.outcome_unknown);
    assert_eq!(entry.state, EntryState::Queued);

    // A permanent failure, retried back with its attempts reset, dropped.
    store
        .claim(&id)
        .await
        .unwrap()
        .unwrap()
        .fail("550")
        .await
        .unwrap();
    let failed = store.list_failed().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].failed_reason.as_deref(), Some("550"));
    assert!(
        store.claim(&id).await.unwrap().is_none(),
        "a failed entry was claimed"
    );
    assert_eq!(store.summary().await.unwrap().failed, 1);
    assert!(store.retry(id.as_str()).await.unwrap());
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!((entry.attempts, entry.failed_reason.clone()), (0, None));
    assert!(entry.retried_at.is_some());
    assert_eq!(store.list_page(0, 10).await.unwrap().1, 1);
    assert!(store.drop_entry(id.as_str()).await.unwrap());
    assert!(!store.drop_entry(id.as_str()).await.unwrap());
    assert!(store.get(id.as_str()).await.unwrap().is_none());

    // Too old to retry: expired into failed.
    let old = store
        .accept(
            &message(2),
            NewEntry {
                max_age_secs: 10,
                ..meta(2)
            },
        )
        .await
        .unwrap();
    let claim = store.claim(&old).await.unwrap().unwrap();
    let later = claim.entry().created_at + 3 * 86_400;
    assert_eq!(
        claim.retry_later("503", later).await.unwrap(),
        Outcome::Expired
    );
    let entry = store.get(old.as_str()).await.unwrap().unwrap();
    assert_eq!(
        entry.failed_reason.as_deref(),
        Some("expired after 3 days: 503")
    );

    // Accepted claimed: nobody else takes it before the first attempt.
    let claim = store.accept_claimed(&message(3), meta(3)).await.unwrap();
    assert!(
        store
            .claim_next_due(now_unix(), None)
            .await
            .unwrap()
            .is_none()
    );
    claim.delivered().await.unwrap();
}

#[tokio::test]
async fn the_journal_keeps_every_field() {
    let Some((cluster, db)) = database("journal") else {
        return;
    };
    let store = store(cluster, &db, "node-a").await;
    let record = |n: i64, outcome, account: &str| Record {
        time: 1_700_000_000 + n,
        queue_id: Some(format!("q{n}")),
        message_id: format!("<m{n}@example.com>"),
        account: Some(account.to_owned()),
        client: Some("192.0.2.7".into()),
        smtp_user: Some("scanner".into()),
        provider: Some("gmail".into()),
        from: "a@example.com".into(),
        recipients: vec!["b@example.com".into(), "c@example.com".into()],
        subject: Some("Scan 日本語".into()),
        size: 1234,
        attempts: 2,
        possible_duplicate: n == 2,
        outcome,
        provider_id: Some(format!("p{n}")),
        error: (outcome != Status::Sent).then(|| "timeout".to_owned()),
        original_from: Some("x@example.org".into()),
    };
    let records = [
        record(1, Status::Uncertain, "work"),
        record(2, Status::Sent, "work"),
        record(3, Status::Failed, "home"),
    ];
    for r in &records {
        store.append(r).await.unwrap();
    }
    let all = store
        .read_journal(&Filter::default(), 0, 100)
        .await
        .unwrap();
    let read: Vec<Record> = all.iter().map(|s| s.record.clone()).collect();
    assert_eq!(read, records);
    let sent = Filter {
        outcomes: vec![Status::Sent],
        ..Filter::default()
    };
    let only: Vec<_> = store.read_journal(&sent, 0, 100).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].record, records[1]);
    let home = Filter {
        account: Some("home".into()),
        since: Some(1_700_000_002),
        ..Filter::default()
    };
    assert_eq!(
        store.read_journal(&home, 0, 100).await.unwrap()[0].record,
        records[2]
    );
    let page = store
        .read_journal(&Filter::default(), all[0].seq, 1)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].record, records[1]);
}

#[tokio::test]
async fn pacing_holds_across_two_connections() {
    let Some((cluster, db)) = database("pacing") else {
        return;
    };
    let a = store(cluster, &db, "node-a").await;
    let b = store(cluster, &db, "node-b").await;

    // Deliveries at once, across nodes.
    let one_at_a_time = Pace {
        concurrency: 1,
        per_minute: u32::MAX,
    };
    let Start::Go(permit) = a.try_start("ops@example.com", one_at_a_time).await.unwrap() else {
        panic!("the first delivery may start")
    };
    assert!(matches!(
        b.try_start("ops@example.com", one_at_a_time).await.unwrap(),
        Start::Wait(_)
    ));
    // Another mailbox is not held up.
    assert!(matches!(
        b.try_start("sales@example.com", one_at_a_time)
            .await
            .unwrap(),
        Start::Go(_)
    ));
    permit.finish().await.unwrap();
    assert!(matches!(
        b.try_start("ops@example.com", one_at_a_time).await.unwrap(),
        Start::Go(_)
    ));

    // Starts per minute, across nodes: one a minute leaves the other
    // node waiting for most of a minute.
    let once_a_minute = Pace {
        concurrency: 4,
        per_minute: 1,
    };
    assert!(matches!(
        a.try_start("slow@example.com", once_a_minute)
            .await
            .unwrap(),
        Start::Go(_)
    ));
    match b
        .try_start("slow@example.com", once_a_minute)
        .await
        .unwrap()
    {
        Start::Wait(wait) => assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        ),
        Start::Go(_) => panic!("a second start within the minute, from the other node"),
    }
    assert!(
        a.start("slow@example.com", once_a_minute, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );

    // Unlimited: always go.
    for _ in 0..3 {
        assert!(matches!(
            b.try_start("any@example.com", Pace::UNLIMITED)
                .await
                .unwrap(),
            Start::Go(_)
        ));
    }
}

/// Sends every entry with one transport: the delivery engine's sender.
struct OneSender(apimail_core::StubTransport);

impl apimail_core::delivery::Senders for OneSender {
    type Sender = apimail_core::StubTransport;

    async fn resolve(
        &self,
        _entry: &apimail_core::outbox::Entry,
    ) -> Result<apimail_core::StubTransport, String> {
        Ok(self.0.clone())
    }
}

/// The delivery engine over the PostgreSQL store, through core's seam:
/// what it sends is byte for byte what was accepted (streamed from the
/// store's chunks), and its outcomes are settled and journaled in the
/// database as they are in the local spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_engine_sends_and_settles_through_the_store() {
    use apimail_core::delivery::{Engine, IfNotSent, Selection, Settings, Settled};
    use apimail_core::retry::RetryPolicy;
    use apimail_core::{ErrorKind, StubTransport};

    let Some((cluster, db)) = database("engine_over_postgres") else {
        return;
    };
    // Chunks of 7 bytes: every message spans several rows.
    let store = store(cluster, &db, "node-a").await.with_chunk_bytes(7);
    for n in 0..3 {
        store.accept(&message(n), meta(n)).await.unwrap();
    }
    let stub = StubTransport::new_ok();
    let engine = Engine::with_store(store.clone(), OneSender(stub.clone()), Settings::default());
    let report = engine.flush(&Selection::default()).await.unwrap();
    assert_eq!(report.sent, 3, "{report:?}");
    let mut sent: Vec<Vec<u8>> = stub
        .messages()
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    sent.sort();
    assert_eq!(sent, (0..3).map(message).collect::<Vec<_>>());
    assert!(
        store.list().await.unwrap().is_empty(),
        "sent entries are removed"
    );
    let records = store
        .read_journal(&Filter::default(), 0, 100)
        .await
        .unwrap();
    let sent_records: Vec<&Record> = records
        .iter()
        .map(|s| &s.record)
        .filter(|r| r.outcome == Status::Sent)
        .collect();
    assert_eq!(sent_records.len(), 3, "{records:?}");
    let mut subjects: Vec<_> = sent_records.iter().map(|r| r.subject.clone()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![Some("0".into()), Some("1".into()), Some("2".into())]
    );
    assert!(sent_records.iter().all(|r| r.attempts == 1));

    // Each attempt read its message from the database once (spooled, the
    // Subject taken as it went by).
    assert_eq!(store.messages_read(), 3);

    // A temporary failure keeps the entry queued for later; a permanent
    // one fails it. Both are journaled.
    let claim = store.accept_claimed(&message(7), meta(7)).await.unwrap();
    let id = claim.entry().id.clone();
    let busy = StubTransport::new_error(ErrorKind::Temporary, "server busy");
    let engine = Engine::with_store(store.clone(), OneSender(busy.clone()), Settings::default());
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::standard()
    };
    let delivery = engine
        .deliver_claimed(claim, &busy, &once, IfNotSent::Keep)
        .await
        .unwrap();
    assert!(
        matches!(delivery.settled, Settled::Queued { .. }),
        "{delivery:?}"
    );
    let entry = store.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Queued);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.in_flight_since, None);
    assert!(entry.next_attempt_at > now_unix(), "rescheduled");
    assert_eq!(store.messages_read(), 4, "the failed attempt read it once");

    let refused = StubTransport::new_error(ErrorKind::InvalidMessage, "refused for good");
    let engine = Engine::with_store(
        store.clone(),
        OneSender(refused.clone()),
        Settings::default(),
    );
    let delivery = engine
        .deliver(&id, &refused, &once, IfNotSent::Keep)
        .await
        .unwrap();
    assert_eq!(delivery.settled, Settled::Failed, "{delivery:?}");
    let failed = store.list_failed().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 2);
    let outcomes: Vec<Status> = store
        .read_journal(&Filter::default(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.record.queue_id.as_deref() == Some(id.as_str()))
        .map(|s| s.record.outcome)
        .collect();
    assert_eq!(outcomes, vec![Status::Queued, Status::Failed]);
    // Two attempts, two reads; both records have the Subject.
    assert_eq!(store.messages_read(), 5);
    let subjects: Vec<Option<String>> = store
        .read_journal(&Filter::default(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.record.queue_id.as_deref() == Some(id.as_str()))
        .map(|s| s.record.subject)
        .collect();
    assert_eq!(subjects, vec![Some("7".to_owned()), Some("7".to_owned())]);
}
