//! Claims as leases. A node claims an entry by writing its name, a fresh
//! fencing token and a lease deadline (the database's clock) into the row,
//! under `FOR UPDATE SKIP LOCKED`, so two nodes never hold the same entry.
//! A task renews the lease while the [`Claim`] lives; every write of the
//! claim checks the token, so a node whose lease ran out and was taken
//! over writes nothing. A node that dies loses its leases when they
//! expire: the next claim finds the entry as it was, and if an attempt had
//! begun (`in_flight_since` set), the entry is uncertain, exactly as the
//! local outbox's entry left in flight by a dead process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apimail_core::outbox::{Entry, EntryId, HoldKind, Outcome};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

use crate::error::{self, StoreError};
use crate::message::MessageReader;
use crate::rows::{self, COLUMNS, LEASED, SET_ALL, Values};
use crate::store::{Store, token};
use crate::subjects::Head;

impl Store {
    /// Claims entry `id` for sending, whether due or not: `None` if it is
    /// gone, failed, or leased by a node (this one included).
    pub async fn claim(&self, id: &EntryId) -> Result<Option<Claim>, StoreError> {
        self.claim_where("id = $4", &[&id.as_str()]).await
    }

    /// Like [`claim`](Self::claim), and `None` unless it is due at `now`.
    pub async fn claim_due(&self, id: &EntryId, now: i64) -> Result<Option<Claim>, StoreError> {
        self.claim_where(
            "id = $4 AND state = 'queued' AND next_attempt_at <= $5",
            &[&id.as_str(), &now],
        )
        .await
    }

    /// Claims the oldest due entry (of `account`, if given) that no node
    /// holds; `None` when there is none. Concurrent callers, on any node,
    /// each get a different entry.
    pub async fn claim_next_due(
        &self,
        now: i64,
        account: Option<&str>,
    ) -> Result<Option<Claim>, StoreError> {
        self.claim_where(
            "state = 'queued' AND next_attempt_at <= $4 \
             AND ($5::text IS NULL OR account = $5) \
             ORDER BY next_attempt_at, id",
            &[&now, &account],
        )
        .await
    }

    /// The claim statement: the first unleased, unfailed row matching
    /// `condition` (parameters from `$4`), locked without waiting, then
    /// leased to this node.
    async fn claim_where(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Claim>, StoreError> {
        let what = "claim an entry";
        let client = self.client(what).await?;
        let token = token();
        let node: &str = &self.node;
        let lease = self.lease_secs();
        let sql = format!(
            "UPDATE apimail_entries SET lease_node = $1, lease_token = $2, \
             lease_until = clock_timestamp() + make_interval(secs => $3) \
             WHERE id = (SELECT id FROM apimail_entries \
               WHERE failed_reason IS NULL AND NOT coalesce({LEASED}, false) \
               AND {condition} \
               LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}, message"
        );
        let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&node, &token, &lease];
        all.extend_from_slice(params);
        let row = client
            .query_opt(&sql, &all)
            .await
            .map_err(error::query(what))?;
        let Some(row) = row else { return Ok(None) };
        let (entry, _) = rows::entry(&row)?;
        let message: i64 = row.get(23);
        Ok(Some(Claim::new(self.clone(), entry, message, token)))
    }
}

/// A claimed entry: this node holds its lease until the claim is settled
/// or dropped. Dropping it unsettled gives the lease back (the entry is as
/// it was, due again at once); without a runtime to do that, the lease
/// simply expires.
#[derive(Debug)]
pub struct Claim {
    store: Store,
    entry: Entry,
    message: i64,
    token: i64,
    notes: Mutex<BTreeMap<String, String>>,
    lost: watch::Receiver<bool>,
    renewer: Option<JoinHandle<()>>,
    settled: bool,
    /// The message, copied into a private temporary file for the
    /// transports on first use; removed with the claim.
    spool: OnceCell<tempfile::TempPath>,
}

