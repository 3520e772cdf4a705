//! apimail as sendmail: one message on standard input, streamed into the
//! outbox, then sent at once; what cannot go yet waits in the queue.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Instant;

use anyhow::anyhow;
use apimail_core::aliases::{Aliases, ExpandError};
use apimail_core::delivery::{IfNotSent, Selection, Settled};
use apimail_core::intake::{self, Handover, IntakeError, Owner, Prepared, SenderPolicy};
use apimail_core::recipients::{RecipientError, RecipientSource};
use apimail_core::retry::RetryPolicy;
use apimail_core::{Mailbox, ReadyMessage};

use crate::exit::{Exit, Failure};
use crate::outbox::QueueStore;
use crate::providers::{self, Context, Resolved};
use crate::queue;
use crate::sendmail_args::{HELP, Invocation, Mode};

pub async fn run(
    config_flag: Option<&std::path::Path>,
    invocation: Invocation,
) -> Result<(), Failure> {
    for note in invocation.notes() {
        tracing::info!("{note}");
    }
    match invocation.mode {
        Mode::Help => {
            let _ = std::io::stdout().lock().write_all(HELP.as_bytes());
            Ok(())
        }
        Mode::Version => {
            let _ = writeln!(
                std::io::stdout().lock(),
                "apimail {} (sendmail mode)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Mode::ListQueue => {
            let config = crate::config::load(&crate::config::path(config_flag)?)?;
            let store = QueueStore::open(&config).await?;
            queue::list(&store, 0, usize::MAX, false).await
        }
        Mode::FlushQueue => {
            let ctx = Context::load(config_flag)?;
            queue::flush(&ctx, &Selection::default()).await
        }
        Mode::Deliver => deliver(config_flag, invocation).await,
    }
}

async fn deliver(config_flag: Option<&std::path::Path>, inv: Invocation) -> Result<(), Failure> {
    let ctx = Context::load(config_flag)?;
    // Callers cannot pass --account: $APIMAIL_ACCOUNT, else the default.
    let resolved = providers::resolve(&ctx, &providers::Flags::default()).await.map_err(|failure| {
        if failure.exit == Exit::Config {
            failure.hint("run `apimail auth login gmail --client-secret FILE` (or `auth login graph`), or set APIMAIL_ACCOUNT")
        } else {
            failure
        }
    })?;
    // A store that does not answer fails here (75), before anything is read.
    let engine = QueueStore::open(&ctx.config).await?.engine(&ctx)?;
    let staging = engine.staging()?;
    let outbox = &staging;

    // Stream standard input to disk: memory does not grow with the message.
    let mut incoming = outbox.begin().map_err(queue::outbox_failure)?;
    let limit = resolved.message_limit();
    let copied = copy_message(&mut incoming, inv.ignore_dots, limit)?;
    incoming.flush().map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context("cannot write the message to the outbox"),
        )
    })?;
    // Only the header section is read back and edited; the body stays on disk.
    let read_back = |e: std::io::Error| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context("cannot read back the queued message"),
        )
    };
    let mut file = std::fs::File::open(incoming.path()).map_err(read_back)?;
    let mut head = Vec::with_capacity(copied.head as usize);
    (&mut file)
        .take(copied.head)
        .read_to_end(&mut head)
        .map_err(read_back)?;

    let ready = ReadyMessage::parse(head.clone()).map_err(|e| {
        Failure::new(
            Exit::DataErr,
            anyhow!(e).context("standard input is not an email message"),
        )
        .hint("give a message with headers (From:, To:, Subject: ...), a blank line, then the body")
    })?;
    let aliases = load_aliases(&ctx)?;
    let prepared = take(ready, &inv, &resolved, aliases.as_ref())?;
    let new_head = &prepared.bytes;
    let size = new_head.len() as u64 + (copied.total - copied.head);
    if size > limit as u64 {
        return Err(providers::too_large(size, true, limit));
    }
    if *new_head != head {
        // The edited header section, then the body copied from the first file.
        let mut edited = outbox.begin().map_err(queue::outbox_failure)?;
        let written = edited
            .write_all(new_head)
            .and_then(|()| std::io::copy(&mut file, &mut edited));
        written.map_err(|e| {
            Failure::new(
                Exit::Config,
                anyhow!(e).context("cannot write the message to the outbox"),
            )
        })?;
        incoming = edited;
    }
    drop(file);
    let owner = Owner {
        account: resolved.account.clone(),
        provider: Some(resolved.provider.name().to_owned()),
        max_age_secs: queue::max_age_secs(),
        ..Owner::new(resolved.identity.clone())
    };
    let no_queue = apimail_account::no_queue();
    let if_not_sent = if no_queue {
        IfNotSent::Drop
    } else {
        IfNotSent::Keep
    };
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::standard()
    };
    // Accepted once committed (the outbox fsynced, or the store's
    // transaction done), still claimed: no other process's flush takes it
    // before this attempt at once.
    let delivery = engine
        .accept_and_deliver(
            incoming,
            prepared.entry(&owner),
            &resolved,
            &once,
            if_not_sent,
        )
        .await?;
    let id = delivery.id.clone();
    let reason = delivery
        .error
        .as_ref()
        .map(apimail_core::delivery::error_text)
        .unwrap_or_default();
    match delivery.settled {
        Settled::Sent(_) | Settled::VerifiedSent => {
            let selection = Selection {
                identity: Some(resolved.identity.clone()),
                deadline: Some(Instant::now() + queue::FLUSH_AFTER_SEND),
                ..Selection::default()
            };
            let _ = engine.flush(&selection).await;
            Ok(())
        }
        Settled::Dropped => Err(
            queue::not_sent(&resolved, &id, Settled::Dropped, delivery.error).note(
                "APIMAIL_NO_QUEUE is set, so the message was not queued; the caller must retry",
            ),
        ),
        Settled::Queued { uncertain, .. } => {
            let what = if uncertain {
                "queued (the provider may have accepted it; the next try checks or resends it with the same Message-ID)"
            } else {
                "queued"
            };
            say(&format!(
                "apimail: {id} {what}: {reason} (retried by `apimail queue flush` or the next send)"
            ));
            Ok(())
        }
        Settled::Held { uncertain: true } => {
            say(&format!(
                "apimail: {id} held: the provider may have accepted it ({reason}); check, then `apimail queue retry {id}` or `apimail queue drop {id}`"
            ));
            Ok(())
        }
        Settled::Held { .. } => {
            if resolved.login_fixes_auth {
                say(&format!(
                    "apimail: {id} held: {reason}; it goes out after `{}` (or `apimail queue retry {id}`)",
                    resolved.relogin
                ));
            } else {
                say(&format!(
                    "apimail: {id} held: {reason}; {}, then `apimail queue retry {id}`",
                    resolved.relogin
                ));
            }
            Ok(())
        }
        Settled::SettledElsewhere | Settled::Busy | Settled::ClaimLost => {
            say(&format!(
                "apimail: {id} is queued; another apimail process is sending it (`apimail log` shows the outcome)"
            ));
            Ok(())
        }
        settled @ (Settled::Failed | Settled::Interrupted) => {
            Err(queue::not_sent(&resolved, &id, settled, delivery.error))
        }
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// RFC 5322's limit on a line, without its CRLF.
const MAX_LINE: usize = 998;
/// The most of a body line held in memory at once.
const BODY_PIECE: u64 = 64 * 1024;

/// How much [`copy_message`] copied: the header section (through the
/// blank line that ends it) and the whole message, in bytes.
struct Copied {
    head: u64,
    total: u64,
}

/// Copies standard input into the outbox file, in bounded pieces: a header
/// line is at most [`MAX_LINE`] octets, a body line is copied
/// [`BODY_PIECE`] at a time, and reading stops once the message is over
/// `limit` (with room for the headers apimail adds). Without `-i`, a line
/// holding a single `.` ends the message, as in sendmail.
fn copy_message(out: &mut impl Write, ignore_dots: bool, limit: usize) -> Result<Copied, Failure> {
    let stdin = std::io::stdin();
    let mut reader = BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut line = Vec::with_capacity(1024);
    let mut total: u64 = 0;
    let mut head = None;
    let mut at_line_start = true;
    let mut header_lines = 0;
    loop {
        line.clear();
        let most = match head {
            None => MAX_LINE as u64 + 3,
            Some(_) => BODY_PIECE,
        };
        let n = (&mut reader)
            .take(most)
            .read_until(b'\n', &mut line)
            .map_err(|e| {
                Failure::new(
                    Exit::NoInput,
                    anyhow!(e).context("cannot read the message from standard input"),
                )
            })?;
        if n == 0 {
            break;
        }
        if at_line_start && !ignore_dots && matches!(line.as_slice(), b".\n" | b".\r\n" | b".") {
            break;
        }
        at_line_start = line.ends_with(b"\n");
        if head.is_none() {
            header_lines += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.len() > MAX_LINE {
                return Err(Failure::new(
                    Exit::DataErr,
                    anyhow!(
                        "header line {header_lines} is over {MAX_LINE} characters (RFC 5322's limit)"
                    ),
                )
                .note("nothing was queued")
                .hint("fold long header fields onto continuation lines, and end the headers with a blank line"));
            }
            if text.is_empty() {
                head = Some(total + n as u64);
            }
        }
        total += n as u64;
        if total > limit as u64 + 64 * 1024 {
            return Err(providers::too_large(total, false, limit));
        }
        out.write_all(&line).map_err(|e| {
            Failure::new(
                Exit::Config,
                anyhow!(e).context("cannot write the message to the outbox"),
            )
        })?;
    }
    Ok(Copied {
        head: head.unwrap_or(total),
        total,
    })
}

/// The aliases file, if one is configured or `/etc/aliases` exists.
struct AliasFile {
    path: std::path::PathBuf,
    aliases: Aliases,
}

fn load_aliases(ctx: &Context) -> Result<Option<AliasFile>, Failure> {
    let Some((path, required)) = ctx.config.aliases_path() else {
        return Ok(None);
    };
    let loaded = std::fs::read_to_string(&path)
        .map_err(|e| {
            Failure::new(
                Exit::Config,
                anyhow!(e).context(format!("cannot read the aliases file {}", path.display())),
            )
        })
        .and_then(|text| {
            Aliases::parse(&text).map_err(|e| {
                Failure::new(
                    Exit::Config,
                    anyhow!("the aliases file {} is not valid: {e}", path.display()),
                )
            })
        });
    match loaded {
        Ok(aliases) => Ok(Some(AliasFile { path, aliases })),
        Err(failure) if required => Err(failure.hint(format!(
            "fix {} (lines like `root: you@example.com`), or point APIMAIL_ALIASES or the config key `aliases` ({}) elsewhere",
            path.display(),
            ctx.config_path.display()
        ))),
        Err(failure) => {
            tracing::warn!("ignoring {}: {:#}", path.display(), failure.error);
            Ok(None)
        }
    }
}

/// The message through the one intake: recipients from the arguments
/// (and the headers with `-t`), a From from `-f`/`-F` when it has none,
/// Date and Message-ID when missing.
fn take(
    ready: ReadyMessage,
    inv: &Invocation,
    resolved: &Resolved,
    aliases: Option<&AliasFile>,
) -> Result<Prepared, Failure> {
    let source = if inv.read_recipients_from_headers {
        RecipientSource::HeadersAndEnvelope
    } else {
        RecipientSource::Envelope
    };
    let handover = Handover {
        recipients: &inv.recipients,
        source,
        aliases: aliases.map(|file| &file.aliases),
        envelope_from: inv.envelope_from.as_deref(),
        full_name: inv.full_name.as_deref(),
        account_address: resolved.address.as_deref(),
        policy: SenderPolicy::Any,
    };
    let prepared = intake::take(ready, &handover).map_err(|e| match e {
        IntakeError::Recipients(e) => recipient_failure(e, aliases),
        IntakeError::NoSender => {
            Failure::new(Exit::DataErr, anyhow!(e)).hint("add a From: header, or pass -f ADDR")
        }
        IntakeError::EnvelopeSender(e) => {
            Failure::new(Exit::DataErr, anyhow!("-f: {e}")).hint("give -f as name@example.com")
        }
        other => Failure::new(Exit::DataErr, anyhow!(other)),
    })?;
    if !prepared.plan.not_named().is_empty() {
        let names: Vec<&str> = prepared
            .plan
            .not_named()
            .iter()
            .map(Mailbox::email)
            .collect();
        tracing::warn!(
            "the message's headers also name {}; they receive it too (the HTTPS APIs read recipients from the headers)",
            names.join(", ")
        );
    }
    Ok(prepared)
}

fn recipient_failure(error: RecipientError, aliases: Option<&AliasFile>) -> Failure {
    let hint = match &error {
        RecipientError::Envelope(_) => {
            "give recipients as name@example.com, or a local name that has an alias".to_owned()
        }
        RecipientError::NoRecipients => {
            "name recipients as arguments, or in To:/Cc:/Bcc: headers with -t".to_owned()
        }
        RecipientError::Alias {
            source: ExpandError::Unknown { name, .. },
            ..
        } => match aliases {
            Some(file) => format!(
                "add a line `{name}: you@example.com` to {}, or name a full address (cron: set MAILTO)",
                file.path.display()
            ),
            None => format!(
                "write `{name}: you@example.com` into an aliases file and set APIMAIL_ALIASES=FILE (or `aliases = \"FILE\"` in the config), or name a full address (cron: set MAILTO)"
            ),
        },
        _ => {
            let path = aliases.map_or("the aliases file".into(), |f| f.path.display().to_string());
            let failure = Failure::new(Exit::Config, anyhow!(error));
            return failure.hint(format!(
                "fix {path}: every name must lead to addresses (no commands, files, includes or loops)"
            ));
        }
    };
    Failure::new(Exit::DataErr, anyhow!(error)).hint(hint)
}
