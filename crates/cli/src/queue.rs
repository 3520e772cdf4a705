//! The outbox from the command line: `apimail queue …`, and the flush that
//! `send`, `sendmail` and `auth login` share.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use apimail_core::delivery::{Engine, FlushReport, Interrupt, Selection, Settled};
use apimail_core::journal::rfc3339;
use apimail_core::outbox::{Entry, EntryId, EntryState, HoldKind};
use apimail_core::{MemoryNotes, Transport, TransportError, now_unix};

use crate::cli::QueueCommand;
use crate::exit::{Exit, Failure};
use crate::outbox::{Engines, Page, QueueStore};
// Where the outbox and journal open, for the commands that use only the
// local ones (merge, the relay, admin, doctor).
pub use crate::outbox::{open_journal, open_outbox, outbox_failure, signal};
use crate::providers::{self, ConfiguredSenders, Context, Resolved};

/// How long a message may wait in the queue before it counts as failed
/// (see [`apimail_account::max_age_secs`]).
pub fn max_age_secs() -> i64 {
    apimail_account::max_age_secs()
}

/// How long a send spends flushing its account's older messages.
pub const FLUSH_AFTER_SEND: Duration = Duration::from_secs(30);

/// The data directory (`$APIMAIL_DATA_DIR`, else the platform's).
pub fn data_dir() -> Result<std::path::PathBuf, Failure> {
    Ok(apimail_account::data_dir()?)
}

pub async fn run(ctx: &Context, command: QueueCommand) -> Result<(), Failure> {
    let store = QueueStore::open(&ctx.config).await?;
    match command {
        QueueCommand::List {
            json,
            limit,
            offset,
        } => list(&store, offset, limit, json).await,
        QueueCommand::Flush { account, all } => {
            let selection = Selection {
                account,
                include_not_due: all,
                ..Selection::default()
            };
            flush_with(&store.engine(ctx)?, &selection).await
        }
        QueueCommand::Show { id } => show(&store, &id).await,
        QueueCommand::Retry { id } => {
            if !store.retry(&id).await? {
                return Err(unknown_id(&id));
            }
            flush_with(&store.engine(ctx)?, &Selection::default()).await
        }
        QueueCommand::Drop { id } => {
            discard(ctx, &store, &id).await?;
            if !store.engine(ctx)?.drop_entry(&id).await? {
                return Err(unknown_id(&id));
            }
            say(&format!("dropped {id}"));
            Ok(())
        }
    }
}

/// Before `queue drop`: what earlier attempts left at the provider (a Graph
/// draft) is deleted. If that fails the entry stays, so nothing is left
/// behind unseen; without the sender to reach the mailbox, a warning says
/// where to look.
async fn discard(ctx: &Context, store: &QueueStore, id: &str) -> Result<(), Failure> {
    let Some(entry) = store.get(id).await? else {
        return Err(unknown_id(id));
    };
    if entry.notes.is_empty() {
        return Ok(());
    }
    let resolved = match providers::resolve_identity(
        ctx,
        entry.identity.as_ref(),
        entry.account.as_deref(),
    )
    .await
    {
        Ok(resolved) => resolved,
        Err(failure) => {
            tracing::warn!(
                "cannot delete what an earlier attempt left in the mailbox ({}); look in its Drafts folder",
                failure.error
            );
            return Ok(());
        }
    };
    let notes = MemoryNotes::from(entry.notes.clone());
    resolved.discard(&notes).await.map_err(|error| {
        providers::send_failure(error, &resolved).note(format!(
            "{id} stays in the outbox until what an earlier attempt left in the mailbox (a draft) \
             is deleted; run `apimail queue drop {id}` again"
        ))
    })
}

/// Flushes the selected entries and prints what happened.
pub async fn flush(ctx: &Context, selection: &Selection) -> Result<(), Failure> {
    let store = QueueStore::open(&ctx.config).await?;
    flush_with(&store.engine(ctx)?, selection).await
}