impl Claim {
    pub(crate) fn new(store: Store, entry: Entry, message: i64, token: i64) -> Claim {
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew_loop(store.clone(), entry.id.clone(), token, lost_tx));
        Claim {
            notes: Mutex::new(entry.notes.clone()),
            store,
            entry,
            message,
            token,
            lost,
            renewer: Some(renewer),
            settled: false,
            spool: OnceCell::new(),
        }
    }

    /// The entry, as claimed.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The message, a chunk at a time.
    pub async fn open_message(&self) -> Result<MessageReader, StoreError> {
        self.store.message_reader(self.message).await
    }

    /// The message in a private (0600) temporary file, copied a chunk at a
    /// time on the first call: the transports stream it from there as
    /// from the local outbox's file. It is removed with the claim.
    pub async fn spooled(&self) -> std::io::Result<&std::path::Path> {
        let path = self
            .spool
            .get_or_try_init(|| async {
                let file = tempfile::NamedTempFile::new()?;
                let (file, path) = file.into_parts();
                let mut out = tokio::fs::File::from_std(file);
                let mut reader = self.open_message().await.map_err(std::io::Error::other)?;
                // The Subject from the chunks as they go by, for the
                // journal (`Store::subject`): the message is read once.
                let mut head = Head::default();
                while let Some(chunk) = reader.next_chunk().await.map_err(std::io::Error::other)? {
                    if self.store.subjects {
                        head.take(&chunk);
                    }
                    out.write_all(&chunk).await?;
                }
                out.flush().await?;
                if self.store.subjects {
                    self.store
                        .subjects_read
                        .put(self.entry.id.as_str(), head.subject());
                }
                Ok::<_, std::io::Error>(path)
            })
            .await?;
        Ok(path)
    }

    /// The fencing token of this claim's lease.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Whether the lease was lost: it could not be renewed before it ran
    /// out, or another node holds the entry now. Stop sending.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (see [`is_lost`](Self::is_lost));
    /// the engine races an attempt against it, as against an interrupt.
    pub async fn lease_lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Extends the lease by the store's lease length now (the renewal
    /// task does this on its own every third of it).
    pub async fn renew(&self) -> Result<(), StoreError> {
        renew(&self.store, &self.entry.id, self.token).await
    }

    /// Counts `n` more attempts made under this claim than the one the
    /// settling call counts.
    pub fn add_attempts(&mut self, n: u32) {
        self.entry.attempts = self.entry.attempts.saturating_add(n);
    }

    /// Durably marks the entry in flight before an attempt: if this node
    /// dies now, the next claim finds it uncertain.
    pub async fn begin_attempt(&mut self, now: i64) -> Result<(), StoreError> {
        self.take_notes();
        self.entry.in_flight_since = Some(now);
        self.write(false).await
    }

    /// The transport's note under `key`.
    pub fn note(&self, key: &str) -> Option<String> {
        self.notes.lock().ok()?.get(key).cloned()
    }

    /// Stores (or with `None` removes) the note `key`, durably, before
    /// returning.
    pub async fn set_note(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let mut changed = self.notes.lock().map(|n| n.clone()).unwrap_or_default();
        match value {
            Some(value) => changed.insert(key.to_owned(), value.to_owned()),
            None => changed.remove(key),
        };
        let json = serde_json::to_value(&changed).unwrap_or_default();
        let n = self
            .store
            .client("store a delivery note")
            .await?
            .execute(
                "UPDATE apimail_entries SET notes = $3 WHERE id = $1 AND lease_token = $2",
                &[&self.entry.id.as_str(), &self.token, &json],
            )
            .await
            .map_err(error::query("store a delivery note"))?;
        if n == 0 {
            return Err(self.lease_lost_error());
        }
        if let Ok(mut notes) = self.notes.lock() {
            *notes = changed;
        }
        Ok(())
    }

    /// The provider accepted the message: the entry and its message are
    /// deleted. [`StoreError::LeaseLost`] if another node holds it now.
    pub async fn delivered(mut self) -> Result<(), StoreError> {
        let what = "remove a sent entry";
        let n = self
            .store
            .client(what)
            .await?
            .execute(
                "WITH gone AS (DELETE FROM apimail_entries WHERE id = $1 AND lease_token = $2 \
                 RETURNING message) \
                 DELETE FROM apimail_messages WHERE id IN (SELECT message FROM gone)",
                &[&self.entry.id.as_str(), &self.token],
            )
            .await
            .map_err(error::query(what))?;
        if n == 0 {
            return Err(self.lease_lost_error());
        }
        self.settled = true;
        Ok(())
    }

    /// A temporary failure at `now`: as the local outbox's
    /// `Claim::retry_later`.
    pub async fn retry_later(self, error: &str, now: i64) -> Result<Outcome, StoreError> {
        self.retry_later_after(error, now, None).await
    }

    /// A temporary failure: counts the attempt and schedules the next per
    /// [`next_delay_secs`](apimail_core::outbox::next_delay_secs) (not before `retry_after`), or, past the
    /// entry's maximum age, fails it (`expired after N days: <error>`).
    pub async fn retry_later_after(
        mut self,
        error: &str,
        now: i64,
        retry_after: Option<Duration>,
    ) -> Result<Outcome, StoreError> {
        self.take_notes();
        let outcome = self.entry.settle_retry_later(error, now, retry_after);
        self.settle().await?;
        Ok(outcome)
    }

    /// An authorization failure: counts the attempt and holds the entry
    /// for a login ([`Store::release_held`]) or `queue retry`.
    pub async fn hold(mut self, error: &str) -> Result<(), StoreError> {
        self.take_notes();
        self.entry.settle_login_hold(error);
        self.settle().await
    }

    async fn hold_as(mut self, kind: HoldKind, error: &str) -> Result<(), StoreError> {
        self.take_notes();
        self.entry.settle_hold(kind, error);
        self.settle().await
    }

    /// An attempt whose outcome is unknown: marks the entry uncertain and
    /// holds it (`hold`) or schedules it like
    /// [`retry_later`](Self::retry_later).
    pub async fn uncertain(
        mut self,
        error: &str,
        now: i64,
        hold: bool,
    ) -> Result<Outcome, StoreError> {
        self.take_notes();
        let outcome = self.entry.settle_uncertain(error, now, hold);
        self.settle().await?;
        Ok(outcome)
    }

    /// Holds an uncertain entry for the user without an attempt now.
    pub async fn hold_uncertain(mut self, error: &str) -> Result<(), StoreError> {
        self.take_notes();
        self.entry.settle_hold_uncertain(error);
        self.settle().await
    }

    /// Holds an entry whose sender cannot be resolved now, counting no
    /// attempt.
    pub async fn hold_unsent(self, reason: &str) -> Result<(), StoreError> {
        self.hold_as(HoldKind::Identity, reason).await
    }

    /// A permanent failure: counts the attempt and fails the entry with
    /// `reason`.
    pub async fn fail(mut self, reason: &str) -> Result<(), StoreError> {
        self.take_notes();
        self.entry.settle_fail(reason);
        self.settle().await
    }

    /// Gives the lease back now, leaving the entry as it is.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.settled = true;
        release(&self.store, &self.entry.id, self.token).await
    }

    /// Writes the entry and ends the lease.
    async fn settle(&mut self) -> Result<(), StoreError> {
        self.write(true).await?;
        self.settled = true;
        Ok(())
    }

    /// Writes the entry under the lease's token; `end`: and ends the lease.
    async fn write(&self, end: bool) -> Result<(), StoreError> {
        let what = "update an entry";
        let values = Values::of(&self.entry);
        let mut params = values.params();
        params.push(&self.token);
        let end_lease = if end {
            ", lease_node = NULL, lease_token = NULL, lease_until = NULL"
        } else {
            ""
        };
        let n = self
            .store
            .client(what)
            .await?
            .execute(
                &format!(
                    "UPDATE apimail_entries SET {SET_ALL}{end_lease} \
                     WHERE id = $1 AND lease_token = $23"
                ),
                &params,
            )
            .await
            .map_err(error::query(what))?;
        if n == 0 {
            return Err(self.lease_lost_error());
        }
        Ok(())
    }

    fn lease_lost_error(&self) -> StoreError {
        StoreError::LeaseLost {
            id: self.entry.id.clone(),
        }
    }

    fn take_notes(&mut self) {
        if let Ok(notes) = self.notes.get_mut() {
            self.entry.notes = notes.clone();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.settled {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, id, token) = (self.store.clone(), self.entry.id.clone(), self.token);
            // Tried again until the lease would run out anyway: a database
            // away for a moment does not keep the entry from every node.
            runtime.spawn(async move {
                let until = Instant::now() + store.lease;
                loop {
                    match release(&store, &id, token).await {
                        Ok(()) => return,
                        Err(e) if Instant::now() + RELEASE_RETRY >= until => {
                            tracing::debug!("the lease on {id} expires on its own: {e}");
                            return;
                        }
                        Err(_) => tokio::time::sleep(RELEASE_RETRY).await,
                    }
                }
            });
        }
    }
}

