//! The relay's delivery workers: the [`Engine`] run over every due outbox
//! entry, several mailboxes at once, each paced to its provider's limits.
//!
//! - **Per mailbox** (an entry's [`SenderIdentity`], else its account): at
//!   most [`Pace::concurrency`] deliveries at once, and at most
//!   [`Pace::per_minute`] started per minute, evenly spaced. A burst is
//!   queued in the outbox and drained, never bounced.
//! - **One sender per mailbox**, resolved once and shared by its
//!   deliveries, so they share one token (one refresh for all of them).
//! - **Settling** is the engine's: retries, holds, uncertain outcomes and
//!   failures are exactly those of `apimail queue flush`, and each is
//!   journaled. A sender that cannot be resolved holds its entries.
//! - **Postmaster**: a message that fails for good after the relay accepted
//!   it is reported by mail to the configured address, through the same
//!   account (never a report about a report).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OnceCell;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::Accepted;
use crate::delivery::{Delivery, Engine, IfNotSent, Selection, Senders, Settled, error_text};
use crate::outbox::{Entry, EntryId, NewEntry, OutboxError};
use crate::retry::RetryPolicy;
use crate::{Mailbox, MessageBuilder, SenderIdentity, now_unix};

/// How fast one mailbox may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Deliveries at once.
    pub concurrency: usize,
    /// Deliveries started per minute.
    pub per_minute: u32,
}

impl Pace {
    /// Microsoft Graph: 4 concurrent requests and 30 messages per minute
    /// per mailbox.
    pub const GRAPH: Pace = Pace {
        concurrency: 4,
        per_minute: 30,
    };
    /// Gmail: 250 quota units per user per second, 100 per
    /// `messages.send`, so 150 a minute.
    pub const GMAIL: Pace = Pace {
        concurrency: 4,
        per_minute: 150,
    };

    /// The pace for a provider by name (`graph`, else Gmail's).
    pub fn for_provider(provider: Option<&str>) -> Pace {
        match provider {
            Some("graph") => Pace::GRAPH,
            _ => Pace::GMAIL,
        }
    }

    fn interval(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

/// Where reports of messages that failed for good go.
#[derive(Debug, Clone)]
pub struct Postmaster {
    /// The postmaster's address.
    pub to: Mailbox,
}

/// Marks a postmaster report, so its own failure is not reported.
const REPORT_HEADER: &str = "X-Apimail-Report";

/// How often due entries are looked for without a wake-up (entries
/// rescheduled for later, and other processes' entries).
const RESCAN: Duration = Duration::from_secs(15);

/// The shortest time between two looks at the outbox (each reads every
/// entry).
const SCAN_GAP: Duration = Duration::from_millis(200);

type Key = (Option<SenderIdentity>, Option<String>);

/// The address to send a postmaster report from, by failed entry.
type ReportFrom<'e> = Box<dyn Fn(&Entry) -> Option<Mailbox> + Send + Sync + 'e>;

/// One mailbox's deliveries under way and its next start.
struct Lane {
    running: usize,
    next_start: Instant,
}

/// The workers over one engine.
pub struct Workers<'e, S: Senders> {
    engine: &'e Engine<S>,
    pace: Box<dyn Fn(&Entry) -> Pace + Send + Sync + 'e>,
    postmaster: Option<Postmaster>,
    /// The account's address to send a report from, by entry.
    report_from: ReportFrom<'e>,
    senders: Mutex<HashMap<Key, Arc<OnceCell<S::Sender>>>>,
}

impl<S: Senders> std::fmt::Debug for Workers<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("postmaster", &self.postmaster)
            .finish_non_exhaustive()
    }
}

impl<'e, S: Senders> Workers<'e, S> {
    /// Workers over `engine`, pacing each mailbox by its provider
    /// ([`Pace::for_provider`]), without postmaster reports.
    pub fn new(engine: &'e Engine<S>) -> Self {
        Workers {
            engine,
            pace: Box::new(|entry| Pace::for_provider(entry.provider.as_deref())),
            postmaster: None,
            report_from: Box::new(|_| None),
            senders: Mutex::new(HashMap::new()),
        }
    }

