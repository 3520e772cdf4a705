//! `apimail send`: turn flags into a message, then print or send it.

use std::io::{IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::anyhow;
use apimail_core::delivery::{IfNotSent, Selection, Settled};
use apimail_core::intake::Owner;
use apimail_core::outbox::{NewEntry, OutboxError};
use apimail_core::retry::RetryPolicy;
use apimail_core::{Attachment, ComposeError, Composed, Mailbox, MessageBuilder, Receipt};
use tracing::info;

use crate::cli::SendArgs;
use crate::exit::{Exit, ExitContext, Failure};
use crate::limit::Limited;
use crate::outbox::QueueStore;
use crate::providers::{self, Context};
use crate::queue;

pub async fn run(ctx: Context, args: SendArgs, retry: RetryPolicy) -> Result<(), Failure> {
    if args.dry_run {
        let from = args.from.clone().or_else(|| dry_run_address(&ctx, &args));
        let message = builder(&args, from.as_deref(), None)?
            .build()
            .map_err(compose_failure)?;
        return match &args.output {
            Some(path) => write_file(path, message.as_bytes()),
            None => write_stdout(message.as_bytes()),
        };
    }
    let resolved = providers::resolve(
        &ctx,
        &providers::Flags {
            account: args.account.clone(),
            provider: args.provider,
        },
    )
    .await?;
    let from = args.from.clone().or_else(|| resolved.address.clone());
    // A store that does not answer fails here (75), before anything is composed.
    let engine = QueueStore::open(&ctx.config).await?.engine(&ctx)?;
    let staging = engine.staging()?;
    let limit = resolved.message_limit();
    let builder = builder(
        &args,
        from.as_deref(),
        Some(Budget::new(limit, staging.dir())),
    )?;

    // Composed straight into the outbox: from here on the message is never
    // lost, and it is never whole in memory. Over the limit, writing stops
    // and the unfinished file is removed.
    let mut incoming = staging.begin().map_err(queue::outbox_failure)?;
    let mut limited = Limited::new(&mut incoming, limit);
    let composed = match builder.write_to(&mut limited) {
        Ok(composed) => composed,
        Err(ComposeError::Write(e)) => {
            return Err(match limited.refused_at() {
                Some(reached) => providers::too_large(reached, false, limit),
                None => queue::outbox_failure(OutboxError::Write {
                    path: incoming.path().to_owned(),
                    source: e,
                }),
            });
        }
        Err(e) => return Err(compose_failure(e)),
    };
    let size = limited.written();
    let message_id = composed.message_id().to_owned();
    let meta = new_entry(&resolved, &composed);
    if args.queue {
        let id = engine.accept(incoming, meta).await?;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "queued as {id}; `apimail queue flush` (or the next send) sends it"
        );
        return Ok(());
    }
    if size > 1 << 20 {
        info!(
            "sending {:.1} MiB through {}",
            size as f64 / (1 << 20) as f64,
            resolved.label
        );
    }
    // Accepted once committed (the outbox fsynced, or the store's
    // transaction done), still claimed: no other process's flush takes it
    // before this attempt.
    let delivery = engine
        .accept_and_deliver(incoming, meta, &resolved, &retry, IfNotSent::Keep)
        .await?;
    let id = delivery.id.clone();
    let receipt = match delivery.settled {
        Settled::Sent(receipt) => Some(receipt),
        Settled::VerifiedSent => None,
        other => return Err(queue::not_sent(&resolved, &id, other, delivery.error)),
    };
    print_receipt(receipt.as_ref(), &message_id, &resolved, args.json)?;
    // Older messages of this sender leave with this one.
    let selection = Selection {
        identity: Some(resolved.identity.clone()),
        deadline: Some(Instant::now() + queue::FLUSH_AFTER_SEND),
        ..Selection::default()
    };
    if let Ok(report) = engine.flush(&selection).await
        && !report.is_empty()
    {
        queue::print_report(&report);
    }
    Ok(())
}

/// The outbox record of a composed message.
pub fn new_entry(resolved: &providers::Resolved, message: &Composed) -> NewEntry {
    let owner = Owner {
        account: resolved.account.clone(),
        provider: Some(resolved.provider.name().to_owned()),
        max_age_secs: queue::max_age_secs(),
        ..Owner::new(resolved.identity.clone())
    };
    let envelope = message.envelope();
    owner.entry(envelope.from(), envelope.recipients(), message.message_id())
}

