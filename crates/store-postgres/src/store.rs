//! [`Store`]: one node's handle on the shared store (a connection pool,
//! this node's name, the lease length, the chunk size).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::connect::{self, StoreConfig};
use crate::error::{self, StoreError};
use crate::subjects::Subjects;

/// The largest message chunk stored in one row: 1 MiB.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The store, from one node. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    pub(crate) node: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) chunk_bytes: usize,
    /// Whether the journal records each message's Subject.
    pub(crate) subjects: bool,
    /// The Subjects read lately, shared by the clones.
    pub(crate) subjects_read: Arc<Subjects>,
    /// How many times a stored message was opened for reading.
    pub(crate) messages_read: Arc<AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for `config`. Connects lazily: the first operation that
    /// needs the database opens a connection (within the connect timeout).
    pub fn new(config: &StoreConfig) -> Result<Store, StoreError> {
        Ok(Store {
            pool: connect::pool(config)?,
            node: config.node.clone().unwrap_or_else(default_node).into(),
            lease: config.lease.max(Duration::from_secs(1)),
            chunk_bytes: CHUNK_BYTES,
            subjects: true,
            subjects_read: Arc::default(),
            messages_read: Arc::default(),
        })
    }

    /// [`new`](Self::new), then checks that the database answers and its
    /// schema is current ([`check_schema`](Self::check_schema)).
    /// Records this node's heartbeat too ([`ready`](Self::ready)).
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let store = Store::new(config)?;
        store.ready().await?;
        Ok(store)
    }

    /// Checks that the database answers and its schema is current, then
    /// records this node's heartbeat ([`heartbeat`](Self::heartbeat)); a
    /// heartbeat that cannot be written is only a warning.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.check_schema().await?;
        if let Err(e) = self.heartbeat().await {
            tracing::warn!("node {} recorded no heartbeat: {e}", self.node);
        }
        Ok(())
    }

    /// This node's name, as recorded in its leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the journal records each message's Subject (as the local
    /// journal's `Journal::with_subjects`; on by default).
    pub fn with_subjects(mut self, subjects: bool) -> Self {
        self.subjects = subjects;
        self
    }

    /// With chunks of at most `bytes` (tests use small ones).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.clamp(1, CHUNK_BYTES);
        self
    }

    /// With leases of `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many times this handle and its clones opened a stored message
    /// to read it (spooling it for an attempt, or reading its Subject when
    /// it was not spooled here): what deliveries cost the database.
    pub fn messages_read(&self) -> u64 {
        self.messages_read.load(Ordering::Relaxed)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self, what: &'static str) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(error::pool(what))
    }

    /// The lease length in seconds, for SQL intervals.
    pub(crate) fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// The database's clock, in Unix seconds: what leases are measured
    /// by (doctor compares it with the node's).
    pub async fn database_time(&self) -> Result<f64, StoreError> {
        let client = self.client("read the database's clock").await?;
        let row = client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .map_err(error::query("read the database's clock"))?;
        Ok(row.get(0))
    }
}

/// `<host>-<pid>-<4 random hex>`.
fn default_node() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    format!(
        "{host}-{}-{:02x}{:02x}",
        std::process::id(),
        random[0],
        random[1]
    )
}

/// A random fencing token for a lease or a permit.
pub(crate) fn token() -> i64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough within a process: time and a counter.
        static COUNTER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        return nanos ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    i64::from_le_bytes(bytes)
}
