//! The store seam (issue 25): what the delivery engine needs from wherever
//! the outbox, the journal and the pacing live. Core names no backend; the
//! local spool ([`crate::outbox`]) is the default, and other crates (such
//! as `apimail-store-postgres`) implement the same rules.
//!
//! This first step holds the **settling rules**: how a claimed [`Entry`]
//! changes when an attempt ends (rescheduled, expired, held, uncertain,
//! failed) and when `queue retry` resets it. They are pure functions on
//! [`Entry`] that every backend calls before writing the entry, so the
//! local outbox and PostgreSQL cannot drift apart. The traits the engine
//! will be generic over are proposed in `crates/store-postgres/SEAM.md`.

use std::time::Duration;

use crate::outbox::{Entry, EntryState, HoldKind, Outcome, next_delay_secs};

impl Entry {
    /// A temporary failure at `now`: counts the attempt, records `error`
    /// and schedules the next attempt per [`next_delay_secs`] (not before
    /// `retry_after` when the provider asked for that). Past the entry's
    /// maximum age it sets `failed_reason` to `expired after N days:
    /// <error>` and returns [`Outcome::Expired`]: the backend then moves
    /// the entry to its failed entries.
    pub fn settle_retry_later(
        &mut self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> Outcome {
        self.in_flight_since = None;
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(error.to_owned());
        let age = now.saturating_sub(self.retried_at.unwrap_or(self.created_at));
        if age > self.max_age_secs {
            self.failed_reason = Some(format!("expired after {}: {error}", human_age(age)));
            return Outcome::Expired;
        }
        let asked = retry_after.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let next_attempt_at = now.saturating_add(next_delay_secs(self.attempts).max(asked));
        self.state = EntryState::Queued;
        self.hold = None;
        self.next_attempt_at = next_attempt_at;
        Outcome::Rescheduled { next_attempt_at }
    }

    /// Holds the entry, waiting for `kind`, with `error` as its last
    /// error; counts no attempt.
    pub fn settle_hold(&mut self, kind: HoldKind, error: &str) {
        self.last_error = Some(error.to_owned());
        self.state = EntryState::Held;
        self.hold = Some(kind);
    }

    /// An authorization failure: counts the attempt and holds the entry
    /// for a login.
    pub fn settle_login_hold(&mut self, error: &str) {
        self.in_flight_since = None;
        self.attempts = self.attempts.saturating_add(1);
        self.settle_hold(HoldKind::Login, error);
    }

    /// An attempt whose outcome is unknown: marks the entry uncertain and
    /// holds it for the user (`hold`: [`Outcome::Held`]) or schedules it
    /// as [`settle_retry_later`](Self::settle_retry_later) does.
    pub fn settle_uncertain(&mut self, error: &str, now: i64, hold: bool) -> Outcome {
        self.outcome_unknown = true;
        if !hold {
            return self.settle_retry_later(error, now, None);
        }
        self.in_flight_since = None;
        self.attempts = self.attempts.saturating_add(1);
        self.settle_hold(HoldKind::Uncertain, error);
        Outcome::Held
    }

    /// Holds an uncertain entry for the user without an attempt now (the
    /// rule said hold before sending); counts no attempt.
    pub fn settle_hold_uncertain(&mut self, error: &str) {
        self.in_flight_since = None;
        self.outcome_unknown = true;
        self.settle_hold(HoldKind::Uncertain, error);
    }

    /// A permanent failure: counts the attempt and records `reason`; the
    /// backend then moves the entry to its failed entries.
    pub fn settle_fail(&mut self, reason: &str) {
        self.in_flight_since = None;
        self.attempts = self.attempts.saturating_add(1);
        self.failed_reason = Some(reason.to_owned());
    }

    /// `queue retry`: the entry due at `now`, queued, its hold and
    /// uncertainty cleared (remembered in `retried_unknown`). A `failed`
    /// entry (back from the failed entries) also has its attempts reset
    /// and its maximum age counted from `now`.
    pub fn settle_retry(&mut self, now: i64, failed: bool) {
        self.retried_unknown |= self.is_uncertain();
        if failed {
            self.attempts = 0;
            self.retried_at = Some(now);
        }
        self.state = EntryState::Queued;
        self.hold = None;
        self.next_attempt_at = now;
        self.failed_reason = None;
        self.outcome_unknown = false;
        self.in_flight_since = None;
    }
}

/// `5 days`, `1 hour`, `30 minutes`: how an expiry is worded.
pub fn human_age(secs: i64) -> String {
    let (n, unit) = match secs {
        86_400.. => (secs / 86_400, "day"),
        3600.. => (secs / 3600, "hour"),
        60.. => (secs / 60, "minute"),
        _ => (secs.max(0), "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}
