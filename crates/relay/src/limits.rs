//! The server's limits: sizes, counts, timeouts, the AUTH back-off.

use std::time::Duration;

use apimail_core::login_backoff::BackoffSettings;

/// Timeouts the server gives the client (RFC 5321 §4.5.3.2), as deadlines
/// that a client trickling bytes cannot push back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpTimeouts {
    /// The whole next command line, from the reply before it (and a TLS
    /// handshake): 5 minutes, however the bytes trickle in.
    pub command: Duration,
    /// Waiting for each block of DATA: 3 minutes. The whole of DATA (or a
    /// BDAT chunk) must also arrive within this plus one second per
    /// [`Limits::min_data_rate`] bytes received.
    pub data_block: Duration,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        SmtpTimeouts {
            command: Duration::from_secs(5 * 60),
            data_block: Duration::from_secs(3 * 60),
        }
    }
}

/// The server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sessions at once; one more gets `421 4.3.2` and is closed.
    pub max_connections: usize,
    /// Sessions at once from one client address; one more gets `421 4.7.0`
    /// and is closed, while other addresses are still served.
    pub max_connections_per_address: usize,
    /// Password verifications (argon2) at once over all sessions; more
    /// wait their turn (first come, first served). Each takes the memory
    /// cost of its hash (7 MiB for [`crate::users::HASH_PARAMS`]).
    pub max_auth_checks: usize,
    /// The slowest DATA or BDAT transfer allowed past
    /// [`SmtpTimeouts::data_block`], in bytes per second.
    pub min_data_rate: u64,
    /// The longest command line, CRLF included (`500 5.5.2`).
    pub max_line_bytes: usize,
    /// The largest message, whatever the account allows (`552 5.3.4`).
    pub max_message_bytes: u64,
    /// Recipients per message (`452 4.5.3`).
    pub max_recipients: usize,
    /// Unknown or malformed commands per session before `421` and close.
    pub max_bad_commands: u32,
    /// Per-command timeouts.
    pub timeouts: SmtpTimeouts,
    /// The AUTH back-off per client address: by default 3 failures
    /// answered at once, then after 1, 2, 4, 8 and 16 s, locked out for 15
    /// minutes after 10.
    pub auth_failures: BackoffSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100,
            max_connections_per_address: 10,
            max_auth_checks: 2,
            min_data_rate: 1024,
            max_line_bytes: 4096,
            max_message_bytes: 150 * 1024 * 1024,
            max_recipients: 500,
            max_bad_commands: 10,
            timeouts: SmtpTimeouts::default(),
            auth_failures: BackoffSettings {
                free_failures: 3,
                delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(16),
                lock_after: 10,
                lock_for: Duration::from_secs(15 * 60),
            },
        }
    }
}
