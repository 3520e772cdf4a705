//! `cargo xtask bench`: apimail against the Python peers people would use
//! instead, on the same work, against the local fakes of `tests/`, with a
//! round-trip delay injected into every request. It writes
//! `bench/RESULTS.md`.
//!
//! A benchmark, not a test: nothing fails on a timing. `--quick` (one run
//! of each, small sizes, the debug build) only proves that every part still
//! works; CI runs it.

mod cold;
mod console;
mod library;
mod measure;
mod merge;
mod peers;
mod postfix;
mod relay;
mod report;
mod store;
mod streaming;
mod world;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use apimail_tests::fake_microsoft::Fault;
use measure::{Stats, Usage};
use peers::Peers;
use report::{BurstRow, ColdRow, Footprint, LargeRow, Machine, Report, RetryRow};
use world::{Provider, RECIPIENT, Sender, World};

use crate::{Context, Error, Result, cargo, output, run as run_cmd};

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The delay added to every request the fakes answer.
    pub(crate) rtt: Duration,
    /// Runs of each measurement.
    pub(crate) runs: usize,
    /// A smoke run: debug build, one run, small sizes, no clean build.
    pub(crate) quick: bool,
    /// `--only streaming`: only issue 11's rows (see `streaming.rs`).
    pub(crate) only_streaming: bool,
    /// `--only relay`: only figure 6, written into the existing report.
    pub(crate) only_relay: bool,
    /// `--only cold`: only section 1's apimail rows (see `cold.rs`).
    pub(crate) only_cold: bool,
    /// `--only library`: only figure 8, written into the existing report.
    pub(crate) only_library: bool,
    /// `--only console`: only figure 9 (see `console.rs`).
    pub(crate) only_console: bool,
    /// `--only merge`: only figure 10 (see `merge.rs`).
    pub(crate) only_merge: bool,
}

impl Options {
    /// What `--quick` alone means.
    pub(crate) fn quick() -> Options {
        Options {
            rtt: Duration::from_millis(20),
            runs: 1,
            quick: true,
            only_streaming: false,
            only_relay: false,
            only_cold: false,
            only_library: false,
            only_console: false,
            only_merge: false,
        }
    }

    /// Parses `[--quick] [--rtt MS] [--runs N] [--only streaming|relay|cold|library|console|merge]`.
    pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            quick: false,
            ..Options::quick()
        };
        let mut runs = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("`{name}` needs a value"))
                    .and_then(|v| {
                        v.parse::<u64>()
                            .map_err(|_| format!("`{name} {v}`: expected a whole number"))
                    })
            };
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--only" => match args.next().map(String::as_str) {
                    Some("streaming") => options.only_streaming = true,
                    Some("relay") => options.only_relay = true,
                    Some("cold") => options.only_cold = true,
                    Some("library") => options.only_library = true,
                    Some("console") => options.only_console = true,
                    Some("merge") => options.only_merge = true,
                    other => {
                        return Err(format!(
                            "`--only {}`: the selections are `streaming`, `relay`, `cold`, `library`, `console` and `merge`",
                            other.unwrap_or_default()
                        ));
                    }
                },
                "--rtt" => options.rtt = Duration::from_millis(value("--rtt")?),
                "--runs" => match value("--runs")? {
                    0 => return Err("`--runs 0`: at least one run is needed".to_owned()),
                    n => runs = Some(n as usize),
                },
                other => return Err(format!("unknown bench option `{other}`")),
            }
        }
        options.runs = runs.unwrap_or(if options.quick { 1 } else { 5 });
        Ok(options)
    }

    /// Size of the large message's attachment. Even the quick one is over
    /// Graph's 3 MB inline limit, so that upload sessions are exercised.
    fn large_attachment(&self) -> usize {
        if self.quick { 4 << 20 } else { 25 << 20 }
    }

    /// Invocations in the sequential and the parallel cron burst.
    fn burst_sizes(&self) -> (usize, usize) {
        if self.quick { (10, 4) } else { (200, 20) }
    }
}

