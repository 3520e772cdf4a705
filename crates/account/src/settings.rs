//! The settings that come from the environment, else the configuration,
//! else a default: network timeouts, the retry bound, what to do about an
//! unknown outcome, and how long a message may wait in the queue.

use std::time::Duration;

use apimail_core::delivery::{Settings, WhenUnknown};
use apimail_core::retry::RetryPolicy;

use crate::config::Config;
use crate::env;
use crate::error::ResolveError;

/// The process's network timeouts: `[http]` in the config file, then
/// `APIMAIL_CONNECT_TIMEOUT_SECONDS` / `APIMAIL_STALL_TIMEOUT_SECONDS`.
pub fn set_http_timeouts(config: &Config) -> Result<(), ResolveError> {
    use apimail_core::http::{self, Timeouts};
    let settings = config.http.clone().unwrap_or_default();
    let mut timeouts = Timeouts::default();
    for (key, value, field) in [
        (
            "connect_timeout_seconds",
            settings.connect_timeout_seconds,
            &mut timeouts.connect,
        ),
        (
            "stall_timeout_seconds",
            settings.stall_timeout_seconds,
            &mut timeouts.stall,
        ),
    ] {
        match value {
            Some(0) => return Err(ResolveError::ZeroTimeout { key }),
            Some(seconds) => *field = std::time::Duration::from_secs(seconds),
            None => {}
        }
    }
    let timeouts = with_env(timeouts).map_err(ResolveError::BadTimeout)?;
    http::set_timeouts(timeouts);
    Ok(())
}

/// The library's network timeouts when no configuration is read (a
/// `Mailer` from explicit credentials or the environment): the defaults
/// with `APIMAIL_CONNECT_TIMEOUT_SECONDS` / `APIMAIL_STALL_TIMEOUT_SECONDS`
/// applied; an unusable value is ignored (the command line reports it).
/// Only the process's first setting counts.
pub fn set_env_http_timeouts() {
    use apimail_core::http::{self, Timeouts};
    http::set_timeouts(with_env(Timeouts::default()).unwrap_or_default());
}

/// `timeouts` with the two variables applied; the error names the one
/// that is not a whole number of seconds above 0.
fn with_env(
    mut timeouts: apimail_core::http::Timeouts,
) -> Result<apimail_core::http::Timeouts, String> {
    for (name, field) in [
        (env::CONNECT_TIMEOUT_SECONDS, &mut timeouts.connect),
        (env::STALL_TIMEOUT_SECONDS, &mut timeouts.stall),
    ] {
        if let Some(value) = env::var(name).filter(|v| !v.trim().is_empty()) {
            match value.trim().parse::<u64>() {
                Ok(seconds) if seconds > 0 => *field = Duration::from_secs(seconds),
                _ => {
                    return Err(format!(
                        "{name}={value} is not a number of seconds (a whole number above 0)"
                    ));
                }
            }
        }
    }
    Ok(timeouts)
}

/// The retry bound: `$APIMAIL_RETRY_ATTEMPTS` / `$APIMAIL_RETRY_MAX_SECONDS`,
/// else the config's `[retry]`, else `policy`'s.
pub fn retry_policy(config: &Config, mut policy: RetryPolicy) -> Result<RetryPolicy, ResolveError> {
    let settings = config.retry.clone().unwrap_or_default();
    if let Some(attempts) = env_number(env::RETRY_ATTEMPTS)?.or(settings.attempts.map(u64::from)) {
        policy.max_attempts = attempts.clamp(1, 100) as u32;
    }
    if let Some(seconds) = env_number(env::RETRY_MAX_SECONDS)?.or(settings.max_seconds) {
        policy.max_elapsed = Duration::from_secs(seconds);
    }
    Ok(policy)
}

fn env_number(name: &'static str) -> Result<Option<u64>, ResolveError> {
    match env::var(name) {
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ResolveError::NotANumber { name, value }),
        None => Ok(None),
    }
}

/// How the delivery engine settles outcomes, and how long entries may wait.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The engine's settings (`when_unknown`).
    pub settings: Settings,
    /// How long a message may wait in the queue before it counts as
    /// failed, in seconds: for each new entry.
    pub max_age_secs: i64,
    /// `[journal] subjects`: whether records carry the Subject.
    pub journal_subjects: bool,
    /// `[journal] keep_days`: how long records are kept.
    pub journal_keep_days: u32,
}

impl Delivery {
    /// `$APIMAIL_WHEN_UNKNOWN`, else the config's `[delivery] when_unknown`,
    /// else resend; `$APIMAIL_QUEUE_MAX_AGE_DAYS`, else 5 days.
    pub fn from_config(config: &Config) -> Result<Delivery, ResolveError> {
        Ok(Delivery {
            settings: Settings {
                when_unknown: when_unknown(config)?,
                ..Settings::default()
            },
            max_age_secs: max_age_secs(),
            journal_subjects: config
                .journal
                .as_ref()
                .and_then(|j| j.subjects)
                .unwrap_or(true),
            journal_keep_days: config
                .journal
                .as_ref()
                .and_then(|j| j.keep_days)
                .unwrap_or(apimail_core::journal::DEFAULT_KEEP_DAYS),
        })
    }
}

/// What to do with a message whose earlier attempt may have gone through
/// when the mailbox cannot be checked.
fn when_unknown(config: &Config) -> Result<WhenUnknown, ResolveError> {
    let (value, setting) = match env::var(env::WHEN_UNKNOWN) {
        Some(value) => (Some(value), env::WHEN_UNKNOWN),
        None => (
            config
                .delivery
                .as_ref()
                .and_then(|d| d.when_unknown.clone()),
            "[delivery] when_unknown",
        ),
    };
    match value.as_deref() {
        None | Some("resend") => Ok(WhenUnknown::Resend),
        Some("hold") => Ok(WhenUnknown::Hold),
        Some(other) => Err(ResolveError::BadWhenUnknown {
            setting,
            value: other.to_owned(),
        }),
    }
}

/// sendmail's `$APIMAIL_NO_QUEUE=1`: never queue, the caller retries.
pub fn no_queue() -> bool {
    env::var(env::NO_QUEUE).is_some_and(|v| v == "1")
}

/// How long a message may wait in the queue before it counts as failed:
/// `$APIMAIL_QUEUE_MAX_AGE_DAYS`, else 5 days.
pub fn max_age_secs() -> i64 {
    env::var(env::QUEUE_MAX_AGE_DAYS)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|days| *days > 0.0)
        .map_or(apimail_core::outbox::DEFAULT_MAX_AGE_SECS, |days| {
            (days * 86_400.0) as i64
        })
}
