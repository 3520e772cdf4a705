//! The outbox on PostgreSQL: accepting (streamed, in chunks, answered only
//! after the transaction commits), reading, and what `queue retry`,
//! `queue drop`, a login's release and `doctor` do. Claims and their
//! settling are in `claim.rs`, reading a message in `message.rs`.

use std::collections::BTreeMap;

use apimail_core::now_unix;
use apimail_core::outbox::{Entry, EntryId, EntryState, NewEntry, Summary};
use deadpool_postgres::Object;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::claim::Claim;
use crate::error::{self, StoreError};
use crate::rows::{self, COLUMNS, LEASED, SET_ALL, Values};
use crate::store::{Store, token};

/// How often to draw a new id if one is taken.
const ID_RETRIES: usize = 16;

impl Store {
    /// Starts an entry whose message is streamed in: write it with
    /// [`Incoming::write`] or [`Incoming::copy_from`], then
    /// [`commit`](Incoming::commit). The message goes into the database in
    /// chunks of at most 1 MiB as it arrives, inside one transaction that
    /// holds one pooled connection; dropping it uncommitted rolls it back.
    pub async fn begin(&self) -> Result<Incoming, StoreError> {
        let client = self.client("start an entry").await?;
        let what = "start an entry";
        client
            .batch_execute("BEGIN")
            .await
            .map_err(error::query(what))?;
        let message: i64 = client
            .query_one(
                "INSERT INTO apimail_messages DEFAULT VALUES RETURNING id",
                &[],
            )
            .await
            .map_err(error::query(what))?
            .get(0);
        Ok(Incoming {
            store: self.clone(),
            client: Some(client),
            message,
            buffer: Vec::with_capacity(self.chunk_bytes),
            chunks: 0,
            size: 0,
            largest_buffer: 0,
        })
    }

    /// Accepts a message already in memory; the entry exists (committed)
    /// when this returns.
    pub async fn accept(&self, message: &[u8], meta: NewEntry) -> Result<EntryId, StoreError> {
        let mut incoming = self.begin().await?;
        incoming.write(message).await?;
        incoming.commit(meta).await
    }

    /// Like [`accept`](Self::accept), and the new entry stays claimed by
    /// this node (see [`Incoming::commit_claimed`]).
    pub async fn accept_claimed(
        &self,
        message: &[u8],
        meta: NewEntry,
    ) -> Result<Claim, StoreError> {
        let mut incoming = self.begin().await?;
        incoming.write(message).await?;
        incoming.commit_claimed(meta).await
    }