/// The 2 KB message's body: about 2000 bytes of plain text.
fn small_text() -> String {
    let line = "apimail bench: a small message, as cron and monitoring send them.\n";
    line.repeat(2000 / line.len())
}

/// Builds apimail, installs the peers, runs every figure and writes the report.
pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let target = target_dir(root);
    let (profile, profile_dir) = if options.quick {
        ("dev", "debug")
    } else {
        ("release", "release")
    };
    run_cmd(cargo().current_dir(root).args([
        "build",
        "--profile",
        profile,
        "-p",
        "apimail",
        "--locked",
    ]))?;
    let exe = target.join(profile_dir).join("apimail");
    if !exe.is_file() {
        return Err(Error::new(format!("{} was not built", exe.display())));
    }
    if options.only_streaming {
        return run_streaming(root, &target, &exe, options);
    }
    if options.only_cold {
        return cold_only(root, &target, &exe, options);
    }
    if options.only_relay {
        return relay_only(root, &target, &exe, options, profile);
    }
    if options.only_library {
        return library_only(root, &target, &exe, options, (profile, profile_dir));
    }
    if options.only_console {
        return console_only(root, &target, &exe, options, profile);
    }
    if options.only_merge {
        return merge_only(root, &target, &exe, options, profile);
    }
    let peers = peers::prepare(root, &target)?;

    eprintln!(
        "==> bench: starting the fakes (round trip {} ms)",
        options.rtt.as_millis()
    );
    let world = World::start(&exe, options.rtt)?;
    let mut report = Report {
        options: options.clone(),
        machine: Machine::read(&peers.python_version),
        commit: commit(root),
        profile,
        cold: Vec::new(),
        bursts: Vec::new(),
        large: Vec::new(),
        graph_retry: None,
        footprint: None,
        relay: None,
    };
    for expired in [false, true] {
        for provider in Provider::ALL {
            for sender in [Sender::Apimail, Sender::Python] {
                report.cold.push(cold_send(
                    &world, &peers, options, provider, sender, expired,
                )?);
            }
        }
    }
    for provider in Provider::ALL {
        report
            .bursts
            .extend(cron_bursts(&world, options, provider)?);
    }
    let attachment = world.scratch().join("attachment.bin");
    fs::write(
        &attachment,
        apimail_tests::pseudo_random(options.large_attachment()),
    )
    .with_context(|| format!("cannot write {}", attachment.display()))?;
    for provider in Provider::ALL {
        for sender in [Sender::Apimail, Sender::Python] {
            report.large.push(large_message(
                &world,
                &peers,
                options,
                provider,
                sender,
                &attachment,
            )?);
        }
    }
    report.graph_retry = Some(graph_send_retry(&world, &attachment)?);
    report.footprint = Some(footprint(root, &target, &exe, &peers, options)?);
    report.relay = Some(relay::measure(&world, options)?);

    let text = report.render();
    let path = results_path(root, &target, options);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{text}");
    eprintln!("==> bench: wrote {}", path.display());
    // The sections the `--only` selections write, so that one run gives
    // every figure.
    cold_only(root, &target, &exe, options)?;
    run_streaming(root, &target, &exe, options)?;
    library_only(root, &target, &exe, options, (profile, profile_dir))?;
    console_only(root, &target, &exe, options, profile)?;
    merge_only(root, &target, &exe, options, profile)
}

/// `--only merge`: figure 10 alone, replacing that section of the existing
/// report (or appended to it).
fn merge_only(
    root: &Path,
    target: &Path,
    exe: &Path,
    options: &Options,
    profile: &str,
) -> Result<()> {
    let figures = merge::measure(exe, options)?;
    let mut section = String::new();
    merge::render(&figures, profile, &mut section);
    let path = results_path(root, target, options);
    write_section(&path, merge::HEADING, &section)?;
    println!("{section}");
    eprintln!("==> bench: wrote figure 10 into {}", path.display());
    Ok(())
}

