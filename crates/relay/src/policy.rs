//! The rate limit per principal (sender patterns are
//! [`apimail_core::intake::SenderPolicy`]'s; the AUTH back-off is
//! [`apimail_core::login_backoff`]'s).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages per minute per principal, over a sliding minute.
#[derive(Debug, Default)]
pub(super) struct RateLimiter {
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Counts one message for `name` if it is under `per_minute`.
    pub(super) fn try_take(&self, name: &str, per_minute: u32) -> bool {
        let mut table = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let window = Duration::from_secs(60);
        let now = Instant::now();
        let times = table.entry(name.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= per_minute as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_principal() {
        let limiter = RateLimiter::default();
        assert!(limiter.try_take("a", 2));
        assert!(limiter.try_take("a", 2));
        assert!(!limiter.try_take("a", 2));
        assert!(limiter.try_take("b", 2));
    }
}
