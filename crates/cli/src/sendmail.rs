//! apimail as sendmail: one message on standard input, streamed into the
//! outbox, then sent at once; what cannot go yet waits in the queue.

use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

use anyhow::anyhow;
use apimail_core::outbox::NewEntry;
use apimail_core::{Mailbox, ReadyMessage, now_unix};

use crate::exit::{Exit, Failure};
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
        Mode::ListQueue => queue::list(&queue::open_outbox()?),
        Mode::FlushQueue => {
            let ctx = Context::load(config_flag)?;
            let report = queue::flush(&ctx, &queue::open_outbox()?, None, false, None).await?;
            report.print();
            Ok(())
        }
        Mode::Deliver => deliver(config_flag, invocation).await,
    }
}

async fn deliver(config_flag: Option<&std::path::Path>, inv: Invocation) -> Result<(), Failure> {
    let ctx = Context::load(config_flag)?;
    // Callers cannot pass --account: $APIMAIL_ACCOUNT, else the default.
    let resolved = providers::resolve(&ctx, None, None).await.map_err(|failure| {
        if failure.exit == Exit::Config {
            failure.hint("run `apimail auth login gmail --client-secret FILE` (or `auth login graph`), or set APIMAIL_ACCOUNT")
        } else {
            failure
        }
    })?;
    let outbox = queue::open_outbox()?;

    // Stream standard input to disk: memory does not grow with the message.
    let mut incoming = outbox.begin().map_err(queue::outbox_failure)?;
    let limit = max_message_bytes(&resolved);
    let size = copy_message(&mut incoming, inv.ignore_dots, limit)?;
    incoming.flush().map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context("cannot write the message to the outbox"),
        )
    })?;
    let original = std::fs::read(incoming.path()).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context("cannot read back the queued message"),
        )
    })?;
    debug_assert_eq!(original.len() as u64, size);

    let mut ready = ReadyMessage::parse(original).map_err(|e| {
        Failure::new(
            Exit::DataErr,
            anyhow!(e).context("standard input is not an email message"),
        )
        .hint("give a message with headers (From:, To:, Subject: ...), a blank line, then the body")
    })?;
    let plan = plan(&ready, &inv, &resolved)?;
    if plan.add_from.is_some() {
        ready.remove_header("From");
    }
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    let bytes = finish_message(ready, &plan);
    if bytes.len() > limit {
        return Err(too_large(bytes.len(), limit));
    }
    incoming
        .replace_contents(&bytes)
        .map_err(queue::outbox_failure)?;
    let id = incoming
        .commit(NewEntry {
            account: resolved.account.clone(),
            provider: Some(resolved.provider.name().to_owned()),
            from: plan.from.email().to_owned(),
            recipients: plan
                .recipients
                .iter()
                .map(|m| m.email().to_owned())
                .collect(),
            message_id: plan.message_id.clone(),
            max_age_secs: queue::max_age_secs(),
        })
        .map_err(queue::outbox_failure)?;
    // Accepted: durable in the outbox. Now try to send it at once.
    let Some(claim) = outbox.claim(&id).map_err(queue::outbox_failure)? else {
        return Ok(());
    };
    let no_queue = std::env::var("APIMAIL_NO_QUEUE").is_ok_and(|v| v == "1");
    match queue::attempt(&resolved, &claim).await {
        Ok(()) => {
            claim.delivered().map_err(queue::outbox_failure)?;
            let deadline = Some(Instant::now() + queue::FLUSH_AFTER_SEND);
            let _ = queue::flush(&ctx, &outbox, resolved.account.as_deref(), false, deadline).await;
            Ok(())
        }
        Err(error) if error.is_temporary() && no_queue => {
            // The caller asked to keep responsibility: nothing stays queued.
            drop(claim);
            let _ = outbox.drop_entry(id.as_str());
            Err(providers::send_failure(error, &resolved).note(
                "APIMAIL_NO_QUEUE is set, so the message was not queued; the caller must retry",
            ))
        }
        Err(error) => match queue::settle(claim, &error, &resolved)
            .map_err(queue::outbox_failure)?
        {
            queue::Settled::Rescheduled => {
                say(&format!(
                    "apimail: {id} queued: {} (retried by `apimail queue flush` or the next send)",
                    queue::error_text(&error)
                ));
                Ok(())
            }
            queue::Settled::Held => {
                say(&format!(
                    "apimail: {id} held: the authorization failed ({}); it goes out after `{}`",
                    queue::error_text(&error),
                    resolved.relogin
                ));
                Ok(())
            }
            queue::Settled::Failed => Err(providers::send_failure(error, &resolved).note(format!(
                "the message is kept with the failed ones as {id} (`apimail queue show {id}`)"
            ))),
        },
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn max_message_bytes(resolved: &Resolved) -> usize {
    match resolved.provider {
        crate::config::Provider::Gmail => apimail_gmail::MAX_MESSAGE_BYTES,
        crate::config::Provider::Graph => match &resolved.sender {
            providers::Sender::Graph(t) => t.max_message_bytes(),
            providers::Sender::Gmail(_) => apimail_graph::DEFAULT_MAX_MESSAGE_BYTES,
        },
    }
}

fn too_large(size: usize, limit: usize) -> Failure {
    Failure::new(
        Exit::DataErr,
        anyhow!("the message is {size} bytes; the provider accepts at most {limit} bytes"),
    )
    .hint("send large files as links, or raise the mailbox limit (Graph: max_message_mb)")
}

/// Copies standard input into the outbox file. Without `-i`, a line
/// holding a single `.` ends the message, as in sendmail.
fn copy_message(out: &mut impl Write, ignore_dots: bool, limit: usize) -> Result<u64, Failure> {
    let stdin = std::io::stdin();
    let mut reader = BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut line = Vec::with_capacity(1024);
    let mut total: u64 = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| {
            Failure::new(
                Exit::NoInput,
                anyhow!(e).context("cannot read the message from standard input"),
            )
        })?;
        if n == 0 {
            break;
        }
        if !ignore_dots && matches!(line.as_slice(), b".\n" | b".\r\n" | b".") {
            break;
        }
        total += n as u64;
        if total > limit as u64 + 64 * 1024 {
            return Err(too_large(total as usize, limit));
        }
        out.write_all(&line).map_err(|e| {
            Failure::new(
                Exit::Config,
                anyhow!(e).context("cannot write the message to the outbox"),
            )
        })?;
    }
    Ok(total)
}

