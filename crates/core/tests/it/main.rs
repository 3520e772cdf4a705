//! Integration tests for apimail-core's composer and parser.
//!
//! - `golden`: byte-for-byte comparisons against `tests/golden/*.eml`
//!   (set `APIMAIL_BLESS=1` to rewrite them after an intended change).
//! - `roundtrip`: every composed message parsed back with mail-parser.
//! - `props`: property tests over arbitrary Unicode input.

mod golden;
mod props;
mod roundtrip;
mod support;
