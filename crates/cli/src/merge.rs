//! `apimail merge`: flags → `apimail_merge` (data, template, checks,
//! record), then a summary and previews, or the sends, each through the
//! outbox and the delivery engine, paced by the account's `Pace`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use apimail_core::delivery::{IfNotSent, Settled};
use apimail_core::journal::{Filter, Outcome};
use apimail_core::outbox::{Entry, EntryId};
use apimail_core::retry::RetryPolicy;
use apimail_core::{Mailbox, MessageBuilder, Pace, Transport, now_unix};
use apimail_merge::report;
use apimail_merge::{Encoding, Plan, Planned, RowState, State, Status, Table, Template};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::cli::{DataEncoding, MergeArgs, MergeCommand};
use crate::exit::{Exit, Failure};
use crate::providers::{self, Context, Resolved};
use crate::{queue, send};

const DAY: i64 = 86_400;

pub async fn run(ctx: Context, args: MergeArgs, retry: RetryPolicy) -> Result<(), Failure> {
    if let Some(MergeCommand::Status { name, report }) = &args.command {
        return status(name, report.as_deref());
    }
    let (Some(data), Some(template)) = (&args.data, &args.template) else {
        return Err(Failure::new(
            Exit::Usage,
            anyhow!("--data and --template are both needed"),
        )
        .hint("see `apimail merge --help`"));
    };
    let encoding = match args.data_encoding {
        DataEncoding::Utf8 => Encoding::Utf8,
        DataEncoding::Cp932 => Encoding::Cp932,
    };
    let table = apimail_merge::load(data, encoding).map_err(data_failure)?;
    let template = Template::load(template).map_err(|e| {
        Failure::new(Exit::DataErr, e).hint("see `apimail merge --help` for the template's keys")
    })?;
    let name = merge_name(&args)?;
    let flags = providers::Flags {
        account: args.account.clone(),
        provider: None,
    };
    // A dry run works without an account; it then estimates nothing.
    let resolved = if args.send || args.test_to.is_some() {
        Some(providers::resolve(&ctx, &flags).await?)
    } else {
        providers::resolve(&ctx, &flags).await.ok()
    };
    let default_from = resolved
        .as_ref()
        .and_then(|r| r.address.clone())
        .or_else(|| {
            let account = ctx.config.selected_name(args.account.as_deref())?;
            ctx.config
                .accounts
                .get(&account)?
                .address()
                .map(str::to_owned)
        });
    let options = apimail_merge::Options {
        name: name.clone(),
        id_column: args.id_column.clone(),
        default_from,
        date: send::source_date_epoch()?,
    };
    let plan = apimail_merge::check(&table, &template, &options).map_err(|e| {
        let hint = match &e {
            apimail_merge::PlanError::NoFrom => {
                "add `from = \"Name <you@example.com>\"` to the template"
            }
            apimail_merge::PlanError::UnknownIdColumn { .. } => {
                "give --id-column one of the header's names"
            }
            apimail_merge::PlanError::UnknownFields { .. } => {
                "fix the spelling in the template, or add the column to the data's header row"
            }
        };
        Failure::new(Exit::DataErr, e).hint(hint)
    })?;
    let state_dir = queue::data_dir()?.join("merge");
    let pace = resolved.as_ref().map(|r| paced(r.pace(), args.per_minute));

    if let Some(resolved) = resolved.as_ref().filter(|_| args.send) {
        refuse_invalid(&plan, &args)?;
        let mut state = State::open(&state_dir, &name).map_err(state_failure)?;
        print_summary(
            &name,
            &args,
            &plan,
            Some(&state),
            pace,
            &resolved_label(resolved),
        );
        let outcome = send_all(&ctx, resolved, &retry, &plan, &mut state, &args).await?;
        if let Some(path) = &args.report {
            write_report(path, &table, &plan, Some(&state))?;
        }
        return outcome.finish(&name);
    }

    let previous = State::read(&state_dir, &name).map_err(state_failure)?;
    let known = previous.map(|rows| {
        rows.into_iter()
            .map(|r| (r.key.clone(), r))
            .collect::<HashMap<_, _>>()
    });
    if let (Some(test_to), Some(resolved)) = (&args.test_to, &resolved) {
        refuse_invalid(&plan, &args)?;
        return send_tests(&ctx, resolved, &retry, &plan, test_to, args.preview).await;
    }
    let label = resolved.as_ref().map(resolved_label).unwrap_or_default();
    print_summary_known(&name, &args, &plan, known.as_ref(), pace, &label);
    write_previews(&name, &args, &plan)?;
    if let Some(path) = &args.report {
        write_report_known(path, &table, &plan, known.as_ref())?;
    }
    if !plan.errors.is_empty() && !args.skip_invalid {
        return Err(invalid_failure(&plan));
    }
    Ok(())
}

