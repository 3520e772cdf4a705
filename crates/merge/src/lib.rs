//! apimail's mail merge: personalised messages from a sheet and a
//! template.
//!
//! - [`data`]: the sheet (CSV in UTF-8 or CP932, or `.xlsx`) as a [`Table`];
//! - [`template`]: the TOML template, rendered with minijinja (filters in
//!   `filters`);
//! - [`plan`]: every row checked before anything is sent, each good row a
//!   [`Planned`] message with a Message-ID from the merge and the row's key;
//! - [`state`]: the record that makes a merge resumable, never sending a
//!   row twice;
//! - [`estimate`](mod@estimate): the time the provider's pace and a daily
//!   limit allow;
//! - [`report`]: the CSV of every row's outcome.
//!
//! It composes with `apimail-core`'s composer; sending is the caller's,
//! through the outbox and the delivery engine.

pub mod data;
pub mod estimate;
mod filters;
pub mod plan;
pub mod report;
pub mod state;
pub mod template;

pub use data::{DataError, Encoding, Row, Table, load};
pub use estimate::{Estimate, estimate};
pub use plan::{Options, Plan, PlanError, Planned, RowError, check};
pub use state::{RowState, State, StateError, Status};
pub use template::{Template, TemplateError};
