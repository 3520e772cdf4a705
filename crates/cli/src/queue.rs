//! The outbox from the command line: `apimail queue …`, and the flush that
//! `send`, `sendmail` and `auth login` share.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use apimail_core::outbox::{Claim, Entry, EntryState, Outbox, Outcome};
use apimail_core::token_store::TokenStore;
use apimail_core::{Envelope, ErrorKind, Mailbox, TransportError, now_unix};

use crate::cli::QueueCommand;
use crate::config::Provider;
use crate::exit::{Exit, Failure};
use crate::providers::{self, Context, Resolved};

/// How long a message may wait in the queue before it counts as failed:
/// `$APIMAIL_QUEUE_MAX_AGE_DAYS`, else 5 days.
pub fn max_age_secs() -> i64 {
    std::env::var("APIMAIL_QUEUE_MAX_AGE_DAYS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|days| *days > 0.0)
        .map_or(apimail_core::outbox::DEFAULT_MAX_AGE_SECS, |days| {
            (days * 86_400.0) as i64
        })
}

/// How long a send spends flushing its account's older messages.
pub const FLUSH_AFTER_SEND: Duration = Duration::from_secs(30);

/// The outbox under the data directory (`$APIMAIL_DATA_DIR/outbox`).
pub fn open_outbox() -> Result<Outbox, Failure> {
    let store = TokenStore::from_env().map_err(|e| {
        Failure::new(Exit::Config, e).hint("set APIMAIL_DATA_DIR to a directory apimail may write")
    })?;
    Outbox::open(store.dir().join("outbox")).map_err(outbox_failure)
}

pub fn outbox_failure(error: apimail_core::outbox::OutboxError) -> Failure {
    Failure::new(Exit::Config, error).hint("check the data directory's permissions and free space")
}

pub async fn run(ctx: Context, command: QueueCommand) -> Result<(), Failure> {
    let outbox = open_outbox()?;
    match command {
        QueueCommand::List => list(&outbox),
        QueueCommand::Flush { account, all } => {
            let report = flush(&ctx, &outbox, account.as_deref(), all, None).await?;
            report.print();
            Ok(())
        }
        QueueCommand::Show { id } => show(&outbox, &id),
        QueueCommand::Retry { id } => {
            if !outbox.retry(&id).map_err(outbox_failure)? {
                return Err(unknown_id(&id));
            }
            let report = flush(&ctx, &outbox, None, false, None).await?;
            report.print();
            Ok(())
        }
        QueueCommand::Drop { id } => {
            discard(&ctx, &outbox, &id).await?;
            if !outbox.drop_entry(&id).map_err(outbox_failure)? {
                return Err(unknown_id(&id));
            }
            say(&format!("dropped {id}"));
            Ok(())
        }
    }
}

/// Before `queue drop`: what earlier attempts left at the provider (a Graph
/// draft) is deleted. If that fails the entry stays, so nothing is left
/// behind unseen; without the account to reach the mailbox, a warning says
/// where to look.
async fn discard(ctx: &Context, outbox: &Outbox, id: &str) -> Result<(), Failure> {
    let Some(entry) = outbox.get(id).map_err(outbox_failure)? else {
        return Err(unknown_id(id));
    };
    if entry.notes.is_empty() {
        return Ok(());
    }
    let provider = match entry.provider.as_deref() {
        Some("graph") => Some(Provider::Graph),
        Some("gmail") => Some(Provider::Gmail),
        _ => None,
    };
    let resolved = match providers::resolve(ctx, entry.account.as_deref(), provider).await {
        Ok(resolved) => resolved,
        // Without the account nothing can reach the mailbox: say so, drop.
        Err(failure) => {
            tracing::warn!(
                "cannot delete what an earlier attempt left in the mailbox ({}); look in its Drafts folder",
                failure.error
            );
            return Ok(());
        }
    };
    let notes = apimail_core::MemoryNotes::default();
    for (key, value) in &entry.notes {
        let _ = apimail_core::DeliveryNotes::set(&notes, key, Some(value));
    }
    resolved.sender.discard(&notes).await.map_err(|error| {
        providers::send_failure(error, &resolved).note(format!(
            "{id} stays in the outbox until what an earlier attempt left in the mailbox (a draft) \
             is deleted; run `apimail queue drop {id}` again"
        ))
    })
}

fn unknown_id(id: &str) -> Failure {
    Failure::new(
        Exit::NoInput,
        anyhow!("there is no message `{id}` in the outbox"),
    )
    .hint("see `apimail queue list` for the ids")
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `mailq`-like listing on stdout.
pub fn list(outbox: &Outbox) -> Result<(), Failure> {
    let queued = outbox.list().map_err(outbox_failure)?;
    let failed = outbox.list_failed().map_err(outbox_failure)?;
    let mut out = String::new();
    if queued.is_empty() && failed.is_empty() {
        out.push_str("the outbox is empty\n");
    }
    let now = now_unix();
    for entry in &queued {
        let state = match entry.state {
            EntryState::Held => "held: waits for a new login".to_owned(),
            EntryState::Queued if entry.next_attempt_at <= now => "due now".to_owned(),
            EntryState::Queued => format!(
                "next try in {} min",
                (entry.next_attempt_at - now + 59) / 60
            ),
        };
        out.push_str(&describe(entry, &state));
    }
    for entry in &failed {
        let reason = entry.failed_reason.as_deref().unwrap_or("failed");
        out.push_str(&describe(entry, &format!("failed: {reason}")));
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

fn describe(entry: &Entry, state: &str) -> String {
    let mut text = format!(
        "{}  {} bytes  from {}  to {}\n    {state}; {} attempt(s)",
        entry.id,
        entry.size,
        entry.from,
        entry.recipients.join(", "),
        entry.attempts
    );
    if let Some(error) = &entry.last_error {
        text.push_str(&format!("; last error: {error}"));
    }
    text.push('\n');
    text
}

fn show(outbox: &Outbox, id: &str) -> Result<(), Failure> {
    let entry = outbox
        .get(id)
        .map_err(outbox_failure)?
        .ok_or_else(|| unknown_id(id))?;
    let message = outbox
        .read_message(id)
        .map_err(outbox_failure)?
        .unwrap_or_default();
    let headers_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len());
    let mut out = serde_json::to_string_pretty(&entry).unwrap_or_default();
    out.push_str("\n\n");
    out.push_str(&String::from_utf8_lossy(&message[..headers_end]));
    out.push('\n');
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    pub sent: usize,
    pub rescheduled: usize,
    pub held: usize,
    pub failed: usize,
}

impl FlushReport {
    pub fn print(&self) {
        say(&format!(
            "flushed the outbox: {} sent, {} still queued, {} held for a login, {} failed",
            self.sent, self.rescheduled, self.held, self.failed
        ));
    }
}

/// Sends the due entries (all queued ones with `all`), optionally of one
/// account, until `deadline`. Each entry is claimed under its lock, so
/// concurrent flushes never send one entry twice, and removed only after
/// the provider accepted it.
pub async fn flush(
    ctx: &Context,
    outbox: &Outbox,
    account: Option<&str>,
    all: bool,
    deadline: Option<Instant>,
) -> Result<FlushReport, Failure> {
    let now = now_unix();
    let entries: Vec<Entry> = if all {
        outbox
            .list()
            .map_err(outbox_failure)?
            .into_iter()
            .filter(|e| {
                e.state == EntryState::Queued
                    && (account.is_none() || e.account.as_deref() == account)
            })
            .collect()
    } else {
        outbox.due(now, account).map_err(outbox_failure)?
    };
    let mut report = FlushReport::default();
    let mut senders: HashMap<(Option<String>, Option<String>), Option<Resolved>> = HashMap::new();
    for entry in entries {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let key = (entry.account.clone(), entry.provider.clone());
        if !senders.contains_key(&key) {
            let provider = entry.provider.as_deref().and_then(|p| match p {
                "gmail" => Some(Provider::Gmail),
                "graph" => Some(Provider::Graph),
                _ => None,
            });
            let resolved = providers::resolve(ctx, entry.account.as_deref(), provider).await;
            if let Err(failure) = &resolved {
                tracing::warn!("cannot send {} yet: {}", entry.id, failure.error);
            }
            senders.insert(key.clone(), resolved.ok());
        }
        let Some(resolved) = senders.get(&key).and_then(Option::as_ref) else {
            continue;
        };
        let claimed = if all {
            outbox.claim(&entry.id)
        } else {
            outbox.claim_due(&entry.id, now)
        }
        .map_err(outbox_failure)?;
        let Some(claim) = claimed else { continue };
        match attempt(resolved, &claim).await {
            Ok(()) => {
                claim.delivered().map_err(outbox_failure)?;
                tracing::info!("sent {}", entry.id);
                report.sent += 1;
            }
            Err(error) => {
                let interrupted = is_interrupted(&error);
                match settle(claim, &error, resolved).map_err(outbox_failure)? {
                    Settled::Rescheduled => report.rescheduled += 1,
                    Settled::Held => report.held += 1,
                    Settled::Failed => report.failed += 1,
                }
                if interrupted {
                    tracing::warn!("{error}");
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// How long a SIGINT or SIGTERM lets an attempt clean up at the provider.
pub const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// How an interrupted attempt's error starts.
const INTERRUPTED: &str = "interrupted by a signal";

/// Runs one attempt (`send`) unless SIGINT or SIGTERM comes first. Then
/// the attempt is dropped and, within [`SIGNAL_GRACE`], what it left at the
/// provider is cleaned up; the error is temporary, so the entry stays
/// queued.
pub async fn interruptible<T>(
    resolved: &Resolved,
    claim: &Claim<'_>,
    send: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let signal = match signals() {
        Ok(signal) => signal,
        Err(e) => {
            tracing::debug!("cannot listen for signals: {e}");
            return send.await;
        }
    };
    let name = tokio::select! {
        result = send => return result,
        name = signal => name,
    };
    let cleaned =
        tokio::time::timeout(SIGNAL_GRACE, resolved.sender.after_interruption(claim)).await;
    let tail = match cleaned {
        Ok(Ok(())) => "nothing half-built is left at the provider".to_owned(),
        Ok(Err(e)) => format!("cleaning up failed ({e}); the next attempt does it"),
        Err(_) => format!(
            "cleaning up took longer than {} s; the next attempt does it",
            SIGNAL_GRACE.as_secs()
        ),
    };
    Err(TransportError::new(
        ErrorKind::Temporary,
        format!("{INTERRUPTED} ({name}); {tail}"),
    ))
}

/// Whether `error` is an attempt [`interruptible`] cut short.
pub fn is_interrupted(error: &TransportError) -> bool {
    error.to_string().starts_with(INTERRUPTED)
}

/// The first SIGINT or SIGTERM, by name.
#[cfg(unix)]
fn signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

/// The first Ctrl-C.
#[cfg(not(unix))]
fn signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}

/// One attempt at an outbox entry; a signal cuts it short (see
/// [`interruptible`]).
pub async fn attempt(resolved: &Resolved, claim: &Claim<'_>) -> Result<(), TransportError> {
    let entry = claim.entry();
    let message = claim.message().map_err(|e| {
        TransportError::new(
            ErrorKind::Internal,
            format!("cannot read queued message {}", entry.id),
        )
        .with_source(e)
    })?;
    let envelope = envelope_of(entry)?;
    interruptible(
        resolved,
        claim,
        resolved.sender.send(&envelope, &message, claim),
    )
    .await
    .map(|_| ())
}

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

/// Where a failed attempt leaves its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Rescheduled,
    Held,
    Failed,
}

/// Temporary failures wait for their next try (no sooner than the
/// provider's `Retry-After`), authorization failures are held until a
/// login (or, when no login can fix them, retried on the schedule like
/// configuration problems), anything else moves to `failed/` with the
/// reason.
pub fn settle(
    claim: Claim<'_>,
    error: &TransportError,
    resolved: &Resolved,
) -> Result<Settled, apimail_core::outbox::OutboxError> {
    let reason = error_text(error);
    let wait = error
        .retry_after()
        .map_or(0, |d| d.as_secs_f64().ceil() as i64);
    match error.kind() {
        ErrorKind::Temporary | ErrorKind::Config | ErrorKind::Internal => {
            match claim.retry_no_sooner_than(&reason, now_unix(), wait)? {
                Outcome::Rescheduled { .. } => Ok(Settled::Rescheduled),
                Outcome::Expired => Ok(Settled::Failed),
            }
        }
        ErrorKind::Unauthorized if !resolved.login_fixes_auth => {
            match claim.retry_later(&reason, now_unix())? {
                Outcome::Rescheduled { .. } => Ok(Settled::Rescheduled),
                Outcome::Expired => Ok(Settled::Failed),
            }
        }
        ErrorKind::Unauthorized => {
            claim.hold(&reason)?;
            Ok(Settled::Held)
        }
        _ => {
            claim.fail(&reason)?;
            Ok(Settled::Failed)
        }
    }
}

/// The error and its causes on one line, for the entry's record.
pub fn error_text(error: &TransportError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// After a login: held messages of `account` become due, and go out now.
pub async fn release_after_login(ctx: &Context, account: &str) {
    let Ok(outbox) = open_outbox() else { return };
    match outbox.release_held(Some(account)) {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            say(&format!(
                "{n} held message(s) of `{account}` can go out now"
            ));
            if let Ok(report) = flush(
                ctx,
                &outbox,
                Some(account),
                false,
                Some(Instant::now() + FLUSH_AFTER_SEND),
            )
            .await
            {
                report.print();
            }
        }
    }
}
