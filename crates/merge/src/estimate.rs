//! How long a merge takes under the mailbox's pace (the provider crate's
//! [`Pace`]) and an optional daily limit.

use std::time::Duration;

use apimail_core::Pace;

/// The time a number of messages needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// Messages still to send.
    pub messages: usize,
    /// Messages started per minute.
    pub per_minute: u32,
    /// The daily limit, when there is one.
    pub daily_limit: Option<u32>,
    /// How many the daily limit still allows in the current window.
    pub today: usize,
    /// The time the messages of the current window take.
    pub duration: Duration,
    /// Further 24-hour windows the rest need.
    pub more_days: usize,
}

/// The estimate for `messages` at `pace`, with `sent_in_window` already
/// sent in the last 24 hours against `daily_limit`.
pub fn estimate(
    messages: usize,
    pace: Pace,
    daily_limit: Option<u32>,
    sent_in_window: usize,
) -> Estimate {
    let today = match daily_limit {
        Some(limit) => messages.min((limit as usize).saturating_sub(sent_in_window)),
        None => messages,
    };
    let rest = messages - today;
    let more_days = match daily_limit {
        Some(limit) if limit > 0 => rest.div_ceil(limit as usize),
        _ => 0,
    };
    // The first message starts at once; each further one an interval later.
    let duration = pace.interval() * (today.saturating_sub(1) as u32);
    Estimate {
        messages,
        per_minute: pace.per_minute,
        daily_limit,
        today,
        duration,
        more_days,
    }
}

impl Estimate {
    /// "about 1 h 7 min at 150 a minute", with the daily windows.
    pub fn describe(&self) -> String {
        let rate = if self.per_minute == u32::MAX {
            "with no pace stated".to_owned()
        } else {
            format!("at {} a minute", self.per_minute)
        };
        let mut text = format!("about {} {rate}", human(self.duration));
        if let Some(limit) = self.daily_limit {
            if self.more_days > 0 {
                text.push_str(&format!(
                    "; the daily limit of {limit} lets {} go now, the other {} over {} more day(s)",
                    self.today,
                    self.messages - self.today,
                    self.more_days
                ));
            } else {
                text.push_str(&format!(", within the daily limit of {limit}"));
            }
        }
        text
    }
}

/// `2 h 5 min`, `3 min 20 s`, `40 s`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GMAIL_LIKE: Pace = Pace {
        concurrency: 4,
        per_minute: 150,
    };

    #[test]
    fn the_pace_and_the_daily_limit_set_the_time() {
        let e = estimate(151, GMAIL_LIKE, None, 0);
        assert_eq!(e.duration, Duration::from_secs(60));
        assert_eq!(e.describe(), "about 1 min 0 s at 150 a minute");
        let e = estimate(200, GMAIL_LIKE, Some(50), 10);
        assert_eq!((e.today, e.more_days), (40, 4));
        assert!(
            e.describe()
                .contains("lets 40 go now, the other 160 over 4 more day(s)")
        );
        assert_eq!(estimate(0, GMAIL_LIKE, None, 0).duration, Duration::ZERO);
    }
}
