//! Who may send as whom: sender patterns, the AUTH back-off per client
//! address and the rate limit per principal.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{BackoffSettings, Principal};

/// Whether `principal` may send as `sender` (an address): one of its
/// `allowed_from` patterns matches, or, with none, it is the account's own
/// address.
pub(super) fn sender_allowed(
    principal: &Principal,
    account_address: Option<&str>,
    sender: &str,
) -> bool {
    if principal.allowed_from.is_empty() {
        return account_address.is_some_and(|own| own.eq_ignore_ascii_case(sender));
    }
    principal
        .allowed_from
        .iter()
        .any(|pattern| glob_match(pattern, sender))
}

/// `*` matches any run of characters; everything else matches itself,
/// ASCII case-insensitively.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let text = text.to_ascii_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What the back-off says about an AUTH attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthGate {
    /// Go ahead.
    Open,
    /// Too many failures: refused for this much longer.
    Locked(Duration),
}

/// Failed logins per client address: the first few are answered at once,
/// then each reply waits longer, then the address is locked out.
#[derive(Debug)]
pub(super) struct AuthBackoff {
    settings: BackoffSettings,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
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

    pub(super) fn gate(&self, ip: IpAddr) -> AuthGate {
        let table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&ip) {
            Some(f) if f.count >= self.settings.lock_after => {
                let elapsed = f.last.elapsed();
                if elapsed < self.settings.lock_for {
                    AuthGate::Locked(self.settings.lock_for - elapsed)
                } else {
                    AuthGate::Open
                }
            }
            _ => AuthGate::Open,
        }
    }

    /// Records a failure; returns how long to wait before replying, and
    /// the number of failures so far.
    pub(super) fn failure(&self, ip: IpAddr) -> (Duration, u32) {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let forget_after = self.settings.lock_for.max(Duration::from_secs(60));
        if table.len() >= BACKOFF_TABLE_PRUNE_AT {
            table.retain(|_, f| f.last.elapsed() < forget_after);
        }
        let now = Instant::now();
        let entry = table.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= forget_after {
            entry.count = 0;
        }
        entry.count += 1;
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

    pub(super) fn success(&self, ip: IpAddr) {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(&ip);
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

    fn principal(patterns: &[&str]) -> Principal {
        Principal {
            name: "printer".into(),
            account: "work".into(),
            allowed_from: patterns.iter().map(|p| p.to_string()).collect(),
            rewrite_from: false,
            messages_per_minute: None,
        }
    }

    #[test]
    fn globs_match_whole_addresses_case_insensitively() {
        assert!(glob_match("*@example.com", "Scanner@EXAMPLE.com"));
        assert!(!glob_match("*@example.com", "x@example.com.evil"));
        assert!(glob_match("scanner@*", "scanner@local"));
        assert!(!glob_match("scanner@*", "scanner2@local"));
        assert!(glob_match("*", "anything@x"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("ops@example.com", "OPS@example.com"));
        assert!(!glob_match("ops@example.com", "ops@example.co"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn no_pattern_allows_only_the_accounts_address() {
        let p = principal(&[]);
        assert!(sender_allowed(&p, Some("me@example.com"), "ME@example.com"));
        assert!(!sender_allowed(
            &p,
            Some("me@example.com"),
            "you@example.com"
        ));
        assert!(!sender_allowed(&p, None, "me@example.com"));
        let p = principal(&["*@example.com"]);
        assert!(sender_allowed(&p, None, "you@example.com"));
        assert!(!sender_allowed(&p, None, "you@example.org"));
    }

    #[test]
    fn backoff_delays_then_locks_and_success_clears() {
        let backoff = AuthBackoff::new(BackoffSettings {
            free_failures: 2,
            delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(25),
            lock_after: 5,
            lock_for: Duration::from_secs(60),
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let delays: Vec<_> = (0..5).map(|_| backoff.failure(ip).0.as_millis()).collect();
        assert_eq!(delays, [0, 0, 10, 20, 25]);
        assert!(matches!(backoff.gate(ip), AuthGate::Locked(_)));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(backoff.gate(other), AuthGate::Open);
        backoff.success(ip);
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
