//! Figure 10: `apimail merge --send` (issue 26) of many rows against the
//! fake Gmail with its quotas on: the per-user rate limit at its real
//! value (15,000 quota units a minute: 150 sends), the daily sending limit
//! scaled down (from Workspace's 2,000) so that the run is minutes, not
//! hours. The merge sends the day's share at its pace and queues the rest
//! for the next window. Reported: the share of the per-minute quota the
//! sends used, the 429s the fake answered, and the merge's peak RSS.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use apimail_tests::Sandbox;
use apimail_tests::fake_google::FakeGoogle;

use super::Options;
use super::measure;
use crate::{Context, Error, Result};

pub(crate) const HEADING: &str = "## 10. Mail merge";

/// Gmail's per-user limit in sends a minute, enforced by the fake.
const PER_MINUTE: u64 = 150;
/// The merge's exit status when the day's limit stops it (EX_TEMPFAIL).
const DAILY_LIMIT_REACHED: i32 = 75;

/// Figure 10's figures.
#[derive(Debug, Clone)]
pub(crate) struct MergeFigures {
    pub(crate) rtt: Duration,
    pub(crate) rows: usize,
    pub(crate) daily: u64,
    pub(crate) sent: usize,
    /// Sends over the time between the first and the last, against what
    /// the per-minute limit allows in that time.
    pub(crate) share: f64,
    pub(crate) throttled: usize,
    pub(crate) over_daily: usize,
    pub(crate) peak_rss: u64,
    pub(crate) wall: Duration,
}

impl Options {
    /// Rows of the merge and the scaled-down daily limit.
    fn merge_size(&self) -> (usize, u64) {
        if self.quick {
            (1_000, 30)
        } else {
            (10_000, 300)
        }
    }
}

/// A PDF-like attachment of ~3 KB, its own for each row.
fn pdf(row: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..3000u32).map(|i| ((i * 31 + row as u32 * 7) % 256) as u8));
    bytes
}

/// Runs the merge and reads what the fake saw.
pub(crate) fn measure(exe: &Path, options: &Options) -> Result<MergeFigures> {
    let (rows, daily) = options.merge_size();
    eprintln!(
        "==> bench: merge of {rows} rows, {daily} a day, {PER_MINUTE} a minute (round trip {} ms)",
        options.rtt.as_millis()
    );
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake).with_binary(exe.to_owned());
    let login = sandbox.login_with(&fake, &[], |url| url);
    if login.code != 0 {
        return Err(Error::new(format!(
            "logging in to the fake failed (exit {}):\n{}",
            login.code, login.stderr
        )));
    }
    fake.traffic().set_delay(options.rtt);
    fake.set_per_minute_limit(PER_MINUTE);
    fake.set_daily_limit(daily);

    let dir = sandbox.path();
    let invoices = dir.join("invoices");
    std::fs::create_dir_all(&invoices).with_context(|| "cannot create the invoices folder")?;
    let mut csv = String::from("id,名前,email,amount\r\n");
    for i in 1..=rows {
        csv.push_str(&format!(
            "C{i:05},山田 太郎{i},c{i}@example.net,{}\r\n",
            i * 100
        ));
        std::fs::write(invoices.join(format!("C{i:05}.pdf")), pdf(i))
            .with_context(|| "cannot write an invoice")?;
    }
    std::fs::write(dir.join("customers.csv"), csv).with_context(|| "cannot write the data")?;
    std::fs::write(
        dir.join("invoice.toml"),
        "to = \"{{ 名前 }} <{{ email }}>\"\nsubject = \"{{ 名前 }}様 ご請求書 {{ id }}\"\n\
         text = \"{{ 名前 }}様\\n\\nご請求金額: {{ amount | number }}円\\n\"\n\
         attach = [\"invoices/{{ id }}.pdf\"]\ncharset = \"iso-2022-jp\"\n",
    )
    .with_context(|| "cannot write the template")?;

    let mut cmd = sandbox.cmd();
    cmd.env_remove("LD_LIBRARY_PATH").args([
        "merge",
        "--data",
        "customers.csv",
        "--template",
        "invoice.toml",
        "--id-column",
        "id",
        "--send",
        "--daily-limit",
        &daily.to_string(),
    ]);
    let usage = measure::run_for_peak_rss(&cmd, b"", DAILY_LIMIT_REACHED)?;

    let mut times: Vec<f64> = fake
        .messages()
        .iter()
        .map(|m| m.at_millis as f64 / 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    let sent = times.len();
    let share = match (times.first(), times.last()) {
        (Some(first), Some(last)) if sent > 1 && last > first => {
            (sent - 1) as f64 / (PER_MINUTE as f64 * (last - first) / 60.0)
        }
        _ => return Err(Error::new(format!("the merge sent {sent} message(s)"))),
    };
    Ok(MergeFigures {
        rtt: options.rtt,
        rows,
        daily,
        sent,
        share,
        throttled: fake.throttled(),
        over_daily: fake.over_daily_limit(),
        peak_rss: usage.peak_rss,
        wall: usage.wall,
    })
}

/// Figure 10 and its targets, in Markdown.
pub(crate) fn render(figures: &MergeFigures, profile: &str, out: &mut String) {
    let f = figures;
    let mb = f.peak_rss as f64 / 1_048_576.0;
    let _ = writeln!(
        out,
        "{HEADING}\n\n`apimail merge --send --daily-limit {daily}` ({profile} build) of {rows} rows \
         (Japanese names, ISO-2022-JP, a 3 KB PDF of its own each) against the fake Gmail on \
         127.0.0.1, every request delayed by {rtt} ms, with the fake enforcing Gmail's per-user \
         rate limit at its real value ({PER_MINUTE} sends a minute: 15,000 quota units, 100 a \
         send) and a daily sending limit scaled down from Workspace's 2,000 to {daily}, so that \
         the run takes minutes: the merge checks every row, sends the day's {daily} at its pace \
         and leaves the rest for the next window (exit 75). The share of the quota is the sends \
         between the fake's first and last acceptance against what {PER_MINUTE} a minute allows \
         in that time; the 429s are the fake's refusals (per-minute and daily); peak RSS is the \
         merge process's (GNU time).\n",
        daily = f.daily,
        rows = f.rows,
        rtt = f.rtt.as_millis(),
    );
    let _ = writeln!(
        out,
        "| rows | sent | share of the per-minute quota | 429s (minute / day) | peak RSS MB | wall s |\n\
         |---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.1}% | {} / {} | {:.1} | {:.1} |\n",
        f.rows,
        f.sent,
        f.share * 100.0,
        f.throttled,
        f.over_daily,
        mb,
        f.wall.as_secs_f64()
    );
    let _ = writeln!(out, "| target | met? |\n|---|---|");
    let _ = writeln!(
        out,
        "| share of the per-minute quota used ≥ 95% | {} ({:.1}%) |",
        met(f.share >= 0.95),
        f.share * 100.0
    );
    let _ = writeln!(
        out,
        "| 429s provoked = 0 | {} ({}) |",
        met(f.throttled + f.over_daily == 0),
        f.throttled + f.over_daily
    );
    let _ = writeln!(
        out,
        "| peak RSS < 64 MB | {} ({mb:.1} MB) |",
        met(f.peak_rss < 64 << 20)
    );
    let _ = writeln!(
        out,
        "| the day's limit sent, the rest left queued | {} ({} of {}) |",
        met(f.sent as u64 == f.daily),
        f.sent,
        f.daily
    );
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}
