//! `open_store` against a real, throwaway PostgreSQL cluster (skipped,
//! saying why, where PostgreSQL is not installed): `[store] migrate =
//! true` migrates before opening, and opening records the node.

use std::time::Duration;

use apimail_account::{StoreSettings, open_store};
use apimail_core::Secret;
use apimail_store_postgres::{StoreError, latest_version};
use apimail_test_postgres::skip_or_panic;

#[tokio::test]
async fn migrate_true_brings_the_schema_up_to_date_when_opening() {
    let Some(cluster) = skip_or_panic("migrate_true_brings_the_schema_up_to_date_when_opening")
    else {
        return;
    };
    let db = cluster.new_database("open_store").unwrap();
    let mut settings = StoreSettings {
        url: Secret::new(cluster.url(&db)),
        url_from: "[store] url",
        password: Some(Secret::new(cluster.password())),
        migrate: false,
        token_key: None,
    };
    match open_store(&settings).await {
        Err(StoreError::SchemaBehind { found: 0, needed }) => {
            assert_eq!(needed, latest_version());
        }
        other => panic!("an unmigrated store opened without migrate: {other:?}"),
    }

    settings.migrate = true;
    let store = open_store(&settings).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), latest_version());
    let seen = store.nodes_seen(Duration::from_secs(600)).await.unwrap();
    assert!(
        seen.iter().any(|n| n.node == store.node()),
        "the node recorded its heartbeat: {seen:?}"
    );
    // Again: nothing left to migrate, and it opens.
    open_store(&settings).await.unwrap();
}
