//! apimail's outbox, delivery journal and per-mailbox pacing on
//! PostgreSQL, shared by any number of relays and workers.
//!
//! - [`Store`]: one node's handle (a pool over tokio-postgres with the
//!   project's rustls configuration); [`Store::migrate`] runs the
//!   versioned schema migrations.
//! - The outbox: [`Store::begin`] / [`Incoming`] (messages in chunks of at
//!   most [`CHUNK_BYTES`], accepted when the transaction commits),
//!   [`Store::claim_next_due`] and friends give a [`Claim`], a lease that
//!   renews itself and fences every write.
//! - The journal: [`Store::append`], [`Store::read_journal`].
//! - Pacing: [`Store::try_start`] / [`Permit`].
//! - Nodes: [`Store::heartbeat`] records this node and its clock's
//!   offset from the database's; [`Store::nodes_seen`] lists them.
//! - OAuth tokens: [`SharedTokens`], sealed under a [`StoreKey`], behind
//!   core's token seam (`TokenVault`): one refresh per account across
//!   the cluster.
//!
//! `SEAM.md` beside this crate proposes the trait the delivery engine
//! takes so that this store and the local outbox plug in alike.

mod claim;
mod connect;
mod error;
mod journal;
mod message;
mod migrate;
mod nodes;
mod pace;
mod queue;
mod rows;
mod seal;
mod seam;
mod store;
mod subjects;
mod tokens;

pub use claim::Claim;
pub use connect::{StoreConfig, redact_url};
pub use error::StoreError;
pub use journal::Stored;
pub use message::MessageReader;
pub use migrate::{Migrated, latest_version};
pub use nodes::{ClockOffset, NodeSeen};
pub use pace::{Permit, Start};
pub use queue::Incoming;
pub use seal::{KEY_LEN, KeyError, OpenError, StoreKey, write_new_key};
pub use store::{CHUNK_BYTES, Store};
pub use tokens::{SharedTokens, TokensError};
