//! The delivery engine: the one place where an outbox entry is claimed,
//! sent as the sender it was accepted for, settled, and recorded.
//!
//! ```text
//! accept (caller: Outbox::accept / Incoming::commit / Store::accept, with a SenderIdentity)
//!   └─ Engine::deliver / Engine::flush
//!        ├─ claim            Store::claim (the local spool: a lock; a shared
//!        │                   store: a lease; one sender per entry)
//!        ├─ resolve          Senders::resolve (the entry's identity, or hold)
//!        ├─ verify           Transport::was_sent, when an earlier outcome is unknown
//!        ├─ send             Transport::send_noted, retried under a RetryPolicy
//!        ├─ settle           delivered | retry_later | hold | fail | uncertain
//!        └─ record           Store::append, one line per settled attempt, and
//!                            one per unknown outcome before the next attempt
//! ```
//!
//! The engine is generic over the [`Store`] (the local spool,
//! [`LocalStore`], by default), so that every backend settles by the same
//! code.
//!
//! Callers (the CLI's `send`, `sendmail`, `queue`, the release after a
//! login, the relay) only accept messages and read [`Delivery`] and
//! [`FlushReport`]; none of them settles an outcome itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Mailbox;
use crate::identity::SenderIdentity;
use crate::journal::{Details, Journal, Outcome as Status, Record};
use crate::outbox::{Entry, EntryId, EntryState, Outbox, OutboxError, Outcome};
use crate::retry::RetryPolicy;
use crate::store::{LocalStore, Store, StoreClaim, stored_subject};
use crate::token::{TokenError, now_unix};
use crate::transport::{Envelope, ErrorKind, Receipt, Transport, TransportError};

/// Finds the transport for an entry's sender.
pub trait Senders: Sync {
    /// What sends: one provider account or credential.
    type Sender: Transport + Sync;

    /// The sender `entry` was accepted for ([`Entry::identity`]), or why
    /// it cannot be had now (an account removed, credentials gone from the
    /// environment). Such an entry is held with that reason.
    fn resolve(&self, entry: &Entry) -> impl Future<Output = Result<Self::Sender, String>> + Send;

    /// Whether a new login can fix a refused authorization or a
    /// configuration problem of `sender`, so that holding its messages until
    /// then makes sense. Credentials no login renews (from the environment,
    /// app-only) are retried on the schedule instead.
    fn login_can_fix(&self, sender: &Self::Sender) -> bool {
        let _ = sender;
        true
    }
}

/// What to do with a message whose earlier attempt may have been accepted,
/// when the mailbox cannot be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenUnknown {
    /// Send it again with the same `Message-ID` (at least once; receiving
    /// servers can drop the copy).
    #[default]
    Resend,
    /// Hold it until the user runs `queue retry` or `queue drop`.
    Hold,
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What to do about an unknown outcome that cannot be verified.
    pub when_unknown: WhenUnknown,
    /// How long to keep looking for a sent copy after an unknown outcome
    /// (providers file the sent copy with a delay).
    pub verify_window: Duration,
    /// How long [`Engine::deliver`] waits for another process that holds
    /// the entry (a concurrent flush) to settle it.
    pub claim_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            when_unknown: WhenUnknown::Resend,
            verify_window: Duration::from_secs(10),
            claim_wait: Duration::from_secs(60),
        }
    }
}

/// Where an entry ended up after the engine's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The provider accepted it now.
    Sent(Receipt),
    /// An earlier attempt had gone through: the mailbox shows it as sent.
    VerifiedSent,
    /// Still queued, due again at this Unix time.
    Queued {
        /// When it is due again.
        next_attempt_at: i64,
        /// Whether an attempt's outcome is unknown (the next one resends).
        uncertain: bool,
    },
    /// Held until a login or `queue retry`.
    Held {
        /// Whether it is held because an outcome is unknown.
        uncertain: bool,
    },
    /// Given up on: moved to `failed/`.
    Failed,
    /// Another process settled it while we waited (sent, or dropped).
    SettledElsewhere,
    /// Another process is still busy with it.
    Busy,
    /// Cut short by [`Engine::with_interrupt`]: still queued, due now, and
    /// uncertain (the next attempt checks or resends).
    Interrupted,
    /// The claim was lost mid-attempt (a shared store's lease lapsed and
    /// another node took the entry over): nothing was written; the new
    /// holder finds the entry in flight and treats its outcome as unknown.
    ClaimLost,
    /// Not sent, and removed from the outbox as the caller asked
    /// ([`IfNotSent::Drop`]): the caller must send it again.
    Dropped,
}

/// What [`Engine::deliver`] does with a message a temporary failure kept
/// from going out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNotSent {
    /// Keep it in the outbox for a later attempt.
    Keep,
    /// Remove it: the caller keeps responsibility and retries itself.
    Drop,
}

/// The result of delivering one entry.
#[derive(Debug)]
pub struct Delivery {
    /// The entry.
    pub id: EntryId,
    /// Where it ended up.
    pub settled: Settled,
    /// The last failure, when it was not sent.
    pub error: Option<TransportError>,
    /// Why it is held without an attempt (its sender cannot be resolved).
    pub unresolved: Option<String>,
    /// Sent (or found sent), and a copy may already have arrived before:
    /// it was sent again after an attempt whose outcome was unknown.
    pub possible_duplicate: bool,
}

/// What a flush did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Accepted by the provider now.
    pub sent: usize,
    /// Found in the mailbox as sent by an earlier attempt.
    pub verified: usize,
    /// Still queued for a later attempt.
    pub queued: usize,
    /// Held for a login, for `queue retry`, or for their sender.
    pub held: usize,
    /// Given up on.
    pub failed: usize,
}

impl FlushReport {
    fn count(&mut self, settled: &Settled) {
        match settled {
            Settled::Sent(_) => self.sent += 1,
            Settled::VerifiedSent => self.verified += 1,
            Settled::Queued { .. } => self.queued += 1,
            Settled::Held { .. } => self.held += 1,
            Settled::Failed => self.failed += 1,
            Settled::Interrupted => self.queued += 1,
            Settled::SettledElsewhere | Settled::Busy | Settled::Dropped | Settled::ClaimLost => {}
        }
    }

    /// Whether the flush touched anything.
    pub fn is_empty(&self) -> bool {
        *self == FlushReport::default()
    }
}

/// Which entries a flush takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only entries accepted for this sender.
    pub identity: Option<SenderIdentity>,
    /// Only entries of this account (by name).
    pub account: Option<String>,
    /// Queued entries whether due or not (`queue flush --all`).
    pub include_not_due: bool,
    /// Stop starting new entries after this instant.
    pub deadline: Option<Instant>,
}

/// How long a transport may clean up after an interrupted attempt.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// What ends an attempt early: a future that resolves with the reason
/// (the CLI: SIGINT or SIGTERM). A fresh one is made for each attempt.
pub struct Interrupt(Box<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>);

impl Interrupt {
    /// Wraps `make`, which returns a future resolving on interruption.
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        Interrupt(Box::new(move || Box::pin(make())))
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interrupt")
    }
}

/// What a flush resolves a sender for: the identity, and the account of
/// entries queued before identities were recorded.
type SenderKey = (Option<SenderIdentity>, Option<String>);

