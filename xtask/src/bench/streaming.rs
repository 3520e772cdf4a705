//! `cargo xtask bench --only streaming`: issue 11's rows, apimail alone
//! (no peers): peak RSS of the real binary (GNU time) for large messages,
//! oversized input refused at once with nothing left in the outbox, and a
//! cached cold send's own cost. It replaces its section of
//! `bench/RESULTS.md` and leaves the rest of the file as it was.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::{Context, Result};

use super::measure::{self, Usage};
use super::world::{Provider, RECIPIENT, World};
use super::{Options, stats, stats_ms};

/// Where the section starts and ends in `bench/RESULTS.md`.
pub(crate) const BEGIN: &str = "<!-- streaming: begin -->";
pub(crate) const END: &str = "<!-- streaming: end -->";

const MB: f64 = 1_000_000.0;

/// One row: what was measured, the figure, the target and whether it is met.
struct Row {
    what: String,
    figure: String,
    target: &'static str,
    met: bool,
}

/// Measures every row and renders the section.
pub(crate) fn section(world: &World, options: &Options, commit: &str) -> Result<String> {
    let mut rows = Vec::new();
    let scratch = world.scratch();

    // 1. Large messages that fit: 26.2 MB attachment → 35.9 MB message.
    let attachment = scratch.join("attachment.bin");
    std::fs::write(&attachment, apimail_tests::pseudo_random(26_200_000))
        .with_context(|| "cannot write the attachment")?;
    for provider in Provider::ALL {
        let usages = large(world, options, provider, &attachment, None)?;
        let rss = stats(usages.iter().map(|u| u.peak_rss as f64 / MB));
        rows.push(Row {
            what: format!("peak RSS, {}, 35.9 MB message", provider.name()),
            figure: format!("{:.1} MB ({:.1}–{:.1})", rss.median, rss.min, rss.max),
            target: "≤ 32 MB",
            met: rss.median <= 32.0,
        });
        if provider == Provider::Gmail {
            let cpu = stats_ms(usages.iter().map(|u| u.cpu));
            rows.push(Row {
                what: "CPU, 35.9 MB message, Gmail".to_owned(),
                figure: format!("{:.0} ms ({:.0}–{:.0})", cpu.median, cpu.min, cpu.max),
                target: "≤ 100 ms",
                met: cpu.median <= 100.0,
            });
        }
    }
    // A 73 MB attachment → about 100 MB composed, on a 150 MB mailbox.
    std::fs::write(&attachment, apimail_tests::pseudo_random(73_000_000))
        .with_context(|| "cannot write the attachment")?;
    let usages = large(world, options, Provider::Graph, &attachment, Some("150"))?;
    let rss = stats(usages.iter().map(|u| u.peak_rss as f64 / MB));
    rows.push(Row {
        what: "peak RSS, Graph, 100 MB message (`max_message_mb = 150`)".to_owned(),
        figure: format!("{:.1} MB ({:.1}–{:.1})", rss.median, rss.min, rss.max),
        target: "≤ 32 MB",
        met: rss.median <= 32.0,
    });
    let _ = std::fs::remove_file(&attachment);

    // 2. Too much input: refused at once, nothing left behind.
    let one_line = vec![b'x'; 200_000_000];
    rows.push(refused(
        world,
        options,
        "`sendmail`, 200 MB on one line",
        "exit 65 within 1 s, ≤ 16 MB RSS, nothing left in the outbox",
        &["sendmail", "-i", RECIPIENT],
        &one_line,
        Duration::from_secs(1),
    )?);
    drop(one_line);
    let body = b"a line of the body, on standard input\n".repeat(59_000_000 / 38);
    rows.push(refused(
        world,
        options,
        "`send`, 59 MB body on stdin, Gmail",
        "exit 65, ≤ 16 MB RSS, nothing left behind",
        &["send", "--to", RECIPIENT, "--subject", "too big"],
        &body,
        Duration::MAX,
    )?);
    drop(body);

    // 3. A cached cold send's own cost: wall time less the round trips.
    for provider in Provider::ALL {
        let mut own = Vec::new();
        for _ in 0..options.runs {
            let mut cmd = world.apimail(provider);
            cmd.args(["send", "--to", RECIPIENT, "--subject", "bench", "--text"])
                .arg(super::small_text());
            let before = world.counters(provider);
            let usage = measure::run(&mut cmd, b"")?;
            let requests = (world.counters(provider) - before).requests as u32;
            own.push(usage.wall.saturating_sub(options.rtt * requests));
        }
        let own = stats_ms(own);
        rows.push(Row {
            what: format!(
                "cached cold send, own cost beyond the round trips, {}",
                provider.name()
            ),
            figure: format!("{:.1} ms ({:.1}–{:.1})", own.median, own.min, own.max),
            target: "≤ 5 ms",
            met: own.median <= 5.0,
        });
    }

    let mut text = format!(
        "{BEGIN}\n## 7. Streaming from disk (issue 11)\n\n\
         Written by `cargo xtask bench --only streaming` at commit `{commit}`: apimail alone, \
         the median (min–max) of {} run(s), {} ms added to every request. Peak RSS is the real \
         binary's, as GNU time reports it; \"nothing left\" means no file in the outbox's \
         `queue/`, `failed/` or `tmp/`.\n\n\
         | what | this run | target | met |\n|---|---|---|---|\n",
        options.runs,
        options.rtt.as_millis()
    );
    for row in &rows {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} |",
            row.what,
            row.figure,
            row.target,
            if row.met { "yes" } else { "**no**" }
        );
    }
    text.push_str(END);
    text.push('\n');
    Ok(text)
}

