//! The relay's delivery workers: the [`Engine`] run over every due outbox
//! entry, several mailboxes at once, each paced to its provider's limits.
//!
//! - **Per mailbox** (an entry's [`SenderIdentity`](apimail_core::SenderIdentity),
//!   else its account): at most [`Pace::concurrency`] deliveries at once,
//!   and at most [`Pace::per_minute`] started per minute, evenly spaced. A
//!   burst is queued in the outbox and drained, never bounced.
//! - **One sender per mailbox**, resolved once and shared by its
//!   deliveries, so they share one token (one refresh for all of them).
//! - **Settling** is the engine's: retries, holds, uncertain outcomes and
//!   failures are exactly those of `apimail queue flush`, and each is
//!   journaled. A sender that cannot be resolved holds its entries.
//! - **Postmaster**: a message that fails for good after the relay accepted
//!   it is reported by mail to the configured address, through the same
//!   account (never a report about a report).
//! - **Due entries** come from a [`Schedule`] in memory, not from listing
//!   the outbox: each accepted or settled entry is read again (one file),
//!   and other processes' changes are found by a rescan every 15 s that
//!   reads only new or rewritten entries, off the async thread. Picking the
//!   next entry costs the same however deep the queue is.
//! - **Over a shared store** ([`Workers::run_shared`], a
//!   [`SharedStore`] such as PostgreSQL) there is no schedule: each look
//!   claims every mailbox's oldest due entry that no node holds (a lease,
//!   renewed while sending), and each start takes a permit from the
//!   store's pacer, so a mailbox's pace holds across all nodes together.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OnceCell;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Accepted;
use apimail_core::delivery::{
    self, Delivery, Engine, IfNotSent, Selection, Senders, Settled, error_text,
};
use apimail_core::journal::Details;
use apimail_core::outbox::{Entry, EntryId, NewEntry, OutboxError};
use apimail_core::retry::RetryPolicy;
use apimail_core::schedule::{self, Schedule};
use apimail_core::store::{LocalStore, PaceStart, SharedStore, Store, StoreClaim};
use apimail_core::{Mailbox, MessageBuilder, Pace, Transport, now_unix};

/// Where reports of messages that failed for good go.
#[derive(Debug, Clone)]
pub struct Postmaster {
    /// The postmaster's address.
    pub to: Mailbox,
}

/// Marks a postmaster report, so its own failure is not reported.
const REPORT_HEADER: &str = "X-Apimail-Report";

/// How often the schedule is brought in line with what other processes
/// did to the outbox (at least; see `RESCAN_SHARE`).
const RESCAN: Duration = Duration::from_secs(15);

/// A rescan lists every entry: the pause after one is at least this many
/// times as long as it took, so rescans use at most 2% of the time.
const RESCAN_SHARE: u32 = 50;

type Key = schedule::MailboxKey;

/// A delivery that ended.
struct Finished {
    key: Key,
    id: EntryId,
    /// Its sender could not be resolved (the engine held the mailbox).
    unresolved: bool,
    /// The postmaster report it queued.
    report: Option<EntryId>,
}

/// A mailbox's pace, by entry.
type PaceOf<'e> = Box<dyn Fn(&Entry) -> Pace + Send + Sync + 'e>;

/// The address to send a postmaster report from, by failed entry.
type ReportFrom<'e> = Box<dyn Fn(&Entry) -> Option<Mailbox> + Send + Sync + 'e>;

/// One mailbox's deliveries under way, its next start, and its pace
/// (known from its first delivery).
struct Lane {
    running: usize,
    last_start: Option<Instant>,
    next_start: Instant,
    pace: Option<Pace>,
}

/// The workers over one engine: over the local spool by default
/// ([`run`](Workers::run)), or over a shared store
/// ([`run_shared`](Workers::run_shared)).
pub struct Workers<'e, S: Senders, B = LocalStore> {
    engine: &'e Engine<S, B>,
    /// The pace by entry, when not the resolved sender's.
    pace: Option<PaceOf<'e>>,
    postmaster: Option<Postmaster>,
    /// The account's address to send a report from, by entry.
    report_from: ReportFrom<'e>,
    senders: Mutex<HashMap<Key, Arc<OnceCell<S::Sender>>>>,
}

impl<S: Senders, B> std::fmt::Debug for Workers<'_, S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("postmaster", &self.postmaster)
            .finish_non_exhaustive()
    }
}

impl<'e, S: Senders, B: Store> Workers<'e, S, B> {
    /// Workers over `engine`, pacing each mailbox by its resolved sender
    /// ([`Transport::pace`]: the provider's limits), without postmaster
    /// reports.
    pub fn new(engine: &'e Engine<S, B>) -> Self {
        Workers {
            engine,
            pace: None,
            postmaster: None,
            report_from: Box::new(|_| None),
            senders: Mutex::new(HashMap::new()),
        }
    }

    /// Paces mailboxes with `pace` instead.
    pub fn with_pace(mut self, pace: impl Fn(&Entry) -> Pace + Send + Sync + 'e) -> Self {
        self.pace = Some(Box::new(pace));
        self
    }

    /// The pace of `entry`'s mailbox (`key`): [`Workers::with_pace`]'s, else
    /// its sender's. Until the mailbox's first delivery has resolved the
    /// sender, it gets one delivery at a time.
    fn pace_of(&self, key: &Key, entry: &Entry) -> Pace {
        if let Some(pace) = &self.pace {
            return pace(entry);
        }
        self.resolved_pace(key).unwrap_or(Pace {
            concurrency: 1,
            ..Pace::UNLIMITED
        })
    }

