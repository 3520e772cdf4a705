//! The delivery journal as CSV: the one writer behind `apimail log --csv`
//! and the admin console's "Download CSV", so both give the same columns
//! and the same quoting (RFC 4180, CRLF line ends).

use crate::journal::{Record, rfc3339};

/// The CSV columns: the first fourteen in the order of [`Record`]'s
/// fields, then the ones added later (at the end, so that readers of the
/// older file keep working).
pub const HEADER: [&str; 17] = [
    "time",
    "queue_id",
    "message_id",
    "account",
    "provider",
    "from",
    "recipients",
    "size",
    "attempts",
    "possible_duplicate",
    "outcome",
    "provider_id",
    "error",
    "original_from",
    "subject",
    "client",
    "smtp_user",
];

/// The header row.
pub fn header_row() -> Vec<u8> {
    row(HEADER)
}

/// `record` as one row: the time in RFC 3339, recipients joined by `, `,
/// absent values empty.
pub fn record_row(record: &Record) -> Vec<u8> {
    let optional = |value: &Option<String>| value.clone().unwrap_or_default();
    row([
        rfc3339(record.time),
        optional(&record.queue_id),
        record.message_id.clone(),
        optional(&record.account),
        optional(&record.provider),
        record.from.clone(),
        record.recipients.join(", "),
        record.size.to_string(),
        record.attempts.to_string(),
        record.possible_duplicate.to_string(),
        record.outcome.to_string(),
        optional(&record.provider_id),
        optional(&record.error),
        optional(&record.original_from),
        optional(&record.subject),
        optional(&record.client),
        optional(&record.smtp_user),
    ])
}

/// One CSV row, quoted where needed, ending in CRLF (RFC 4180).
fn row<T: AsRef<[u8]>>(fields: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = writer.write_record(fields);
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Outcome;

    #[test]
    fn quotes_what_needs_it() {
        let record = Record {
            time: 1_780_000_000,
            queue_id: None,
            message_id: "<1@example.com>".to_owned(),
            account: Some("work".to_owned()),
            client: Some("192.0.2.7".to_owned()),
            smtp_user: Some("scanner".to_owned()),
            provider: Some("gmail".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec!["a@example.net".to_owned(), "b@example.net".to_owned()],
            subject: Some("Scan, \"page 1\"".to_owned()),
            size: 10,
            attempts: 2,
            possible_duplicate: true,
            outcome: Outcome::Failed,
            provider_id: None,
            error: Some("said \"no\",\nreally".to_owned()),
            original_from: Some("scanner@printer.local".to_owned()),
        };
        assert_eq!(
            String::from_utf8(record_row(&record)).unwrap(),
            "2026-05-28T20:26:40Z,,<1@example.com>,work,gmail,ops@example.com,\
             \"a@example.net, b@example.net\",10,2,true,failed,,\"said \"\"no\"\",\nreally\",\
             scanner@printer.local,\"Scan, \"\"page 1\"\"\",192.0.2.7,scanner\r\n"
        );
        assert_eq!(
            String::from_utf8(header_row()).unwrap(),
            "time,queue_id,message_id,account,provider,from,recipients,size,attempts,possible_duplicate,outcome,provider_id,error,original_from,subject,client,smtp_user\r\n"
        );
    }
}
