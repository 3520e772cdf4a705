//! `apimail log`: the delivery journal, filtered, as lines, JSON Lines or
//! CSV.

use std::io::{BufWriter, Write};

use anyhow::anyhow;
use apimail_core::journal::{Filter, Record};
use apimail_core::journal_csv;
use apimail_core::now_unix;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use crate::cli::LogArgs;
use crate::exit::{Exit, Failure};
use crate::outbox::QueueStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Lines,
    Json,
    Csv,
}

pub async fn run(config_flag: Option<&std::path::Path>, args: LogArgs) -> Result<(), Failure> {
    let config = crate::config::load(&crate::config::path(config_flag)?)?;
    let filter = Filter {
        since: args
            .since
            .as_deref()
            .map(|text| parse_since(text, now_unix()))
            .transpose()?,
        account: args.account,
        outcomes: args.status.into_iter().map(Into::into).collect(),
    };
    let format = match (args.json, args.csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Lines,
    };
    // The local journal, or the shared store's when one is configured.
    let store = QueueStore::open(&config).await?;

    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut printed = 0;
    let mut open = true;
    if format == Format::Csv {
        open = emit(out.write_all(&journal_csv::header_row()))?;
    }
    let skipped = match open {
        false => 0,
        true => {
            store
                .read_journal(&config, &filter, |record| {
                    let line = match format {
                        Format::Lines => human_line(record),
                        Format::Json => json_line(record),
                        Format::Csv => journal_csv::record_row(record),
                    };
                    open = emit(out.write_all(&line))?;
                    printed += usize::from(open);
                    Ok(open)
                })
                .await?
        }
    };
    if !open || !emit(out.flush())? {
        return Ok(());
    }
    if skipped > 0 {
        tracing::warn!(
            "skipped {skipped} line(s) of the journal that are not records (cut short by a crash, or edited)"
        );
    }
    if printed == 0 && format == Format::Lines {
        let _ = writeln!(std::io::stderr().lock(), "no deliveries match");
    }
    Ok(())
}

/// A write to standard output: `false` when the reader went away
/// (`apimail log | head`), which is not a failure.
fn emit(written: std::io::Result<()>) -> Result<bool, Failure> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::new(
            Exit::Software,
            anyhow!(e).context("cannot write to standard output"),
        )),
    }
}

/// `2026-11-29T08:15:00Z  sent  <id>  work  ops@… -> a@…, b@…  …`
fn human_line(record: &Record) -> Vec<u8> {
    let mut line = format!(
        "{}  {:<13}  {}  {}  {} -> {}  {} bytes  {} attempt(s)  {}",
        record.time_rfc3339(),
        record.outcome.as_str(),
        record.queue_id.as_deref().unwrap_or("-"),
        record.account.as_deref().unwrap_or("-"),
        record.from,
        record.recipients.join(", "),
        record.size,
        record.attempts,
        record.message_id,
    );
    if let Some(id) = &record.provider_id {
        line.push_str(&format!("  id {id}"));
    }
    if let Some(original) = &record.original_from {
        line.push_str(&format!("  rewritten from {original}"));
    }
    if record.possible_duplicate {
        line.push_str("  possible duplicate: an earlier copy may have arrived");
    }
    if let Some(error) = &record.error {
        line.push_str(&format!("  error: {}", error.replace(['\r', '\n'], " ")));
    }
    line.push('\n');
    line.into_bytes()
}

/// The record as one JSON object, with the time in RFC 3339.
fn json_line(record: &Record) -> Vec<u8> {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    value["time"] = serde_json::Value::String(record.time_rfc3339());
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// `--since`: a duration back from `now` (`90s`, `30m`, `2h`, `7d`, `2w`),
/// a date (midnight UTC) or an RFC 3339 time; Unix seconds.
fn parse_since(text: &str, now: i64) -> Result<i64, Failure> {
    if let Some(secs) = apimail_core::journal::duration_secs(text) {
        return Ok(now.saturating_sub(secs));
    }
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time.unix_timestamp());
    }
    if let Ok(date) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(date.midnight().assume_utc().unix_timestamp());
    }
    Err(Failure::new(
        Exit::Usage,
        anyhow!("--since `{text}` is neither a duration nor a date"),
    )
    .hint("give a duration such as 30m, 2h or 7d, a date such as 2026-11-29 (UTC), or a time such as 2026-11-29T08:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimail_core::journal::Outcome;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn since_takes_durations_dates_and_times() {
        assert_eq!(parse_since("30m", NOW).unwrap(), NOW - 1800);
        assert_eq!(parse_since("2h", NOW).unwrap(), NOW - 7200);
        assert_eq!(parse_since("7d", NOW).unwrap(), NOW - 7 * 86_400);
        assert_eq!(parse_since("2026-11-29", NOW).unwrap(), 1_795_910_400);
        assert_eq!(
            parse_since("2026-11-29T08:00:00+01:00", NOW).unwrap(),
            1_795_910_400 + 7 * 3600
        );
        for bad in [
            "",
            "h",
            "2",
            "2x",
            "-2h",
            "2 h",
            "yesterday",
            "2026-13-01",
            "99999999999999999999d",
        ] {
            let failure = parse_since(bad, NOW).unwrap_err();
            assert_eq!(failure.exit, Exit::Usage, "{bad}");
            assert!(failure.error.to_string().contains(&format!("`{bad}`")));
            assert!(failure.hint.is_some());
        }
    }

    #[test]
    fn a_human_line_is_one_line() {
        let record = Record {
            time: NOW,
            queue_id: None,
            message_id: "<1@example.com>".to_owned(),
            account: Some("work".to_owned()),
            client: None,
            smtp_user: None,
            provider: Some("gmail".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec!["a@example.net".to_owned(), "b@example.net".to_owned()],
            subject: None,
            size: 10,
            attempts: 2,
            possible_duplicate: true,
            outcome: Outcome::Failed,
            provider_id: None,
            error: Some("said \"no\",\nreally".to_owned()),
            original_from: Some("scanner@printer.local".to_owned()),
        };
        let human = String::from_utf8(human_line(&record)).unwrap();
        assert_eq!(human.lines().count(), 1, "{human}");
        assert!(human.contains("possible duplicate"), "{human}");
        assert!(
            human.contains("rewritten from scanner@printer.local"),
            "{human}"
        );
        let json = String::from_utf8(json_line(&record)).unwrap();
        assert!(
            json.contains(r#""original_from":"scanner@printer.local""#),
            "{json}"
        );
    }
}
