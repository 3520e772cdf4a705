//! A throwaway PostgreSQL cluster for apimail's tests (see [`PgCluster`]).

mod cluster;

pub use cluster::{
    BIN_VAR, PgCluster, REQUIRED_VAR, USER, Unavailable, skip_or_panic, start_or_skip,
};
