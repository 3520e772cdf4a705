//! What the relay's workers take from a shared store
//! (`apimail_core::store::SharedStore`): each mailbox's head, and pacing
//! permits that hold their slot however long the delivery takes. Against a
//! real, throwaway PostgreSQL cluster; skipped, saying why, without one.

use std::time::Duration;

use apimail_core::outbox::NewEntry;
use apimail_core::store::{PaceStart, SharedStore, StoreClaim};
use apimail_core::{Pace, Secret, SenderIdentity, now_unix};
use apimail_store_postgres::{Store, StoreConfig};
use apimail_test_postgres::skip_or_panic;

/// A migrated store on a fresh database of the shared cluster, as `node`.
async fn store(test: &str, node: &str) -> Option<(Store, StoreConfig)> {
    let cluster = skip_or_panic(test)?;
    let db = cluster.new_database(test).expect("create a database");
    let mut config = StoreConfig::new(cluster.url(&db)).password(Secret::new(cluster.password()));
    config.node = Some(node.to_owned());
    let store = Store::new(&config).unwrap();
    store.migrate().await.unwrap();
    Some((store, config))
}

fn meta(mailbox: &str, n: usize) -> NewEntry {
    NewEntry {
        identity: Some(SenderIdentity::account(mailbox)),
        account: Some(mailbox.into()),
        from: "scanner@example.com".into(),
        recipients: vec![format!("r{n}@example.com")],
        message_id: format!("<{mailbox}-{n}@example.com>"),
        ..NewEntry::default()
    }
}

fn message(n: usize) -> Vec<u8> {
    format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_heads_gives_each_mailboxs_oldest_entry_that_no_node_holds() {
    let Some((a, config)) = store("due_heads_each_mailbox", "node-a").await else {
        return;
    };
    let mut other = config.clone();
    other.node = Some("node-b".into());
    let b = Store::new(&other).unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(a.accept(&message(n), meta("ops", n)).await.unwrap());
    }
    // Accepted within a second: oldest first is by id then.
    ids.sort();
    let sales = a.accept(&message(9), meta("sales", 9)).await.unwrap();

    let heads = b.due_heads(now_unix(), 100).await.unwrap();
    let mut found: Vec<_> = heads.iter().map(|e| e.id.clone()).collect();
    found.sort();
    let mut expected = vec![ids[0].clone(), sales.clone()];
    expected.sort();
    assert_eq!(found, expected, "one head per mailbox, the oldest");

    // Node A holds ops's head: node B sees the next one of ops.
    let claim = a.claim_due(&ids[0], now_unix()).await.unwrap().unwrap();
    let heads = b.due_heads(now_unix(), 100).await.unwrap();
    assert!(heads.iter().any(|e| e.id == ids[1]), "{heads:?}");
    assert!(!heads.iter().any(|e| e.id == ids[0]), "{heads:?}");

    // Held for its sender: still a head, for whoever can resolve it.
    StoreClaim::hold_unsent(claim, "no login here")
        .await
        .unwrap();
    let held = b.claim_due(&ids[1], now_unix()).await.unwrap().unwrap();
    let heads = b.due_heads(now_unix(), 100).await.unwrap();
    assert!(
        heads
            .iter()
            .any(|e| e.id == ids[0] && e.waits_for_identity()),
        "{heads:?}"
    );
    drop(held);
    assert_eq!(b.due_heads(now_unix(), 1).await.unwrap().len(), 1, "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacing_permit_keeps_its_slot_past_its_lease_while_held() {
    let Some((a, config)) = store("permit_renewed_while_held", "node-a").await else {
        return;
    };
    let a = a.with_lease(Duration::from_secs(1));
    let mut other = config.clone();
    other.node = Some("node-b".into());
    let b = Store::new(&other).unwrap();
    let one_at_a_time = Pace {
        concurrency: 1,
        ..Pace::UNLIMITED
    };
    let PaceStart::Go(permit) = SharedStore::try_start(&a, "ops", one_at_a_time)
        .await
        .unwrap()
    else {
        panic!("the first start goes");
    };
    // Three lease lengths later the permit still holds the one slot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        matches!(
            SharedStore::try_start(&b, "ops", one_at_a_time)
                .await
                .unwrap(),
            PaceStart::Wait(_)
        ),
        "the held permit was renewed"
    );
    permit.finish().await.unwrap();
    assert!(matches!(
        SharedStore::try_start(&b, "ops", one_at_a_time)
            .await
            .unwrap(),
        PaceStart::Go(_)
    ));
}