/// Who the message is from and to, and what the headers must gain.
struct Plan {
    from: Mailbox,
    add_from: Option<String>,
    add_bcc: Vec<Mailbox>,
    recipients: Vec<Mailbox>,
    message_id: String,
    date: String,
    warnings: Vec<String>,
}

fn plan(ready: &ReadyMessage, inv: &Invocation, resolved: &Resolved) -> Result<Plan, Failure> {
    let mut arguments = Vec::new();
    for arg in &inv.recipients {
        for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            arguments.push(part.parse::<Mailbox>().map_err(|e| {
                Failure::new(Exit::DataErr, anyhow!("recipient argument: {e}"))
                    .hint("give recipients as name@example.com")
            })?);
        }
    }
    let in_headers = |m: &Mailbox| {
        ready
            .recipients()
            .iter()
            .any(|h| h.email().eq_ignore_ascii_case(m.email()))
    };
    let add_bcc: Vec<Mailbox> = arguments
        .iter()
        .filter(|m| !in_headers(m))
        .cloned()
        .collect();
    let mut warnings = Vec::new();
    if !inv.read_recipients_from_headers {
        let extra: Vec<&str> = ready
            .recipients()
            .iter()
            .filter(|h| {
                !arguments
                    .iter()
                    .any(|a| a.email().eq_ignore_ascii_case(h.email()))
            })
            .map(Mailbox::email)
            .collect();
        if !extra.is_empty() {
            warnings.push(format!(
                "the message's headers also name {}; they receive it too (the HTTPS APIs read recipients from the headers)",
                extra.join(", ")
            ));
        }
    }
    let mut recipients: Vec<Mailbox> = ready.recipients().to_vec();
    recipients.extend(add_bcc.iter().cloned());
    if recipients.is_empty() {
        return Err(
            Failure::new(Exit::DataErr, anyhow!("the message has no recipient"))
                .hint("name recipients as arguments, or in To:/Cc:/Bcc: headers with -t"),
        );
    }

    let (from, add_from) = match ready.from() {
        Some(from) => (from.clone(), None),
        None => {
            let address = inv
                .envelope_from
                .clone()
                .filter(|f| f != "<>")
                .or_else(|| resolved.address.clone())
                .ok_or_else(|| {
                    Failure::new(
                        Exit::DataErr,
                        anyhow!(
                            "the message has no From: header and the sender's address is unknown"
                        ),
                    )
                    .hint("add a From: header, or pass -f ADDR")
                })?;
            let name = inv
                .full_name
                .as_deref()
                .or(ready.local_sender().filter(|n| !n.is_empty()));
            let mailbox = Mailbox::new(name, &address).map_err(|e| {
                Failure::new(Exit::DataErr, anyhow!("-f: {e}")).hint("give -f as name@example.com")
            })?;
            let header = header_mailbox(&mailbox);
            (mailbox, Some(header))
        }
    };
    let message_id = match ready.message_id() {
        Some(id) => id.to_owned(),
        None => format!("<{}.{}@{}>", now_unix(), std::process::id(), from.domain()),
    };
    Ok(Plan {
        from,
        add_from,
        add_bcc,
        recipients,
        message_id,
        date: rfc5322_date(now_unix()),
        warnings,
    })
}

/// `Name <addr>` with the name quoted, or RFC 2047-encoded when not ASCII.
fn header_mailbox(mailbox: &Mailbox) -> String {
    match mailbox.name() {
        None => mailbox.email().to_owned(),
        Some(name) if name.is_ascii() => {
            format!(
                "\"{}\" <{}>",
                name.replace('\\', "\\\\").replace('"', "\\\""),
                mailbox.email()
            )
        }
        Some(name) => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
            format!("=?utf-8?B?{encoded}?= <{}>", mailbox.email())
        }
    }
}

/// The original bytes plus the headers the plan adds: From (when missing),
/// Bcc for argument recipients, Date and Message-ID (when missing).
fn finish_message(ready: ReadyMessage, plan: &Plan) -> Vec<u8> {
    let newline = if ready.as_bytes().windows(2).any(|w| w == b"\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut extra = String::new();
    if let Some(from) = &plan.add_from {
        extra.push_str(&format!("From: {from}{newline}"));
    }
    if !plan.add_bcc.is_empty() {
        let list: Vec<&str> = plan.add_bcc.iter().map(Mailbox::email).collect();
        extra.push_str(&format!(
            "Bcc: {}{newline}",
            list.join(&format!(",{newline} "))
        ));
    }
    let bytes = ready.into_bytes_with(&plan.date, &plan.message_id);
    if extra.is_empty() {
        return bytes;
    }
    let mut out = extra.into_bytes();
    out.extend_from_slice(&bytes);
    out
}

/// `Thu, 1 Jan 2026 00:00:00 +0000`.
fn rfc5322_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        months[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_767_225_600),
            "Thu, 1 Jan 2026 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(1_798_761_599),
            "Thu, 31 Dec 2026 23:59:59 +0000"
        );
    }
}