/// The delivery engine over one store (the local spool by default).
#[derive(Debug)]
pub struct Engine<S, B = LocalStore> {
    store: B,
    senders: S,
    settings: Settings,
    interrupt: Option<Interrupt>,
}

impl<S: Senders> Engine<S> {
    /// An engine over `outbox` that resolves senders with `senders`.
    pub fn new(outbox: Outbox, senders: S, settings: Settings) -> Self {
        Engine::with_store(LocalStore::new(outbox, None), senders, settings)
    }

    /// Records every settled outcome in `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.store.set_journal(journal);
        self
    }

    /// Records that entry `id` was queued without an attempt (`send
    /// --queue`).
    pub fn record_queued(&self, id: &EntryId) -> Result<(), OutboxError> {
        self.record_accepted(id, &Details::default())
    }

    /// Records that entry `id` was accepted and queued, with what the
    /// caller knows of it (the relay: the Subject, the client's address,
    /// the SMTP user).
    pub fn record_accepted(&self, id: &EntryId, details: &Details) -> Result<(), OutboxError> {
        match self.store.journal() {
            Some(journal) => record_accepted(
                self.store.outbox(),
                journal,
                &[(id.clone(), details.clone())],
            ),
            None => Ok(()),
        }
    }

    /// The journal, when the engine keeps one.
    pub fn journal(&self) -> Option<&Journal> {
        self.store.journal()
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        self.store.outbox()
    }
}

impl<S: Senders, B: Store> Engine<S, B> {
    /// An engine over `store` that resolves senders with `senders`.
    pub fn with_store(store: B, senders: S, settings: Settings) -> Self {
        Engine {
            store,
            senders,
            settings,
            interrupt: None,
        }
    }