/// `--only console`: figure 9 alone, replacing that section of the
/// existing report (or appended to it).
fn console_only(
    root: &Path,
    target: &Path,
    exe: &Path,
    options: &Options,
    profile: &str,
) -> Result<()> {
    let figures = console::measure(exe, target, options)?;
    let mut section = String::new();
    console::render(&figures, profile, &mut section);
    let path = results_path(root, target, options);
    write_section(&path, console::HEADING, &section)?;
    println!("{section}");
    eprintln!("==> bench: wrote figure 9 into {}", path.display());
    Ok(())
}

/// `--only streaming`: issue 11's rows, written into their section of
/// `bench/RESULTS.md` (or of the quick results).
fn run_streaming(root: &Path, target: &Path, exe: &Path, options: &Options) -> Result<()> {
    eprintln!(
        "==> bench: starting the fakes (round trip {} ms)",
        options.rtt.as_millis()
    );
    let world = World::start_without_peers(exe, options.rtt)?;
    let section = streaming::section(&world, options, &commit(root))?;
    let path = results_path(root, target, options);
    let old = fs::read_to_string(&path).unwrap_or_default();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(&path, streaming::replace_section(&old, &section))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{section}");
    eprintln!(
        "==> bench: wrote the streaming section of {}",
        path.display()
    );
    Ok(())
}

/// `--only cold`: section 1's apimail rows, written into their part of
/// that section (unless profiling under `APIMAIL_BENCH_WRAP`).
fn cold_only(root: &Path, target: &Path, exe: &Path, options: &Options) -> Result<()> {
    let world = World::start_without_peers(exe, options.rtt)?;
    let section = cold::section(&world, options, &commit(root))?;
    println!("{section}");
    if cold::wrapper().is_some() {
        eprintln!("==> bench: profiled under APIMAIL_BENCH_WRAP; nothing written");
        return Ok(());
    }
    let path = results_path(root, target, options);
    let old = fs::read_to_string(&path).unwrap_or_default();
    let new =
        streaming::replace_marked(&old, (cold::BEGIN, cold::END), &section, Some(cold::BEFORE));
    fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "==> bench: wrote the cold-send rows into {}",
        path.display()
    );
    Ok(())
}

fn results_path(root: &Path, target: &Path, options: &Options) -> PathBuf {
    if options.quick {
        target.join("bench/RESULTS-quick.md")
    } else {
        root.join("bench/RESULTS.md")
    }
}

/// `--only relay`: figure 6 alone, replacing that section of the existing
/// report (or appended to it).
fn relay_only(
    root: &Path,
    target: &Path,
    exe: &Path,
    options: &Options,
    profile: &str,
) -> Result<()> {
    eprintln!("==> bench: starting the fakes for the relay");
    let world = World::start(exe, options.rtt)?;
    let figures = relay::measure(&world, options)?;
    let path = results_path(root, target, options);
    let mut section = String::new();
    relay::render(&figures, profile, &mut section);
    write_section(&path, relay::HEADING, &section)?;
    println!("{section}");
    eprintln!("==> bench: wrote figure 6 into {}", path.display());
    Ok(())
}

/// `--only library`: figure 8 alone, with the example `bench_sends` built
/// in the same profile, replacing that section of the existing report (or
/// appended to it).
fn library_only(
    root: &Path,
    target: &Path,
    exe: &Path,
    options: &Options,
    (profile, profile_dir): (&str, &str),
) -> Result<()> {
    run_cmd(cargo().current_dir(root).args([
        "build",
        "--profile",
        profile,
        "-p",
        "apimail-mailer",
        "--example",
        "bench_sends",
        "--locked",
    ]))?;
    let example = target
        .join(profile_dir)
        .join("examples")
        .join("bench_sends");
    let figures = library::measure(&example, exe, options)?;
    let mut section = String::new();
    library::render(&figures, profile, &mut section);
    let path = results_path(root, target, options);
    write_section(&path, library::HEADING, &section)?;
    println!("{section}");
    eprintln!("==> bench: wrote figure 8 into {}", path.display());
    Ok(())
}

