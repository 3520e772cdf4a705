//! Running a child process and measuring it: wall time, CPU time and peak
//! RSS (from `wait4`'s resource usage), and summarizing repeated runs.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, Error, Result, display};

/// GNU time, which reports a child's peak RSS untouched by ours.
const GNU_TIME: &str = "/usr/bin/time";

/// What one finished child cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) wall: Duration,
    /// User plus system CPU time.
    pub(crate) cpu: Duration,
    /// Peak resident set size, in bytes. Linux carries the parent's peak
    /// into a child through fork and exec, so this is only the child's own
    /// when measured by [`run_for_peak_rss`].
    pub(crate) peak_rss: u64,
}

/// Runs `cmd` with `stdin` as its standard input, and fails with its
/// stderr unless it exits 0.
pub(crate) fn run(cmd: &mut Command, stdin: &[u8]) -> Result<Usage> {
    let started = Instant::now();
    let child = spawn(cmd, stdin)?;
    finish(cmd, child, started)
}

/// Like [`run`], but `cmd` is started by GNU time, a small process, whose
/// report of its child's peak RSS does not include the bench's own memory
/// (the fakes keep every message they receive); and it must exit with
/// `code`.
pub(crate) fn run_for_peak_rss(cmd: &Command, stdin: &[u8], code: i32) -> Result<Usage> {
    let report = tempfile::NamedTempFile::new().with_context(|| "cannot create a temp file")?;
    let mut timed = Command::new(GNU_TIME);
    timed.args(["-f", "%M", "-o"]).arg(report.path());
    timed.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let child = spawn(&mut timed, stdin)?;
    let usage = finish_with(&timed, child, started, code).map_err(|e| {
        e.with_hint("peak RSS is measured with GNU time: install it (Debian: apt-get install time)")
    })?;
    let text =
        std::fs::read_to_string(report.path()).with_context(|| "cannot read GNU time's report")?;
    let kib: u64 = text
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| Error::new(format!("unexpected GNU time output {text:?}")))?;
    Ok(Usage {
        peak_rss: kib * 1024,
        ..usage
    })
}

/// Starts `cmd` with stdout discarded and stderr captured, and writes
/// `stdin` to it (then closes it).
pub(crate) fn spawn(cmd: &mut Command, stdin: &[u8]) -> Result<Child> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let mut input = child.stdin.take().expect("stdin is piped");
    // A child that exits without reading its input is not an error here.
    let _ = input.write_all(stdin);
    Ok(child)
}

/// Waits for a child [`spawn`]ed at `started` and measures it.
pub(crate) fn finish(cmd: &Command, child: Child, started: Instant) -> Result<Usage> {
    finish_with(cmd, child, started, 0)
}

/// Like [`finish`], for a child that must exit with `code`.
fn finish_with(cmd: &Command, mut child: Child, started: Instant, code: i32) -> Result<Usage> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (status, usage) =
        wait4(child.id()).with_context(|| format!("failed to wait for `{}`", display(cmd)))?;
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code) {
        return Err(Error::new(format!(
            "`{}` did not exit {code} (wait status {status}):\n{}",
            display(cmd),
            stderr.trim_end()
        )));
    }
    Ok(Usage { wall, ..usage })
}

/// Reaps `pid`, returning its raw wait status and its resource usage
/// (with a zero wall time).
#[allow(
    unsafe_code,
    reason = "wait4(2) is the only way to get one child's rusage"
)]
fn wait4(pid: u32) -> std::io::Result<(i32, Usage)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status = 0;
    // SAFETY: rusage is plain data, so all-zero is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok((
        status,
        Usage {
            wall: Duration::ZERO,
            cpu: time(rusage.ru_utime) + time(rusage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            peak_rss: rusage.ru_maxrss as u64 * 1024,
        },
    ))
}

/// The median, minimum and maximum of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stats {
    /// Summarizes `values`; `None` if there are none.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        let odd = Stats::of([9.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 9.0));
        assert_eq!(Stats::of([4.0, 1.0, 2.0, 9.0]).unwrap().median, 3.0);
        assert_eq!(Stats::of([]), None);
    }

    #[test]
    fn run_measures_a_child_and_reports_its_failure() {
        let usage = run(Command::new("sh").args(["-c", "cat >/dev/null"]), b"input").unwrap();
        assert!(usage.wall > Duration::ZERO);
        assert!(usage.peak_rss > 0);
        let error = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("oops"), "{error}");
    }

    #[test]
    fn peak_rss_is_the_childs_own() {
        // 64 MiB held by a child started from a parent holding 256 MiB.
        let ballast = vec![1u8; 256 << 20];
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "b = bytearray(64 << 20)"]);
        let usage = run_for_peak_rss(&cmd, b"", 0).unwrap();
        assert!(usage.peak_rss > 64 << 20, "{}", usage.peak_rss);
        assert!(usage.peak_rss < 160 << 20, "{}", usage.peak_rss);
        std::hint::black_box(&ballast);
    }
}