/// The provider's limit, checked against the inputs before they are read
/// (files by their size, standard input as it arrives), so that an input
/// too large on its own is refused before it fills memory. What an input
/// adds is counted at its smallest encoded size: the bytes as they are
/// for `text/*`, base64 for anything else.
struct Budget<'a> {
    limit: usize,
    used: u64,
    /// Where standard input spills to disk (the outbox's folder).
    spool_dir: &'a Path,
}

impl<'a> Budget<'a> {
    fn new(limit: usize, spool_dir: &'a Path) -> Self {
        Budget {
            limit,
            used: 0,
            spool_dir,
        }
    }

    fn add(&mut self, bytes: u64) -> Result<(), Failure> {
        self.used += bytes;
        if self.used > self.limit as u64 {
            return Err(providers::too_large(self.used, false, self.limit));
        }
        Ok(())
    }

    fn add_file(&mut self, size: u64, mime: &str) -> Result<(), Failure> {
        if mime.starts_with("text/") {
            self.add(size)
        } else {
            self.add(size.div_ceil(3) * 4)
        }
    }
}

/// With --dry-run and no --from, the configured account's address, if any.
fn dry_run_address(ctx: &Context, args: &SendArgs) -> Option<String> {
    let name = ctx.config.selected_name(args.account.as_deref())?;
    ctx.config.accounts.get(&name)?.address().map(str::to_owned)
}

/// What was sent; without a receipt, an earlier attempt was found in the
/// mailbox as sent.
fn print_receipt(
    receipt: Option<&Receipt>,
    message_id: &str,
    resolved: &providers::Resolved,
    json: bool,
) -> Result<(), Failure> {
    let provider = resolved.provider.name();
    let text = if json {
        let value = serde_json::json!({
            "provider": provider,
            "sender": resolved.label,
            "id": receipt.and_then(|r| r.id.as_deref()),
            "thread_id": receipt.and_then(|r| r.thread_id.as_deref()),
            "message_id": message_id,
            "verified_earlier_attempt": receipt.is_none(),
        });
        format!("{value}\n")
    } else {
        let mut line = format!("sent through {provider} ({})", resolved.label);
        match receipt {
            None => line.push_str(&format!(
                ": an earlier attempt had gone through; the mailbox shows {} as sent",
                message_id
            )),
            Some(receipt) => {
                if let Some(id) = &receipt.id {
                    line.push_str(&format!(": message id {id}"));
                }
                if let Some(thread) = &receipt.thread_id {
                    line.push_str(&format!(", thread id {thread}"));
                }
            }
        }
        line + "\n"
    };
    write_stdout(text.as_bytes())
}

/// The message the flags describe, with its bodies and attachments read
/// (within `budget`, when given).
fn builder(
    args: &SendArgs,
    from: Option<&str>,
    mut budget: Option<Budget<'_>>,
) -> Result<MessageBuilder, Failure> {
    let Some(from) = from else {
        return Err(Failure::new(
            Exit::Usage,
            anyhow!("no sender: --from is missing and the account's address is unknown"),
        )
        .hint("add --from ADDR"));
    };
    let mut builder = MessageBuilder::new()
        .charset(args.charset.into())
        .from(mailbox("--from", from)?);
    if let Some(sender) = &args.sender {
        builder = builder.sender(mailbox("--sender", sender)?);
    }
    for to in &args.to {
        builder = builder.to(mailbox("--to", to)?);
    }
    for cc in &args.cc {
        builder = builder.cc(mailbox("--cc", cc)?);
    }
    for bcc in &args.bcc {
        builder = builder.bcc(mailbox("--bcc", bcc)?);
    }
    for reply_to in &args.reply_to {
        builder = builder.reply_to(mailbox("--reply-to", reply_to)?);
    }
    if let Some(subject) = &args.subject {
        builder = builder.subject(subject);
    }
    if let Some(id) = &args.message_id {
        builder = builder.message_id(id);
    }
    if let Some(id) = &args.in_reply_to {
        builder = builder.in_reply_to(id);
    }
    for id in &args.references {
        builder = builder.references(id);
    }
    if let Some(date) = source_date_epoch()? {
        builder = builder.date(date);
    }
    for header in &args.header {
        let Some((name, value)) = header.split_once(':') else {
            return Err(
                Failure::new(Exit::Usage, anyhow!("--header `{header}` has no `:`"))
                    .hint("write headers as --header 'X-Name: value'"),
            );
        };
        builder = builder.header(name.trim(), value.trim());
    }

    let html = args
        .html_file
        .as_deref()
        .map(|p| read_text("--html-file", p, budget.as_mut()))
        .transpose()?;
    let text = match (&args.text, &args.text_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(path)) => Some(read_text("--text-file", path, budget.as_mut())?),
        (None, None) if !std::io::stdin().is_terminal() => {
            let stdin = read_stdin(budget.as_mut())?;
            // An empty stdin (cron's /dev/null) adds nothing next to an HTML body.
            (!(stdin.is_empty() && html.is_some())).then_some(stdin)
        }
        (None, None) => None,
    };
    if let Some(text) = text {
        builder = builder.text(text);
    }
    if let Some(html) = html {
        builder = builder.html(html);
    }
    for spec in &args.attach {
        builder = builder.attach(attachment("--attach", spec, budget.as_mut())?);
    }
    for spec in &args.inline {
        builder = builder.inline(attachment("--inline", spec, budget.as_mut())?);
    }
    Ok(builder)
}