    /// The pace of `key`'s sender, once a delivery has resolved it.
    fn resolved_pace(&self, key: &Key) -> Option<Pace> {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders
            .get(key)
            .and_then(|cell| cell.get())
            .map(|sender| sender.pace())
    }

    /// Reports messages that fail for good to `postmaster`, from the
    /// address `report_from` gives for the failed entry's account (the
    /// failed message's envelope sender when it gives none).
    pub fn with_postmaster(
        mut self,
        postmaster: Postmaster,
        report_from: impl Fn(&Entry) -> Option<Mailbox> + Send + Sync + 'e,
    ) -> Self {
        self.postmaster = Some(postmaster);
        self.report_from = Box::new(report_from);
        self
    }

    /// The report to `postmaster` about `entry`, which failed for good
    /// with `reason`, and its entry: from the account's address.
    fn compose_report(
        &self,
        postmaster: &Postmaster,
        entry: &Entry,
        reason: &str,
    ) -> Result<(Vec<u8>, NewEntry), ReportError> {
        let from = match (self.report_from)(entry) {
            Some(from) => from,
            None => entry.from.parse::<Mailbox>()?,
        };
        let text = format!(
            "apimail relay accepted this message but could not deliver it.\n\n\
             Queue id:    {}\nMessage-ID:  {}\nFrom:        {}\nTo:          {}\n\
             Size:        {} bytes\nReason:      {reason}\n\n\
             It is kept in the outbox's failed messages: `apimail queue show {}`\n\
             shows it, `apimail queue retry {}` sends it again.\n",
            entry.id,
            entry.message_id,
            entry.from,
            entry.recipients.join(", "),
            entry.size,
            entry.id,
            entry.id,
        );
        let message = MessageBuilder::new()
            .from(from.clone())
            .to(postmaster.to.clone())
            .subject(format!("Undelivered: relay message {}", entry.id))
            .header("Auto-Submitted", "auto-generated")
            .header(REPORT_HEADER, "failure")
            .text(text)
            .build()?;
        let meta = NewEntry {
            identity: entry.identity.clone(),
            account: entry.account.clone(),
            provider: entry.provider.clone(),
            from: from.email().to_owned(),
            recipients: vec![postmaster.to.email().to_owned()],
            message_id: message.message_id().to_owned(),
            ..NewEntry::default()
        };
        Ok((message.as_bytes().to_vec(), meta))
    }

    /// The sender of `key`'s mailbox, resolved once and shared.
    fn sender_cell(&self, key: &Key) -> Arc<OnceCell<S::Sender>> {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(senders.entry(key.clone()).or_default())
    }
}