/// `apimail merge status NAME`: the record's counts, and its rows as CSV.
fn status(name: &str, report: Option<&Path>) -> Result<(), Failure> {
    let dir = queue::data_dir()?.join("merge");
    let Some(rows) = State::read(&dir, name).map_err(state_failure)? else {
        return Err(
            Failure::new(Exit::NoInput, anyhow!("no merge `{name}` has run here")).hint(
                "its name is the data file's name without the extension, unless --name gave one",
            ),
        );
    };
    let count = |status: Status| rows.iter().filter(|r| r.status == status).count();
    let uncertain = rows.iter().filter(|r| r.uncertain).count();
    let last = rows.iter().map(|r| r.at).max().unwrap_or(0);
    out(&format!(
        "merge `{name}`: {} rows recorded, last change {}\n  sent:     {}{}\n  queued:   {}\n  held:     {}\n  failed:   {}\n  unfinished (accepting): {}\n",
        rows.len(),
        apimail_core::journal::rfc3339(last),
        count(Status::Sent),
        if uncertain > 0 {
            format!(" ({uncertain} possibly twice, after an attempt a kill cut off)")
        } else {
            String::new()
        },
        count(Status::Queued),
        count(Status::Held),
        count(Status::Failed),
        count(Status::Accepting),
    ));
    let Some(path) = report else { return Ok(()) };
    let failure = |e: anyhow::Error| {
        Failure::new(
            Exit::Config,
            e.context(format!("cannot write the report `{}`", path.display())),
        )
        .hint("check that the folder exists and is writable")
    };
    let file = std::fs::File::create(path).map_err(|e| failure(e.into()))?;
    report::write_state(std::io::BufWriter::new(file), &rows).map_err(|e| failure(e.into()))?;
    err(&format!("wrote the report to {}", path.display()));
    Ok(())
}

fn resolved_label(resolved: &Resolved) -> String {
    format!("{}, {}", resolved.provider.name(), resolved.label)
}

/// The provider's pace, slowed to `--per-minute` when given.
fn paced(pace: Pace, per_minute: Option<u32>) -> Pace {
    match per_minute {
        Some(n) => Pace {
            per_minute: n.min(pace.per_minute),
            ..pace
        },
        None => pace,
    }
}

fn merge_name(args: &MergeArgs) -> Result<String, Failure> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .data
            .as_deref()
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !State::valid_name(&name) {
        return Err(Failure::new(
            Exit::Usage,
            anyhow!("`{name}` cannot name a merge: only letters, digits, `.`, `-` and `_`"),
        )
        .hint("give one with --name, e.g. --name invoices-2026-12"));
    }
    Ok(name)
}

fn data_failure(error: apimail_merge::DataError) -> Failure {
    use apimail_merge::DataError;
    let (exit, hint) = match &error {
        DataError::Read { .. } => (Exit::NoInput, "check the path given to --data".to_owned()),
        DataError::Encoding { encoding, .. } if encoding.starts_with("UTF") => (
            Exit::DataErr,
            "a CSV saved by Excel in Japan is CP932: add --data-encoding cp932".to_owned(),
        ),
        DataError::Encoding { .. } => (
            Exit::DataErr,
            "save it as UTF-8 and leave out --data-encoding".to_owned(),
        ),
        _ => (
            Exit::DataErr,
            "the first row names the fields; each further row is one message".to_owned(),
        ),
    };
    Failure::new(exit, error).hint(hint)
}

