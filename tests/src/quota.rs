//! Sending quotas as the fakes enforce them once a test turns them on: a
//! per-minute window and a rolling 24-hour window per sender, on a clock
//! the test can move forward.
//!
//! Both windows slide: what was taken at time `t` counts until `t + 60 s`
//! (or `t + 24 h`). Only what was let through is counted; a refused
//! request takes nothing. The fakes choose the costs (Gmail: quota units
//! a minute, messages a day; Graph: messages a minute, recipients a day)
//! and the answers.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The per-minute window, in seconds.
pub const MINUTE: f64 = 60.0;
/// The daily window, in seconds: a rolling 24 hours.
pub const DAY: f64 = 86_400.0;

/// What [`Quotas::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Within both limits: taken.
    Allowed,
    /// Over the per-minute limit; enough frees up at `retry_at` (Unix
    /// seconds on the fake's clock).
    OverMinute {
        /// When the request would fit.
        retry_at: f64,
    },
    /// Over the daily limit; enough frees up at `retry_at`.
    OverDay {
        /// When the request would fit.
        retry_at: f64,
    },
}

/// One sender's windows.
#[derive(Debug, Default)]
struct Windows {
    minute: VecDeque<(f64, u64)>,
    day: VecDeque<(f64, u64)>,
}

/// The limits, what each sender took, the clock, and what was refused.
#[derive(Debug, Default)]
pub struct Quotas {
    /// Most a sender may take in any 60 s (off when `None`).
    pub per_minute: Option<u64>,
    /// Most a sender may take in any 24 h (off when `None`).
    pub daily: Option<u64>,
    offset: Duration,
    senders: HashMap<String, Windows>,
    /// Requests refused for the per-minute limit.
    pub throttled: usize,
    /// Requests refused for the daily limit.
    pub over_daily: usize,
}

impl Quotas {
    /// The fake's clock: the real time plus what [`advance`](Self::advance)
    /// added, in Unix seconds.
    pub fn now(&self) -> f64 {
        (SystemTime::now() + self.offset)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    /// Moves the fake's clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    /// Takes `minute_cost` from `who`'s per-minute window and `day_cost`
    /// from its daily one, if both fit; otherwise takes nothing and counts
    /// the refusal. A cost of 0 is never refused by its window.
    pub fn take(&mut self, who: &str, minute_cost: u64, day_cost: u64) -> Verdict {
        let now = self.now();
        let windows = self.senders.entry(who.to_lowercase()).or_default();
        prune(&mut windows.minute, now - MINUTE);
        prune(&mut windows.day, now - DAY);
        if day_cost > 0
            && let Some(limit) = self.daily
            && let Some(retry_at) = refusal(&windows.day, limit, day_cost, DAY)
        {
            self.over_daily += 1;
            return Verdict::OverDay { retry_at };
        }
        if minute_cost > 0
            && let Some(limit) = self.per_minute
            && let Some(retry_at) = refusal(&windows.minute, limit, minute_cost, MINUTE)
        {
            self.throttled += 1;
            return Verdict::OverMinute { retry_at };
        }
        if minute_cost > 0 {
            windows.minute.push_back((now, minute_cost));
        }
        if day_cost > 0 {
            windows.day.push_back((now, day_cost));
        }
        Verdict::Allowed
    }
}

/// Drops what was taken at or before `since`.
fn prune(window: &mut VecDeque<(f64, u64)>, since: f64) {
    while window.front().is_some_and(|(at, _)| *at <= since) {
        window.pop_front();
    }
}

/// `None` if `cost` fits under `limit`; else when it will (the time the
/// oldest takings that must leave have left). A cost over the limit itself
/// never fits: it is retried after a whole window.
fn refusal(window: &VecDeque<(f64, u64)>, limit: u64, cost: u64, span: f64) -> Option<f64> {
    let used: u64 = window.iter().map(|(_, c)| c).sum();
    if used + cost <= limit {
        return None;
    }
    let mut left = used;
    for (at, taken) in window {
        left -= taken;
        if left + cost <= limit {
            return Some(at + span);
        }
    }
    Some(window.back().map_or(0.0, |(at, _)| *at) + span)
}

/// Seconds from `now` to `at`, rounded up, at least 1 (for `Retry-After`).
pub fn seconds_until(now: f64, at: f64) -> u64 {
    ((at - now).ceil() as u64).max(1)
}

/// `at` as Google writes times in its errors: `2026-12-07T03:04:05.678Z`.
pub fn rfc3339_millis(at: f64) -> String {
    let nanos = (at * 1e9) as i128;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_window_refuses_the_one_too_many_until_the_oldest_leaves() {
        let mut quotas = Quotas {
            per_minute: Some(300),
            ..Quotas::default()
        };
        for _ in 0..3 {
            assert_eq!(quotas.take("A@x", 100, 1), Verdict::Allowed);
        }
        let now = quotas.now();
        match quotas.take("a@x", 100, 1) {
            Verdict::OverMinute { retry_at } => {
                assert!(
                    retry_at > now + 59.0 && retry_at <= now + 60.5,
                    "{retry_at}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(quotas.throttled, 1);
        // Another sender has a window of its own; reads that cost nothing
        // a day still count a minute.
        assert_eq!(quotas.take("b@x", 100, 0), Verdict::Allowed);
        quotas.advance(Duration::from_secs(61));
        assert_eq!(quotas.take("a@x", 100, 1), Verdict::Allowed);
    }

    #[test]
    fn the_daily_window_is_a_rolling_24_hours() {
        let mut quotas = Quotas {
            daily: Some(2),
            ..Quotas::default()
        };
        assert_eq!(quotas.take("a", 0, 1), Verdict::Allowed);
        quotas.advance(Duration::from_secs(3600));
        assert_eq!(quotas.take("a", 0, 1), Verdict::Allowed);
        assert!(matches!(quotas.take("a", 0, 1), Verdict::OverDay { .. }));
        // 23 h later the first has left the window, the second not.
        quotas.advance(Duration::from_secs(23 * 3600));
        assert_eq!(quotas.take("a", 0, 1), Verdict::Allowed);
        assert!(matches!(quotas.take("a", 0, 1), Verdict::OverDay { .. }));
        assert_eq!(quotas.over_daily, 2);
        assert_eq!(quotas.throttled, 0);
    }

    #[test]
    fn google_times_have_milliseconds() {
        assert_eq!(rfc3339_millis(1.5), "1970-01-01T00:00:01.500Z");
        assert_eq!(seconds_until(10.0, 10.2), 1);
        assert_eq!(seconds_until(10.0, 13.5), 4);
    }
}
