//! The store seam (issue 25): what the delivery engine needs from wherever
//! the outbox and the journal live. Core names no backend: the local spool
//! ([`LocalStore`], over [`crate::outbox`] and [`crate::journal`]) is the
//! default, and other crates (such as `apimail-store-postgres`) implement
//! the same traits and call the same settling rules.
//!
//! - `seam.rs`: the traits, [`Store`], [`StoreClaim`], [`StoreIncoming`]
//!   (a message streamed in) and [`SharedStore`] (a store several nodes
//!   share: due entries claimed from it, pacing kept in it).
//! - `local.rs`: [`LocalStore`], the local spool behind them.
//! - `settle.rs`: the settling rules, pure functions on
//!   [`Entry`](crate::outbox::Entry) that every backend calls before
//!   writing the entry, so that two backends cannot drift apart.

mod local;
mod seam;
mod settle;

pub use local::LocalStore;
pub(crate) use local::stored_subject;
pub use seam::{PaceStart, SharedStore, Store, StoreClaim, StoreIncoming};
pub use settle::human_age;