fn state_failure(error: apimail_merge::StateError) -> Failure {
    match &error {
        apimail_merge::StateError::Busy(_) => Failure::new(Exit::TempFail, error)
            .hint("wait for it to finish, or give this one another --name"),
        apimail_merge::StateError::Name(_) => Failure::new(Exit::Usage, error)
            .hint("give one with --name, e.g. --name invoices-2026-12"),
        apimail_merge::StateError::Io { .. } => Failure::new(Exit::Config, error)
            .hint("check the data directory's permissions and free space (apimail doctor)"),
    }
}

fn invalid_failure(plan: &Plan) -> Failure {
    Failure::new(
        Exit::DataErr,
        anyhow!(
            "{} of {} rows cannot be sent (listed above); nothing was sent",
            plan.errors.len(),
            plan.rows()
        ),
    )
    .hint("fix those rows, or add --skip-invalid to send the others")
}

fn refuse_invalid(plan: &Plan, args: &MergeArgs) -> Result<(), Failure> {
    if plan.errors.is_empty() || args.skip_invalid {
        return Ok(());
    }
    print_errors(plan);
    Err(invalid_failure(plan))
}

fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn print_errors(plan: &Plan) {
    let mut text = String::new();
    for error in &plan.errors {
        text.push_str(&format!(
            "  row {}{}: {}\n",
            error.row,
            error
                .key
                .as_deref()
                .filter(|k| !k.starts_with("row-"))
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            error.message
        ));
    }
    if !text.is_empty() {
        err(&format!("errors:\n{}", text.trim_end()));
    }
}

fn print_summary(
    name: &str,
    args: &MergeArgs,
    plan: &Plan,
    state: Option<&State>,
    pace: Option<Pace>,
    label: &str,
) {
    let known = state.map(|s| s.rows().map(|r| (r.key.clone(), r.clone())).collect());
    print_summary_known(name, args, plan, known.as_ref(), pace, label);
}

fn print_summary_known(
    name: &str,
    args: &MergeArgs,
    plan: &Plan,
    known: Option<&HashMap<String, RowState>>,
    pace: Option<Pace>,
    label: &str,
) {
    let status = |p: &Planned| known.and_then(|k| k.get(&p.key)).map(|r| r.status);
    let sent = plan
        .messages
        .iter()
        .filter(|p| status(p) == Some(Status::Sent))
        .count();
    let failed = plan
        .messages
        .iter()
        .filter(|p| status(p) == Some(Status::Failed))
        .count();
    let to_send = plan.messages.len() - sent - if args.resend_failed { 0 } else { failed };
    let mut text = format!(
        "merge `{name}` ({}, {} rows)\n  ready:       {}\n  with errors: {}\n  recipients:  {}\n  total size:  {}\n",
        args.data.as_deref().unwrap_or(Path::new("")).display(),
        plan.rows(),
        plan.messages.len(),
        plan.errors.len(),
        plan.recipients(),
        size(plan.total_size()),
    );
    if known.is_some() {
        text.push_str(&format!(
            "  sent before: {sent} (skipped)\n  failed before: {failed}{}\n",
            if failed > 0 && !args.resend_failed {
                " (--resend-failed sends them again)"
            } else {
                ""
            }
        ));
    }
    match pace {
        Some(pace) => {
            let in_window = known.map_or(0, |k| {
                k.values()
                    .filter(|r| r.status == Status::Sent && r.at >= now_unix() - DAY)
                    .count()
            });
            let estimate = apimail_merge::estimate(to_send, pace, args.daily_limit, in_window);
            text.push_str(&format!(
                "  to send:     {to_send}, {} ({label})\n",
                estimate.describe()
            ));
        }
        None => text.push_str(&format!(
            "  to send:     {to_send} (no account: no time estimate; see `apimail auth status`)\n"
        )),
    }
    out(&text);
    print_errors(plan);
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// The dry run's `.eml` files: the first `--preview` good rows.
fn write_previews(name: &str, args: &MergeArgs, plan: &Plan) -> Result<(), Failure> {
    if args.preview == 0 || plan.messages.is_empty() {
        err("dry run: nothing was sent; add --send to send");
        return Ok(());
    }
    let dir = args
        .preview_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}-preview")));
    let failure = |e: std::io::Error, path: &Path| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context(format!("cannot write `{}`", path.display())),
        )
        .hint("check that the folder is writable, or choose another with --preview-dir")
    };
    std::fs::create_dir_all(&dir).map_err(|e| failure(e, &dir))?;
    let mut written = 0;
    for planned in plan.messages.iter().take(args.preview) {
        let message = planned
            .builder()
            .and_then(MessageBuilder::build)
            .map_err(|e| Failure::new(Exit::DataErr, anyhow!("row {}: {e}", planned.row)))?;
        let path = dir.join(format!("row-{}.eml", planned.row));
        std::fs::write(&path, message.as_bytes()).map_err(|e| failure(e, &path))?;
        written += 1;
    }
    err(&format!(
        "wrote {written} preview(s) to {} (dry run: nothing was sent; add --send to send)",
        dir.display()
    ));
    Ok(())
}

