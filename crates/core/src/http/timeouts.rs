//! The timeouts every connection keeps: connecting, and the stall limit.
//! The account layer reads their settings (configuration, environment)
//! and sets them once at start-up.

use std::sync::OnceLock;
use std::time::Duration;

/// How long a connection may take to open, and to stand still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, proxy tunnel and TLS handshake together.
    pub connect: Duration,
    /// No byte sent or received while a request is outstanding.
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(60),
        }
    }
}

static TIMEOUTS: OnceLock<Timeouts> = OnceLock::new();

/// Sets the process's timeouts; only the first call counts (the CLI makes
/// it at start-up, from the config file and environment). Returns whether
/// this call set them.
pub fn set_timeouts(timeouts: Timeouts) -> bool {
    TIMEOUTS.set(timeouts).is_ok()
}

/// The process's timeouts: as set, else the defaults.
pub fn timeouts() -> Timeouts {
    *TIMEOUTS.get_or_init(Timeouts::default)
}
