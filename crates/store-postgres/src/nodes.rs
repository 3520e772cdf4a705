//! The nodes that use the store, and their clocks. A node records a
//! heartbeat ([`Store::heartbeat`]: its name, the database's time, its own
//! clock's offset from the database's) when it opens the store, and a
//! long-running node may record one periodically; `apimail doctor`
//! compares this machine's clock and the other nodes' with the database's
//! ([`Store::clock_offset`], [`Store::nodes_seen`]). Leases are measured
//! by the database's clock, but entries' due times and the journal's
//! times by each node's.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{self, StoreError};
use crate::store::Store;

/// Nodes not seen for this long are forgotten (each heartbeat prunes).
const FORGET_AFTER_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// This node's clock against the database's, measured once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockOffset {
    /// This node's clock minus the database's, in seconds (positive: this
    /// node is ahead), at the midpoint of the round trip.
    pub offset_secs: f64,
    /// How long the query took there and back: the measure's uncertainty.
    pub round_trip: Duration,
}

/// A node's last heartbeat, as the store recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    /// The node's name ([`Store::node`]).
    pub node: String,
    /// How long ago it was seen, by the database's clock.
    pub seen_secs_ago: f64,
    /// Its clock minus the database's then, in seconds.
    pub offset_secs: f64,
}

impl Store {
    /// This machine's clock against the database's (`clock_timestamp()`),
    /// over one pooled connection.
    pub async fn clock_offset(&self) -> Result<ClockOffset, StoreError> {
        let what = "read the database's clock";
        let client = self.client(what).await?;
        let sent = unix_now();
        let started = Instant::now();
        let row = client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .map_err(error::query(what))?;
        let round_trip = started.elapsed();
        let database: f64 = row.get(0);
        Ok(ClockOffset {
            offset_secs: sent + round_trip.as_secs_f64() / 2.0 - database,
            round_trip,
        })
    }

    /// Records that this node is alive now, with its clock's offset from
    /// the database's (returned), and forgets nodes not seen for a week.
    /// Opening the store records one; long-running nodes may call it
    /// periodically. Needs schema version 2.
    pub async fn heartbeat(&self) -> Result<ClockOffset, StoreError> {
        let offset = self.clock_offset().await?;
        let what = "record this node's heartbeat";
        let client = self.client(what).await?;
        let node: &str = &self.node;
        client
            .execute(
                "INSERT INTO apimail_nodes (node, seen_at, node_clock, offset_secs) \
                 VALUES ($1, clock_timestamp(), \
                 extract(epoch FROM clock_timestamp())::float8 + $2::float8, $2::float8) \
                 ON CONFLICT (node) DO UPDATE SET seen_at = EXCLUDED.seen_at, \
                 node_clock = EXCLUDED.node_clock, offset_secs = EXCLUDED.offset_secs",
                &[&node, &offset.offset_secs],
            )
            .await
            .map_err(error::query(what))?;
        client
            .execute(
                "DELETE FROM apimail_nodes \
                 WHERE seen_at < clock_timestamp() - make_interval(secs => $1)",
                &[&FORGET_AFTER_SECS],
            )
            .await
            .map_err(error::query(what))?;
        Ok(offset)
    }

    /// The nodes seen within `within` (this one included if it recorded a
    /// heartbeat), by name.
    pub async fn nodes_seen(&self, within: Duration) -> Result<Vec<NodeSeen>, StoreError> {
        let what = "read the nodes' heartbeats";
        let client = self.client(what).await?;
        let rows = client
            .query(
                "SELECT node, extract(epoch FROM clock_timestamp() - seen_at)::float8, offset_secs \
                 FROM apimail_nodes \
                 WHERE seen_at > clock_timestamp() - make_interval(secs => $1) \
                 ORDER BY node",
                &[&within.as_secs_f64()],
            )
            .await
            .map_err(error::query(what))?;
        Ok(rows
            .iter()
            .map(|row| NodeSeen {
                node: row.get(0),
                seen_secs_ago: row.get(1),
                offset_secs: row.get(2),
            })
            .collect())
    }
}

/// This machine's clock, in Unix seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