fn write_report(
    path: &Path,
    table: &Table,
    plan: &Plan,
    state: Option<&State>,
) -> Result<(), Failure> {
    let known = state.map(|s| s.rows().map(|r| (r.key.clone(), r.clone())).collect());
    write_report_known(path, table, plan, known.as_ref())
}

fn write_report_known(
    path: &Path,
    table: &Table,
    plan: &Plan,
    known: Option<&HashMap<String, RowState>>,
) -> Result<(), Failure> {
    let by_row: HashMap<usize, &Planned> = plan.messages.iter().map(|p| (p.row, p)).collect();
    let errors: HashMap<usize, &str> = plan
        .errors
        .iter()
        .map(|e| (e.row, e.message.as_str()))
        .collect();
    let outcome = |row: usize| -> report::Outcome {
        if let Some(error) = errors.get(&row) {
            return report::Outcome {
                status: "invalid".into(),
                error: (*error).to_owned(),
                ..Default::default()
            };
        }
        let Some(planned) = by_row.get(&row) else {
            return report::Outcome::default();
        };
        let state = known.and_then(|k| k.get(&planned.key));
        report::Outcome {
            status: state.map_or("not sent", |s| s.status.as_str()).to_owned(),
            message_id: planned.message_id.clone(),
            error: state.and_then(|s| s.error.clone()).unwrap_or_default(),
        }
    };
    let file = std::fs::File::create(path).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context(format!("cannot write the report `{}`", path.display())),
        )
        .hint("check that the folder exists and is writable")
    })?;
    report::write(std::io::BufWriter::new(file), table, false, outcome).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context(format!("cannot write the report `{}`", path.display())),
        )
        .hint("check the free space")
    })?;
    err(&format!("wrote the report to {}", path.display()));
    Ok(())
}

/// `--test-to`: the first N messages to one address, with Message-IDs of
/// their own, through the outbox like any send; the merge's record is left
/// alone.
async fn send_tests(
    ctx: &Context,
    resolved: &Resolved,
    retry: &RetryPolicy,
    plan: &Plan,
    test_to: &str,
    count: usize,
) -> Result<(), Failure> {
    let address: Mailbox = test_to.parse().map_err(|e| {
        Failure::new(Exit::DataErr, anyhow!("--test-to: {e}")).hint("give it as you@example.com")
    })?;
    let engine = queue::engine(ctx)?;
    for planned in plan.messages.iter().take(count.max(1)) {
        let builder = planned
            .test_builder(&address)
            .map_err(|e| Failure::new(Exit::DataErr, anyhow!("row {}: {e}", planned.row)))?;
        let id = compose_into(&engine, resolved, builder, planned.row)?;
        let delivery = engine
            .deliver(&id, resolved, retry, IfNotSent::Keep)
            .await
            .map_err(queue::outbox_failure)?;
        match delivery.settled {
            Settled::Sent(_) | Settled::VerifiedSent => {
                err(&format!("row {}: sent to {address} (test)", planned.row))
            }
            other => return Err(queue::not_sent(resolved, &id, other, delivery.error)),
        }
    }
    Ok(())
}

type MergeEngine<'a> = apimail_core::delivery::Engine<providers::ConfiguredSenders<'a>>;

/// Composes a message straight into the outbox.
fn compose_into(
    engine: &MergeEngine<'_>,
    resolved: &Resolved,
    builder: MessageBuilder,
    row: usize,
) -> Result<EntryId, Failure> {
    let mut incoming = engine.outbox().begin().map_err(queue::outbox_failure)?;
    let composed = builder
        .write_to(&mut incoming)
        .map_err(|e| Failure::new(Exit::DataErr, anyhow!("row {row}: {e}")))?;
    incoming
        .commit(send::new_entry(resolved, &composed))
        .map_err(queue::outbox_failure)
}

