//! Who is signed in, and who failed to: browser sessions (in memory, so a
//! restart signs everyone out) and the settings of the back-off on failed
//! logins per client address ([`apimail_core::login_backoff`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apimail_core::login_backoff::BackoffSettings;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

/// 256 random bits, base64url: session ids and CSRF tokens.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// A signed-in administrator.
#[derive(Clone)]
pub(crate) struct Session {
    /// Their user name.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("csrf", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The sessions, by id (the cookie's value).
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
}

impl std::fmt::Debug for Sessions {
    /// Never the ids: they are bearer secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.table.lock().map_or(0, |t| t.len());
        f.debug_struct("Sessions")
            .field("live", &live)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    /// How long a session lasts.
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session for `user`: its id, or `None` without randomness.
    pub(crate) fn start(&self, user: &str) -> Option<String> {
        let id = random_token()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_token()?,
            expires: Instant::now() + self.lifetime,
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.retain(|_, s| s.expires > now);
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            table.remove(&oldest);
        }
        table.insert(id.clone(), session);
        Some(id)
    }

    /// The live session `id`, if any.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                table.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub(crate) fn end(&self, id: &str) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(id);
    }
}

/// How failed logins are slowed down and then locked out, per client
/// address: the same back-off as the relay's AUTH, with the console's
/// settings.
pub type LoginLimits = BackoffSettings;

/// The console's back-off: 3 free failures, then 1, 2, 4, 8 s waits,
/// locked for 15 minutes after 10.
pub const DEFAULT_LOGIN_LIMITS: LoginLimits = BackoffSettings {
    free_failures: 3,
    delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(8),
    lock_after: 10,
    lock_for: Duration::from_secs(15 * 60),
};

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::IpAddr;

    use apimail_core::login_backoff::{Gate, LoginBackoff};

    #[test]
    fn failures_wait_longer_then_lock() {
        let backoff = LoginBackoff::new(DEFAULT_LOGIN_LIMITS);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let waits: Vec<u64> = (0..10)
            .map(|_| backoff.begin(ip).unwrap().failed().0.as_secs())
            .collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 8, 8, 8]);
        assert!(matches!(backoff.gate(ip), Gate::Locked(_)));
        assert_eq!(backoff.gate(other), Gate::Open);
    }

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.start("ann").unwrap();
        let session = sessions.get(&id).unwrap();
        assert_eq!(session.user, "ann");
        assert_ne!(session.csrf, id);
        sessions.end(&id);
        assert!(sessions.get(&id).is_none());
        let short = Sessions::new(Duration::ZERO);
        let id = short.start("ann").unwrap();
        assert!(short.get(&id).is_none(), "expired at once");
    }
}
