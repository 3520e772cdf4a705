//! The settling rules: how a claimed [`Entry`] changes when an attempt
//! ends (rescheduled, expired, held, uncertain, failed) and when `queue
//! retry` resets it. Every backend calls them before writing the entry.

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::outbox::EntryId;

    const DAY: i64 = 86_400;

    fn entry() -> Entry {
        Entry {
            id: EntryId::parse("19700101T001640-0123456789ab").unwrap(),
            state: EntryState::Queued,
            account: None,
            provider: None,
            from: "a@example.com".into(),
            recipients: vec!["b@example.com".into()],
            message_id: "<m@example.com>".into(),
            size: 1,
            created_at: 1_000,
            attempts: 0,
            next_attempt_at: 1_000,
            last_error: None,
            max_age_secs: 5 * DAY,
            retried_at: None,
            failed_reason: None,
            identity: None,
            in_flight_since: Some(1_000),
            outcome_unknown: false,
            hold: None,
            retried_unknown: false,
            notes: BTreeMap::new(),
            original_from: None,
        }
    }

    #[test]
    fn a_temporary_failure_counts_the_attempt_and_waits_at_least_as_asked() {
        let mut e = entry();
        let now = 2_000;
        let outcome = e.settle_retry_later("503", now, Some(Duration::from_secs(7_200)));
        let expected = now + next_delay_secs(1).max(7_200);
        assert_eq!(
            outcome,
            Outcome::Rescheduled {
                next_attempt_at: expected
            }
        );
        assert_eq!((e.attempts, e.next_attempt_at), (1, expected));
        assert_eq!(e.last_error.as_deref(), Some("503"));
        assert_eq!(e.in_flight_since, None);
        assert_eq!(e.state, EntryState::Queued);
    }

    #[test]
    fn past_its_maximum_age_an_entry_expires_with_its_age_in_words() {
        let mut e = entry();
        let now = e.created_at + 6 * DAY;
        assert_eq!(e.settle_retry_later("503", now, None), Outcome::Expired);
        assert_eq!(
            e.failed_reason.as_deref(),
            Some("expired after 6 days: 503")
        );
        assert_eq!(e.attempts, 1);
    }

    #[test]
    fn an_uncertain_attempt_is_held_for_a_person_or_rescheduled() {
        let mut held = entry();
        assert_eq!(held.settle_uncertain("timeout", 2_000, true), Outcome::Held);
        assert!(held.outcome_unknown);
        assert_eq!(held.hold_kind(), Some(HoldKind::Uncertain));
        assert_eq!(held.attempts, 1);

        let mut again = entry();
        let outcome = again.settle_uncertain("timeout", 2_000, false);
        assert!(matches!(outcome, Outcome::Rescheduled { .. }));
        assert!(again.outcome_unknown);
        assert_eq!(again.state, EntryState::Queued);
    }

    #[test]
    fn holds_without_an_attempt_count_none() {
        let mut e = entry();
        e.settle_hold(HoldKind::Identity, "no sender");
        assert_eq!((e.attempts, e.hold_kind()), (0, Some(HoldKind::Identity)));
        let mut e = entry();
        e.settle_hold_uncertain("left in flight");
        assert_eq!((e.attempts, e.hold_kind()), (0, Some(HoldKind::Uncertain)));
        assert!(e.outcome_unknown);
        let mut e = entry();
        e.settle_login_hold("401");
        assert_eq!((e.attempts, e.hold_kind()), (1, Some(HoldKind::Login)));
    }

    #[test]
    fn queue_retry_resets_a_failed_entry_and_remembers_its_uncertainty() {
        let mut e = entry();
        e.settle_fail("550 no such user");
        assert_eq!(e.failed_reason.as_deref(), Some("550 no such user"));
        e.outcome_unknown = true;
        e.settle_retry(9_000, true);
        assert_eq!(
            (e.attempts, e.retried_at, e.next_attempt_at),
            (0, Some(9_000), 9_000)
        );
        assert!(e.retried_unknown && !e.outcome_unknown);
        assert_eq!(
            (e.failed_reason, e.hold, e.state),
            (None, None, EntryState::Queued)
        );

        let mut queued = entry();
        queued.settle_login_hold("401");
        queued.settle_retry(9_000, false);
        assert_eq!((queued.attempts, queued.retried_at), (1, None));
        assert_eq!(queued.state, EntryState::Queued);
    }

    #[test]
    fn ages_are_worded_in_their_largest_unit() {
        assert_eq!(human_age(5 * DAY + 10), "5 days");
        assert_eq!(human_age(3_600), "1 hour");
        assert_eq!(human_age(90), "1 minute");
        assert_eq!(human_age(-3), "0 seconds");
    }
}