/// What the sends came to.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    skipped: usize,
    queued: usize,
    held: usize,
    failed: usize,
    uncertain: usize,
    waiting: usize,
    interrupted: bool,
    /// When the daily window opens again, if it closed.
    window_opens: Option<i64>,
}

impl Tally {
    fn line(&self, total: usize) -> String {
        format!(
            "sent {}, skipped {}, queued {}, held {}, failed {} of {total}",
            self.sent, self.skipped, self.queued, self.held, self.failed
        )
    }

    fn finish(self, name: &str) -> Result<(), Failure> {
        let mut text = format!(
            "merge `{name}`: sent {}, skipped (sent before) {}, queued {}, held {}, failed {}\n",
            self.sent, self.skipped, self.queued, self.held, self.failed
        );
        if self.uncertain > 0 {
            text.push_str(&format!(
                "  {} sent again after an attempt a crash cut off (same Message-ID; recorded as uncertain)\n",
                self.uncertain
            ));
        }
        if self.waiting > 0 {
            let when = self
                .window_opens
                .map(apimail_core::journal::rfc3339)
                .unwrap_or_default();
            text.push_str(&format!(
                "  {} wait for the next daily window (after {when}): run the same command again then\n",
                self.waiting
            ));
        }
        out(&text);
        if self.interrupted {
            return Err(
                Failure::new(Exit::TempFail, anyhow!("the merge was interrupted"))
                    .hint("run the same command again: it sends only the rows not yet sent"),
            );
        }
        if self.failed > 0 {
            return Err(Failure::new(
                Exit::Unavailable,
                anyhow!("{} row(s) failed", self.failed),
            )
            .hint("see --report FILE for each row's error; fix them and run again with --resend-failed"));
        }
        if self.waiting > 0 {
            return Err(Failure::new(
                Exit::TempFail,
                anyhow!("the daily limit is reached; {} row(s) wait", self.waiting),
            )
            .hint("run the same command again once the window opens: it sends only the rows not yet sent"));
        }
        if self.queued + self.held > 0 {
            return Err(Failure::new(
                Exit::TempFail,
                anyhow!("{} row(s) are still in the outbox", self.queued + self.held),
            )
            .hint("run the same command again later (or `apimail queue flush`); `apimail queue list` shows why"));
        }
        Ok(())
    }
}

/// What one row came to.
enum RowDone {
    Skipped,
    Settled(Status, bool),
    Interrupted,
}

/// One `--send` run: the engine, the record, and where earlier runs left
/// each row's message.
struct Run<'a> {
    engine: MergeEngine<'a>,
    resolved: &'a Resolved,
    retry: &'a RetryPolicy,
    state: RefCell<&'a mut State>,
    in_outbox: HashMap<String, Entry>,
    resend_failed: bool,
    journal_sent: RefCell<Option<HashSet<String>>>,
    config: &'a apimail_account::Config,
}

