//! The AUTH back-off per client address and the rate limit per principal
//! (sender patterns are [`apimail_core::intake::SenderPolicy`]'s).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::BackoffSettings;

/// What the back-off says about an AUTH attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthGate {
    /// Go ahead.
    Open,
    /// Too many failures: refused for this much longer.
    Locked(Duration),
}

/// Failed logins per client address, over all its connections: the first
/// few are answered at once, then each reply waits longer, then the address
/// is locked out. Verifications still running count as failures until they
/// end, so parallel connections get no more checked attempts than one.
#[derive(Debug)]
pub(super) struct AuthBackoff {
    settings: BackoffSettings,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Verifications begun and not yet ended.
    in_flight: u32,
    last: Instant,
}

/// One password check that [`AuthBackoff::begin`] let through; ended by
/// [`failed`](Attempt::failed) or [`succeeded`](Attempt::succeeded), and
/// by dropping it otherwise (it then counts for nothing).
#[derive(Debug)]
pub(super) struct Attempt<'a> {
    backoff: &'a AuthBackoff,
    ip: IpAddr,
    ended: bool,
}

/// Addresses remembered before old ones are forgotten.
const BACKOFF_TABLE_PRUNE_AT: usize = 4096;

impl AuthBackoff {
    pub(super) fn new(settings: BackoffSettings) -> Self {
        AuthBackoff {
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn forget_after(&self) -> Duration {
        self.settings.lock_for.max(Duration::from_secs(60))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is locked out now, counting its checks in flight.
    pub(super) fn gate(&self, ip: IpAddr) -> AuthGate {
        match self.table().get(&ip) {
            Some(f) => self.judge(f),
            None => AuthGate::Open,
        }
    }

    fn judge(&self, f: &Failures) -> AuthGate {
        let lock_for = self.settings.lock_for;
        let elapsed = f.last.elapsed();
        let count = if f.in_flight == 0 && elapsed >= self.forget_after() {
            0
        } else {
            f.count
        };
        if count.saturating_add(f.in_flight) < self.settings.lock_after {
            AuthGate::Open
        } else if count >= self.settings.lock_after && elapsed >= lock_for {
            // The lock has run out.
            AuthGate::Open
        } else if count >= self.settings.lock_after {
            AuthGate::Locked(lock_for - elapsed)
        } else {
            // Locked by checks still running: for as long as a lock lasts,
            // unless they succeed.
            AuthGate::Locked(lock_for)
        }
    }

    /// Lets one password check of `ip` begin, unless its failures and the
    /// checks it has in flight reach the lock; `Err` says for how long.
    pub(super) fn begin(&self, ip: IpAddr) -> Result<Attempt<'_>, Duration> {
        let mut table = self.table();
        if table.len() >= BACKOFF_TABLE_PRUNE_AT {
            let forget_after = self.forget_after();
            table.retain(|_, f| f.in_flight > 0 || f.last.elapsed() < forget_after);
        }
        let now = Instant::now();
        let entry = table.entry(ip).or_insert(Failures {
            count: 0,
            in_flight: 0,
            last: now,
        });
        if let AuthGate::Locked(left) = self.judge(entry) {
            return Err(left);
        }
        if entry.in_flight == 0 && now.duration_since(entry.last) >= self.forget_after() {
            entry.count = 0;
        }
        if entry.count >= self.settings.lock_after {
            // An expired lock: start over.
            entry.count = 0;
        }
        entry.in_flight += 1;
        Ok(Attempt {
            backoff: self,
            ip,
            ended: false,
        })
    }

    fn end(&self, ip: IpAddr, failed: bool) -> (Duration, u32) {
        let mut table = self.table();
        let now = Instant::now();
        let Some(entry) = table.get_mut(&ip) else {
            return (Duration::ZERO, 0);
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if !failed {
            entry.count = 0;
            if entry.in_flight == 0 {
                table.remove(&ip);
            }
            return (Duration::ZERO, 0);
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let count = entry.count;
        let beyond = count.saturating_sub(self.settings.free_failures);
        let delay = if beyond == 0 {
            Duration::ZERO
        } else {
            let factor = 1u32.checked_shl(beyond - 1).unwrap_or(u32::MAX);
            self.settings
                .delay
                .saturating_mul(factor)
                .min(self.settings.max_delay)
        };
        (delay, count)
    }
}

impl Attempt<'_> {
    /// Records a failure; returns how long to wait before replying, and
    /// the number of failures in a row from the address.
    pub(super) fn failed(mut self) -> (Duration, u32) {
        self.ended = true;
        self.backoff.end(self.ip, true)
    }

    /// A successful login clears the address's failures.
    pub(super) fn succeeded(mut self) {
        self.ended = true;
        self.backoff.end(self.ip, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let mut table = self.backoff.table();
            if let Some(entry) = table.get_mut(&self.ip) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }
}

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

    fn settings() -> BackoffSettings {
        BackoffSettings {
            free_failures: 2,
            delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(25),
            lock_after: 5,
            lock_for: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_delays_then_locks_and_success_clears() {
        let backoff = AuthBackoff::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let delays: Vec<_> = (0..5)
            .map(|_| backoff.begin(ip).unwrap().failed().0.as_millis())
            .collect();
        assert_eq!(delays, [0, 0, 10, 20, 25]);
        assert!(matches!(backoff.gate(ip), AuthGate::Locked(_)));
        assert!(backoff.begin(ip).is_err());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(backoff.gate(other), AuthGate::Open);
        backoff.begin(other).unwrap().succeeded();
        assert_eq!(backoff.gate(other), AuthGate::Open);
    }

    #[test]
    fn checks_in_flight_count_toward_the_lock() {
        let backoff = AuthBackoff::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Five checks at once (parallel connections): the sixth must wait
        // for the lock, not run.
        let running: Vec<_> = (0..5).map(|_| backoff.begin(ip).unwrap()).collect();
        assert!(backoff.begin(ip).is_err());
        assert!(matches!(backoff.gate(ip), AuthGate::Locked(_)));
        // One abandoned (its session went away): one more may run.
        let mut running = running.into_iter();
        drop(running.next());
        let more = backoff.begin(ip).unwrap();
        for attempt in running {
            attempt.failed();
        }
        assert!(backoff.begin(ip).is_err());
        // A success among them clears the failures.
        more.succeeded();
        assert_eq!(backoff.gate(ip), AuthGate::Open);
    }

    #[test]
    fn rate_limit_counts_per_principal() {
        let limiter = RateLimiter::default();
        assert!(limiter.try_take("a", 2));
        assert!(limiter.try_take("a", 2));
        assert!(!limiter.try_take("a", 2));
        assert!(limiter.try_take("b", 2));
    }
}