fn mailbox(flag: &str, value: &str) -> Result<Mailbox, Failure> {
    value.parse::<Mailbox>().map_err(|e| {
        Failure::new(Exit::DataErr, anyhow!("{flag}: {e}")).hint(format!(
            "give {flag} as name@example.com or 'Name <name@example.com>'"
        ))
    })
}

/// `PATH` or `PATH;type=MIME`. A file whose real name contains `;type=`
/// is taken whole.
fn attachment(flag: &str, spec: &str, budget: Option<&mut Budget>) -> Result<Attachment, Failure> {
    let (path, content_type) = match spec.rsplit_once(";type=") {
        Some((path, mime)) if !Path::new(spec).exists() => (path, Some(mime)),
        _ => (spec, None),
    };
    let path = Path::new(path);
    // Read when the message is written; a missing file is named now.
    std::fs::File::open(path).map_err(|e| read_failure(flag, path, e))?;
    let attachment = Attachment::from_path(path).map_err(compose_failure)?;
    let attachment = match content_type {
        Some(mime) => attachment.content_type(mime).map_err(compose_failure)?,
        None => attachment,
    };
    if let Some(budget) = budget {
        budget.add_file(attachment.len(), attachment.mime_type())?;
    }
    Ok(attachment)
}

fn file_size(flag: &str, path: &Path) -> Result<u64, Failure> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| read_failure(flag, path, e))
}

fn read_text(flag: &str, path: &Path, budget: Option<&mut Budget>) -> Result<String, Failure> {
    if let Some(budget) = budget {
        budget.add(file_size(flag, path)?)?;
    }
    let bytes = std::fs::read(path).map_err(|e| read_failure(flag, path, e))?;
    String::from_utf8(bytes).map_err(|_| {
        Failure::new(
            Exit::DataErr,
            anyhow!("{flag} `{}` is not UTF-8 text", path.display()),
        )
        .hint(format!(
            "convert it first, e.g. iconv -t UTF-8 {}",
            path.display()
        ))
    })
}

/// Standard input read whole; within a budget, counted as it arrives
/// and spilled to an unnamed file (gone when closed) past
/// [`STDIN_IN_MEMORY`], so too much input is refused having held little.
fn read_stdin(budget: Option<&mut Budget>) -> Result<String, Failure> {
    let read_error = |e: std::io::Error| {
        Failure::new(
            Exit::NoInput,
            anyhow!(e).context("cannot read the body from standard input"),
        )
    };
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    match budget {
        None => {
            stdin.read_to_end(&mut bytes).map_err(read_error)?;
        }
        Some(budget) => {
            let mut chunk = vec![0; 64 * 1024];
            let mut spool: Option<std::fs::File> = None;
            loop {
                let n = match stdin.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                };
                budget.add(n as u64)?;
                if spool.is_none() && bytes.len() + n > STDIN_IN_MEMORY {
                    let mut file = tempfile::tempfile_in(budget.spool_dir).map_err(spool_error)?;
                    file.write_all(&bytes).map_err(spool_error)?;
                    bytes = Vec::new();
                    spool = Some(file);
                }
                match &mut spool {
                    Some(file) => file.write_all(&chunk[..n]).map_err(spool_error)?,
                    None => bytes.extend_from_slice(&chunk[..n]),
                }
            }
            if let Some(mut file) = spool {
                let size = file.metadata().map_err(spool_error)?.len();
                bytes = Vec::with_capacity(size as usize);
                file.seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| file.read_to_end(&mut bytes))
                    .map_err(spool_error)?;
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        Failure::new(
            Exit::DataErr,
            anyhow!("the body on standard input is not UTF-8 text"),
        )
        .hint("convert it first, e.g. with iconv -t UTF-8, or attach it with --attach")
    })
}