/// `apimail send` of a message with `attachment`, measured by GNU time.
fn large(
    world: &World,
    options: &Options,
    provider: Provider,
    attachment: &Path,
    max_message_mb: Option<&str>,
) -> Result<Vec<Usage>> {
    eprintln!(
        "==> bench: streaming, a {} MB attachment through {}",
        attachment.metadata().map(|m| m.len()).unwrap_or(0) / 1_000_000,
        provider.name()
    );
    (0..options.runs)
        .map(|_| {
            let mut cmd = world.apimail(provider);
            if let Some(mb) = max_message_mb {
                cmd.env("APIMAIL_GRAPH_MAX_MESSAGE_MB", mb);
            }
            cmd.args(["send", "--to", RECIPIENT, "--subject", "large"])
                .args(["--text", "see the attachment", "--attach"])
                .arg(attachment);
            measure::run_for_peak_rss(&cmd, b"", 0)
        })
        .collect()
}

/// Input over Gmail's limit: exit 65 in time, in little memory, nothing
/// left in the outbox.
fn refused(
    world: &World,
    options: &Options,
    what: &str,
    target: &'static str,
    args: &[&str],
    input: &[u8],
    within: Duration,
) -> Result<Row> {
    eprintln!("==> bench: streaming, {what}");
    let mut usages = Vec::new();
    let mut left = 0;
    for _ in 0..options.runs {
        let mut cmd = world.apimail(Provider::Gmail);
        cmd.args(args);
        usages.push(measure::run_for_peak_rss(&cmd, input, 65)?);
        left += world.outbox_files(Provider::Gmail).len();
    }
    let rss = stats(usages.iter().map(|u| u.peak_rss as f64 / MB));
    let wall = stats_ms(usages.iter().map(|u| u.wall));
    let in_time = within == Duration::MAX || wall.max <= within.as_secs_f64() * 1000.0;
    Ok(Row {
        what: what.to_owned(),
        figure: format!(
            "exit 65 in {:.0} ms (max {:.0}), {:.1} MB RSS (max {:.1}), {left} file(s) left",
            wall.median, wall.max, rss.median, rss.max
        ),
        target,
        met: in_time && rss.max <= 16.0 && left == 0,
    })
}

/// `results` with its streaming section replaced by `section` (or added at
/// the end when it has none).
pub(crate) fn replace_section(results: &str, section: &str) -> String {
    replace_marked(results, (BEGIN, END), section, None)
}

/// `results` with the part between the `marks` replaced by `section`; where
/// there is none, `section` goes before the line starting with `before`, or
/// at the end.
pub(crate) fn replace_marked(
    results: &str,
    (begin_mark, end_mark): (&str, &str),
    section: &str,
    before: Option<&str>,
) -> String {
    if let (Some(begin), Some(end)) = (results.find(begin_mark), results.find(end_mark))
        && begin < end
    {
        let end = end + end_mark.len();
        let rest = results[end..].strip_prefix('\n').unwrap_or(&results[end..]);
        return format!("{}{section}{rest}", &results[..begin]);
    }
    if let Some(at) = before.and_then(|b| results.find(&format!("\n{b}"))) {
        let (head, tail) = results.split_at(at + 1);
        return format!("{}\n\n{section}\n{tail}", head.trim_end_matches('\n'));
    }
    format!(
        "{}\n{section}",
        results.trim_end_matches('\n').to_owned() + "\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_added() {
        let section = format!("{BEGIN}\nnew\n{END}\n");
        let added = replace_section("# results\n", &section);
        assert_eq!(added, format!("# results\n\n{section}"));
        let old = format!("# results\n\n{BEGIN}\nold\n{END}\n\n## after\n");
        assert_eq!(
            replace_section(&old, &section),
            format!("# results\n\n{section}\n## after\n")
        );
        let before = replace_marked(
            "# results\n\n## 1\n\n## 2. x\n",
            ("<!-- a -->", "<!-- b -->"),
            "<!-- a -->\nnew\n<!-- b -->\n",
            Some("## 2. "),
        );
        assert_eq!(
            before,
            "# results\n\n## 1\n\n<!-- a -->\nnew\n<!-- b -->\n\n## 2. x\n"
        );
    }
}
