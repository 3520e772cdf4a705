//! [`StoreError`]: why the store could not do something. Texts name the
//! operation and the entry, never a message's content, the URL's password
//! or a token.

use apimail_core::outbox::EntryId;

/// Why the PostgreSQL store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's URL cannot be read.
    #[error("the store URL is not a PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong (never the password).
        reason: String,
    },
    /// No rustls configuration (the project's roots could not be loaded).
    #[error("cannot set up TLS to the database: {0}")]
    Tls(#[from] apimail_core::http::TlsSetupError),
    /// The database could not be reached, or a connection failed.
    #[error("cannot reach the database ({what})")]
    Unreachable {
        /// The operation.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A statement failed.
    #[error("the database refused to {what}")]
    Query {
        /// The operation.
        what: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The schema could not be migrated.
    #[error("cannot migrate the store's schema")]
    Migrate(#[source] refinery::Error),
    /// The schema is older than this apimail: run `apimail store migrate`.
    #[error("the store's schema is at version {found}, this apimail needs {needed}")]
    SchemaBehind {
        /// The newest migration applied.
        found: i64,
        /// The newest migration this apimail has.
        needed: i64,
    },
    /// Another node holds a lease on the entry (it is sending it).
    #[error("entry {id} is being sent by node {node}")]
    Busy {
        /// The entry.
        id: EntryId,
        /// The node holding its lease.
        node: String,
    },
    /// The claim's lease ran out and another node may have taken the
    /// entry: nothing was written.
    #[error("the lease on entry {id} was lost (it expired or another node took it over)")]
    LeaseLost {
        /// The entry.
        id: EntryId,
    },
    /// Not an entry id.
    #[error(transparent)]
    InvalidId(#[from] apimail_core::outbox::OutboxError),
    /// A row that does not read as an entry or record.
    #[error("unreadable {what} in the store: {reason}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// Why it does not read.
        reason: String,
    },
    /// Reading the message to be stored failed.
    #[error("cannot read the message to store")]
    Read(#[source] std::io::Error),
}

impl StoreError {
    /// Whether trying again later may succeed: the database was
    /// unreachable, or a statement failed for a reason other than our
    /// own SQL (a connection lost, a serialization failure, a shutdown).
    pub fn is_temporary(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::Busy { .. } => true,
            StoreError::Query { source, .. } => source.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                // 08: connection, 40: rollback, 53: resources, 57: shutdown.
                ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c))
            }),
            _ => false,
        }
    }
}

impl StoreError {
    /// The SQLSTATE the server answered with, if it answered: `28P01` a
    /// wrong password, `42501` a missing privilege, `3D000` no such
    /// database.
    pub fn sqlstate(&self) -> Option<&str> {
        let pg = match self {
            StoreError::Query { source, .. } => source,
            StoreError::Unreachable { source, .. } => {
                match source.downcast_ref::<deadpool_postgres::PoolError>() {
                    Some(deadpool_postgres::PoolError::Backend(e)) => e,
                    _ => return None,
                }
            }
            StoreError::Migrate(e) => {
                return std::error::Error::source(e)
                    .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
                    .and_then(|e| e.as_db_error())
                    .map(|db| db.code().code());
            }
            _ => return None,
        };
        pg.as_db_error().map(|db| db.code().code())
    }
}

/// A statement's failure as [`StoreError::Query`].
pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// A pool's failure as [`StoreError::Unreachable`].
pub(crate) fn pool(what: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> StoreError {
    move |source| StoreError::Unreachable {
        what,
        source: Box::new(source),
    }
}