async fn flush_with(engine: &Engines<'_>, selection: &Selection) -> Result<(), Failure> {
    let report = engine.flush(selection).await?;
    print_report(&report);
    Ok(())
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

/// `mailq`-like listing on stdout: at most `limit` entries from the
/// `offset`th on, queued and held ones first, then the failed ones. Lists
/// the directories once and reads only the entries shown.
/// With `json`, JSON Lines instead (see [`json_line`]).
pub async fn list(
    store: &QueueStore,
    offset: usize,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let Page {
        queued,
        queued_total,
        failed,
        failed_total,
    } = store.page(offset, limit).await?;
    let total = queued_total + failed_total;
    let mut out = String::new();
    if json {
        for (entry, is_failed) in queued
            .iter()
            .map(|e| (e, false))
            .chain(failed.iter().map(|e| (e, true)))
        {
            out.push_str(&json_line(entry, is_failed));
        }
    } else if total == 0 {
        out.push_str("the outbox is empty\n");
    }
    let now = now_unix();
    for entry in queued.iter().filter(|_| !json) {
        let state = match (entry.state, entry.hold_kind()) {
            (EntryState::Held, Some(HoldKind::Uncertain)) => format!(
                "held, uncertain: an earlier attempt may have gone through; only a person releases it: `apimail queue retry {0}` resends it, `apimail queue drop {0}` drops it",
                entry.id
            ),
            (EntryState::Held, Some(HoldKind::Identity)) => format!(
                "held for its sender{}: the next `apimail queue flush` (or relay) that can send as it sends it",
                entry
                    .identity
                    .as_ref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default()
            ),
            (EntryState::Held, _) => format!(
                "held for a login: `apimail auth login` releases it, or `apimail queue retry {}`",
                entry.id
            ),
            (EntryState::Queued, _) if entry.is_uncertain() => format!(
                "uncertain: an earlier attempt may have gone through; the next try checks or resends with the same Message-ID, in {} min",
                (entry.next_attempt_at - now + 59).max(0) / 60
            ),
            (EntryState::Queued, _) if entry.next_attempt_at <= now => "due now".to_owned(),
            (EntryState::Queued, _) => format!(
                "next try in {} min",
                (entry.next_attempt_at - now + 59) / 60
            ),
        };
        out.push_str(&describe(entry, &state));
    }
    for entry in failed.iter().filter(|_| !json) {
        let reason = entry.failed_reason.as_deref().unwrap_or("failed");
        out.push_str(&describe(entry, &format!("failed: {reason}")));
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    let last = offset + queued.len() + failed.len();
    if last < total {
        say(&format!(
            "{}–{last} of {total} shown; `apimail queue list --offset {last}` shows the next {}",
            offset + 1,
            limit.min(total - last)
        ));
    }
    Ok(())
}

/// `queue list --json`: one object per message, queued, held or failed,
/// with what a held one waits for (`identity`, `login`, `uncertain`).
fn json_line(entry: &Entry, is_failed: bool) -> String {
    let state = match entry.state {
        _ if is_failed => "failed",
        EntryState::Held => "held",
        EntryState::Queued => "queued",
    };
    let value = serde_json::json!({
        "id": entry.id.as_str(),
        "state": state,
        "waits_for": entry.hold_kind().map(HoldKind::as_str),
        "uncertain": entry.is_uncertain(),
        "account": entry.account,
        "sender": entry.identity.as_ref().map(ToString::to_string),
        "from": entry.from,
        "recipients": entry.recipients,
        "message_id": entry.message_id,
        "size": entry.size,
        "attempts": entry.attempts,
        "created_at": rfc3339(entry.created_at),
        "next_attempt_at": (!is_failed && entry.state == EntryState::Queued)
            .then(|| rfc3339(entry.next_attempt_at)),
        "last_error": entry.last_error,
        "failed_reason": entry.failed_reason,
    });
    value.to_string() + "\n"
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

async fn show(store: &QueueStore, id: &str) -> Result<(), Failure> {
    let entry = store.get(id).await?.ok_or_else(|| unknown_id(id))?;
    let message = store.read_message(id).await?.unwrap_or_default();
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

/// A message that was accepted into the outbox but not sent now, as the
/// user should see it: the failure (if any) and where the message is.
pub fn not_sent(
    resolved: &Resolved,
    id: &EntryId,
    settled: Settled,
    error: Option<TransportError>,
) -> Failure {
    let failure = match error {
        Some(error) => providers::send_failure(error, resolved),
        None => Failure::new(
            Exit::TempFail,
            anyhow!("message {id} was not sent: another apimail process is handling it"),
        )
        .hint("see `apimail queue list` and `apimail log`"),
    };
    match settled {
        Settled::Queued { uncertain: true, .. } => failure.note(format!(
            "the provider may have accepted it before the connection broke; it is kept as {id} and the next try checks or resends it with the same Message-ID (`apimail queue show {id}`)"
        )),
        Settled::Queued { .. } => failure.note(format!(
            "the message is kept in the outbox as {id}: `apimail queue retry {id}` sends it again, and `apimail queue flush` or the next send retries it"
        )),
        Settled::Held { uncertain: true } => failure.note(format!(
            "the provider may have accepted it before the connection broke; it is held as {id}: check the recipient's mailbox, then `apimail queue retry {id}` or `apimail queue drop {id}`"
        )),
        Settled::Held { .. } => failure.note(format!(
            "the message is held in the outbox as {id}; it goes out after the next successful login, or with `apimail queue retry {id}`"
        )),
        Settled::Failed => failure.note(format!(
            "the message was moved to the outbox's failed messages as {id} (`apimail queue show {id}`)"
        )),
        Settled::SettledElsewhere => Failure::new(
            Exit::TempFail,
            anyhow!("message {id} was settled by another apimail process"),
        )
        .hint(format!("`apimail log` shows what happened to {id}")),
        Settled::Interrupted => failure.note(format!(
            "the message stays in the outbox as {id}; `apimail queue flush` (or the next send) sends it"
        )),
        Settled::Busy
        | Settled::ClaimLost
        | Settled::Dropped
        | Settled::Sent(_)
        | Settled::VerifiedSent => failure,
    }
}

/// Prints a flush's counts.
pub fn print_report(report: &FlushReport) {
    let mut line = format!(
        "flushed the outbox: {} sent, {} still queued, {} held, {} failed",
        report.sent, report.queued, report.held, report.failed
    );
    if report.verified > 0 {
        line.push_str(&format!(
            ", {} found already sent by an earlier attempt",
            report.verified
        ));
    }
    say(&line);
}

/// The delivery engine over the local outbox, resolving senders from
/// `ctx`, as the account layer builds it (journal, `when_unknown`): the
/// relay's and `merge`'s. `send`, `sendmail` and `queue` use
/// [`QueueStore::engine`], which is over the shared store when one is
/// configured.
pub fn engine(ctx: &Context) -> Result<Engine<ConfiguredSenders<'_>>, Failure> {
    let delivery = apimail_account::Delivery::from_config(&ctx.config)?;
    let dir = apimail_account::outbox_dir()?;
    let engine = apimail_account::engine(&dir, ConfiguredSenders { ctx }, &delivery)
        .map_err(outbox_failure)?;
    Ok(engine.with_interrupt(Interrupt::new(signal)))
}

/// After a login: held messages of `account` become due, and go out now.
pub async fn release_after_login(ctx: &Context, account: &str) {
    let Ok(store) = QueueStore::open(&ctx.config).await else {
        return;
    };
    match store.release_held(account).await {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            say(&format!(
                "{n} held message(s) of `{account}` can go out now"
            ));
            let selection = Selection {
                account: Some(account.to_owned()),
                deadline: Some(Instant::now() + FLUSH_AFTER_SEND),
                ..Selection::default()
            };
            if let Ok(engine) = store.engine(ctx)
                && let Ok(report) = engine.flush(&selection).await
            {
                print_report(&report);
            }
        }
    }
}