async fn send_all(
    ctx: &Context,
    resolved: &Resolved,
    retry: &RetryPolicy,
    plan: &Plan,
    state: &mut State,
    args: &MergeArgs,
) -> Result<Tally, Failure> {
    let engine = queue::engine(ctx)?;
    let mut in_outbox: HashMap<String, Entry> = HashMap::new();
    let listed = engine
        .outbox()
        .list()
        .and_then(|mut queued| {
            queued.extend(engine.outbox().list_failed()?);
            Ok(queued)
        })
        .map_err(queue::outbox_failure)?;
    for entry in listed {
        if entry.message_id.starts_with("<merge.") {
            in_outbox.insert(entry.message_id.clone(), entry);
        }
    }
    let pace = paced(resolved.pace(), args.per_minute);
    let concurrency = pace.concurrency.clamp(1, 8);
    let interval = pace.interval();
    let run = Run {
        engine,
        resolved,
        retry,
        state: RefCell::new(state),
        in_outbox,
        resend_failed: args.resend_failed,
        journal_sent: RefCell::new(None),
        config: &ctx.config,
    };

    let total = plan.messages.len();
    let progress = Progress::new(total);
    let mut tally = Tally::default();
    let mut rows = plan.messages.iter();
    let mut inflight = FuturesUnordered::new();
    let mut next_start = tokio::time::Instant::now();
    let interrupt = queue::signal();
    tokio::pin!(interrupt);
    let mut stopping = false;
    let mut pending: Option<&Planned> = None;
    loop {
        // Start rows while the pace allows.
        while !stopping && inflight.len() < concurrency {
            let Some(planned) = pending.take().or_else(|| rows.next()) else {
                break;
            };
            if !run.needs_send(planned) {
                tally.skipped += 1;
                progress.set(&tally, total);
                continue;
            }
            if let Some(limit) = args.daily_limit {
                let since = now_unix() - DAY;
                let used = run.state.borrow().sent_since(since) + inflight.len();
                if used >= limit as usize {
                    tally.waiting = 1 + rows.len();
                    tally.window_opens = run
                        .state
                        .borrow()
                        .rows()
                        .filter(|r| r.status == Status::Sent && r.at >= since)
                        .map(|r| r.at + DAY)
                        .min();
                    stopping = true;
                    break;
                }
            }
            if tokio::time::Instant::now() < next_start {
                pending = Some(planned);
                break;
            }
            next_start = tokio::time::Instant::now().max(next_start) + interval;
            inflight.push(run.row(planned));
        }
        if inflight.is_empty() && (stopping || (pending.is_none() && rows.len() == 0)) {
            break;
        }
        tokio::select! {
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                match done? {
                    RowDone::Skipped => tally.skipped += 1,
                    RowDone::Interrupted => {
                        tally.interrupted = true;
                        stopping = true;
                    }
                    RowDone::Settled(status, uncertain) => {
                        tally.uncertain += usize::from(uncertain);
                        match status {
                            Status::Sent => tally.sent += 1,
                            Status::Queued | Status::Accepting => tally.queued += 1,
                            Status::Held => tally.held += 1,
                            Status::Failed => tally.failed += 1,
                        }
                    }
                }
                progress.set(&tally, total);
            }
            _ = tokio::time::sleep_until(next_start), if pending.is_some() && !stopping => {}
            _ = &mut interrupt, if !stopping => {
                // Attempts under way are cut short by the engine's own
                // interrupt; no new row starts.
                tally.interrupted = true;
                stopping = true;
            }
        }
    }
    progress.done();
    Ok(tally)
}