    /// The entry `id`, queued, held or failed; `None` if there is none.
    pub async fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        let id = EntryId::parse(id)?;
        let client = self.client("read an entry").await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM apimail_entries WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(error::query("read an entry"))?;
        row.map(|row| rows::entry(&row).map(|(entry, _)| entry))
            .transpose()
    }

    /// The queued and held entries, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        self.select("failed_reason IS NULL ORDER BY id", &[]).await
    }

    /// The failed entries, oldest first.
    pub async fn list_failed(&self) -> Result<Vec<Entry>, StoreError> {
        self.select("failed_reason IS NOT NULL ORDER BY id", &[])
            .await
    }

    /// A page of [`list`](Self::list): at most `limit` entries from the
    /// `offset`th on, in id order, and how many there are in all.
    pub async fn list_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), StoreError> {
        self.page("failed_reason IS NULL", offset, limit).await
    }

    /// A page of [`list_failed`](Self::list_failed).
    pub async fn list_failed_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), StoreError> {
        self.page("failed_reason IS NOT NULL", offset, limit).await
    }

    /// The entries due at `now`, oldest first; with `account`, only its.
    pub async fn due(&self, now: i64, account: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        self.select(
            "failed_reason IS NULL AND state = 'queued' AND next_attempt_at <= $1 \
             AND ($2::text IS NULL OR account = $2) ORDER BY id",
            &[&now, &account],
        )
        .await
    }

    /// The oldest entry due at `now` (or held for a sender that may
    /// resolve again) of each mailbox (sender identity and account) that
    /// no node holds, at most `limit` of them, oldest first: what the
    /// relay's workers try to claim next, whatever the queue's depth
    /// behind each head.
    pub async fn due_heads(&self, now: i64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.select(
            &format!(
                "id IN (SELECT DISTINCT ON (identity, account) id FROM apimail_entries \
                 WHERE failed_reason IS NULL AND NOT coalesce({LEASED}, false) \
                 AND (state = 'queued' AND next_attempt_at <= $1 \
                 OR state = 'held' AND hold = 'identity') \
                 ORDER BY identity, account, next_attempt_at, id) \
                 ORDER BY next_attempt_at, id LIMIT $2"
            ),
            &[&now, &limit],
        )
        .await
    }

    /// The due entries and those held for a sender that may resolve again.
    pub async fn sendable(&self, now: i64) -> Result<Vec<Entry>, StoreError> {
        self.select(
            "failed_reason IS NULL AND (state = 'queued' AND next_attempt_at <= $1 \
             OR state = 'held' AND hold = 'identity') ORDER BY id",
            &[&now],
        )
        .await
    }

    async fn select(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Entry>, StoreError> {
        let client = self.client("list entries").await?;
        let found = client
            .query(
                &format!("SELECT {COLUMNS} FROM apimail_entries WHERE {condition}"),
                params,
            )
            .await
            .map_err(error::query("list entries"))?;
        found
            .iter()
            .map(|row| rows::entry(row).map(|(entry, _)| entry))
            .collect()
    }

    async fn page(
        &self,
        condition: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), StoreError> {
        let client = self.client("list entries").await?;
        let what = "list entries";
        let total: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM apimail_entries WHERE {condition}"),
                &[],
            )
            .await
            .map_err(error::query(what))?
            .get(0);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM apimail_entries WHERE {condition} \
                     ORDER BY id OFFSET $1 LIMIT $2"
                ),
                &[&offset, &limit],
            )
            .await
            .map_err(error::query(what))?;
        let entries = found
            .iter()
            .map(|row| rows::entry(row).map(|(entry, _)| entry))
            .collect::<Result<_, _>>()?;
        Ok((entries, usize::try_from(total).unwrap_or(0)))
    }

    /// Makes the held entries of `account` (or all) due now, except those
    /// whose outcome is unknown and those another node holds; for after a
    /// login. Returns how many were released.
    pub async fn release_held(&self, account: Option<&str>) -> Result<usize, StoreError> {
        let client = self.client("release held entries").await?;
        let released = client
            .execute(
                &format!(
                    "UPDATE apimail_entries SET state = 'queued', hold = NULL, \
                     next_attempt_at = $1 \
                     WHERE failed_reason IS NULL AND state = 'held' \
                     AND NOT outcome_unknown AND in_flight_since IS NULL \
                     AND ($2::text IS NULL OR account = $2) \
                     AND NOT coalesce({LEASED}, false)"
                ),
                &[&now_unix(), &account],
            )
            .await
            .map_err(error::query("release held entries"))?;
        Ok(usize::try_from(released).unwrap_or(0))
    }

    /// `queue retry ID`: a queued or held entry due now; a failed one back
    /// in the queue, due now, its attempts reset and its maximum age
    /// counted from now. `false` if there is no such entry;
    /// [`StoreError::Busy`] while a node holds its lease.
    pub async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let id = EntryId::parse(id)?;
        let what = "retry an entry";
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.map_err(error::query(what))?;
        let Some(mut entry) = locked_unleased(&tx, &id).await? else {
            return Ok(false);
        };
        let now = now_unix();
        let failed = entry.failed_reason.is_some();
        entry.settle_retry(now, failed);
        let values = Values::of(&entry);
        tx.execute(
            &format!("UPDATE apimail_entries SET {SET_ALL} WHERE id = $1"),
            &values.params(),
        )
        .await
        .map_err(error::query(what))?;
        tx.commit().await.map_err(error::query(what))?;
        Ok(true)
    }

    /// `queue drop ID`: deletes the entry and its message, queued, held or
    /// failed. `false` if there is no such entry; [`StoreError::Busy`]
    /// while a node holds its lease (is sending it).
    pub async fn drop_entry(&self, id: &str) -> Result<bool, StoreError> {
        let id = EntryId::parse(id)?;
        let what = "drop an entry";
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.map_err(error::query(what))?;
        if locked_unleased(&tx, &id).await?.is_none() {
            return Ok(false);
        }
        tx.execute(
            "WITH gone AS (DELETE FROM apimail_entries WHERE id = $1 RETURNING message) \
             DELETE FROM apimail_messages WHERE id IN (SELECT message FROM gone)",
            &[&id.as_str()],
        )
        .await
        .map_err(error::query(what))?;
        tx.commit().await.map_err(error::query(what))?;
        Ok(true)
    }

    /// Counts for `status` and `doctor`.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        let client = self.client("count entries").await?;
        let row = client
            .query_one(
                "SELECT \
                 count(*) FILTER (WHERE failed_reason IS NULL AND state = 'queued'), \
                 count(*) FILTER (WHERE failed_reason IS NULL AND state = 'held'), \
                 count(*) FILTER (WHERE failed_reason IS NOT NULL), \
                 min(created_at) FILTER (WHERE failed_reason IS NULL) \
                 FROM apimail_entries",
                &[],
            )
            .await
            .map_err(error::query("count entries"))?;
        let count = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Summary {
            queued: count(0),
            held: count(1),
            failed: count(2),
            oldest_created_at: row.get(3),
            unreadable: 0,
        })
    }
}