    /// Paces mailboxes with `pace` instead.
    pub fn with_pace(mut self, pace: impl Fn(&Entry) -> Pace + Send + Sync + 'e) -> Self {
        self.pace = Box::new(pace);
        self
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
        let mut running = FuturesUnordered::new();
        let mut busy: HashSet<EntryId> = HashSet::new();
        let mut lanes: HashMap<Key, Lane> = HashMap::new();
        let mut last_scan = Instant::now();
        let mut wake_open = true;
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                let scanned = Instant::now();
                next_scan = scanned + RESCAN;
                match self.engine.outbox().due(now_unix(), None) {
                    Ok(due) => {
                        for entry in due {
                            if busy.contains(&entry.id) {
                                continue;
                            }
                            let pace = (self.pace)(&entry);
                            let key: Key = (entry.identity.clone(), entry.account.clone());
                            let lane = lanes.entry(key.clone()).or_insert(Lane {
                                running: 0,
                                next_start: scanned,
                            });
                            if lane.running >= pace.concurrency.max(1) {
                                continue;
                            }
                            if lane.next_start > scanned {
                                next_scan = next_scan.min(lane.next_start);
                                continue;
                            }
                            lane.running += 1;
                            lane.next_start = scanned + pace.interval();
                            busy.insert(entry.id.clone());
                            running.push(self.deliver(key, entry));
                        }
                    }
                    Err(error) => tracing::warn!("cannot list the outbox: {error}"),
                }
                last_scan = scanned;
            }
            // A wake-up or a finished delivery looks again soon, but not
            // more often than SCAN_GAP: a burst is one look, not one per
            // message.
            let soon = (last_scan + SCAN_GAP).max(Instant::now());
            tokio::select! {
                () = &mut stop => break,
                first = accepted.recv(), if wake_open => {
                    wake_open = first.is_some();
                    let burst = std::iter::from_fn(|| accepted.try_recv().ok());
                    for message in first.into_iter().chain(burst) {
                        if let Err(error) = self.engine.record_queued(&message.id) {
                            tracing::warn!("cannot journal {}: {error}", message.id);
                        }
                    }
                    next_scan = next_scan.min(soon);
                }
                Some((key, id)) = running.next(), if !running.is_empty() => {
                    busy.remove(&id);
                    if let Some(lane) = lanes.get_mut(&key) {
                        lane.running -= 1;
                    }
                    next_scan = next_scan.min(soon);
                }
                () = tokio::time::sleep_until(next_scan) => {}
            }
        }
        while running.next().await.is_some() {}
    }

    /// One delivery attempt of `entry`, as `queue flush` makes it.
    async fn deliver(&self, key: Key, entry: Entry) -> (Key, EntryId) {
        let id = entry.id.clone();
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
                return (key, id);
            }
        };
        match result {
            Ok(delivery) => {
                log_outcome(&delivery);
                if delivery.settled == Settled::Failed {
                    let reason = delivery.error.as_ref().map(error_text);
                    if let Err(error) = self.report(&entry, reason.as_deref()) {
                        tracing::warn!("cannot queue the postmaster report about {id}: {error}");
                    }
                }
            }
            Err(error) => tracing::warn!("cannot deliver {id}: {error}"),
        }
        (key, id)
    }

    /// Queues a report to the postmaster about `entry`, which failed for
    /// good, through the same sender.
    fn report(&self, entry: &Entry, reason: Option<&str>) -> Result<(), ReportError> {
        let Some(postmaster) = &self.postmaster else {
            return Ok(());
        };
        let failed = self.engine.outbox().get(entry.id.as_str())?;
        if self.is_report(entry) {
            return Ok(());
        }
        let reason = reason
            .map(str::to_owned)
            .or_else(|| failed.and_then(|e| e.failed_reason))
            .unwrap_or_else(|| "the provider refused it".to_owned());
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
        let id = self.engine.outbox().accept(
            message.as_bytes(),
            NewEntry {
                identity: entry.identity.clone(),
                account: entry.account.clone(),
                provider: entry.provider.clone(),
                from: from.email().to_owned(),
                recipients: vec![postmaster.to.email().to_owned()],
                message_id: message.message_id().to_owned(),
                ..NewEntry::default()
            },
        )?;
        tracing::info!(
            "{}: failed for good; reported to the postmaster as {id}",
            entry.id
        );
        Ok(())
    }

    /// Whether `entry` is itself a postmaster report.
    fn is_report(&self, entry: &Entry) -> bool {
        let Ok(Some(message)) = self.engine.outbox().read_message(entry.id.as_str()) else {
            return false;
        };
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
        Settled::SettledElsewhere | Settled::Busy | Settled::Dropped => {}
    }
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the report's sender is not an address: {0}")]
    Address(#[from] crate::AddressError),
    #[error("cannot compose the report: {0}")]
    Compose(#[from] crate::ComposeError),
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::delivery::Settings;
    use crate::outbox::Outbox;
    use crate::transport::{Envelope, ErrorKind, Receipt, Transport, TransportError};

    /// Records when each send started and how many ran at once; refuses
    /// for good any message to `bad@example.com`.
    #[derive(Default)]
    struct Recorder {
        started: Mutex<Vec<(Instant, Vec<String>)>>,
        now: Mutex<usize>,
        most: Mutex<usize>,
        resolutions: Mutex<usize>,
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
    }

    struct One(Arc<Recorder>);

    impl Senders for One {
        type Sender = Arc<Recorder>;
        async fn resolve(&self, _: &Entry) -> Result<Arc<Recorder>, String> {
            *self.0.resolutions.lock().unwrap() += 1;
            Ok(self.0.clone())
        }
    }

    fn accept(outbox: &Outbox, n: usize, to: &str) {
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
            .unwrap();
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
}