    /// Ends attempts early when `interrupt` fires: the transport gets
    /// [`CLEANUP_GRACE`] to clean up ([`Transport::interrupted`]), the entry
    /// stays queued as uncertain, and a flush stops.
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }

    /// The store.
    pub fn store(&self) -> &B {
        &self.store
    }

    /// The sender resolver.
    pub fn senders(&self) -> &S {
        &self.senders
    }

    /// Journals entry `id`, accepted without an attempt (`send --queue`),
    /// as `queued`, through whichever store this engine is over. An entry
    /// gone meanwhile is skipped; a journal that cannot be written is a
    /// warning.
    pub async fn journal_queued(&self, id: &EntryId) -> Result<(), B::Error> {
        if let Some(entry) = self.store.get(id).await? {
            self.append(&entry, Record::without_attempt(&entry, Status::Queued))
                .await;
        }
        Ok(())
    }

    /// `queue drop` through any store: deletes entry `id` (queued, held
    /// or failed) and journals it as dropped, so that its story in the log
    /// ends there and not at `held` or `queued`. `false` when there is no
    /// such entry; the store's busy error while another process sends it.
    pub async fn drop_entry(&self, id: &EntryId) -> Result<bool, B::Error> {
        drop_from(&self.store, id).await
    }

    /// Delivers entry `id` now with `sender` (the caller resolved it for
    /// the identity it accepted the entry with), retrying temporary
    /// failures in process under `retry`. If another process holds the
    /// entry, waits up to [`Settings::claim_wait`] for it to settle.
    pub async fn deliver(
        &self,
        id: &EntryId,
        sender: &S::Sender,
        retry: &RetryPolicy,
        if_not_sent: IfNotSent,
    ) -> Result<Delivery, B::Error> {
        let waited_until = Instant::now() + self.settings.claim_wait;
        loop {
            if let Some(claim) = self.store.claim(id).await? {
                return self.attempt(claim, sender, retry, if_not_sent).await;
            }
            let settled = match self.store.get(id).await? {
                None => Some(Settled::SettledElsewhere),
                Some(entry) if entry.is_failed() => Some(Settled::Failed),
                Some(entry) if entry.state == EntryState::Held => Some(Settled::Held {
                    uncertain: entry.is_uncertain(),
                }),
                Some(_) if Instant::now() >= waited_until => Some(Settled::Busy),
                Some(_) => None,
            };
            if let Some(settled) = settled {
                return Ok(Delivery {
                    id: id.clone(),
                    settled,
                    error: None,
                    unresolved: None,
                    possible_duplicate: false,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Journals the entries `accepted` as `queued`, with what the caller
    /// knows of each, in one append, as [`record_accepted`] does for the
    /// local spool: the relay's workers over a shared store journal a
    /// burst of accepted messages at once. An entry gone meanwhile is
    /// skipped; a journal that cannot be written is a warning.
    pub async fn journal_accepted(&self, accepted: &[(EntryId, Details)]) -> Result<(), B::Error> {
        let mut records = Vec::with_capacity(accepted.len());
        for (id, details) in accepted {
            let Some(entry) = self.store.get(id).await? else {
                continue;
            };
            let mut record = Record::without_attempt(&entry, Status::Queued).details(details);
            if record.subject.is_none() {
                record.subject = self.store.subject(&entry.id).await;
            }
            records.push(labelled(&entry, record));
        }
        if let Err(e) = self.store.append(&records).await {
            tracing::warn!(
                "{} accepted message(s) are not in the journal: {e}",
                records.len()
            );
        }
        Ok(())
    }

    /// Delivers an entry the caller has just accepted and still holds
    /// ([`Incoming::commit_claimed`](crate::outbox::Incoming::commit_claimed)),
    /// as [`deliver`](Self::deliver) does, without ever letting another
    /// process take it first.
    pub async fn deliver_claimed(
        &self,
        claim: B::Claim,
        sender: &S::Sender,
        retry: &RetryPolicy,
        if_not_sent: IfNotSent,
    ) -> Result<Delivery, B::Error> {
        self.attempt(claim, sender, retry, if_not_sent).await
    }

    /// Sends the selected entries, one attempt each, each as the sender it
    /// was accepted for. Entries whose sender cannot be resolved are held
    /// with the reason; entries held for their sender are sent as soon as
    /// it resolves again.
    pub async fn flush(&self, selection: &Selection) -> Result<FlushReport, B::Error> {
        let now = now_unix();
        let entries: Vec<Entry> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|e| {
                (e.state == EntryState::Queued && (selection.include_not_due || e.is_due(now))
                    || e.waits_for_identity())
                    && selection
                        .account
                        .as_ref()
                        .is_none_or(|a| e.account.as_ref() == Some(a))
                    && selection
                        .identity
                        .as_ref()
                        .is_none_or(|i| e.identity.as_ref() == Some(i))
            })
            .collect();
        let mut report = FlushReport::default();
        // One resolution per sender identity (and legacy account) per flush.
        let mut senders: HashMap<SenderKey, Result<S::Sender, String>> = HashMap::new();
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::standard()
        };
        for listed in entries {
            if selection.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let claimed = if listed.waits_for_identity() {
                // Still held for its sender under the lock.
                self.store
                    .claim(&listed.id)
                    .await?
                    .filter(|c| c.entry().waits_for_identity())
            } else if selection.include_not_due {
                self.store.claim(&listed.id).await?
            } else {
                self.store.claim_due(&listed.id, now).await?
            };
            let Some(claim) = claimed else { continue };
            let key = (
                claim.entry().identity.clone(),
                claim.entry().account.clone(),
            );
            if !senders.contains_key(&key) {
                let resolved = self.senders.resolve(claim.entry()).await;
                senders.insert(key.clone(), resolved);
            }
            let delivery = match &senders[&key] {
                Ok(sender) => self.attempt(claim, sender, &once, IfNotSent::Keep).await?,
                // Held for the same reason already: nothing new to record.
                Err(reason)
                    if claim.entry().waits_for_identity()
                        && claim.entry().last_error.as_ref() == Some(reason) =>
                {
                    report.held += 1;
                    continue;
                }
                Err(reason) => self.hold_unresolved(claim, reason).await?,
            };
            report.count(&delivery.settled);
            if delivery.settled == Settled::Interrupted {
                break;
            }
        }
        Ok(report)
    }

    /// Holds an entry whose sender cannot be resolved.
    async fn hold_unresolved(&self, claim: B::Claim, reason: &str) -> Result<Delivery, B::Error> {
        let entry = claim.entry().clone();
        tracing::warn!("holding {}: {reason}", entry.id);
        claim.hold_unsent(reason).await?;
        self.append(
            &entry,
            Record::without_attempt(&entry, Status::Held).error(reason),
        )
        .await;
        Ok(Delivery {
            id: entry.id,
            settled: Settled::Held { uncertain: false },
            error: None,
            unresolved: Some(reason.to_owned()),
            possible_duplicate: false,
        })
    }

    /// One claimed entry: verify an unknown earlier outcome, send with
    /// in-process retries, settle, record. Every attempt counts, and each
    /// one whose outcome is unknown is journaled as `uncertain` before the
    /// next one may resend the message.
    async fn attempt(
        &self,
        mut claim: B::Claim,
        sender: &S::Sender,
        retry: &RetryPolicy,
        if_not_sent: IfNotSent,
    ) -> Result<Delivery, B::Error> {
        let cut_short = claim.entry().in_flight_since.is_some();
        if cut_short {
            // The attempt a process did not finish counts too.
            claim.add_attempts(1);
        }
        let entry = claim.entry().clone();
        // Opened by the transport on each attempt: never held here.
        let message = match claim.message().await {
            Ok(message) => message,
            Err(e) => {
                let error = TransportError::new(
                    ErrorKind::Internal,
                    format!("cannot read queued message {}", entry.id),
                )
                .with_source(e);
                return self.settle(claim, sender, &entry, 0, error).await;
            }
        };
        // For the records written after the file is gone; after `message`,
        // so that a shared store answers from the copy it just made.
        let details = Details {
            subject: self.store.subject(&entry.id).await,
            ..Details::default()
        };
        let envelope = match envelope_of(&entry) {
            Ok(envelope) => envelope,
            Err(error) => return self.settle(claim, sender, &entry, 0, error).await,
        };
        if cut_short {
            // A process ended mid-attempt: say so in the journal, so that a
            // resend is never silent.
            let text = "an earlier attempt was cut short (its process ended mid-send); \
                        it may have gone through";
            tracing::warn!("{}: {text}", entry.id);
            self.append(
                &entry,
                record_of(&entry, Status::Uncertain, entry.attempts).error(text),
            )
            .await;
        } else if entry.is_uncertain() {
            tracing::warn!(
                "an earlier attempt at {} may have gone through (its answer was lost)",
                entry.id
            );
        }
        let rule = UnknownOutcome::new(
            sender,
            &entry.message_id,
            entry.id.as_str(),
            self.settings.when_unknown,
            self.settings.verify_window,
            entry.is_uncertain(),
        );
        claim.begin_attempt(now_unix()).await?;
        // Attempts that reached the transport in this call.
        let made = AtomicU32::new(0);
        // An attempt whose outcome was unknown, journaled before the next
        // one, which may send the message again.
        let unknown_before: std::sync::Mutex<Option<Record>> = std::sync::Mutex::new(None);
        let notes = &claim;
        let tries = retry.run(
            |_| async {
                self.append_pending(&entry, &unknown_before).await;
                rule.attempt(async {
                    made.fetch_add(1, Ordering::Relaxed);
                    sender.send_stored(&envelope, &message, notes).await
                })
                .await
            },
            |attempt, error, delay| {
                tracing::warn!(
                    "attempt {attempt} failed ({}); retrying in {}s",
                    error_text(error),
                    delay.as_secs_f32().ceil()
                );
                if error.is_outcome_unknown() {
                    let attempts = entry.attempts + made.load(Ordering::Relaxed);
                    let record =
                        record_of(&entry, Status::Uncertain, attempts).error(error_text(error));
                    if let Ok(mut pending) = unknown_before.lock() {
                        *pending = Some(record);
                    }
                }
            },
        );
        let interrupt = async {
            match &self.interrupt {
                Some(interrupt) => (interrupt.0)().await,
                None => std::future::pending().await,
            }
        };
        let lost = claim.lost();
        let result = tokio::select! {
            result = tries => result,
            why = interrupt => {
                self.append_pending(&entry, &unknown_before).await;
                let made = made.load(Ordering::Relaxed);
                return Ok(self.interrupted(claim, sender, &entry, made, why).await);
            }
            () = lost => {
                self.append_pending(&entry, &unknown_before).await;
                tracing::warn!(
                    "{}: the claim was lost mid-attempt (another node took the entry over); \
                     it settles the outcome",
                    entry.id
                );
                return Ok(Delivery {
                    id: entry.id.clone(),
                    settled: Settled::ClaimLost,
                    error: None,
                    unresolved: None,
                    possible_duplicate: false,
                });
            }
        };
        let made = made.into_inner();
        let attempts = entry.attempts + made;
        let done = |settled, error| Delivery {
            id: entry.id.clone(),
            settled,
            error,
            unresolved: None,
            possible_duplicate: false,
        };
        match result {
            Ok(Attempted::Sent(mut receipt)) => {
                claim.delivered().await?;
                receipt.possible_duplicate |= entry.retried_unknown;
                self.append(
                    &entry,
                    record_of(&entry, Status::Sent, attempts)
                        .provider_id(receipt.id.clone())
                        .possible_duplicate(receipt.possible_duplicate)
                        .details(&details),
                )
                .await;
                Ok(Delivery {
                    possible_duplicate: receipt.possible_duplicate,
                    ..done(Settled::Sent(receipt), None)
                })
            }
            Ok(Attempted::VerifiedSent) => {
                claim.delivered().await?;
                tracing::info!("{} was sent by an earlier attempt", entry.id);
                Ok(self
                    .verified(&entry, attempts, rule.resent(), &details)
                    .await)
            }
            Ok(Attempted::HeldUnknown(error)) => {
                // Held before sending again: only the attempts made count.
                let text = error_text(&error);
                claim.add_attempts(made);
                claim.hold_uncertain(&text).await?;
                self.append(
                    &entry,
                    record_of(&entry, Status::Held, attempts).error(&text),
                )
                .await;
                Ok(done(Settled::Held { uncertain: true }, Some(error)))
            }
            Err(error) if if_not_sent == IfNotSent::Drop && error.is_temporary() => {
                // Removed while still claimed, so no flush can send it after
                // the caller was told to retry.
                claim.delivered().await?;
                let text = format!("not kept in the outbox, as asked: {}", error_text(&error));
                self.append(
                    &entry,
                    record_of(&entry, Status::Failed, attempts)
                        .error(text)
                        .details(&details),
                )
                .await;
                Ok(done(Settled::Dropped, Some(error)))
            }
            Err(error) if error_chain_unknown(&error) => {
                // The last answer was lost: look before deciding.
                match rule.verify().await {
                    Some(true) => {
                        claim.delivered().await?;
                        Ok(self
                            .verified(&entry, attempts, rule.resent(), &details)
                            .await)
                    }
                    Some(false) => self.settle(claim, sender, &entry, made, error).await,
                    None => {
                        let text = error_text(&error);
                        let hold = self.settings.when_unknown == WhenUnknown::Hold;
                        claim.add_attempts(made.saturating_sub(1));
                        let outcome = claim.uncertain(&text, now_unix(), hold).await?;
                        let attempts = entry.attempts + made.max(1);
                        self.append(
                            &entry,
                            record_of(&entry, Status::Uncertain, attempts).error(&text),
                        )
                        .await;
                        if outcome == Outcome::Held {
                            // The same records as a hold before a retry.
                            self.append(
                                &entry,
                                record_of(&entry, Status::Held, attempts).error(&text),
                            )
                            .await;
                        }
                        Ok(done(settled_of(outcome, true), Some(error)))
                    }
                }
            }
            Err(error) => self.settle(claim, sender, &entry, made, error).await,
        }
    }

    /// Records an entry the mailbox shows as sent by an earlier attempt;
    /// `resent`: this call sent it again before it could be checked.
    async fn verified(
        &self,
        entry: &Entry,
        attempts: u32,
        resent: bool,
        details: &Details,
    ) -> Delivery {
        let possible_duplicate = resent || entry.retried_unknown;
        self.append(
            entry,
            record_of(entry, Status::VerifiedSent, attempts)
                .possible_duplicate(possible_duplicate)
                .details(details),
        )
        .await;
        Delivery {
            id: entry.id.clone(),
            settled: Settled::VerifiedSent,
            error: None,
            unresolved: None,
            possible_duplicate,
        }
    }

    /// An attempt cut short: the transport cleans up within
    /// [`CLEANUP_GRACE`]; the entry keeps its in-flight mark, so the next
    /// attempt treats the outcome as unknown.
    async fn interrupted(
        &self,
        claim: B::Claim,
        sender: &S::Sender,
        entry: &Entry,
        made: u32,
        why: String,
    ) -> Delivery {
        let tail = match tokio::time::timeout(CLEANUP_GRACE, sender.interrupted(&claim)).await {
            Ok(Ok(())) => "nothing half-built is left at the provider".to_owned(),
            Ok(Err(e)) => format!("cleaning up failed ({e}); the next attempt does it"),
            Err(_) => format!(
                "cleaning up took longer than {} s; the next attempt does it",
                CLEANUP_GRACE.as_secs()
            ),
        };
        drop(claim);
        let error = TransportError::new(
            ErrorKind::Temporary,
            format!("interrupted by a signal ({why}); {tail}"),
        );
        self.append(
            entry,
            record_of(entry, Status::Queued, entry.attempts + made).error(error_text(&error)),
        )
        .await;
        Delivery {
            id: entry.id.clone(),
            settled: Settled::Interrupted,
            error: Some(error),
            unresolved: None,
            possible_duplicate: false,
        }
    }

    /// Settles a failed attempt by what the user must do: temporary
    /// failures wait for their next try, failures only the user can fix
    /// are held, and anything else moves to `failed/` with the reason.
    /// `made`: the attempts of this call (the outbox counts at least one).
    async fn settle(
        &self,
        mut claim: B::Claim,
        sender: &S::Sender,
        entry: &Entry,
        made: u32,
        error: TransportError,
    ) -> Result<Delivery, B::Error> {
        let reason = error_text(&error);
        claim.add_attempts(made.saturating_sub(1));
        let attempts = entry.attempts + made.max(1);
        // Credentials no login renews: waiting for a login is pointless, so
        // they are retried on the schedule until someone fixes them.
        let no_login = matches!(error.kind(), ErrorKind::Unauthorized | ErrorKind::Config)
            && !self.senders.login_can_fix(sender);
        let (settled, status, recorded) = if needs_the_user(&error) && !no_login {
            claim.hold(&reason).await?;
            (Settled::Held { uncertain: false }, Status::Held, reason)
        } else if no_login || matches!(error.kind(), ErrorKind::Temporary | ErrorKind::Internal) {
            match claim
                .retry_later_after(&reason, now_unix(), error.retry_after())
                .await?
            {
                Outcome::Expired => (
                    Settled::Failed,
                    Status::Failed,
                    format!("expired: queued longer than allowed; the last attempt: {reason}"),
                ),
                other => (settled_of(other, false), Status::Queued, reason),
            }
        } else {
            claim.fail(&reason).await?;
            (Settled::Failed, Status::Failed, reason)
        };
        self.append(entry, record_of(entry, status, attempts).error(recorded))
            .await;
        Ok(Delivery {
            id: entry.id.clone(),
            settled,
            error: Some(error),
            unresolved: None,
            possible_duplicate: false,
        })
    }

    /// The outcome is settled already: a journal that cannot be written is
    /// only a warning. Environment credentials are named by their identity.
    async fn append(&self, entry: &Entry, mut record: Record) {
        if record.subject.is_none() {
            // Queued, held or failed: the message is still stored.
            record.subject = self.store.subject(&entry.id).await;
        }
        if let Err(e) = self.store.append(&[labelled(entry, record)]).await {
            tracing::warn!("the delivery of {} is not in the journal: {e}", entry.id);
        }
    }

    /// Journals the record an unknown outcome left for the next attempt.
    async fn append_pending(&self, entry: &Entry, pending: &std::sync::Mutex<Option<Record>>) {
        let record = pending.lock().ok().and_then(|mut pending| pending.take());
        if let Some(record) = record {
            self.append(entry, record).await;
        }
    }
}

/// Journals the entries `accepted` (queued without an attempt, with what
/// the caller knows of each) as `queued`, in one append and one sync: the
/// relay's workers journal a burst of accepted messages at once. An entry
/// gone meanwhile is skipped; a journal that cannot be written is a
/// warning.
pub fn record_accepted(
    outbox: &Outbox,
    journal: &Journal,
    accepted: &[(EntryId, Details)],
) -> Result<(), OutboxError> {
    let mut records = Vec::with_capacity(accepted.len());
    for (id, details) in accepted {
        let Some(entry) = outbox.get(id.as_str())? else {
            continue;
        };
        let mut record = Record::without_attempt(&entry, Status::Queued).details(details);
        if record.subject.is_none() {
            record.subject = stored_subject(journal, outbox, &entry.id);
        }
        records.push(labelled(&entry, record));
    }
    if let Err(e) = journal.append_all(&records) {
        tracing::warn!(
            "{} accepted message(s) are not in the journal: {e}",
            records.len()
        );
    }
    Ok(())
}

/// `record` labelled with `entry`'s sender identity.
fn labelled(entry: &Entry, record: Record) -> Record {
    match &entry.identity {
        Some(identity) => record.label(identity.to_string()),
        None => record,
    }
}

/// `queue drop`, from the command line or the console: deletes entry `id`
/// (queued, held or failed) and records it as dropped, so that its story in
/// the log ends there and not at `held` or `queued`. `false` when there is
/// no such entry; [`OutboxError::Busy`] while another process sends it.
pub fn drop_entry(outbox: &Outbox, journal: &Journal, id: &str) -> Result<bool, OutboxError> {
    let Some(entry) = outbox.get(id)? else {
        return Ok(false);
    };
    let subject = stored_subject(journal, outbox, &entry.id);
    if !outbox.drop_entry(id)? {
        return Ok(false);
    }
    if let Err(e) = journal.append(&dropped_record(&entry, subject)) {
        tracing::warn!("the delivery of {} is not in the journal: {e}", entry.id);
    }
    Ok(true)
}

/// The journal's record of `entry` dropped (`queue drop`, the console),
/// labelled with its sender identity, with its Subject if known.
pub fn dropped_record(entry: &Entry, subject: Option<String>) -> Record {
    let mut record = Record::without_attempt(entry, Status::Dropped);
    record.subject = subject;
    labelled(entry, record)
}

/// [`Engine::drop_entry`] for a caller with a store and no engine (the
/// console): deletes entry `id` and journals it as dropped.
pub async fn drop_from<B: Store>(store: &B, id: &EntryId) -> Result<bool, B::Error> {
    let Some(entry) = store.get(id).await? else {
        return Ok(false);
    };
    let subject = store.subject(id).await;
    if !store.drop_entry(id).await? {
        return Ok(false);
    }
    if let Err(e) = store.append(&[dropped_record(&entry, subject)]).await {
        tracing::warn!("the drop of {} is not in the journal: {e}", entry.id);
    }
    Ok(true)
}

/// A record of `entry` settled as `status` after `attempts` attempts in all.
fn record_of(entry: &Entry, status: Status, attempts: u32) -> Record {
    Record::without_attempt(entry, status).attempts(attempts)
}

/// How one attempt ended under the [`UnknownOutcome`] rule.
#[derive(Debug)]
pub enum Attempted {
    /// The provider accepted it now. [`Receipt::possible_duplicate`] is set
    /// when an earlier attempt's outcome was unknown and could not be
    /// checked, so this is a resend.
    Sent(Receipt),
    /// An earlier attempt had gone through: the mailbox shows it as sent.
    VerifiedSent,
    /// Unknown outcome, not verifiable, and the rule says hold.
    HeldUnknown(TransportError),
}

/// The one rule for a message whose earlier attempt may have gone through
/// (its answer was lost): before the next attempt, look for it among the
/// sent messages where the sender can tell ([`Transport::was_sent`]), and
/// stop if it is there; where it cannot, resend with the same Message-ID,
/// warning, or hold ([`WhenUnknown`]). The engine applies it to outbox
/// entries; a direct send (the library's `Mailer`) uses it too.
#[derive(Debug)]
pub struct UnknownOutcome<'a, T: ?Sized> {
    sender: &'a T,
    message_id: &'a str,
    label: &'a str,
    when_unknown: WhenUnknown,
    verify_window: Duration,
    unknown: AtomicBool,
    resent: AtomicBool,
}

impl<'a, T: Transport + Sync + ?Sized> UnknownOutcome<'a, T> {
    /// The rule for the message `message_id` (with angle brackets) sent by
    /// `sender`; `label` names it in warnings; `earlier_unknown`: an
    /// earlier attempt's outcome is unknown already.
    pub fn new(
        sender: &'a T,
        message_id: &'a str,
        label: &'a str,
        when_unknown: WhenUnknown,
        verify_window: Duration,
        earlier_unknown: bool,
    ) -> Self {
        UnknownOutcome {
            sender,
            message_id,
            label,
            when_unknown,
            verify_window,
            unknown: AtomicBool::new(earlier_unknown),
            resent: AtomicBool::new(false),
        }
    }

    /// One attempt: `send` (not yet started), unless an earlier attempt's
    /// outcome is unknown and the mailbox shows the message as sent, or
    /// cannot be checked and the rule says hold.
    pub async fn attempt(
        &self,
        send: impl Future<Output = Result<Receipt, TransportError>>,
    ) -> Result<Attempted, TransportError> {
        if self.unknown.load(Ordering::Relaxed) {
            match self.verify().await {
                Some(true) => return Ok(Attempted::VerifiedSent),
                Some(false) => {}
                None if self.when_unknown == WhenUnknown::Hold => {
                    return Ok(Attempted::HeldUnknown(TransportError::new(
                        ErrorKind::Temporary,
                        "an earlier attempt may have gone through and the mailbox cannot be checked",
                    )));
                }
                None => {
                    tracing::warn!(
                        "resending {} with the same Message-ID {}: the earlier attempt's outcome is unknown and cannot be checked; it may arrive twice",
                        self.label,
                        self.message_id
                    );
                    self.resent.store(true, Ordering::Relaxed);
                }
            }
        }
        let sent = send.await;
        if let Err(error) = &sent {
            self.unknown
                .store(error.is_outcome_unknown(), Ordering::Relaxed);
        }
        sent.map(|mut receipt| {
            receipt.possible_duplicate |= self.resent.load(Ordering::Relaxed);
            Attempted::Sent(receipt)
        })
    }

    /// Whether the message was sent again after an earlier attempt whose
    /// outcome was unknown and could not be checked: a copy may already
    /// have arrived.
    pub fn resent(&self) -> bool {
        self.resent.load(Ordering::Relaxed)
    }

    /// Looks for the message among the sent ones, for up to the verify
    /// window (providers file the sent copy with a delay): `None` if the
    /// sender cannot tell, or the check failed (warned).
    pub async fn verify(&self) -> Option<bool> {
        let until = Instant::now() + self.verify_window;
        let mut pause = Duration::from_millis(500);
        loop {
            match self.sender.was_sent(self.message_id).await {
                Ok(Some(true)) => return Some(true),
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(
                        "cannot check whether {} was sent: {}",
                        self.label,
                        error_text(&error)
                    );
                    return None;
                }
                Ok(Some(false)) if Instant::now() + pause > until => return Some(false),
                Ok(Some(false)) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(4));
        }
    }
}