/// Entry `id` locked for this transaction; `None` if there is none,
/// [`StoreError::Busy`] if a node holds its lease.
async fn locked_unleased(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &EntryId,
) -> Result<Option<Entry>, StoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {COLUMNS}, coalesce({LEASED}, false) FROM apimail_entries \
                 WHERE id = $1 FOR UPDATE"
            ),
            &[&id.as_str()],
        )
        .await
        .map_err(error::query("lock an entry"))?;
    let Some(row) = row else { return Ok(None) };
    let (entry, node) = rows::entry(&row)?;
    if row.get::<_, bool>(23) {
        return Err(StoreError::Busy {
            id: entry.id,
            node: node.unwrap_or_default(),
        });
    }
    Ok(Some(entry))
}

/// A message being written into the store; see [`Store::begin`].
#[derive(Debug)]
pub struct Incoming {
    store: Store,
    /// `None` once committed (or given up).
    client: Option<Object>,
    message: i64,
    buffer: Vec<u8>,
    chunks: i32,
    size: u64,
    largest_buffer: usize,
}

impl Incoming {
    /// Appends `bytes`; every full chunk goes to the database at once, so
    /// at most one chunk is ever held here.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        while !bytes.is_empty() {
            let room = self.store.chunk_bytes - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            self.note_buffer();
            bytes = rest;
            if self.buffer.len() == self.store.chunk_bytes {
                self.flush_chunk().await?;
            }
        }
        Ok(())
    }

    /// Appends everything `reader` gives until its end, a chunk at a time.
    pub async fn copy_from<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<(), StoreError> {
        loop {
            let room = self.store.chunk_bytes - self.buffer.len();
            let start = self.buffer.len();
            self.buffer.resize(start + room, 0);
            let read = reader.read(&mut self.buffer[start..]).await;
            let n = *read.as_ref().unwrap_or(&0);
            self.buffer.truncate(start + n);
            self.note_buffer();
            read.map_err(StoreError::Read)?;
            if n == 0 {
                return Ok(());
            }
            if self.buffer.len() == self.store.chunk_bytes {
                self.flush_chunk().await?;
            }
        }
    }

    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size + self.buffer.len() as u64
    }

    /// The most bytes this ever held at once (at most one chunk).
    pub fn largest_buffer(&self) -> usize {
        self.largest_buffer
    }

    fn note_buffer(&mut self) {
        self.largest_buffer = self.largest_buffer.max(self.buffer.len());
    }

    async fn flush_chunk(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let client = self.client()?;
        client
            .execute(
                "INSERT INTO apimail_chunks (message, seq, data) VALUES ($1, $2, $3)",
                &[&self.message, &self.chunks, &self.buffer],
            )
            .await
            .map_err(error::query("store a message chunk"))?;
        self.chunks += 1;
        self.size += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Read(std::io::Error::other("already committed")))
    }

    /// Makes the message an entry, queued and due now. When this returns
    /// `Ok`, the transaction has committed: the message is accepted.
    pub async fn commit(self, meta: NewEntry) -> Result<EntryId, StoreError> {
        Ok(self.commit_with(meta, None).await?.0.id)
    }

    /// Like [`commit`](Self::commit), and the new entry stays claimed by
    /// this node (its lease taken in the same transaction), so no other
    /// node can take it before this one's first attempt.
    pub async fn commit_claimed(self, meta: NewEntry) -> Result<Claim, StoreError> {
        let token = token();
        let store = self.store.clone();
        let (entry, message) = self.commit_with(meta, Some(token)).await?;
        Ok(Claim::new(store, entry, message, token))
    }

    async fn commit_with(
        mut self,
        meta: NewEntry,
        lease: Option<i64>,
    ) -> Result<(Entry, i64), StoreError> {
        self.flush_chunk().await?;
        let what = "commit an entry";
        let now = now_unix();
        let mut entry = Entry {
            id: generate_id(now)?,
            state: EntryState::Queued,
            account: meta.account,
            provider: meta.provider,
            from: meta.from,
            recipients: meta.recipients,
            message_id: meta.message_id,
            size: self.size,
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            max_age_secs: meta.max_age_secs,
            retried_at: None,
            failed_reason: None,
            identity: meta.identity,
            in_flight_since: None,
            outcome_unknown: false,
            hold: None,
            retried_unknown: false,
            notes: BTreeMap::new(),
            original_from: meta.original_from,
        };
        let client = self.client()?;
        let node: Option<&str> = lease.map(|_| &*self.store.node);
        let lease_secs = self.store.lease_secs();
        let mut inserted = false;
        for _ in 0..ID_RETRIES {
            let values = Values::of(&entry);
            let mut params = values.params();
            params.extend([
                &self.message as &(dyn tokio_postgres::types::ToSql + Sync),
                &node,
                &lease,
                &lease_secs,
            ]);
            let n = client
                .execute(
                    "INSERT INTO apimail_entries (id, state, hold, account, provider, \
                     from_addr, recipients, message_id, size, created_at, attempts, \
                     next_attempt_at, last_error, max_age_secs, retried_at, failed_reason, \
                     identity, in_flight_since, outcome_unknown, retried_unknown, notes, \
                     original_from, message, lease_node, lease_token, lease_until) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                     $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, \
                     CASE WHEN $25::bigint IS NULL THEN NULL \
                     ELSE clock_timestamp() + make_interval(secs => $26) END) \
                     ON CONFLICT (id) DO NOTHING",
                    &params,
                )
                .await
                .map_err(error::query(what))?;
            if n == 1 {
                inserted = true;
                break;
            }
            entry.id = generate_id(now)?;
        }
        if !inserted {
            return Err(StoreError::Corrupt {
                what: "outbox entry",
                reason: "no free entry id".into(),
            });
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(error::query(what))?;
        // Committed: back to the pool.
        self.client.take();
        Ok((entry, self.message))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Uncommitted: closing the connection rolls the transaction
            // back, chunks and all; it never goes back to the pool.
            drop(Object::take(client));
        }
    }
}

/// `YYYYMMDDTHHMMSS-` and 12 random hex digits, as the local outbox.
fn generate_id(now: i64) -> Result<EntryId, StoreError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let at = time::OffsetDateTime::from_unix_timestamp(now.clamp(0, 253_402_300_799))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut random = [0u8; 6];
    if getrandom::fill(&mut random).is_err() {
        random = token().to_le_bytes()[..6].try_into().unwrap_or_default();
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(EntryId::parse(&format!(
        "{}-{hex}",
        at.format(&format).unwrap_or_default()
    ))?)
}
