//! `cargo xtask bench --only cold`: section 1's apimail rows alone (no
//! peers): a cached cold send of the 2 KB message, by `apimail send` and by
//! `apimail sendmail` (section 3's path), its wall and CPU time and its own
//! cost (wall less the injected round trips). It writes a marked part of
//! section 1 and leaves the rest of `bench/RESULTS.md` as it was.
//!
//! With `APIMAIL_BENCH_WRAP` set (e.g. `strace -f -c -o /tmp/cold`), each
//! send runs under that command instead, for profiling; nothing is written
//! then, as the wrapper's own cost is in every figure.

use std::fmt::Write as _;
use std::process::Command;

use crate::Result;

use super::measure;
use super::world::{Provider, RECIPIENT, World};
use super::{Options, stats_ms};

/// Where the part starts and ends in `bench/RESULTS.md`.
pub(crate) const BEGIN: &str = "<!-- cold: begin -->";
pub(crate) const END: &str = "<!-- cold: end -->";
/// Where the part goes when the file has none yet: before section 2.
pub(crate) const BEFORE: &str = "## 2. ";

/// The wrapper for profiling, if any.
pub(crate) fn wrapper() -> Option<Vec<String>> {
    let words: Vec<String> = std::env::var("APIMAIL_BENCH_WRAP")
        .ok()?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (!words.is_empty()).then_some(words)
}

/// Measures both providers and renders the part.
pub(crate) fn section(world: &World, options: &Options, commit: &str) -> Result<String> {
    let wrap = wrapper();
    let mut text = format!(
        "{BEGIN}\n### 1b. Cached cold send, apimail alone\n\n\
         Written by `cargo xtask bench --only cold` at commit `{commit}`: the median (min–max) \
         of {} run(s), {} ms added to every request. Own cost is wall time less the round \
         trips (requests × the added delay).\n\n\
         | API | command | wall ms | CPU ms | requests | own cost ms | target | met |\n\
         |---|---|---:|---:|---:|---:|---|---|\n",
        options.runs,
        options.rtt.as_millis()
    );
    for (provider, sendmail) in Provider::ALL
        .into_iter()
        .flat_map(|p| [(p, false), (p, true)])
    {
        let name = if sendmail { "sendmail" } else { "send" };
        eprintln!("==> bench: cached cold {name}, {}", provider.name());
        let (mut wall, mut cpu, mut own, mut requests) = (vec![], vec![], vec![], vec![]);
        let stdin = format!(
            "From: {}\nTo: {RECIPIENT}\nSubject: bench\n\n{}",
            provider.user(),
            super::small_text()
        );
        for _ in 0..options.runs {
            let mut cmd = world.apimail(provider);
            if sendmail {
                cmd.args(["sendmail", "-i", RECIPIENT]);
            } else {
                cmd.args(["send", "--to", RECIPIENT, "--subject", "bench", "--text"])
                    .arg(super::small_text());
            }
            if let Some(wrap) = &wrap {
                cmd = wrapped(wrap, &cmd);
            }
            let before = world.counters(provider);
            let input = if sendmail { stdin.as_bytes() } else { b"" };
            let usage = measure::run(&mut cmd, input)?;
            let count = (world.counters(provider) - before).requests as u32;
            wall.push(usage.wall);
            cpu.push(usage.cpu);
            own.push(usage.wall.saturating_sub(options.rtt * count));
            requests.push(count);
        }
        let (wall, cpu, own) = (stats_ms(wall), stats_ms(cpu), stats_ms(own));
        requests.sort_unstable();
        let _ = writeln!(
            text,
            "| {} | `{name}` | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {} | {:.1} ({:.1}–{:.1}) | ≤ 5 | {} |",
            provider.name(),
            wall.median,
            wall.min,
            wall.max,
            cpu.median,
            cpu.min,
            cpu.max,
            requests[requests.len() / 2],
            own.median,
            own.min,
            own.max,
            if own.median <= 5.0 { "yes" } else { "**no**" }
        );
    }
    text.push_str(END);
    text.push('\n');
    Ok(text)
}

/// `cmd` run by `wrap`, with the same environment and directory.
fn wrapped(wrap: &[String], cmd: &Command) -> Command {
    let mut outer = Command::new(&wrap[0]);
    outer.args(&wrap[1..]);
    outer.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        outer.current_dir(dir);
    }
    outer
}