fn settled_of(outcome: Outcome, uncertain: bool) -> Settled {
    match outcome {
        Outcome::Rescheduled { next_attempt_at } => Settled::Queued {
            next_attempt_at,
            uncertain,
        },
        Outcome::Expired => Settled::Failed,
        Outcome::Held => Settled::Held { uncertain },
    }
}

/// Failures that waiting does not fix and that need the user: a refused
/// authorization, a wrong configuration, an unreadable token store.
fn needs_the_user(error: &TransportError) -> bool {
    if matches!(error.kind(), ErrorKind::Unauthorized | ErrorKind::Config) {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(TokenError::Store(_) | TokenError::NotLoggedIn { .. }) = cause.downcast_ref() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether `error`, or the last error the retry policy gave up on, left
/// the outcome unknown.
pub fn error_chain_unknown(error: &TransportError) -> bool {
    error.is_outcome_unknown()
        || std::error::Error::source(error)
            .and_then(|s| s.downcast_ref::<TransportError>())
            .is_some_and(TransportError::is_outcome_unknown)
}

/// The error and its causes on one line, for the entry and the journal.
pub fn error_text(error: &TransportError) -> String {
    crate::transport::error_chain(error)
}

/// The envelope stored with an entry.
fn envelope_of(entry: &Entry) -> Result<Envelope, TransportError> {
    let bad = |what: &str| {
        TransportError::new(
            ErrorKind::InvalidMessage,
            format!("queued message {} has an invalid {what}", entry.id),
        )
    };
    let from: Mailbox = entry.from.parse().map_err(|_| bad("sender"))?;
    let recipients = entry
        .recipients
        .iter()
        .map(|r| r.parse::<Mailbox>().map_err(|_| bad("recipient")))
        .collect::<Result<_, _>>()?;
    Ok(Envelope::new(from, recipients))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::outbox::NewEntry;

    const MESSAGE: &[u8] =
        b"From: ops@example.com\r\nTo: oncall@example.com\r\nMessage-ID: <m1@example.com>\r\n\r\nhi\r\n";

    /// Answers each send with the next scripted result; its `mailbox`
    /// holds the Message-IDs the provider accepted.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<(), TransportError>>>,
        sends: Mutex<usize>,
        mailbox: Mutex<Vec<String>>,
        can_verify: bool,
        /// Whether account `home` resolves (it was removed, and is back).
        home_back: AtomicBool,
        /// The journal to look at before each send, and what it held then.
        journal: Mutex<Option<Journal>>,
        journal_before_send: Mutex<Vec<Vec<Status>>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), TransportError>>, can_verify: bool) -> Arc<Self> {
            Arc::new(Scripted {
                answers: Mutex::new(answers.into()),
                can_verify,
                ..Scripted::default()
            })
        }

        fn sends(&self) -> usize {
            *self.sends.lock().unwrap()
        }

        fn copies(&self) -> usize {
            self.mailbox.lock().unwrap().len()
        }
    }

    /// The provider took the message, then the answer was lost.
    fn accepted_then_lost() -> Result<(), TransportError> {
        Err(TransportError::new(ErrorKind::Temporary, "connection reset").with_unknown_outcome())
    }

    fn busy() -> Result<(), TransportError> {
        Err(TransportError::new(ErrorKind::Temporary, "503"))
    }

    impl Transport for Scripted {
        async fn send_raw(&self, _: &Envelope, message: &[u8]) -> Result<Receipt, TransportError> {
            *self.sends.lock().unwrap() += 1;
            if let Some(journal) = self.journal.lock().unwrap().as_ref() {
                let seen = outcomes(journal);
                self.journal_before_send.lock().unwrap().push(seen);
            }
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
            if answer
                .as_ref()
                .map_or_else(TransportError::is_outcome_unknown, |()| true)
            {
                let text = String::from_utf8_lossy(message).into_owned();
                let id = text
                    .split("Message-ID: ")
                    .nth(1)
                    .unwrap()
                    .split("\r\n")
                    .next()
                    .unwrap();
                self.mailbox.lock().unwrap().push(id.to_owned());
            }
            answer.map(|()| Receipt {
                provider: "test",
                id: Some("p1".into()),
                thread_id: None,
                possible_duplicate: false,
            })
        }

        async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
            Ok(self
                .can_verify
                .then(|| self.mailbox.lock().unwrap().iter().any(|m| m == message_id)))
        }
    }

    /// Resolves only account `work`.
    struct Work(Arc<Scripted>);

    impl Senders for Work {
        type Sender = Arc<Scripted>;
        async fn resolve(&self, entry: &Entry) -> Result<Arc<Scripted>, String> {
            match entry
                .identity
                .as_ref()
                .and_then(SenderIdentity::account_name)
            {
                Some("work") => Ok(self.0.clone()),
                Some("home") if self.0.home_back.load(Ordering::Relaxed) => Ok(self.0.clone()),
                _ => Err("account `home` was removed from the configuration".into()),
            }
        }
    }

    fn setup(
        transport: &Arc<Scripted>,
        when_unknown: WhenUnknown,
    ) -> (tempfile::TempDir, Engine<Work>) {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let settings = Settings {
            when_unknown,
            verify_window: Duration::from_millis(10),
            claim_wait: Duration::from_millis(200),
        };
        (dir, Engine::new(outbox, Work(transport.clone()), settings))
    }

    fn accept(engine: &Engine<Work>, account: &str) -> EntryId {
        let meta = NewEntry {
            identity: Some(SenderIdentity::account(account)),
            account: Some(account.to_owned()),
            from: "ops@example.com".into(),
            recipients: vec!["oncall@example.com".into()],
            message_id: "<m1@example.com>".into(),
            ..NewEntry::default()
        };
        engine.outbox().accept(MESSAGE, meta).unwrap()
    }

    /// The engine of [`setup`] with a journal, which `transport` reads
    /// before each send.
    fn journaled(
        transport: &Arc<Scripted>,
        when_unknown: WhenUnknown,
    ) -> (tempfile::TempDir, Engine<Work>, Journal) {
        let (dir, engine) = setup(transport, when_unknown);
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        *transport.journal.lock().unwrap() = Some(journal.clone());
        (dir, engine.with_journal(journal.clone()), journal)
    }

    fn records(journal: &Journal) -> Vec<Record> {
        journal
            .read(&crate::journal::Filter::default())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn outcomes(journal: &Journal) -> Vec<Status> {
        records(journal).iter().map(|r| r.outcome).collect()
    }

    /// (outcome, attempts, possible_duplicate) of each record.
    fn summary(journal: &Journal) -> Vec<(Status, u32, bool)> {
        records(journal)
            .iter()
            .map(|r| (r.outcome, r.attempts, r.possible_duplicate))
            .collect()
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            max_elapsed: Duration::from_secs(5),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn a_sent_message_leaves_the_outbox() {
        let transport = Scripted::new(vec![busy(), Ok(())], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert!(matches!(delivery.settled, Settled::Sent(_)));
        assert_eq!(transport.sends(), 2);
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lost_answer_is_verified_not_resent() {
        let transport = Scripted::new(vec![accepted_then_lost()], true);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::VerifiedSent);
        assert_eq!((transport.sends(), transport.copies()), (1, 1));
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lost_answer_that_cannot_be_checked_is_resent_with_the_same_message() {
        let transport = Scripted::new(vec![accepted_then_lost()], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert!(matches!(delivery.settled, Settled::Sent(_)));
        let mailbox = transport.mailbox.lock().unwrap().clone();
        assert_eq!(mailbox, ["<m1@example.com>", "<m1@example.com>"]);
    }

    #[tokio::test]
    async fn a_lost_answer_that_cannot_be_checked_is_held_when_configured() {
        let transport = Scripted::new(vec![accepted_then_lost()], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Hold);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::Held { uncertain: true });
        assert_eq!(transport.sends(), 1);
        let entry = engine.outbox().get(id.as_str()).unwrap().unwrap();
        assert!(entry.outcome_unknown && entry.state == EntryState::Held);
        // A login does not release it; only the user's `queue retry` does.
        assert_eq!(engine.outbox().release_held(None).unwrap(), 0);
        assert!(engine.outbox().retry(id.as_str()).unwrap());
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.sent, transport.sends()), (1, 2));
    }

    /// A queue written by the apimail before one file per message (two
    /// files an entry: `tests/fixtures/outbox-v0`, written by that code)
    /// is read and sent after the upgrade, a failed entry after `queue
    /// retry`; what changes meanwhile is written in the old format.
    #[tokio::test]
    async fn a_queue_in_the_two_file_format_is_delivered_after_the_upgrade() {
        let transport = Scripted::new(vec![busy()], false);
        let (dir, engine) = setup(&transport, WhenUnknown::Resend);
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outbox-v0");
        for sub in ["queue", "failed"] {
            for file in std::fs::read_dir(fixture.join(sub)).unwrap() {
                let file = file.unwrap();
                let to = dir.path().join("outbox").join(sub).join(file.file_name());
                std::fs::copy(file.path(), to).unwrap();
            }
        }
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        let summary = outbox.summary().unwrap();
        assert_eq!(
            (summary.queued, summary.failed, summary.unreadable),
            (2, 1, 0)
        );
        let tried = outbox
            .list()
            .unwrap()
            .into_iter()
            .find(|e| e.message_id == "<tried@example.com>")
            .unwrap();
        assert_eq!(tried.attempts, 1);
        assert_eq!(tried.notes["graph.draft_id"], "AAMk-fixture");

        // The first send is refused (503): rescheduled, in the old format.
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.sent, report.queued), (1, 1));
        let waiting = &outbox.list().unwrap()[0];
        assert!(
            dir.path()
                .join(format!("outbox/queue/{}.json", waiting.id))
                .exists()
        );
        assert!(outbox.retry(waiting.id.as_str()).unwrap());
        let failed = outbox.list_failed().unwrap();
        assert_eq!(failed[0].failed_reason.as_deref(), Some("550 no such user"));
        assert!(outbox.retry(failed[0].id.as_str()).unwrap());
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!(report.sent, 2);

        let mut delivered = transport.mailbox.lock().unwrap().clone();
        delivered.sort();
        assert_eq!(
            delivered,
            [
                "<failed@example.com>",
                "<fresh@example.com>",
                "<tried@example.com>"
            ]
        );
        assert!(outbox.list().unwrap().is_empty());
        assert!(outbox.list_failed().unwrap().is_empty());
        for sub in ["queue", "failed"] {
            let left: Vec<_> = std::fs::read_dir(dir.path().join("outbox").join(sub))
                .unwrap()
                .collect();
            assert!(left.is_empty(), "{sub}: {left:?}");
        }
    }

    #[tokio::test]
    async fn a_process_that_died_mid_attempt_leaves_an_entry_the_next_flush_checks() {
        let transport = Scripted::new(vec![], true);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        // The provider accepted it, and the process died before settling.
        transport
            .mailbox
            .lock()
            .unwrap()
            .push("<m1@example.com>".into());
        let mut claim = engine.outbox().claim(&id).unwrap().unwrap();
        claim.begin_attempt(now_unix()).unwrap();
        drop(claim);
        assert!(
            engine
                .outbox()
                .get(id.as_str())
                .unwrap()
                .unwrap()
                .is_uncertain()
        );
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.verified, report.sent, transport.sends()), (1, 0, 0));
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
    }

    #[tokio::test]
    async fn an_entry_is_only_sent_as_its_own_identity() {
        let transport = Scripted::new(vec![], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let home = accept(&engine, "home");
        let work = accept(&engine, "work");
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.sent, report.held), (1, 1));
        assert!(engine.outbox().get(work.as_str()).unwrap().is_none());
        let held = engine.outbox().get(home.as_str()).unwrap().unwrap();
        assert_eq!(held.state, EntryState::Held);
        assert!(
            held.last_error
                .unwrap()
                .contains("removed from the configuration")
        );
        assert_eq!(held.attempts, 0);
    }

    #[tokio::test]
    async fn drop_if_not_sent_removes_the_entry_under_its_claim() {
        let transport = Scripted::new(vec![busy()], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(1), IfNotSent::Drop)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::Dropped);
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_dropped_entry_ends_in_the_journal_as_dropped_with_its_subject() {
        let transport = Scripted::new(vec![], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let message = "From: ops@example.com\r\nTo: oncall@example.com\r\nMessage-ID: <m3@example.com>\r\nSubject: backup report\r\n\r\nhi\r\n";
        let meta = NewEntry {
            identity: Some(SenderIdentity::account("work")),
            account: Some("work".to_owned()),
            from: "ops@example.com".into(),
            recipients: vec!["oncall@example.com".into()],
            message_id: "<m3@example.com>".into(),
            ..NewEntry::default()
        };
        let id = engine.outbox().accept(message.as_bytes(), meta).unwrap();
        engine.record_queued(&id).unwrap();

        assert!(drop_entry(engine.outbox(), &journal, id.as_str()).unwrap());
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
        let written = records(&journal);
        let seen: Vec<_> = written
            .iter()
            .map(|r| (r.outcome, r.subject.as_deref(), r.message_id.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (Status::Queued, Some("backup report"), "<m3@example.com>"),
                (Status::Dropped, Some("backup report"), "<m3@example.com>"),
            ]
        );
        assert!(written[1].is_final());

        // A second drop finds nothing and records nothing.
        assert!(!drop_entry(engine.outbox(), &journal, id.as_str()).unwrap());
        assert_eq!(records(&journal).len(), 2);
    }

    #[tokio::test]
    async fn records_carry_the_subject_and_what_the_caller_knows() {
        use base64::Engine as _;
        let transport = Scripted::new(vec![busy(), Ok(())], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let subject = format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode("請求書 12")
        );
        let message = format!(
            "From: ops@example.com\r\nTo: oncall@example.com\r\nMessage-ID: <m2@example.com>\r\nSubject: {subject}\r\n\r\nhi\r\n"
        );
        let meta = NewEntry {
            identity: Some(SenderIdentity::account("work")),
            account: Some("work".to_owned()),
            from: "ops@example.com".into(),
            recipients: vec!["oncall@example.com".into()],
            message_id: "<m2@example.com>".into(),
            ..NewEntry::default()
        };
        let id = engine.outbox().accept(message.as_bytes(), meta).unwrap();
        let details = Details {
            subject: None, // read from the message
            client: Some("192.0.2.7".to_owned()),
            smtp_user: Some("scanner".to_owned()),
        };
        engine.record_accepted(&id, &details).unwrap();
        for _ in 0..2 {
            engine
                .deliver(&id, &transport, &quick(1), IfNotSent::Keep)
                .await
                .unwrap();
        }
        let written = records(&journal);
        let seen: Vec<_> = written
            .iter()
            .map(|r| (r.outcome, r.subject.as_deref(), r.client.as_deref()))
            .collect();
        // Each record names the Subject; the client comes from the first.
        assert_eq!(
            seen,
            [
                (Status::Queued, Some("請求書 12"), Some("192.0.2.7")),
                (Status::Queued, Some("請求書 12"), Some("192.0.2.7")),
                (Status::Sent, Some("請求書 12"), Some("192.0.2.7")),
            ]
        );
        assert_eq!(written[0].smtp_user.as_deref(), Some("scanner"));
    }

    #[tokio::test]
    async fn a_busy_entry_is_waited_for_and_reported() {
        let transport = Scripted::new(vec![], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let claim = engine.outbox().claim(&id).unwrap().unwrap();
        let delivery = engine
            .deliver(&id, &transport, &quick(1), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::Busy);
        claim.delivered().unwrap();
        let delivery = engine
            .deliver(&id, &transport, &quick(1), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::SettledElsewhere);
        assert_eq!(transport.sends(), 0);
    }
    #[tokio::test]
    async fn a_flush_elsewhere_cannot_take_an_entry_accepted_claimed() {
        // `apimail send` accepts, then attempts at once; another process's
        // flush in between must leave the entry to it (it used to send it,
        // and the accepting process then exited 75 for a message sent).
        let transport = Scripted::new(vec![], false);
        let (_dir, engine) = setup(&transport, WhenUnknown::Resend);
        let meta = NewEntry {
            identity: Some(SenderIdentity::account("work")),
            account: Some("work".to_owned()),
            from: "ops@example.com".into(),
            recipients: vec!["oncall@example.com".into()],
            message_id: "<m1@example.com>".into(),
            ..NewEntry::default()
        };
        let claim = engine.outbox().accept_claimed(MESSAGE, meta).unwrap();
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert!(report.is_empty(), "{report:?}");
        assert_eq!(transport.sends(), 0);
        let delivery = engine
            .deliver_claimed(claim, &transport, &quick(1), IfNotSent::Keep)
            .await
            .unwrap();
        assert!(matches!(delivery.settled, Settled::Sent(_)), "{delivery:?}");
        assert_eq!(transport.sends(), 1);
    }

    #[tokio::test]
    async fn a_resend_in_process_is_journaled_uncertain_first_then_sent_as_a_possible_duplicate() {
        let transport = Scripted::new(vec![accepted_then_lost()], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        let Settled::Sent(receipt) = &delivery.settled else {
            panic!("{delivery:?}")
        };
        assert!(receipt.possible_duplicate && delivery.possible_duplicate);
        assert_eq!(
            summary(&journal),
            [(Status::Uncertain, 1, false), (Status::Sent, 2, true)]
        );
        // The uncertain record was there before the resend went out.
        let seen = transport.journal_before_send.lock().unwrap().clone();
        assert_eq!(seen, [vec![], vec![Status::Uncertain]]);
        assert!(
            records(&journal)[0]
                .error
                .as_deref()
                .unwrap()
                .contains("connection reset")
        );
    }

    #[tokio::test]
    async fn a_resend_by_a_later_flush_carries_the_true_count_and_the_mark() {
        let transport = Scripted::new(vec![accepted_then_lost()], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(1), IfNotSent::Keep)
            .await
            .unwrap();
        assert!(matches!(
            delivery.settled,
            Settled::Queued {
                uncertain: true,
                ..
            }
        ));
        let all = Selection {
            include_not_due: true,
            ..Selection::default()
        };
        let report = engine.flush(&all).await.unwrap();
        assert_eq!(report.sent, 1);
        assert_eq!(
            summary(&journal),
            [(Status::Uncertain, 1, false), (Status::Sent, 2, true)]
        );
    }

    #[tokio::test]
    async fn a_lost_answer_held_is_journaled_alike_whether_or_not_retries_were_left() {
        for attempts in [1, 3] {
            let transport = Scripted::new(vec![accepted_then_lost()], false);
            let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Hold);
            let id = accept(&engine, "work");
            let delivery = engine
                .deliver(&id, &transport, &quick(attempts), IfNotSent::Keep)
                .await
                .unwrap();
            assert_eq!(delivery.settled, Settled::Held { uncertain: true });
            assert_eq!(
                summary(&journal),
                [(Status::Uncertain, 1, false), (Status::Held, 1, false)],
                "{attempts} attempt(s) allowed"
            );
        }
    }

    #[tokio::test]
    async fn a_held_uncertain_message_resent_by_queue_retry_is_a_possible_duplicate() {
        let transport = Scripted::new(vec![accepted_then_lost()], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Hold);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::Held { uncertain: true });
        let held = engine.outbox().get(id.as_str()).unwrap().unwrap();
        assert_eq!(held.hold_kind(), Some(crate::outbox::HoldKind::Uncertain));
        assert_eq!(held.attempts, 1, "one attempt made, none since");
        assert!(engine.outbox().retry(id.as_str()).unwrap());
        engine.flush(&Selection::default()).await.unwrap();
        assert_eq!(
            summary(&journal),
            [
                (Status::Uncertain, 1, false),
                (Status::Held, 1, false),
                (Status::Sent, 2, true)
            ]
        );
    }

    #[tokio::test]
    async fn a_verified_lost_answer_is_no_duplicate() {
        let transport = Scripted::new(vec![accepted_then_lost()], true);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::VerifiedSent);
        assert_eq!(
            summary(&journal),
            [
                (Status::Uncertain, 1, false),
                (Status::VerifiedSent, 1, false)
            ]
        );
    }

    #[tokio::test]
    async fn every_attempt_in_process_counts() {
        let transport = Scripted::new(vec![busy(), busy(), busy()], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        engine
            .deliver(&id, &transport, &quick(3), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(summary(&journal), [(Status::Queued, 3, false)]);
        let entry = engine.outbox().get(id.as_str()).unwrap().unwrap();
        assert_eq!(entry.attempts, 3);
        let all = Selection {
            include_not_due: true,
            ..Selection::default()
        };
        engine.flush(&all).await.unwrap();
        assert_eq!(
            summary(&journal),
            [(Status::Queued, 3, false), (Status::Sent, 4, false)]
        );
    }

    #[tokio::test]
    async fn an_identity_hold_is_sent_by_the_first_flush_that_resolves_it() {
        let transport = Scripted::new(vec![], false);
        let (_dir, engine, journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "home");
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!(report.held, 1);
        let held = engine.outbox().get(id.as_str()).unwrap().unwrap();
        assert_eq!(held.hold_kind(), Some(crate::outbox::HoldKind::Identity));
        // Still unresolvable: still held, and nothing new in the journal.
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.held, report.sent), (1, 0));
        assert_eq!(outcomes(&journal), [Status::Held]);
        // A login releases nothing here; the sender coming back does.
        transport.home_back.store(true, Ordering::Relaxed);
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.held, report.sent), (0, 1));
        assert!(engine.outbox().get(id.as_str()).unwrap().is_none());
        assert_eq!(
            summary(&journal),
            [(Status::Held, 0, false), (Status::Sent, 1, false)]
        );
    }

    #[tokio::test]
    async fn login_and_uncertain_holds_wait_for_a_login_or_a_person() {
        let transport = Scripted::new(
            vec![Err(TransportError::new(
                ErrorKind::Unauthorized,
                "invalid_grant",
            ))],
            false,
        );
        let (_dir, engine, _journal) = journaled(&transport, WhenUnknown::Resend);
        let id = accept(&engine, "work");
        let delivery = engine
            .deliver(&id, &transport, &quick(1), IfNotSent::Keep)
            .await
            .unwrap();
        assert_eq!(delivery.settled, Settled::Held { uncertain: false });
        let held = engine.outbox().get(id.as_str()).unwrap().unwrap();
        assert_eq!(held.hold_kind(), Some(crate::outbox::HoldKind::Login));
        // A flush does not send it (the sender resolves, but no login came).
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!((report.sent, transport.sends()), (0, 1));
        assert_eq!(engine.outbox().release_held(None).unwrap(), 1);
        let report = engine.flush(&Selection::default()).await.unwrap();
        assert_eq!(report.sent, 1);
    }
}
