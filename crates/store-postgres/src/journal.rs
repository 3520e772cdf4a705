//! The delivery journal on PostgreSQL: one row per record, with the same
//! fields as `apimail_core::journal::Record`, read oldest first in pages.

use apimail_core::journal::{Filter, Outcome, Record};
use tokio_postgres::Row;

use crate::error::{self, StoreError};
use crate::store::Store;

const COLUMNS: &str = "seq, time, queue_id, message_id, account, client, smtp_user, provider, \
     from_addr, recipients, subject, size, attempts, possible_duplicate, outcome, provider_id, \
     error, original_from";

/// A record and its place in the journal (increasing; for paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence number: later records have larger ones.
    pub seq: i64,
    /// The record.
    pub record: Record,
}

impl Store {
    /// Appends `records` to the journal, in order.
    pub async fn append_all(&self, records: &[Record]) -> Result<(), StoreError> {
        for record in records {
            self.append(record).await?;
        }
        Ok(())
    }

    /// Appends `record` to the journal.
    pub async fn append(&self, record: &Record) -> Result<(), StoreError> {
        let what = "append to the journal";
        let size = i64::try_from(record.size).unwrap_or(i64::MAX);
        let attempts = i32::try_from(record.attempts).unwrap_or(i32::MAX);
        self.client(what)
            .await?
            .execute(
                "INSERT INTO apimail_journal (time, queue_id, message_id, account, client, \
                 smtp_user, provider, from_addr, recipients, subject, size, attempts, \
                 possible_duplicate, outcome, provider_id, error, original_from) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17)",
                &[
                    &record.time,
                    &record.queue_id,
                    &record.message_id,
                    &record.account,
                    &record.client,
                    &record.smtp_user,
                    &record.provider,
                    &record.from,
                    &record.recipients,
                    &record.subject,
                    &size,
                    &attempts,
                    &record.possible_duplicate,
                    &record.outcome.as_str(),
                    &record.provider_id,
                    &record.error,
                    &record.original_from,
                ],
            )
            .await
            .map_err(error::query(what))?;
        Ok(())
    }

    /// At most `limit` records passing `filter`, oldest first, after the
    /// one numbered `after` (0: from the start).
    pub async fn read_journal(
        &self,
        filter: &Filter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let what = "read the journal";
        let outcomes: Vec<&str> = filter.outcomes.iter().map(|o| o.as_str()).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = self
            .client(what)
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM apimail_journal WHERE seq > $1 \
                     AND ($2::bigint IS NULL OR time >= $2) \
                     AND ($3::text IS NULL OR account = $3) \
                     AND (cardinality($4::text[]) = 0 OR outcome = ANY($4)) \
                     ORDER BY seq LIMIT $5"
                ),
                &[&after, &filter.since, &filter.account, &outcomes, &limit],
            )
            .await
            .map_err(error::query(what))?;
        found.iter().map(stored).collect()
    }
}

fn stored(row: &Row) -> Result<Stored, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: "journal record",
        reason,
    };
    let get = |e: tokio_postgres::Error| corrupt(e.to_string());
    let outcome: &str = row.try_get(14).map_err(get)?;
    let outcome = Outcome::ALL
        .into_iter()
        .find(|o| o.as_str() == outcome)
        .ok_or_else(|| corrupt(format!("outcome {outcome:?}")))?;
    let size: i64 = row.try_get(11).map_err(get)?;
    let attempts: i32 = row.try_get(12).map_err(get)?;
    Ok(Stored {
        seq: row.try_get(0).map_err(get)?,
        record: Record {
            time: row.try_get(1).map_err(get)?,
            queue_id: row.try_get(2).map_err(get)?,
            message_id: row.try_get(3).map_err(get)?,
            account: row.try_get(4).map_err(get)?,
            client: row.try_get(5).map_err(get)?,
            smtp_user: row.try_get(6).map_err(get)?,
            provider: row.try_get(7).map_err(get)?,
            from: row.try_get(8).map_err(get)?,
            recipients: row.try_get(9).map_err(get)?,
            subject: row.try_get(10).map_err(get)?,
            size: u64::try_from(size).unwrap_or(0),
            attempts: u32::try_from(attempts).unwrap_or(0),
            possible_duplicate: row.try_get(13).map_err(get)?,
            outcome,
            provider_id: row.try_get(15).map_err(get)?,
            error: row.try_get(16).map_err(get)?,
            original_from: row.try_get(17).map_err(get)?,
        },
    })
}