impl Run<'_> {
    /// Whether the row still has to go (not sent before, not failed before
    /// unless --resend-failed).
    fn needs_send(&self, planned: &Planned) -> bool {
        match self.state.borrow().get(&planned.key).map(|r| r.status) {
            Some(Status::Sent) => false,
            Some(Status::Failed) => self.resend_failed,
            _ => true,
        }
    }

    fn record(
        &self,
        planned: &Planned,
        status: Status,
        entry: Option<&EntryId>,
        uncertain: bool,
        error: Option<String>,
    ) -> Result<(), Failure> {
        self.state
            .borrow_mut()
            .record(RowState {
                at: now_unix(),
                row: planned.row,
                key: planned.key.clone(),
                message_id: planned.message_id.clone(),
                status,
                entry: entry.map(|e| e.as_str().to_owned()),
                uncertain,
                error,
            })
            .map_err(state_failure)
    }

    /// Whether the journal shows `message_id` as sent (read once a run).
    fn journal_shows_sent(&self, message_id: &str) -> bool {
        let mut cache = self.journal_sent.borrow_mut();
        let sent = cache.get_or_insert_with(|| {
            let mut sent = HashSet::new();
            let filter = Filter {
                outcomes: vec![Outcome::Sent, Outcome::VerifiedSent],
                ..Filter::default()
            };
            if let Ok(journal) = queue::open_journal(self.config)
                && let Ok(records) = journal.read(&filter)
            {
                for record in records.flatten() {
                    sent.insert(record.message_id);
                }
            }
            sent
        });
        sent.contains(message_id)
    }

    /// One row: find its message where an earlier run left it, or compose
    /// it into the outbox; then deliver it through the engine.
    async fn row(&self, planned: &Planned) -> Result<RowDone, Failure> {
        let prior = self.state.borrow().get(&planned.key).cloned();
        let id = match self.in_outbox.get(&planned.message_id) {
            Some(entry) if entry.is_failed() && !self.resend_failed => {
                let error = entry.failed_reason.clone().or(entry.last_error.clone());
                self.record(planned, Status::Failed, Some(&entry.id), false, error)?;
                return Ok(RowDone::Settled(Status::Failed, false));
            }
            // Waiting out a provider's Retry-After: left for a later run.
            Some(entry)
                if !entry.is_failed()
                    && entry.state == apimail_core::outbox::EntryState::Queued
                    && !entry.is_due(now_unix()) =>
            {
                return Ok(RowDone::Settled(Status::Queued, false));
            }
            Some(entry) => {
                if entry.is_failed() {
                    self.engine
                        .outbox()
                        .retry(entry.id.as_str())
                        .map_err(queue::outbox_failure)?;
                }
                entry.id.clone()
            }
            None => {
                let earlier = prior.as_ref().map(|p| p.status);
                // An entry leaves the outbox only once the provider took it
                // (a failed one stays in failed/, listed above), so a row
                // whose entry is gone was sent: the kill came before its
                // record said so. A row about to be accepted was sent only if
                // the journal says so; else its commit never happened.
                let sent = match earlier {
                    Some(Status::Queued | Status::Held) => true,
                    Some(Status::Accepting) => self.journal_shows_sent(&planned.message_id),
                    _ => false,
                };
                if sent {
                    self.record(planned, Status::Sent, None, false, None)?;
                    return Ok(RowDone::Skipped);
                }
                // Written down first: a crash after the commit finds the
                // entry by its Message-ID next time.
                self.record(planned, Status::Accepting, None, false, None)?;
                let builder = planned.builder().map_err(|e| {
                    Failure::new(Exit::DataErr, anyhow!("row {}: {e}", planned.row))
                })?;
                let id = compose_into(&self.engine, self.resolved, builder, planned.row)?;
                self.record(planned, Status::Queued, Some(&id), false, None)?;
                id
            }
        };
        let delivery = self
            .engine
            .deliver(&id, self.resolved, self.retry, IfNotSent::Keep)
            .await
            .map_err(queue::outbox_failure)?;
        let error = delivery
            .error
            .as_ref()
            .map(apimail_core::delivery::error_text)
            .or(delivery.unresolved.clone());
        let uncertain = delivery.possible_duplicate;
        let status = match delivery.settled {
            Settled::Sent(_) | Settled::VerifiedSent => Status::Sent,
            Settled::Queued { .. } => Status::Queued,
            Settled::Held { .. } => Status::Held,
            Settled::Failed => Status::Failed,
            Settled::Interrupted => return Ok(RowDone::Interrupted),
            // Settled by another process: the next run reads the outcome.
            Settled::SettledElsewhere | Settled::Busy | Settled::Dropped | Settled::ClaimLost => {
                return Ok(RowDone::Settled(Status::Queued, false));
            }
        };
        if status == Status::Failed {
            progress_line(&format!(
                "row {}: failed: {}",
                planned.row,
                error.as_deref().unwrap_or("refused")
            ));
        }
        self.record(planned, status, Some(&id), uncertain, error)?;
        Ok(RowDone::Settled(status, uncertain))
    }
}

fn progress_line(text: &str) {
    err(text);
}

/// A progress bar on a terminal; plain lines every tenth otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    step: usize,
    last: std::cell::Cell<usize>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} (done in {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            step: (total / 10).max(1),
            last: std::cell::Cell::new(0),
        }
    }

    fn set(&self, tally: &Tally, total: usize) {
        let done = tally.sent + tally.skipped + tally.queued + tally.held + tally.failed;
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(format!(
                    "sent {}, queued {}, failed {}",
                    tally.sent,
                    tally.queued + tally.held,
                    tally.failed
                ));
            }
            None if done >= self.last.get() + self.step => {
                self.last.set(done);
                err(&tally.line(total));
            }
            None => {}
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_only_slows_the_pace() {
        let pace = Pace {
            concurrency: 4,
            per_minute: 150,
        };
        assert_eq!(paced(pace, Some(30)).per_minute, 30);
        assert_eq!(paced(pace, Some(500)).per_minute, 150);
        assert_eq!(paced(pace, None), pace);
    }
}
