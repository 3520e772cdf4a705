//! An outbox entry as a row of `apimail_entries`, and back.

use std::collections::BTreeMap;

use apimail_core::SenderIdentity;
use apimail_core::outbox::{Entry, EntryId, EntryState, HoldKind};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::StoreError;

/// An entry is leased while this holds (the database's clock).
pub(crate) const LEASED: &str = "lease_until > clock_timestamp()";

/// The entry's columns, in the order [`entry`] reads them.
pub(crate) const COLUMNS: &str = "id, state, hold, account, provider, from_addr, recipients, \
     message_id, size, created_at, attempts, next_attempt_at, last_error, max_age_secs, \
     retried_at, failed_reason, identity, in_flight_since, outcome_unknown, retried_unknown, \
     notes, original_from, lease_node";

/// `SET` of every column but the id and the message, for an `UPDATE`
/// whose parameters start with [`values`] (`$1` the id).
pub(crate) const SET_ALL: &str = "state = $2, hold = $3, account = $4, provider = $5, \
     from_addr = $6, recipients = $7, message_id = $8, size = $9, created_at = $10, \
     attempts = $11, next_attempt_at = $12, last_error = $13, max_age_secs = $14, \
     retried_at = $15, failed_reason = $16, identity = $17, in_flight_since = $18, \
     outcome_unknown = $19, retried_unknown = $20, notes = $21, original_from = $22";

/// An entry's values as statement parameters, in [`SET_ALL`]'s order.
pub(crate) struct Values {
    id: String,
    state: &'static str,
    hold: Option<&'static str>,
    account: Option<String>,
    provider: Option<String>,
    from: String,
    recipients: Vec<String>,
    message_id: String,
    size: i64,
    created_at: i64,
    attempts: i32,
    next_attempt_at: i64,
    last_error: Option<String>,
    max_age_secs: i64,
    retried_at: Option<i64>,
    failed_reason: Option<String>,
    identity: Option<serde_json::Value>,
    in_flight_since: Option<i64>,
    outcome_unknown: bool,
    retried_unknown: bool,
    notes: serde_json::Value,
    original_from: Option<String>,
}

impl Values {
    pub(crate) fn of(entry: &Entry) -> Values {
        Values {
            id: entry.id.to_string(),
            state: match entry.state {
                EntryState::Queued => "queued",
                EntryState::Held => "held",
            },
            hold: entry.hold.map(HoldKind::as_str),
            account: entry.account.clone(),
            provider: entry.provider.clone(),
            from: entry.from.clone(),
            recipients: entry.recipients.clone(),
            message_id: entry.message_id.clone(),
            size: i64::try_from(entry.size).unwrap_or(i64::MAX),
            created_at: entry.created_at,
            attempts: i32::try_from(entry.attempts).unwrap_or(i32::MAX),
            next_attempt_at: entry.next_attempt_at,
            last_error: entry.last_error.clone(),
            max_age_secs: entry.max_age_secs,
            retried_at: entry.retried_at,
            failed_reason: entry.failed_reason.clone(),
            identity: entry
                .identity
                .as_ref()
                .and_then(|i| serde_json::to_value(i).ok()),
            in_flight_since: entry.in_flight_since,
            outcome_unknown: entry.outcome_unknown,
            retried_unknown: entry.retried_unknown,
            notes: serde_json::to_value(&entry.notes).unwrap_or_default(),
            original_from: entry.original_from.clone(),
        }
    }

    /// `$1` … `$22`.
    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.state,
            &self.hold,
            &self.account,
            &self.provider,
            &self.from,
            &self.recipients,
            &self.message_id,
            &self.size,
            &self.created_at,
            &self.attempts,
            &self.next_attempt_at,
            &self.last_error,
            &self.max_age_secs,
            &self.retried_at,
            &self.failed_reason,
            &self.identity,
            &self.in_flight_since,
            &self.outcome_unknown,
            &self.retried_unknown,
            &self.notes,
            &self.original_from,
        ]
    }
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "outbox entry",
        reason: reason.into(),
    }
}

/// A row of [`COLUMNS`] as an entry, and the node holding its lease.
pub(crate) fn entry(row: &Row) -> Result<(Entry, Option<String>), StoreError> {
    let get_err = |e: tokio_postgres::Error| corrupt(e.to_string());
    let id: String = row.try_get(0).map_err(get_err)?;
    let id = EntryId::parse(&id).map_err(|_| corrupt(format!("bad id {id:?}")))?;
    let state = match row.try_get::<_, &str>(1).map_err(get_err)? {
        "queued" => EntryState::Queued,
        "held" => EntryState::Held,
        other => return Err(corrupt(format!("{id}: state {other:?}"))),
    };
    let hold = match row.try_get::<_, Option<&str>>(2).map_err(get_err)? {
        None => None,
        Some("identity") => Some(HoldKind::Identity),
        Some("login") => Some(HoldKind::Login),
        Some("uncertain") => Some(HoldKind::Uncertain),
        Some(other) => return Err(corrupt(format!("{id}: hold {other:?}"))),
    };
    let identity: Option<serde_json::Value> = row.try_get(16).map_err(get_err)?;
    let identity: Option<SenderIdentity> = identity
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| corrupt(format!("{id}: identity: {e}")))?;
    let notes: serde_json::Value = row.try_get(20).map_err(get_err)?;
    let notes: BTreeMap<String, String> =
        serde_json::from_value(notes).map_err(|e| corrupt(format!("{id}: notes: {e}")))?;
    let size: i64 = row.try_get(8).map_err(get_err)?;
    let attempts: i32 = row.try_get(10).map_err(get_err)?;
    let entry = Entry {
        id,
        state,
        hold,
        account: row.try_get(3).map_err(get_err)?,
        provider: row.try_get(4).map_err(get_err)?,
        from: row.try_get(5).map_err(get_err)?,
        recipients: row.try_get(6).map_err(get_err)?,
        message_id: row.try_get(7).map_err(get_err)?,
        size: u64::try_from(size).unwrap_or(0),
        created_at: row.try_get(9).map_err(get_err)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: row.try_get(11).map_err(get_err)?,
        last_error: row.try_get(12).map_err(get_err)?,
        max_age_secs: row.try_get(13).map_err(get_err)?,
        retried_at: row.try_get(14).map_err(get_err)?,
        failed_reason: row.try_get(15).map_err(get_err)?,
        identity,
        in_flight_since: row.try_get(17).map_err(get_err)?,
        outcome_unknown: row.try_get(18).map_err(get_err)?,
        retried_unknown: row.try_get(19).map_err(get_err)?,
        notes,
        original_from: row.try_get(21).map_err(get_err)?,
    };
    let node = row.try_get(22).map_err(get_err)?;
    Ok((entry, node))
}