/// How soon a failed release of a dropped claim is tried again.
const RELEASE_RETRY: Duration = Duration::from_secs(1);

/// Extends the lease of `id` under `token`.
async fn renew(store: &Store, id: &EntryId, token: i64) -> Result<(), StoreError> {
    let what = "renew a lease";
    let n = store
        .client(what)
        .await?
        .execute(
            &format!(
                "UPDATE apimail_entries \
                 SET lease_until = clock_timestamp() + make_interval(secs => $3) \
                 WHERE id = $1 AND lease_token = $2 AND {LEASED}"
            ),
            &[&id.as_str(), &token, &store.lease_secs()],
        )
        .await
        .map_err(error::query(what))?;
    if n == 0 {
        return Err(StoreError::LeaseLost { id: id.clone() });
    }
    Ok(())
}

/// Clears the lease of `id` if `token` still holds it.
async fn release(store: &Store, id: &EntryId, token: i64) -> Result<(), StoreError> {
    store
        .client("release a lease")
        .await?
        .execute(
            "UPDATE apimail_entries SET lease_node = NULL, lease_token = NULL, \
             lease_until = NULL WHERE id = $1 AND lease_token = $2",
            &[&id.as_str(), &token],
        )
        .await
        .map_err(error::query("release a lease"))?;
    Ok(())
}

/// Renews the lease every third of its length until it is lost: taken
/// over, or not renewed before it ran out by this node's own clock (the
/// deadline counts from before each renewal was sent).
async fn renew_loop(store: Store, id: EntryId, token: i64, lost: watch::Sender<bool>) {
    let every = store.lease / 3;
    let mut deadline = Instant::now() + store.lease;
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        match tokio::time::timeout(every, renew(&store, &id, token)).await {
            Ok(Ok(())) => deadline = sent + store.lease,
            Ok(Err(StoreError::LeaseLost { .. })) => break,
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::debug!("cannot renew the lease on {id} yet: {e}");
            }
            _ if Instant::now() < deadline => {}
            _ => break,
        }
    }
    tracing::warn!("the lease on {id} was lost; another node may send it");
    let _ = lost.send(true);
}
