//! The CSV report of a merge: every row with its outcome, Message-ID and
//! error, then the row's own columns, so the failed rows can be given to
//! `--data` again (UTF-8 with a BOM, as Excel reads it).

use std::io::Write;

use crate::data::Table;
use crate::state::RowState;

/// One row's outcome for the report.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `sent`, `queued`, `held`, `failed`, `invalid`, `not sent`.
    pub status: String,
    /// Its Message-ID, when it has one.
    pub message_id: String,
    /// Why, when it was not sent.
    pub error: String,
}

/// The report's own columns, before the data's.
pub const COLUMNS: [&str; 4] = [
    "merge_row",
    "merge_status",
    "merge_message_id",
    "merge_error",
];

/// Writes the report of `table` with `outcome(row number)` to `out`.
pub fn write(
    out: impl Write,
    table: &Table,
    only_failed: bool,
    outcome: impl Fn(usize) -> Outcome,
) -> Result<(), csv::Error> {
    let mut out = out;
    out.write_all(b"\xEF\xBB\xBF")?;
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    let header: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .chain(table.headers.iter().map(String::as_str))
        .collect();
    writer.write_record(&header)?;
    for row in &table.rows {
        let outcome = outcome(row.number);
        if only_failed && matches!(outcome.status.as_str(), "sent" | "skipped") {
            continue;
        }
        let number = row.number.to_string();
        let mut record: Vec<&str> = vec![
            &number,
            &outcome.status,
            &outcome.message_id,
            &outcome.error,
        ];
        for i in 0..table.headers.len() {
            record.push(row.values.get(i).map_or("", String::as_str));
        }
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// Writes a merge's record as CSV (`apimail merge status --report`): row,
/// key, status, Message-ID, whether it may have gone twice, error.
pub fn write_state(out: impl Write, rows: &[RowState]) -> Result<(), csv::Error> {
    let mut out = out;
    out.write_all(b"\xEF\xBB\xBF")?;
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    writer.write_record(["row", "key", "status", "message_id", "uncertain", "error"])?;
    for row in rows {
        writer.write_record([
            row.row.to_string().as_str(),
            &row.key,
            row.status.as_str(),
            &row.message_id,
            if row.uncertain { "true" } else { "false" },
            row.error.as_deref().unwrap_or(""),
        ])?;
    }
    writer.flush()?;
    Ok(())
}
