//! Pacing per mailbox across every node: "may I start a delivery for
//! mailbox X now?", answered under a row lock on the mailbox's
//! `apimail_pace` row, by the database's clock. Starts are spaced evenly
//! by the provider's stated [`Pace`] (a minute over `per_minute`), and
//! at most `concurrency` deliveries hold a [`Permit`] at once (permits
//! carry a lease, renewed while held, so a dead node's permits run out).

use std::time::Duration;

use apimail_core::Pace;

use crate::error::{self, StoreError};
use crate::store::{Store, token};

/// The answer to [`Store::try_start`].
#[derive(Debug)]
pub enum Start {
    /// Go: hold the permit while delivering, then [`Permit::finish`].
    Go(Permit),
    /// Not now; ask again after this long (the next start's time, or, when
    /// all `concurrency` permits are out, a short while).
    Wait(Duration),
}

/// How long to wait when every permit is out (one may come back any time).
const SLOT_POLL: Duration = Duration::from_millis(200);

/// A delivery under way for a mailbox; counts against its concurrency
/// until finished, dropped (released in the background) or expired.
#[derive(Debug)]
pub struct Permit {
    store: Store,
    token: i64,
    mailbox: String,
    finished: bool,
    /// Renews the permit's lease every third of it while it is held, so a
    /// delivery longer than the lease keeps its slot.
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Store {
    /// Asks to start one delivery for `mailbox` under `pace`, across all
    /// nodes. Unlimited paces always go (and take no permit row when the
    /// concurrency is unlimited).
    pub async fn try_start(&self, mailbox: &str, pace: Pace) -> Result<Start, StoreError> {
        let what = "pace a mailbox";
        let mut client = self.client(what).await?;
        let tx = client.transaction().await.map_err(error::query(what))?;
        tx.execute(
            "INSERT INTO apimail_pace (mailbox, next_start) VALUES ($1, 'epoch') \
             ON CONFLICT (mailbox) DO NOTHING",
            &[&mailbox],
        )
        .await
        .map_err(error::query(what))?;
        // The row lock makes every node's question about this mailbox
        // wait for the one before it.
        let wait: f64 = tx
            .query_one(
                "SELECT greatest(0, extract(epoch FROM next_start - clock_timestamp()))::float8 \
                 FROM apimail_pace WHERE mailbox = $1 FOR UPDATE",
                &[&mailbox],
            )
            .await
            .map_err(error::query(what))?
            .get(0);
        let limited = pace.concurrency != usize::MAX;
        if limited {
            tx.execute(
                "DELETE FROM apimail_pace_permits \
                 WHERE mailbox = $1 AND until <= clock_timestamp()",
                &[&mailbox],
            )
            .await
            .map_err(error::query(what))?;
            let out: i64 = tx
                .query_one(
                    "SELECT count(*) FROM apimail_pace_permits WHERE mailbox = $1",
                    &[&mailbox],
                )
                .await
                .map_err(error::query(what))?
                .get(0);
            if usize::try_from(out).unwrap_or(usize::MAX) >= pace.concurrency {
                tx.commit().await.map_err(error::query(what))?;
                return Ok(Start::Wait(SLOT_POLL.max(Duration::from_secs_f64(wait))));
            }
        }
        if wait > 0.0 {
            tx.commit().await.map_err(error::query(what))?;
            return Ok(Start::Wait(Duration::from_secs_f64(wait)));
        }
        let interval = pace.interval().as_secs_f64();
        tx.execute(
            "UPDATE apimail_pace SET next_start = \
             greatest(next_start, clock_timestamp()) + make_interval(secs => $2) \
             WHERE mailbox = $1",
            &[&mailbox, &interval],
        )
        .await
        .map_err(error::query(what))?;
        let token = token();
        if limited {
            tx.execute(
                "INSERT INTO apimail_pace_permits (token, mailbox, node, until) \
                 VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))",
                &[&token, &mailbox, &&*self.node, &self.lease_secs()],
            )
            .await
            .map_err(error::query(what))?;
        }
        tx.commit().await.map_err(error::query(what))?;
        let renewer = limited.then(|| tokio::spawn(renew_loop(self.clone(), token)));
        Ok(Start::Go(Permit {
            store: self.clone(),
            token,
            mailbox: mailbox.to_owned(),
            finished: !limited,
            renewer,
        }))
    }

    /// [`try_start`](Self::try_start) until it says go, waiting as it
    /// says, for at most `limit` (then `None`).
    pub async fn start(
        &self,
        mailbox: &str,
        pace: Pace,
        limit: Duration,
    ) -> Result<Option<Permit>, StoreError> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            match self.try_start(mailbox, pace).await? {
                Start::Go(permit) => return Ok(Some(permit)),
                Start::Wait(wait) => {
                    let now = tokio::time::Instant::now();
                    if now + wait > until {
                        return Ok(None);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Permit {
    /// The mailbox it is for.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// Extends the permit's lease (a long delivery).
    pub async fn renew(&self) -> Result<(), StoreError> {
        if self.finished {
            return Ok(());
        }
        renew(&self.store, self.token).await
    }

    /// The delivery is over: its slot is free for any node.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        finish(&self.store, self.token).await
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.finished {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, token) = (self.store.clone(), self.token);
            runtime.spawn(async move {
                if let Err(e) = finish(&store, token).await {
                    tracing::debug!("a pacing permit expires on its own: {e}");
                }
            });
        }
    }
}

/// Extends permit `token`'s lease every third of it until aborted; a
/// failed renewal is tried again at the next turn (the permit expires on
/// its own if the database stays away).
async fn renew_loop(store: Store, token: i64) {
    let every = store.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, renew(&store, token)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cannot renew a pacing permit yet: {e}"),
            Err(_) => tracing::debug!("cannot renew a pacing permit yet: no answer"),
        }
    }
}

async fn renew(store: &Store, token: i64) -> Result<(), StoreError> {
    store
        .client("renew a pacing permit")
        .await?
        .execute(
            "UPDATE apimail_pace_permits \
             SET until = clock_timestamp() + make_interval(secs => $2) WHERE token = $1",
            &[&token, &store.lease_secs()],
        )
        .await
        .map_err(error::query("renew a pacing permit"))?;
    Ok(())
}

async fn finish(store: &Store, token: i64) -> Result<(), StoreError> {
    store
        .client("finish a pacing permit")
        .await?
        .execute(
            "DELETE FROM apimail_pace_permits WHERE token = $1",
            &[&token],
        )
        .await
        .map_err(error::query("finish a pacing permit"))?;
    Ok(())
}