/// Replaces the section under `heading` of the report at `path` with
/// `section` (it runs to the next heading, so the notes written by hand
/// under a `###` heading stay, or to the end), or appends it.
fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let mut text = fs::read_to_string(path).unwrap_or_default();
    if let Some(at) = text.find(heading) {
        let after = at + heading.len();
        let end = ["\n## ", "\n### ", "\n<!-- "]
            .iter()
            .filter_map(|next| text[after..].find(next).map(|i| after + i + 1))
            .min()
            .unwrap_or(text.len());
        text.replace_range(at..end, section);
    } else {
        if !text.is_empty() && !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(section);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Figures 1 and 2: one process sending a 2 KB message, token cached
/// (`expired` false) or needing a refresh.
fn cold_send(
    world: &World,
    peers: &Peers,
    options: &Options,
    provider: Provider,
    sender: Sender,
    expired: bool,
) -> Result<ColdRow> {
    eprintln!(
        "==> bench: cold send, {}, {}, {} token",
        provider.name(),
        sender.name(),
        if expired { "expired" } else { "cached" }
    );
    let text = small_text();
    let mut usages = Vec::new();
    let mut requests = Vec::new();
    let mut token_requests = Vec::new();
    for _ in 0..options.runs {
        if expired {
            world.expire_token(provider, sender)?;
        }
        let mut cmd = world.send(peers, provider, sender);
        cmd.args(["--to", RECIPIENT, "--subject", "bench", "--text", &text]);
        let before = world.counters(provider);
        usages.push(measure::run(&mut cmd, b"")?);
        let seen = world.counters(provider) - before;
        requests.push(seen.requests as f64);
        token_requests.push(seen.token_requests as f64);
    }
    Ok(ColdRow {
        provider,
        sender,
        expired,
        wall_ms: stats_ms(usages.iter().map(|u| u.wall)),
        cpu_ms: stats_ms(usages.iter().map(|u| u.cpu)),
        requests: stats(requests),
        token_requests: stats(token_requests),
    })
}

/// Figure 3: `apimail sendmail` invoked many times in sequence, then many
/// at once, each burst starting with the stored access token expired.
fn cron_bursts(world: &World, options: &Options, provider: Provider) -> Result<Vec<BurstRow>> {
    let message = format!(
        "From: {}\nTo: {RECIPIENT}\nSubject: cron burst\n\n{}",
        provider.user(),
        small_text()
    );
    let sendmail = || {
        let mut cmd = world.apimail(provider);
        cmd.args(["sendmail", "-i", RECIPIENT]);
        cmd
    };
    let (sequential, parallel) = options.burst_sizes();
    let mut rows = Vec::new();
    for (count, at_once) in [(sequential, false), (parallel, true)] {
        eprintln!(
            "==> bench: cron burst, {}, {count} {}",
            provider.name(),
            if at_once {
                "in parallel"
            } else {
                "in sequence"
            }
        );
        let mut walls = Vec::new();
        let mut token_requests = Vec::new();
        for _ in 0..options.runs {
            world.expire_token(provider, Sender::Apimail)?;
            let before = world.counters(provider);
            let started = Instant::now();
            if at_once {
                let children = (0..count)
                    .map(|_| {
                        let mut cmd = sendmail();
                        measure::spawn(&mut cmd, message.as_bytes()).map(|child| (cmd, child))
                    })
                    .collect::<Result<Vec<_>>>()?;
                for (cmd, child) in children {
                    measure::finish(&cmd, child, started)?;
                }
            } else {
                for _ in 0..count {
                    measure::run(&mut sendmail(), message.as_bytes())?;
                }
            }
            walls.push(started.elapsed());
            token_requests.push((world.counters(provider) - before).token_requests as f64);
        }
        rows.push(BurstRow {
            provider,
            count,
            parallel: at_once,
            wall_ms: stats_ms(walls),
            token_requests: stats(token_requests),
        });
    }
    Ok(rows)
}

/// Figure 4: a message with a large attachment.
fn large_message(
    world: &World,
    peers: &Peers,
    options: &Options,
    provider: Provider,
    sender: Sender,
    attachment: &Path,
) -> Result<LargeRow> {
    eprintln!(
        "==> bench: large message ({} MiB attachment), {}, {}",
        options.large_attachment() >> 20,
        provider.name(),
        sender.name()
    );
    let message_bytes = composed_size(world, provider, attachment)?;
    let mut usages: Vec<Usage> = Vec::new();
    let mut wire = Vec::new();
    for _ in 0..options.runs {
        let mut cmd = world.send(peers, provider, sender);
        if (provider, sender) == (Provider::Gmail, Sender::Python) {
            cmd.arg("--upload");
        }
        cmd.args([
            "--to",
            RECIPIENT,
            "--subject",
            "large",
            "--text",
            "see the attachment",
        ])
        .arg("--attach")
        .arg(attachment);
        let before = world.counters(provider);
        usages.push(measure::run_for_peak_rss(&cmd, b"", 0)?);
        wire.push((world.counters(provider) - before).bytes_received as f64);
    }
    Ok(LargeRow {
        provider,
        sender,
        message_bytes,
        wall_ms: stats_ms(usages.iter().map(|u| u.wall)),
        cpu_ms: stats_ms(usages.iter().map(|u| u.cpu)),
        peak_rss: stats(usages.iter().map(|u| u.peak_rss as f64)),
        wire_bytes: stats(wire),
    })
}

/// Figure 4b: the large message on Graph when the first `send` of the
/// complete draft gets a 503 and the retry succeeds: what was uploaded,
/// per message byte (the draft is kept, so nothing goes twice).
fn graph_send_retry(world: &World, attachment: &Path) -> Result<RetryRow> {
    eprintln!("==> bench: large message on Graph, a 503 on send, then success");
    let message_bytes = composed_size(world, Provider::Graph, attachment)?;
    let fake = world.microsoft();
    fake.clear_faults();
    // The draft and the upload session go through; the first send fails.
    fake.inject_n(Fault::Slow(Duration::ZERO), 2);
    fake.inject(Fault::Status503);
    let sends_before = send_requests(fake);
    let before = world.counters(Provider::Graph);
    let mut cmd = world.apimail(Provider::Graph);
    cmd.env("APIMAIL_RETRY_ATTEMPTS", "3")
        .args(["send", "--to", RECIPIENT, "--subject", "large, retried"])
        .args(["--text", "see the attachment", "--attach"])
        .arg(attachment);
    measure::run(&mut cmd, b"")?;
    let wire = (world.counters(Provider::Graph) - before).bytes_received;
    fake.clear_faults();
    Ok(RetryRow {
        message_bytes,
        wire_bytes: wire,
        sends: send_requests(fake) - sends_before,
    })
}

fn send_requests(fake: &apimail_tests::fake_microsoft::FakeMicrosoft) -> usize {
    fake.graph_request_log()
        .iter()
        .filter(|(method, path, _)| method == "POST" && path.ends_with("/send"))
        .count()
}

/// The size of the message apimail composes for the large figure.
fn composed_size(world: &World, provider: Provider, attachment: &Path) -> Result<u64> {
    let out = world.scratch().join("large.eml");
    let mut cmd = world.apimail(provider);
    cmd.args(["send", "--dry-run", "--from", provider.user()])
        .args([
            "--to",
            RECIPIENT,
            "--subject",
            "large",
            "--text",
            "see the attachment",
        ])
        .arg("--attach")
        .arg(attachment)
        .arg("--output")
        .arg(&out);
    measure::run(&mut cmd, b"")?;
    let size = fs::metadata(&out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .len();
    let _ = fs::remove_file(&out);
    Ok(size)
}

/// Figure 5: binary size, startup, build time and dependencies.
fn footprint(
    root: &Path,
    target: &Path,
    exe: &Path,
    peers: &Peers,
    options: &Options,
) -> Result<Footprint> {
    eprintln!("==> bench: footprint");
    let binary_bytes = fs::metadata(exe)
        .with_context(|| format!("cannot read {}", exe.display()))?
        .len();
    let stripped = target.join("bench/apimail-stripped");
    if let Some(dir) = stripped.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::copy(exe, &stripped).with_context(|| format!("cannot copy {}", exe.display()))?;
    run_cmd(Command::new("strip").arg(&stripped))
        .map_err(|e| e.with_hint("install binutils (Debian: apt-get install binutils)"))?;
    let stripped_bytes = fs::metadata(&stripped)
        .with_context(|| format!("cannot read {}", stripped.display()))?
        .len();

    let version_runs = if options.quick { 5 } else { 50 };
    let version = (0..version_runs)
        .map(|_| measure::run(Command::new(exe).arg("--version"), b"").map(|u| u.wall))
        .collect::<Result<Vec<_>>>()?;

    let clean_build = if options.quick {
        None
    } else {
        eprintln!("==> bench: clean release build (a few minutes on 2 cores)");
        let dir = target.join("bench-clean-build");
        let _ = fs::remove_dir_all(&dir);
        let started = Instant::now();
        run_cmd(
            cargo()
                .current_dir(root)
                .args(["build", "--release", "-p", "apimail", "--locked"])
                .arg("--target-dir")
                .arg(&dir),
        )?;
        let elapsed = started.elapsed();
        let _ = fs::remove_dir_all(&dir);
        Some(elapsed)
    };

    Ok(Footprint {
        binary_bytes,
        stripped_bytes,
        version_ms: stats_ms(version),
        clean_build,
        dependencies: dependency_count(root)?,
        peer_packages: peers.packages.len(),
        peer_disk_bytes: peers.disk_bytes,
        peer_install: peers.install_time,
    })
}

/// How many crates outside the workspace the `apimail` binary links.
fn dependency_count(root: &Path) -> Result<usize> {
    let tree = output(cargo().current_dir(root).args([
        "tree", "-p", "apimail", "--edges", "normal", "--prefix", "none", "--locked",
    ]))?;
    let workspace = root.display().to_string();
    let mut crates: Vec<String> = tree
        .lines()
        .filter(|line| !line.contains(&workspace))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect();
    crates.sort_unstable();
    crates.dedup();
    Ok(crates.len())
}

fn stats(values: impl IntoIterator<Item = f64>) -> Stats {
    Stats::of(values).unwrap_or(Stats {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

fn stats_ms(durations: impl IntoIterator<Item = Duration>) -> Stats {
    stats(durations.into_iter().map(|d| d.as_secs_f64() * 1000.0))
}

/// The commit, with `-dirty` if the work tree has changes.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    match git(&["status", "--porcelain"]) {
        Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

/// `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_default_to_five_runs_and_20_ms() {
        let options = parse(&[]).unwrap();
        assert_eq!(
            (options.runs, options.rtt, options.quick),
            (5, Duration::from_millis(20), false)
        );
        let quick = parse(&["--quick", "--rtt", "5"]).unwrap();
        assert_eq!(
            (quick.runs, quick.rtt, quick.quick),
            (1, Duration::from_millis(5), true)
        );
        assert_eq!(parse(&["--quick", "--runs", "3"]).unwrap().runs, 3);
    }

    #[test]
    fn bad_options_name_the_problem() {
        assert!(parse(&["--rtt"]).unwrap_err().contains("--rtt"));
        assert!(parse(&["--rtt", "fast"]).unwrap_err().contains("fast"));
        assert!(parse(&["--runs", "0"]).unwrap_err().contains("--runs 0"));
        assert!(parse(&["startup"]).unwrap_err().contains("startup"));
    }

    #[test]
    fn the_small_message_is_about_2_kb() {
        assert!((1900..=2000).contains(&small_text().len()));
    }
}
