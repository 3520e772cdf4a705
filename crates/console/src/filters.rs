//! The log's filters as a page's or the API's query string
//! (`?outcome=failed,held&account=work&since=7d&q=invoice&cursor=…`).

use apimail_core::journal::Outcome;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::index::{Cursor, Query};

/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// The most rows a page may ask for.
pub const MAX_LIMIT: usize = 500;

/// The query string, as given; empty values (a form's blank fields) count
/// as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogParams {
    /// Outcomes, comma-separated.
    pub outcome: String,
    /// The account.
    pub account: String,
    /// The envelope sender.
    pub sender: String,
    /// A recipient.
    pub recipient: String,
    /// A duration back (`30m`, `2h`, `7d`), a date, a local time
    /// (`2026-11-29T08:00`) or an RFC 3339 time.
    pub since: String,
    /// The same forms as `since`.
    pub until: String,
    /// Text in the Subject or the addresses.
    pub q: String,
    /// Rows per page.
    pub limit: String,
    /// Where the page starts (the previous page's `next_cursor`).
    pub cursor: String,
}

/// A filter that does not parse; the text says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// The parsed filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filters {
    /// Which messages.
    pub query: Query,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
    /// Rows per page.
    pub limit: usize,
}

fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl LogParams {
    /// The filters, with times relative to `now` and local times in `zone`.
    pub fn parse(&self, now: i64, zone: &TimeZone) -> Result<Filters, FilterError> {
        let mut outcomes = Vec::new();
        for name in self.outcome.split(',').filter(|s| !s.trim().is_empty()) {
            outcomes.push(
                name.trim()
                    .parse::<Outcome>()
                    .map_err(|e| FilterError(format!("outcome: {e}")))?,
            );
        }
        let time = |name: &str, text: &str| {
            given(text)
                .map(|text| {
                    parse_time(&text, now, zone).ok_or_else(|| {
                        FilterError(format!(
                            "{name} `{text}` is neither a duration (30m, 2h, 7d), a date (2026-11-29) nor a time (2026-11-29T08:00, RFC 3339)"
                        ))
                    })
                })
                .transpose()
        };
        let limit = match given(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    FilterError(format!(
                        "limit `{text}` is not a number from 1 to {MAX_LIMIT}"
                    ))
                })?,
        };
        let cursor = given(&self.cursor)
            .map(|text| {
                Cursor::parse(&text).ok_or_else(|| {
                    FilterError(format!("cursor `{text}` is not a cursor this server gave"))
                })
            })
            .transpose()?;
        Ok(Filters {
            query: Query {
                outcomes,
                account: given(&self.account),
                sender: given(&self.sender),
                recipient: given(&self.recipient),
                since: time("since", &self.since)?,
                until: time("until", &self.until)?,
                text: given(&self.q),
            },
            cursor,
            limit,
        })
    }

    /// The same filters as a query string (for links to other pages and
    /// the CSV), without the cursor and with `cursor` if given.
    pub fn with_cursor(&self, cursor: Option<&str>) -> String {
        let params = LogParams {
            cursor: cursor.unwrap_or_default().to_owned(),
            ..self.clone()
        };
        let pairs: Vec<(&str, &str)> = [
            ("outcome", params.outcome.as_str()),
            ("account", &params.account),
            ("sender", &params.sender),
            ("recipient", &params.recipient),
            ("since", &params.since),
            ("until", &params.until),
            ("q", &params.q),
            ("limit", &params.limit),
            ("cursor", &params.cursor),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// A time for `since`/`until` in Unix seconds: a duration back from `now`,
/// an RFC 3339 time, a local time or a date (midnight) in `zone`.
pub fn parse_time(text: &str, now: i64, zone: &TimeZone) -> Option<i64> {
    if let Some(secs) = apimail_core::journal::duration_secs(text) {
        return Some(now.saturating_sub(secs));
    }
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time.unix_timestamp());
    }
    let local = PrimitiveDateTime::parse(
        text,
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    )
    .or_else(|_| {
        PrimitiveDateTime::parse(
            text,
            format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        )
    })
    .ok()
    .or_else(|| {
        Date::parse(text, format_description!("[year]-[month]-[day]"))
            .ok()
            .map(Date::midnight)
    })?;
    // The zone's offset at that moment (taken at the UTC reading; a
    // transition hour may be off by its shift).
    let guess = local.assume_utc().unix_timestamp();
    let offset = crate::i18n::offset_at(zone, guess);
    let offset = UtcOffset::from_whole_seconds(i32::try_from(offset).ok()?).ok()?;
    Some(local.assume_offset(offset).unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn times_take_durations_dates_and_local_times() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(parse_time("2h", NOW, &tokyo), Some(NOW - 7200));
        assert_eq!(
            parse_time("2026-11-29T08:00:00Z", NOW, &tokyo),
            Some(1_795_939_200)
        );
        assert_eq!(
            parse_time("2026-11-29T17:00", NOW, &tokyo),
            Some(1_795_939_200)
        );
        assert_eq!(
            parse_time("2026-11-29", NOW, &tokyo),
            Some(1_795_910_400 - 9 * 3600)
        );
        assert_eq!(parse_time("yesterday", NOW, &tokyo), None);
    }

    #[test]
    fn params_parse_and_round_trip() {
        let params = LogParams {
            outcome: "failed,held".into(),
            q: "請求書 & co".into(),
            limit: "20".into(),
            ..LogParams::default()
        };
        let filters = params.parse(NOW, &TimeZone::UTC).unwrap();
        assert_eq!(filters.query.outcomes, [Outcome::Failed, Outcome::Held]);
        assert_eq!(filters.limit, 20);
        let text = params.with_cursor(Some("1.2"));
        let back: LogParams = serde_urlencoded::from_str(&text).unwrap();
        assert_eq!(back.q, params.q);
        assert_eq!(back.cursor, "1.2");
        for bad in [
            LogParams {
                outcome: "lost".into(),
                ..LogParams::default()
            },
            LogParams {
                limit: "0".into(),
                ..LogParams::default()
            },
            LogParams {
                cursor: "x".into(),
                ..LogParams::default()
            },
            LogParams {
                since: "soon".into(),
                ..LogParams::default()
            },
        ] {
            assert!(bad.parse(NOW, &TimeZone::UTC).is_err(), "{bad:?}");
        }
    }
}
