//! The back-off on failed logins per client address, for every server
//! that checks passwords (the relay's AUTH, the admin console's sign-in):
//! the first few failures are answered at once, then each answer waits
//! longer, then the address is locked out. Checks still running count as
//! failures until they end, so parallel connections get no more checked
//! attempts than one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How failed logins from one client address are slowed, then refused.
/// No default here: each server states its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    /// Failures answered at once.
    pub free_failures: u32,
    /// The delay before the answer to the first failure after the free
    /// ones; it doubles with each further failure, up to `max_delay`.
    pub delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// After this many failures, logins from the address are refused...
    pub lock_after: u32,
    /// ...for this long after the last failure.
    pub lock_for: Duration,
}

/// What the back-off says about a login from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// Too many failures: refused for this much longer.
    Locked(Duration),
}

/// Failed logins per client address, over all its connections.
#[derive(Debug)]
pub struct LoginBackoff {
    settings: BackoffSettings,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Checks begun and not yet ended.
    in_flight: u32,
    last: Instant,
}

/// One password check that [`LoginBackoff::begin`] let through; ended by
/// [`failed`](Attempt::failed) or [`succeeded`](Attempt::succeeded), and
/// by dropping it otherwise (it then counts for nothing).
#[derive(Debug)]
pub struct Attempt<'a> {
    backoff: &'a LoginBackoff,
    ip: IpAddr,
    ended: bool,
}

/// Addresses remembered before old ones are forgotten.
const PRUNE_AT: usize = 4096;

impl LoginBackoff {
    /// No failures yet.
    pub fn new(settings: BackoffSettings) -> Self {
        LoginBackoff {
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
    pub fn gate(&self, ip: IpAddr) -> Gate {
        match self.table().get(&ip) {
            Some(f) => self.judge(f),
            None => Gate::Open,
        }
    }

    fn judge(&self, f: &Failures) -> Gate {
        let lock_for = self.settings.lock_for;
        let elapsed = f.last.elapsed();
        let count = if f.in_flight == 0 && elapsed >= self.forget_after() {
            0
        } else {
            f.count
        };
        if count.saturating_add(f.in_flight) < self.settings.lock_after {
            Gate::Open
        } else if count >= self.settings.lock_after && elapsed >= lock_for {
            // The lock has run out.
            Gate::Open
        } else if count >= self.settings.lock_after {
            Gate::Locked(lock_for - elapsed)
        } else {
            // Locked by checks still running: for as long as a lock lasts,
            // unless they succeed.
            Gate::Locked(lock_for)
        }
    }

    /// Lets one password check of `ip` begin, unless its failures and the
    /// checks it has in flight reach the lock; `Err` says for how long.
    pub fn begin(&self, ip: IpAddr) -> Result<Attempt<'_>, Duration> {
        let mut table = self.table();
        if table.len() >= PRUNE_AT {
            let forget_after = self.forget_after();
            table.retain(|_, f| f.in_flight > 0 || f.last.elapsed() < forget_after);
        }
        let now = Instant::now();
        let entry = table.entry(ip).or_insert(Failures {
            count: 0,
            in_flight: 0,
            last: now,
        });
        if let Gate::Locked(left) = self.judge(entry) {
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
    /// Records a failure; returns how long to wait before answering, and
    /// the number of failures in a row from the address.
    pub fn failed(mut self) -> (Duration, u32) {
        self.ended = true;
        self.backoff.end(self.ip, true)
    }

    /// A successful login clears the address's failures.
    pub fn succeeded(mut self) {
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
        let backoff = LoginBackoff::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let delays: Vec<_> = (0..5)
            .map(|_| backoff.begin(ip).unwrap().failed().0.as_millis())
            .collect();
        assert_eq!(delays, [0, 0, 10, 20, 25]);
        assert!(matches!(backoff.gate(ip), Gate::Locked(_)));
        assert!(backoff.begin(ip).is_err());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(backoff.gate(other), Gate::Open);
        backoff.begin(other).unwrap().succeeded();
        assert_eq!(backoff.gate(other), Gate::Open);
    }

    #[test]
    fn checks_in_flight_count_toward_the_lock() {
        let backoff = LoginBackoff::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Five checks at once (parallel connections): the sixth must wait
        // for the lock, not run.
        let running: Vec<_> = (0..5).map(|_| backoff.begin(ip).unwrap()).collect();
        assert!(backoff.begin(ip).is_err());
        assert!(matches!(backoff.gate(ip), Gate::Locked(_)));
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
        assert_eq!(backoff.gate(ip), Gate::Open);
    }
}
