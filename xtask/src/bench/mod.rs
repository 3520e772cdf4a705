//! `cargo xtask bench`: quick wall-time and memory numbers for the release
//! binary. Not part of CI: timings depend on the machine.
//!
//! To add a benchmark, write a `fn(&Ctx) -> Result<Measurement>` and list it
//! in [`BENCHES`].

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, Error, Result, cargo, display, run as run_cmd};

/// A named benchmark.
struct Bench {
    name: &'static str,
    run: fn(&Ctx) -> Result<Measurement>,
}

/// Every benchmark, in the order they run and are reported.
const BENCHES: &[Bench] = &[
    Bench {
        name: "startup",
        run: startup,
    },
    Bench {
        name: "dry-run-compose",
        run: dry_run_compose,
    },
];

/// GNU time, used to measure the peak RSS of a child without libc.
const GNU_TIME: &str = "/usr/bin/time";

/// What every benchmark gets.
#[derive(Debug)]
struct Ctx {
    /// The release `apimail` binary.
    exe: PathBuf,
    /// Whether [`GNU_TIME`] works here (`-f %M -o FILE`).
    gnu_time: bool,
}

/// One benchmark's result: a row of the report.
#[derive(Debug)]
struct Measurement {
    runs: usize,
    min: Duration,
    median: Duration,
    /// Peak resident set size over all runs, in KiB, if measured.
    peak_rss_kib: Option<u64>,
}

impl Measurement {
    fn from_runs(times: &[Duration], peak_rss_kib: Option<u64>) -> Self {
        let mut sorted = times.to_vec();
        sorted.sort();
        Measurement {
            runs: sorted.len(),
            min: sorted.first().copied().unwrap_or_default(),
            median: median(&sorted),
            peak_rss_kib,
        }
    }
}

/// The median of sorted durations (mean of the middle two for even counts).
fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Whether `name` is a known benchmark.
pub(crate) fn exists(name: &str) -> bool {
    BENCHES.iter().any(|b| b.name == name)
}

/// The names of all benchmarks.
pub(crate) fn names() -> Vec<&'static str> {
    BENCHES.iter().map(|b| b.name).collect()
}

/// Builds the release binary and runs the selected benchmarks (all if `only` is empty).
pub(crate) fn run(root: &Path, only: &[String]) -> Result<()> {
    run_cmd(
        cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", "apimail", "--locked"]),
    )?;
    let exe = target_dir(root)
        .join("release")
        .join(format!("apimail{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        return Err(Error::new(format!("{} was not built", exe.display())));
    }
    let gnu_time = gnu_time_works(&exe);
    let ctx = Ctx { exe, gnu_time };

    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for bench in BENCHES {
        if !only.is_empty() && !only.iter().any(|name| name == bench.name) {
            continue;
        }
        eprintln!("==> bench {}", bench.name);
        match (bench.run)(&ctx) {
            Ok(m) => rows.push((bench.name, m)),
            Err(e) => {
                eprintln!("error: bench `{}` failed: {e}", bench.name);
                failed.push(bench.name);
            }
        }
    }

    print_table(&rows);
    if !ctx.gnu_time {
        println!("note: peak RSS not measured: {GNU_TIME} (GNU time) is missing or unusable");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "benchmarks failed: {}",
            failed.join(", ")
        )))
    }
}

/// `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

fn print_table(rows: &[(&str, Measurement)]) {
    println!();
    println!(
        "{:<18} {:>5} {:>10} {:>10} {:>12}",
        "bench", "runs", "min ms", "median ms", "peak RSS"
    );
    for (name, m) in rows {
        let rss = m.peak_rss_kib.map_or_else(
            || "-".to_owned(),
            |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
        );
        println!(
            "{name:<18} {:>5} {:>10.2} {:>10.2} {rss:>12}",
            m.runs,
            m.min.as_secs_f64() * 1000.0,
            m.median.as_secs_f64() * 1000.0,
        );
    }
}

/// Process startup: `apimail --version`, 50 times.
fn startup(ctx: &Ctx) -> Result<Measurement> {
    let mut times = Vec::new();
    for _ in 0..50 {
        times.push(time_run(Command::new(&ctx.exe).arg("--version"))?);
    }
    Ok(Measurement::from_runs(&times, None))
}

/// Composing a message with a 20 MiB attachment to a file (`send --dry-run`), 5 times.
fn dry_run_compose(ctx: &Ctx) -> Result<Measurement> {
    let tmp = TempDir::new("dry-run-compose")?;
    let attachment = tmp.0.join("attachment.bin");
    write_pseudo_random(&attachment, 20 * 1024 * 1024)?;
    let out = tmp.0.join("out.eml");
    let rss_file = tmp.0.join("rss.txt");

    let mut times = Vec::new();
    let mut peak_rss_kib = None;
    for _ in 0..5 {
        let mut cmd = if ctx.gnu_time {
            let mut cmd = Command::new(GNU_TIME);
            cmd.args(["-f", "%M", "-o"]).arg(&rss_file).arg(&ctx.exe);
            cmd
        } else {
            Command::new(&ctx.exe)
        };
        cmd.args([
            "send",
            "--dry-run",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ])
        .args(["--subject", "bench", "--text", "hi", "--attach"])
        .arg(&attachment)
        .arg("--output")
        .arg(&out);
        times.push(time_run(&mut cmd)?);
        if ctx.gnu_time {
            let kib = read_rss_kib(&rss_file)?;
            peak_rss_kib = peak_rss_kib.max(Some(kib));
        }
    }
    Ok(Measurement::from_runs(&times, peak_rss_kib))
}

/// Runs `cmd` once (stdout discarded) and returns its wall time; fails with
/// its stderr unless it succeeds.
fn time_run(cmd: &mut Command) -> Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{}` failed ({}):\n{}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(elapsed)
}

/// Whether `/usr/bin/time -f %M -o FILE` works (GNU time), tried on `apimail --version`.
fn gnu_time_works(exe: &Path) -> bool {
    let Ok(tmp) = TempDir::new("gnu-time-probe") else {
        return false;
    };
    let file = tmp.0.join("rss.txt");
    let ok = Command::new(GNU_TIME)
        .args(["-f", "%M", "-o"])
        .arg(&file)
        .arg(exe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok && read_rss_kib(&file).is_ok()
}

/// Parses the `%M` (max RSS in KiB) that GNU time wrote to `file`.
fn read_rss_kib(file: &Path) -> Result<u64> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let last = text.lines().last().unwrap_or("").trim();
    last.parse()
        .with_context(|| format!("unexpected GNU time output {last:?}"))
}

/// Writes `len` deterministic, incompressible-looking bytes (a 64-bit LCG).
fn write_pseudo_random(path: &Path, len: usize) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut written = 0;
    while written < len {
        // Knuth's MMIX constants; the high bytes are the most random.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let bytes = (state >> 32).to_le_bytes();
        let n = (len - written).min(4);
        out.write_all(&bytes[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += n;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("apimail-bench-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(1), ms(2), ms(9)]), ms(2));
        assert_eq!(median(&[ms(1), ms(2), ms(4), ms(9)]), ms(3));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn bench_names_are_unique() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BENCHES.len());
    }
}
