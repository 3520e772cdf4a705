//! [`Pace`]: how fast one mailbox may be sent to. Each provider crate
//! states its own (`apimail_gmail::PACE`, `apimail_graph::PACE`), and a
//! transport gives it through [`Transport::pace`](crate::Transport::pace);
//! the relay's workers pace each mailbox by it.

use std::time::Duration;

/// Delivery pacing for one mailbox: deliveries at once, and deliveries
/// started per minute (evenly spaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Deliveries at once.
    pub concurrency: usize,
    /// Deliveries started per minute.
    pub per_minute: u32,
}

impl Pace {
    /// No limit: a transport that states none.
    pub const UNLIMITED: Pace = Pace {
        concurrency: usize::MAX,
        per_minute: u32::MAX,
    };

    /// The time between two starts: a minute over `per_minute` (zero when
    /// unlimited).
    pub fn interval(self) -> Duration {
        if self.per_minute == u32::MAX {
            return Duration::ZERO;
        }
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

impl Default for Pace {
    fn default() -> Self {
        Pace::UNLIMITED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_spreads_a_minute() {
        let pace = Pace {
            concurrency: 4,
            per_minute: 30,
        };
        assert_eq!(pace.interval(), Duration::from_secs(2));
        assert_eq!(Pace::UNLIMITED.interval(), Duration::ZERO);
        let zero = Pace {
            concurrency: 1,
            per_minute: 0,
        };
        assert_eq!(zero.interval(), Duration::from_secs(60));
    }
}