impl<'e, S: Senders> Workers<'e, S> {
    /// Delivers due entries until `stop` resolves, then lets the deliveries
    /// under way finish (the engine's interrupt cuts them short) and
    /// returns. Each message the server `accepted` is journaled as queued
    /// (so `apimail log` lists it before any attempt) and makes the workers
    /// look for due entries soon.
    pub async fn run(
        &self,
        accepted: &mut UnboundedReceiver<Accepted>,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let outbox = self.engine.outbox().clone();
        let schedule = Arc::new(Mutex::new(Schedule::new()));
        let mut running = FuturesUnordered::new();
        let mut lanes: HashMap<Key, Lane> = HashMap::new();
        let mut wake_open = true;
        // The first rescan, from an empty schedule, reads the queue once.
        let mut rescan: Option<JoinHandle<Duration>> = None;
        let mut next_rescan = Instant::now();
        loop {
            if rescan.is_none() && Instant::now() >= next_rescan {
                let (schedule, outbox) = (Arc::clone(&schedule), outbox.clone());
                rescan = Some(tokio::task::spawn_blocking(move || {
                    let began = std::time::Instant::now();
                    if let Err(error) = Schedule::rescan(&schedule, &outbox) {
                        tracing::warn!("cannot list the outbox: {error}");
                    }
                    began.elapsed()
                }));
            }
            let (picked, wake) = self.pick(&schedule, &mut lanes);
            for (key, entry) in picked {
                running.push(self.deliver(key, entry));
            }
            let wake = match (wake, rescan.is_some()) {
                (Some(wake), true) => wake,
                (Some(wake), false) => wake.min(next_rescan),
                (None, true) => Instant::now() + RESCAN,
                (None, false) => next_rescan,
            };
            tokio::select! {
                () = &mut stop => break,
                first = accepted.recv(), if wake_open => {
                    wake_open = first.is_some();
                    let burst: Vec<(EntryId, Details)> = first
                        .into_iter()
                        .chain(std::iter::from_fn(|| accepted.try_recv().ok()))
                        .map(|message| (message.id, message.details))
                        .collect();
                    let ids: Vec<EntryId> = burst.iter().map(|(id, _)| id.clone()).collect();
                    // One append and one sync for the burst, off the
                    // runtime's thread, which the sessions share.
                    if let Some(journal) = self.engine.journal().cloned() {
                        let outbox = outbox.clone();
                        let journaled = tokio::task::spawn_blocking(move || {
                            delivery::record_accepted(&outbox, &journal, &burst)
                        })
                        .await;
                        match journaled {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => tracing::warn!("cannot journal accepted messages: {error}"),
                            Err(error) => tracing::warn!("cannot journal accepted messages: {error}"),
                        }
                    }
                    let mut schedule = schedule::lock(&schedule);
                    for id in &ids {
                        if let Err(error) = schedule.refresh(&outbox, id) {
                            tracing::warn!("{error}");
                        }
                    }
                }
                Some(finished) = running.next(), if !running.is_empty() => {
                    if let Some(lane) = lanes.get_mut(&finished.key) {
                        lane.running -= 1;
                        // The first delivery resolved the sender: its pace
                        // counts from the start before it, too.
                        if self.pace.is_none()
                            && let Some(pace) = self.resolved_pace(&finished.key)
                            && lane.pace != Some(pace)
                        {
                            lane.pace = Some(pace);
                            if let Some(last) = lane.last_start {
                                lane.next_start = lane.next_start.max(last + pace.interval());
                            }
                        }
                        if finished.unresolved {
                            // The engine held the mailbox's entries; try
                            // its sender again only after a while.
                            lane.next_start = lane.next_start.max(Instant::now() + RESCAN);
                        }
                    }
                    let mut schedule = schedule::lock(&schedule);
                    if let Err(error) = schedule.done(&outbox, &finished.id) {
                        tracing::warn!("{error}");
                    }
                    if let Some(report) = &finished.report
                        && let Err(error) = schedule.refresh(&outbox, report)
                    {
                        tracing::warn!("{error}");
                    }
                }
                took = async { rescan.as_mut().expect("only polled while running").await }, if rescan.is_some() => {
                    rescan = None;
                    let took = took.unwrap_or_default();
                    next_rescan = Instant::now() + RESCAN.max(took * RESCAN_SHARE);
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        while running.next().await.is_some() {}
    }

    /// The entries to start now, each mailbox within its pace, and when to
    /// look again (`None`: when a delivery ends). Each look costs the
    /// mailboxes with waiting entries, not the queue's depth.
    fn pick(
        &self,
        schedule: &Mutex<Schedule>,
        lanes: &mut HashMap<Key, Lane>,
    ) -> (Vec<(Key, Entry)>, Option<Instant>) {
        let outbox = self.engine.outbox();
        let mut schedule = schedule::lock(schedule);
        let (now, unix) = (Instant::now(), now_unix());
        let mut picked = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut soon = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        let keys: Vec<Key> = schedule.mailboxes().cloned().collect();
        for key in keys {
            let lane = lanes.entry(key.clone()).or_insert(Lane {
                running: 0,
                last_start: None,
                next_start: now,
                pace: None,
            });
            loop {
                if lane.running >= lane.pace.map_or(1, |p| p.concurrency.max(1)) {
                    break; // a delivery's end wakes us
                }
                if lane.next_start > now {
                    soon(lane.next_start);
                    break;
                }
                let Some(id) = schedule.first_due(&key, unix) else {
                    if let Some(due) = schedule.next_due(&key) {
                        let wait = u64::try_from(due.saturating_sub(unix)).unwrap_or(0);
                        soon(now + Duration::from_secs(wait.max(1)));
                    }
                    break;
                };
                schedule.take(&id);
                // The entry as it is now: another process may have changed it.
                match outbox.get(id.as_str()) {
                    Ok(Some(entry)) if entry.is_due(unix) || entry.waits_for_identity() => {
                        let pace = self.pace_of(&key, &entry);
                        lane.pace = Some(pace);
                        lane.running += 1;
                        lane.last_start = Some(now);
                        lane.next_start = now + pace.interval();
                        picked.push((key.clone(), entry));
                    }
                    Ok(_) => {
                        if schedule.done(outbox, &id).is_err() {
                            schedule.forget(&id);
                        }
                    }
                    Err(error) => {
                        tracing::warn!("skipping outbox entry: {error}");
                        schedule.forget(&id);
                    }
                }
            }
        }
        (picked, wake)
    }

    /// One delivery attempt of `entry`, as `queue flush` makes it.
    async fn deliver(&self, key: Key, entry: Entry) -> Finished {
        let id = entry.id.clone();
        let mut finished = Finished {
            key: key.clone(),
            id: id.clone(),
            unresolved: false,
            report: None,
        };
        let cell = {
            let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(senders.entry(key.clone()).or_default())
        };
        let resolved = cell
            .get_or_try_init(|| self.engine.senders().resolve(&entry))
            .await;
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::standard()
        };
        let result = match resolved {
            Ok(sender) => {
                self.engine
                    .deliver(&id, sender, &once, IfNotSent::Keep)
                    .await
            }
            // Held for this sender already: it stays so, quietly.
            Err(_) if entry.waits_for_identity() => {
                finished.unresolved = true;
                return finished;
            }
            // The engine holds the mailbox's entries with the reason.
            Err(_) => {
                let selection = Selection {
                    identity: key.0.clone(),
                    account: key.1.clone(),
                    ..Selection::default()
                };
                if let Err(error) = self.engine.flush(&selection).await {
                    tracing::warn!("cannot hold {id}: {error}");
                }
                finished.unresolved = true;
                return finished;
            }
        };
        match result {
            Ok(delivery) => {
                log_outcome(&delivery);
                if delivery.settled == Settled::Failed {
                    let reason = delivery.error.as_ref().map(error_text);
                    match self.report(&entry, reason.as_deref()) {
                        Ok(report) => finished.report = report,
                        Err(error) => {
                            tracing::warn!("cannot queue the postmaster report about {id}: {error}")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!("cannot deliver {id}: {error}"),
        }
        finished
    }

    /// Queues a report to the postmaster about `entry`, which failed for
    /// good, through the same sender.
    fn report(&self, entry: &Entry, reason: Option<&str>) -> Result<Option<EntryId>, ReportError> {
        let Some(postmaster) = &self.postmaster else {
            return Ok(None);
        };
        let failed = self.engine.outbox().get(entry.id.as_str())?;
        if self.is_report(entry) {
            return Ok(None);
        }
        let reason = reason
            .map(str::to_owned)
            .or_else(|| failed.and_then(|e| e.failed_reason))
            .unwrap_or_else(|| "the provider refused it".to_owned());
        let (bytes, meta) = self.compose_report(postmaster, entry, &reason)?;
        let id = self.engine.outbox().accept(&bytes, meta)?;
        tracing::info!(
            "{}: failed for good; reported to the postmaster as {id}",
            entry.id
        );
        Ok(Some(id))
    }

    /// Whether `entry` is itself a postmaster report.
    fn is_report(&self, entry: &Entry) -> bool {
        let Ok(Some(message)) = self.engine.outbox().read_message(entry.id.as_str()) else {
            return false;
        };
        is_report_message(&message)
    }
}

/// How often the workers over a shared store look for due entries when
/// nothing else wakes them (a message accepted here, a delivery ended).
/// Other nodes' new entries are found within this.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// Deliveries under way at most on this node, over a shared store.
const SHARED_RUNNING: usize = 64;

/// Mailbox heads read from a shared store per look.
const SHARED_HEADS: usize = 256;

/// What one look at a shared store found.
struct Scanned<C, P> {
    /// Claimed, with a pacing permit: start now.
    go: Vec<(Key, C, P)>,
    /// Mailboxes whose pace says not before then (across all nodes).
    wait: Vec<(Key, Instant)>,
}

impl<'e, S: Senders, B: SharedStore> Workers<'e, S, B> {
    /// Delivers due entries of a shared store (a database other relays
    /// and workers use too) until `stop` resolves, then lets the
    /// deliveries under way finish. Entries are claimed from the store
    /// directly, a lease each (`SKIP LOCKED`: two nodes never take the
    /// same; a lease renews itself while the delivery runs, and a dead
    /// node's lapse, so another node finds the entry in flight: uncertain,
    /// same Message-ID). Each start takes a permit from the store's pacer,
    /// so each mailbox's pace holds across all nodes together. Messages
    /// the server `accepted` are journaled as queued and make the workers
    /// look at once.
    pub async fn run_shared(
        &self,
        accepted: &mut UnboundedReceiver<Accepted>,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut running = FuturesUnordered::new();
        let mut busy: HashMap<Key, usize> = HashMap::new();
        let mut waiting: HashMap<Key, Instant> = HashMap::new();
        let mut wake_open = true;
        let mut warned = false;
        // One look at a time, raced against the deliveries under way.
        let mut scan = Box::pin(self.scan(HashMap::new(), HashMap::new(), SHARED_RUNNING));
        let mut scanning = true;
        let mut next_scan = Instant::now();
        loop {
            let now = Instant::now();
            if !scanning && now >= next_scan && running.len() < SHARED_RUNNING {
                waiting.retain(|_, until| *until > now);
                let room = SHARED_RUNNING - running.len();
                scan = Box::pin(self.scan(busy.clone(), waiting.clone(), room));
                scanning = true;
            }
            let wake = if scanning {
                now + SHARED_POLL
            } else {
                next_scan.max(now)
            };
            tokio::select! {
                () = &mut stop => break,
                found = &mut scan, if scanning => {
                    scanning = false;
                    next_scan = Instant::now() + SHARED_POLL;
                    match found {
                        Ok(found) => {
                            warned = false;
                            if !found.go.is_empty() {
                                // Each mailbox gave one head: look again
                                // for the next ones at once.
                                next_scan = Instant::now();
                            }
                            for (key, claim, permit) in found.go {
                                *busy.entry(key.clone()).or_default() += 1;
                                running.push(self.deliver_shared(key, claim, permit));
                            }
                            for (key, until) in found.wait {
                                next_scan = next_scan.min(until);
                                waiting.insert(key, until);
                            }
                        }
                        Err(error) if !warned => {
                            warned = true;
                            tracing::warn!(
                                "cannot read the due entries from the store (trying again every {}s): {}",
                                SHARED_POLL.as_secs(),
                                apimail_core::error_chain(&error)
                            );
                        }
                        Err(_) => {}
                    }
                }
                first = accepted.recv(), if wake_open => {
                    wake_open = first.is_some();
                    let burst: Vec<(EntryId, Details)> = first
                        .into_iter()
                        .chain(std::iter::from_fn(|| accepted.try_recv().ok()))
                        .map(|message| (message.id, message.details))
                        .collect();
                    if let Err(error) = self.engine.journal_accepted(&burst).await {
                        tracing::warn!(
                            "cannot journal accepted messages: {}",
                            apimail_core::error_chain(&error)
                        );
                    }
                    next_scan = Instant::now();
                }
                Some(finished) = running.next(), if !running.is_empty() => {
                    if let Some(count) = busy.get_mut(&finished.key) {
                        *count -= 1;
                        if *count == 0 {
                            busy.remove(&finished.key);
                        }
                    }
                    if finished.unresolved {
                        // Try its sender again only after a while.
                        waiting.insert(finished.key, Instant::now() + RESCAN);
                    }
                    next_scan = next_scan.min(Instant::now());
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        while running.next().await.is_some() {}
    }

    /// One look at the store: each mailbox's oldest due entry that no node
    /// holds is claimed, then paced; a mailbox whose pace says wait gives
    /// its entry back at once (for any node) and is left alone until then.
    async fn scan(
        &self,
        busy: HashMap<Key, usize>,
        waiting: HashMap<Key, Instant>,
        room: usize,
    ) -> Result<Scanned<B::Claim, B::Permit>, B::Error> {
        let store = self.engine.store();
        let unix = now_unix();
        let mut found = Scanned {
            go: Vec::new(),
            wait: Vec::new(),
        };
        for entry in store.due_heads(unix, SHARED_HEADS).await? {
            if found.go.len() >= room {
                break;
            }
            let key: Key = (entry.identity.clone(), entry.account.clone());
            if waiting.contains_key(&key) {
                continue;
            }
            let pace = self.pace_of(&key, &entry);
            if busy.get(&key).copied().unwrap_or(0) >= pace.concurrency.max(1) {
                continue;
            }
            // Another node may have taken it since: then it is theirs.
            let claimed = if entry.waits_for_identity() {
                // Still held for its sender under the lease.
                store
                    .claim(&entry.id)
                    .await?
                    .filter(|c| c.entry().waits_for_identity())
            } else {
                store.claim_due(&entry.id, unix).await?
            };
            let Some(claim) = claimed else {
                continue;
            };
            match store.try_start(&mailbox_name(&key), pace).await? {
                PaceStart::Go(permit) => found.go.push((key, claim, permit)),
                PaceStart::Wait(wait) => {
                    drop(claim);
                    // Asked again within RESCAN at most: the store's
                    // pace is the truth, and it may change meanwhile.
                    found.wait.push((key, Instant::now() + wait.min(RESCAN)));
                }
            }
        }
        Ok(found)
    }

    /// One delivery attempt of a claimed entry, under its pacing permit.
    async fn deliver_shared(&self, key: Key, claim: B::Claim, permit: B::Permit) -> Finished {
        let entry = claim.entry().clone();
        let id = entry.id.clone();
        let mut finished = Finished {
            key: key.clone(),
            id: id.clone(),
            unresolved: false,
            report: None,
        };
        let cell = self.sender_cell(&key);
        let resolved = cell
            .get_or_try_init(|| self.engine.senders().resolve(&entry))
            .await;
        let sender = match resolved {
            Ok(sender) => sender,
            // Held for this sender already: it stays so, quietly.
            Err(_) if entry.waits_for_identity() => {
                finished.unresolved = true;
                return finished;
            }
            Err(reason) => {
                drop(permit);
                tracing::warn!("held {id}: {reason}");
                if let Err(error) = claim.hold_unsent(&reason).await {
                    tracing::warn!("cannot hold {id}: {}", apimail_core::error_chain(&error));
                }
                finished.unresolved = true;
                return finished;
            }
        };
        let a_report = match &self.postmaster {
            Some(_) => is_stored_report(&claim).await,
            None => false,
        };
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::standard()
        };
        let result = self
            .engine
            .deliver_claimed(claim, sender, &once, IfNotSent::Keep)
            .await;
        drop(permit);
        match result {
            Ok(delivery) => {
                log_outcome(&delivery);
                if delivery.settled == Settled::Failed && !a_report {
                    let reason = delivery.error.as_ref().map(error_text);
                    match self.report_shared(&entry, reason).await {
                        Ok(report) => finished.report = report,
                        Err(error) => {
                            tracing::warn!("cannot queue the postmaster report about {id}: {error}")
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!("cannot deliver {id}: {}", apimail_core::error_chain(&error))
            }
        }
        finished
    }

    /// Queues a report to the postmaster about `entry` in the shared
    /// store, as [`Workers::run`]'s workers do in the outbox.
    async fn report_shared(
        &self,
        entry: &Entry,
        reason: Option<String>,
    ) -> Result<Option<EntryId>, ReportError> {
        let Some(postmaster) = &self.postmaster else {
            return Ok(None);
        };
        let store = self.engine.store();
        let reason = match reason {
            Some(reason) => reason,
            None => store
                .get(&entry.id)
                .await
                .ok()
                .flatten()
                .and_then(|e| e.failed_reason)
                .unwrap_or_else(|| "the provider refused it".to_owned()),
        };
        let (bytes, meta) = self.compose_report(postmaster, entry, &reason)?;
        let id = store
            .accept(&bytes, meta)
            .await
            .map_err(|e| ReportError::Store(apimail_core::error_chain(&e)))?;
        tracing::info!(
            "{}: failed for good; reported to the postmaster as {id}",
            entry.id
        );
        Ok(Some(id))
    }
}

/// The name of `key`'s mailbox in the store's pacer: its sender identity,
/// else its account. Every node names a mailbox alike.
fn mailbox_name(key: &Key) -> String {
    match key {
        (Some(identity), _) => identity.to_string(),
        (None, Some(account)) => format!("account:{account}"),
        (None, None) => "-".to_owned(),
    }
}

/// Whether a claimed entry's message is a postmaster report (its header
/// section, at most 64 KiB of it, is read).
async fn is_stored_report<C: StoreClaim>(claim: &C) -> bool {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(message) = claim.message().await else {
        return false;
    };
    let Ok(mut file) = tokio::fs::File::open(message.path()).await else {
        return false;
    };
    if file
        .seek(std::io::SeekFrom::Start(message.offset()))
        .await
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let limit = message.len().min(64 * 1024);
    if file.take(limit).read_to_end(&mut head).await.is_err() {
        return false;
    }
    is_report_message(&head)
}

/// Whether `message` (at least its header section) is a postmaster report.
fn is_report_message(message: &[u8]) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    String::from_utf8_lossy(&message[..end])
        .lines()
        .any(|line| {
            line.len() > REPORT_HEADER.len()
                && line[..REPORT_HEADER.len()].eq_ignore_ascii_case(REPORT_HEADER)
                && line.as_bytes()[REPORT_HEADER.len()] == b':'
        })
}

/// One line per delivery attempt, as the relay's log shows it.
fn log_outcome(delivery: &Delivery) {
    let id = &delivery.id;
    let why = delivery
        .error
        .as_ref()
        .map(error_text)
        .or_else(|| delivery.unresolved.clone())
        .unwrap_or_default();
    match &delivery.settled {
        Settled::Sent(receipt) => tracing::info!(
            "delivered {id} through {}{}",
            receipt.provider,
            receipt
                .id
                .as_ref()
                .map(|p| format!(" (id {p})"))
                .unwrap_or_default()
        ),
        Settled::VerifiedSent => tracing::info!("delivered {id}: found sent by an earlier attempt"),
        Settled::Queued { .. } | Settled::Interrupted => {
            tracing::info!("{id} stays queued for another attempt: {why}");
        }
        Settled::Held { .. } => tracing::warn!("held {id}: {why}"),
        Settled::Failed => tracing::warn!("{id} failed for good: {why}"),
        Settled::SettledElsewhere | Settled::Busy | Settled::Dropped | Settled::ClaimLost => {}
    }
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("{0}")]
    Store(String),
    #[error("the report's sender is not an address: {0}")]
    Address(#[from] apimail_core::AddressError),
    #[error("cannot compose the report: {0}")]
    Compose(#[from] apimail_core::ComposeError),
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use apimail_core::SenderIdentity;
    use apimail_core::delivery::Settings;
    use apimail_core::outbox::Outbox;
    use apimail_core::{Envelope, ErrorKind, Receipt, Transport, TransportError};

    /// Records when each send started and how many ran at once; refuses
    /// for good any message to `bad@example.com`.
    #[derive(Default)]
    struct Recorder {
        started: Mutex<Vec<(Instant, Vec<String>)>>,
        now: Mutex<usize>,
        most: Mutex<usize>,
        resolutions: Mutex<usize>,
        pace: Option<Pace>,
    }

    impl Transport for Recorder {
        async fn send_raw(&self, envelope: &Envelope, _: &[u8]) -> Result<Receipt, TransportError> {
            let to: Vec<String> = envelope
                .recipients()
                .iter()
                .map(|r| r.email().to_owned())
                .collect();
            self.started
                .lock()
                .unwrap()
                .push((Instant::now(), to.clone()));
            {
                let mut now = self.now.lock().unwrap();
                *now += 1;
                let mut most = self.most.lock().unwrap();
                *most = (*most).max(*now);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            *self.now.lock().unwrap() -= 1;
            if to.iter().any(|t| t == "bad@example.com") {
                return Err(TransportError::new(ErrorKind::Rejected, "no such user"));
            }
            Ok(Receipt {
                provider: "test",
                id: None,
                thread_id: None,
                possible_duplicate: false,
            })
        }

        fn pace(&self) -> Pace {
            self.pace.unwrap_or_default()
        }
    }

    struct One(Arc<Recorder>);

    impl Senders for One {
        type Sender = Arc<Recorder>;
        async fn resolve(&self, _: &Entry) -> Result<Arc<Recorder>, String> {
            *self.0.resolutions.lock().unwrap() += 1;
            Ok(self.0.clone())
        }
    }

    fn accept(outbox: &Outbox, n: usize, to: &str) -> EntryId {
        let message = format!(
            "From: scanner@example.com\r\nTo: {to}\r\nMessage-ID: <m{n}@example.com>\r\n\r\nscan {n}\r\n"
        );
        outbox
            .accept(
                message.as_bytes(),
                NewEntry {
                    identity: Some(SenderIdentity::account("work")),
                    account: Some("work".into()),
                    provider: Some("graph".into()),
                    from: "scanner@example.com".into(),
                    recipients: vec![to.into()],
                    message_id: format!("<m{n}@example.com>"),
                    ..NewEntry::default()
                },
            )
            .unwrap()
    }

    fn engine(dir: &tempfile::TempDir, recorder: &Arc<Recorder>) -> Engine<One> {
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        Engine::new(outbox, One(recorder.clone()), Settings::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_drained_paced_and_with_one_sender() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let engine = engine(&dir, &recorder);
        for n in 0..8 {
            accept(engine.outbox(), n, "a@example.com");
        }
        let (_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let pace = Pace {
            concurrency: 2,
            per_minute: 60,
        };
        let workers = Workers::new(&engine).with_pace(move |_| pace);
        let began = Instant::now();
        let outbox = engine.outbox().clone();
        let drained = async {
            while !outbox.list().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), workers.run(&mut wake, drained))
            .await
            .unwrap();

        let started = recorder.started.lock().unwrap().clone();
        assert_eq!(started.len(), 8);
        // 60 a minute: one start per second, never two at once.
        for pair in started.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(990));
        }
        assert!(started[7].0 - began >= Duration::from_secs(7));
        assert!(*recorder.most.lock().unwrap() <= 2);
        assert_eq!(*recorder.resolutions.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_mailbox_goes_at_its_senders_pace() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder {
            pace: Some(Pace {
                concurrency: 1,
                per_minute: 20,
            }),
            ..Recorder::default()
        });
        let engine = engine(&dir, &recorder);
        for n in 0..4 {
            accept(engine.outbox(), n, "a@example.com");
        }
        let (_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let workers = Workers::new(&engine);
        let outbox = engine.outbox().clone();
        let drained = async {
            while !outbox.list().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), workers.run(&mut wake, drained))
            .await
            .unwrap();

        let started = recorder.started.lock().unwrap().clone();
        assert_eq!(started.len(), 4);
        // 20 a minute, the sender's own pace: one start every 3 seconds.
        for pair in started.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(2990));
        }
        assert_eq!(*recorder.most.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_without_a_pace_is_not_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let engine = engine(&dir, &recorder);
        for n in 0..6 {
            accept(engine.outbox(), n, "a@example.com");
        }
        let (_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let workers = Workers::new(&engine);
        let outbox = engine.outbox().clone();
        let drained = async {
            while !outbox.list().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let began = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), workers.run(&mut wake, drained))
            .await
            .unwrap();

        // The first delivery alone (it resolves the sender), then the other
        // five at once: no provider's pace applies to an unlimited sender.
        assert_eq!(recorder.started.lock().unwrap().len(), 6);
        assert_eq!(*recorder.most.lock().unwrap(), 5);
        assert!(began.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_refused_for_good_is_reported_to_the_postmaster_once() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let engine = engine(&dir, &recorder);
        accept(engine.outbox(), 1, "bad@example.com");
        let (_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let postmaster = Postmaster {
            to: "postmaster@example.com".parse().unwrap(),
        };
        let workers = Workers::new(&engine)
            .with_pace(|_| Pace {
                concurrency: 4,
                per_minute: 600,
            })
            .with_postmaster(postmaster, |_| "relay@example.com".parse().ok());
        tokio::time::timeout(
            Duration::from_secs(30),
            workers.run(&mut wake, tokio::time::sleep(Duration::from_secs(20))),
        )
        .await
        .unwrap();

        let started = recorder.started.lock().unwrap().clone();
        let to: Vec<&str> = started.iter().map(|(_, to)| to[0].as_str()).collect();
        assert_eq!(to, ["bad@example.com", "postmaster@example.com"]);
        assert_eq!(engine.outbox().list_failed().unwrap().len(), 1);
        assert!(engine.outbox().list().unwrap().is_empty());
    }
    /// Takes every message; the first answer is lost on the way back.
    #[derive(Default)]
    struct LosesFirst {
        sends: Mutex<usize>,
    }

    impl Transport for LosesFirst {
        async fn send_raw(&self, _: &Envelope, _: &[u8]) -> Result<Receipt, TransportError> {
            let mut sends = self.sends.lock().unwrap();
            *sends += 1;
            if *sends == 1 {
                return Err(
                    TransportError::new(ErrorKind::Temporary, "connection reset")
                        .with_unknown_outcome(),
                );
            }
            Ok(Receipt {
                provider: "test",
                id: Some("p2".into()),
                thread_id: None,
                possible_duplicate: false,
            })
        }
    }

    /// Resolves the sender only once `back` is set.
    struct Returns {
        transport: Arc<LosesFirst>,
        back: std::sync::atomic::AtomicBool,
    }

    impl Senders for Returns {
        type Sender = Arc<LosesFirst>;
        async fn resolve(&self, _: &Entry) -> Result<Arc<LosesFirst>, String> {
            if self.back.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(self.transport.clone())
            } else {
                Err("account `work` was removed from the configuration".into())
            }
        }
    }

    async fn run_for(workers: &Workers<'_, Returns>, seconds: u64) {
        let (_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let stop = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::time::timeout(
            Duration::from_secs(seconds + 10),
            workers.run(&mut wake, stop),
        )
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_journaled_before_the_resend_and_the_resend_is_marked() {
        use apimail_core::journal::{Filter, Journal, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        let senders = Returns {
            transport: Arc::new(LosesFirst::default()),
            back: true.into(),
        };
        let engine =
            Engine::new(outbox, senders, Settings::default()).with_journal(journal.clone());
        accept(engine.outbox(), 1, "a@example.com");
        let workers = Workers::new(&engine);
        run_for(&workers, 5).await;
        let entry = engine.outbox().list().unwrap().remove(0);
        assert!(entry.outcome_unknown, "{entry:?}");
        // The next try is a minute away on the wall clock: make it due.
        // (its state since acceptance, beside its message file)
        let path = dir.path().join(format!("outbox/queue/{}.state", entry.id));
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        value["next_attempt_at"] = 0.into();
        std::fs::write(&path, value.to_string()).unwrap();
        run_for(&workers, 5).await;
        assert!(engine.outbox().list().unwrap().is_empty());
        let records: Vec<(Outcome, u32, bool)> = journal
            .read(&Filter::default())
            .unwrap()
            .map(|r| r.unwrap())
            .map(|r| (r.outcome, r.attempts, r.possible_duplicate))
            .collect();
        assert_eq!(
            records,
            [(Outcome::Uncertain, 1, false), (Outcome::Sent, 2, true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_held_for_its_sender_goes_out_once_the_sender_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let senders = Returns {
            transport: Arc::new(LosesFirst::default()),
            back: false.into(),
        };
        *senders.transport.sends.lock().unwrap() = 1; // no lost answer here
        let engine = Engine::new(outbox, senders, Settings::default());
        accept(engine.outbox(), 1, "a@example.com");
        let workers = Workers::new(&engine);
        run_for(&workers, 20).await;
        let held = engine.outbox().list().unwrap().remove(0);
        assert!(held.waits_for_identity(), "{held:?}");
        engine
            .senders()
            .back
            .store(true, std::sync::atomic::Ordering::Relaxed);
        run_for(&workers, 20).await;
        assert!(engine.outbox().list().unwrap().is_empty(), "sent");
        assert_eq!(*engine.senders().transport.sends.lock().unwrap(), 2);
    }

    /// Listings and entry reads while 20 messages are accepted and wake
    /// the workers, with `depth` entries already queued and due (paced:
    /// one start a minute).
    async fn cost_of_accepting(depth: usize) -> (usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(Recorder::default());
        let engine = engine(&dir, &recorder);
        let outbox = engine.outbox().clone();
        outbox.fill_for_test(depth, now_unix());
        let (tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let workers = Workers::new(&engine).with_pace(|_| Pace {
            concurrency: 1,
            per_minute: 1,
        });
        let measured = async {
            // The start-up read, and the one delivery the pace allows.
            while outbox.io_counts().1 < depth || recorder.started.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
            let before = outbox.io_counts();
            for n in 0..20 {
                let id = accept(&outbox, n, "new@example.com");
                tx.send(Accepted {
                    id,
                    identity: SenderIdentity::account("work"),
                    details: Default::default(),
                })
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = outbox.io_counts();
            (after.0 - before.0, after.1 - before.1)
        };
        let mut cost = (0, 0);
        workers
            .run(&mut wake, async { cost = measured.await })
            .await;
        assert_eq!(recorder.started.lock().unwrap().len(), 1, "paced");
        cost
    }

    #[tokio::test]
    async fn accepting_and_waking_cost_the_same_with_10_000_entries_queued() {
        let (listings, reads) = cost_of_accepting(1).await;
        let deep = cost_of_accepting(10_000).await;
        // No listing; each new entry read a bounded number of times.
        assert_eq!(listings, 0);
        assert!(reads <= 20 * 4, "{reads} reads for 20 messages");
        // The same (the one paced delivery may settle inside the window on
        // a slow machine: a few reads), where a listing per wake-up read
        // all 10,000.
        assert_eq!(deep.0, listings, "no listing at depth 10,000");
        assert!(
            deep.1 <= reads + 4,
            "{} reads at depth 10,000, {reads} at 1",
            deep.1
        );
    }

    #[tokio::test]
    async fn a_relay_started_with_20_000_entries_queued_recovers_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox");
        let filled = Outbox::open(&path).unwrap();
        filled.fill_for_test(20_000, now_unix());
        // A crash's leftover: a message without metadata.
        let orphan = path.join("queue/20261121T101500-3f9a0c1b2d4e.eml");
        std::fs::write(&orphan, "x").unwrap();

        let recorder = Arc::new(Recorder::default());
        let engine = engine(&dir, &recorder);
        let outbox = engine.outbox().clone();
        assert!(!orphan.exists(), "recovered");
        let (listings, reads) = outbox.io_counts();
        assert_eq!(reads, 0, "open reads no entry of a clean queue");
        assert!(listings <= 4, "one listing per directory: {listings}");

        let (tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<Accepted>();
        let workers = Workers::new(&engine).with_pace(|_| Pace {
            concurrency: 4,
            per_minute: 600,
        });
        let served = async {
            // Accepted while the queue loads, for another mailbox: sent at once.
            let message = "From: me@home.example\r\nTo: now@example.com\r\n\r\nhi\r\n";
            let id = outbox
                .accept(
                    message.as_bytes(),
                    NewEntry {
                        identity: Some(SenderIdentity::account("home")),
                        account: Some("home".into()),
                        from: "me@home.example".into(),
                        recipients: vec!["now@example.com".into()],
                        message_id: "<now@home.example>".into(),
                        ..NewEntry::default()
                    },
                )
                .unwrap();
            tx.send(Accepted {
                id: id.clone(),
                identity: SenderIdentity::account("home"),
                details: Default::default(),
            })
            .unwrap();
            let sent = |to: &str| {
                recorder
                    .started
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, r)| r[0] == to)
                    .count()
            };
            while sent("now@example.com") == 0 || sent("a@example.com") < 4 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            while outbox.get(id.as_str()).unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(15), workers.run(&mut wake, served))
            .await
            .expect("the new message and the queued ones are sent");
        // The start-up load read each entry once; the rest is per delivery.
        let reads = outbox.io_counts().1;
        assert!(reads < 20_000 + 100, "{reads} reads");
    }
}