/// Standard input up to this size stays in memory while it is read.
const STDIN_IN_MEMORY: usize = 1 << 20;

fn spool_error(e: std::io::Error) -> Failure {
    Failure::new(
        Exit::TempFail,
        anyhow!(e).context("cannot spool standard input next to the outbox"),
    )
    .hint("check the free space and permissions of the data directory (apimail doctor)")
}

fn read_failure(flag: &str, path: &Path, error: std::io::Error) -> Failure {
    let shown = path.display();
    let failure = match error.kind() {
        std::io::ErrorKind::NotFound => Failure::new(
            Exit::NoInput,
            anyhow!("{flag}: file `{shown}` does not exist"),
        ),
        std::io::ErrorKind::PermissionDenied => Failure::new(
            Exit::NoInput,
            anyhow!("{flag}: file `{shown}` is not readable (permission denied)"),
        ),
        _ => Failure::new(
            Exit::NoInput,
            anyhow!(error).context(format!("{flag}: cannot read `{shown}`")),
        ),
    };
    failure.hint("check the path; relative paths start from the current directory")
}

pub fn source_date_epoch() -> Result<Option<i64>, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| {
            Failure::new(
                Exit::Config,
                anyhow!("SOURCE_DATE_EPOCH `{value}` is not a number of seconds"),
            )
            .hint("set it to Unix seconds, e.g. SOURCE_DATE_EPOCH=1700000000, or unset it")
        }),
        Err(_) => Ok(None),
    }
}

/// Maps composer errors to exit codes and next steps.
fn compose_failure(error: ComposeError) -> Failure {
    let (exit, hint) = match &error {
        ComposeError::MissingFrom => (Exit::Usage, "add --from ADDR".to_owned()),
        ComposeError::NoRecipients => (
            Exit::Usage,
            "add at least one --to, --cc or --bcc".to_owned(),
        ),
        ComposeError::LineBreak { header } if header == "Subject" => (
            Exit::DataErr,
            "a subject is one line: remove the line break from --subject".to_owned(),
        ),
        ComposeError::LineBreak { header } => (
            Exit::DataErr,
            format!("remove the line break from the {header} value"),
        ),
        ComposeError::Address { .. } => (
            Exit::DataErr,
            "write addresses as name@example.com or 'Name <name@example.com>'".to_owned(),
        ),
        ComposeError::HeaderName { .. } => (
            Exit::Usage,
            "write headers as --header 'X-Name: value'".to_owned(),
        ),
        ComposeError::ReservedHeader { .. } => (
            Exit::Usage,
            "use the dedicated flag instead (--from, --to, --subject, --message-id, ...)"
                .to_owned(),
        ),
        ComposeError::MessageId { .. } => (
            Exit::DataErr,
            "a message id looks like <unique-part@example.com>".to_owned(),
        ),
        ComposeError::Unrepresentable { .. } => (
            Exit::DataErr,
            "use --charset utf-8, or replace that character".to_owned(),
        ),
        ComposeError::InlineWithoutHtml { name } => (
            Exit::Usage,
            format!(
                "add --html-file with an HTML body that shows it, e.g. <img src=\"cid:{name}\">"
            ),
        ),
        ComposeError::ContentType { .. } => (
            Exit::Usage,
            "write the type as type/subtype, e.g. 'file.bin;type=application/pdf'".to_owned(),
        ),
        ComposeError::Attachment { .. } => (
            Exit::NoInput,
            "check the path; relative paths start from the current directory".to_owned(),
        ),
        _ => (
            Exit::DataErr,
            "check the message's headers and parts".to_owned(),
        ),
    };
    Failure::new(exit, error).hint(hint)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // The reader went away (e.g. `| head`): not our failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.exit(Exit::Software),
    }
}

fn write_file(path: &PathBuf, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context(format!("cannot write `{}`", path.display())),
        )
        .hint("check that the folder exists and is writable")
    })?;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "wrote {} bytes to {} (dry run: nothing was sent)",
        bytes.len(),
        path.display()
    );
    Ok(())
}
