//! Versioned schema migrations (refinery; the SQL files in `migrations/`,
//! embedded at build time), run by `apimail store migrate`. Concurrent
//! runs from several nodes take turns under an advisory lock.

use refinery::embed_migrations;

use crate::error::{self, StoreError};
use crate::store::Store;

embed_migrations!("migrations");

/// refinery's history table.
const HISTORY_TABLE: &str = "apimail_schema_history";

/// The advisory lock key that serializes migrations ("apimail" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_7069_6d61_696c;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations applied now, as `V<version>__<name>`.
    pub applied: Vec<String>,
    /// The schema's version afterwards.
    pub version: i64,
}

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

impl Store {
    /// Brings the schema up to [`latest_version`]; a no-op when it is.
    pub async fn migrate(&self) -> Result<Migrated, StoreError> {
        let mut client = self.client("migrate").await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(error::query("take the migration lock"))?;
        let mut runner = migrations::runner();
        runner.set_migration_table_name(HISTORY_TABLE);
        let result = runner.run_async(&mut **client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let report = result.map_err(StoreError::Migrate)?;
        unlocked.map_err(error::query("release the migration lock"))?;
        let applied = report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect();
        Ok(Migrated {
            applied,
            version: self.schema_version().await?,
        })
    }

    /// The schema's version: the newest migration applied (0 for an empty
    /// database).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client("read the schema version").await?;
        let what = "read the schema version";
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
            .await
            .map_err(error::query(what))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let version: Option<i32> = client
            .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
            .await
            .map_err(error::query(what))?
            .get(0);
        Ok(version.map_or(0, i64::from))
    }

    /// Fails with [`StoreError::SchemaBehind`] unless the schema is at
    /// [`latest_version`].
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let found = self.schema_version().await?;
        let needed = latest_version();
        if found < needed {
            return Err(StoreError::SchemaBehind { found, needed });
        }
        Ok(())
    }
}
