//! `xtask`: the project's developer automation, written in Rust instead of
//! shell scripts or Makefiles (the [cargo-xtask] pattern).
//!
//! It is invoked through the cargo aliases in `.cargo/config.toml`:
//!
//! - `cargo xtask ci` runs exactly what CI runs (`.ci/run` calls it);
//! - `cargo codegen [--check]` regenerates the man pages and shell
//!   completions from the CLI definition (or checks they are up to date);
//! - `cargo xtask bench` measures apimail against the Python peers and
//!   writes `bench/RESULTS.md`.
//!
//! Dependencies are kept few: the `apimail` crate (for the CLI definition),
//! `apimail-tests` (the fake servers the bench sends to), serde_json, tempfile
//! and libc.
//! No clap and no anyhow, which only `crates/cli` may use.
//!
//! [cargo-xtask]: https://github.com/matklad/cargo-xtask

// A developer tool reports to the terminal: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod account_layer;
mod bench;
mod ci;
mod codegen;
mod command;
mod error;
mod imports;
mod provider_names;
mod readme_figures;

pub(crate) use command::{cargo, display, output, run, workspace_root};
pub(crate) use error::{Context, Error, Result};

use std::process::ExitCode;

/// Exit code for command-line usage errors (`EX_USAGE` from sysexits.h).
const EXIT_USAGE: u8 = 64;

const USAGE: &str = "\
xtask: developer automation for the apimail workspace

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    ci                  Run every check CI runs, in order, stopping at the first failure:
                        no-OpenSSL dependency check, import loops, README benchmark
                        figures against bench/RESULTS.md, rustfmt, clippy, rustdoc,
                        codegen --check, tests, bench --quick, and every fuzz
                        target for 60 s (if fuzz/ exists; APIMAIL_FUZZ_SECONDS
                        sets the seconds per target, 0 only builds them);
                        `ci --only fmt,clippy` runs just the named steps
    fuzz                Only CI's fuzz step: run every fuzz target from its corpus
    imports             Only CI's import-loop check: no two files of any crate
                        (its lib.rs or main.rs included) import each other
    codegen [--check]   Regenerate man pages (docs/man/) and shell completions
                        (completions/) from the CLI definition; with --check, only
                        verify they are up to date
    bench [OPTIONS]     Measure apimail against the Python peers (Google's and
                        Microsoft's client libraries) on the same work, against the
                        local fakes, and write bench/RESULTS.md; see bench/README.md
        --rtt MS        delay added to every request the fakes answer (default 20)
        --runs N        runs of each measurement (default 5; 1 with --quick)
        --quick         smoke run: debug build, small sizes, no clean build;
                        writes target/bench/RESULTS-quick.md (CI runs this)
        --only streaming  only issue 11's rows (apimail alone: large-message
                        RSS, oversized input refused, cold send's own cost),
                        written into their section of the results
        --only relay    only figure 6 (apimail relay, and Postfix when installed),
                        written into the existing report
        --only cold     only section 1's apimail rows (cached cold send: wall,
                        CPU, own cost), written into their part of section 1;
                        APIMAIL_BENCH_WRAP='strace -f -c' runs each send under
                        a profiler instead, writing nothing
        --only library  only figure 8 (apimail_mailer::Mailer through the example
                        bench_sends), written into the existing report
        --only console  only figure 9 (the admin console over 1,000,000 journal
                        records; 20,000 with --quick), written into the report
        --only merge    only figure 10 (apimail merge of 10,000 rows against the
                        fake Gmail's quotas; 1,000 with --quick), written into the report
    help                Print this message

EXAMPLES:
    cargo xtask ci                 # what CI runs (also: .ci/run)
    cargo codegen                  # alias for `cargo xtask codegen`
    APIMAIL_FUZZ_SECONDS=300 cargo xtask fuzz   # each fuzz target for 5 minutes
    cargo codegen --check          # fail if generated files are stale
    cargo xtask bench              # the full comparison (about 10 minutes)
    cargo xtask bench --rtt 50     # as if the API were 50 ms away
    cargo xtask bench --quick      # what CI runs
    cargo xtask bench --only streaming --runs 3   # issue 11's rows only
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let root = workspace_root();
    let result = match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "ci" => match rest {
            [] => ci::run(&root, None),
            [flag, steps] if flag == "--only" => ci::run(&root, Some(steps)),
            _ => {
                return usage_error(&format!(
                    "`ci` takes no arguments but `--only STEP,STEP`, got `{}`",
                    rest.join(" ")
                ));
            }
        },
        "fuzz" => match rest {
            [] => ci::fuzz(&root),
            _ => {
                return usage_error(&format!(
                    "`fuzz` takes no arguments (set APIMAIL_FUZZ_SECONDS), got `{}`",
                    rest.join(" ")
                ));
            }
        },
        "imports" => match rest {
            [] => imports::check(&root),
            _ => {
                return usage_error(&format!(
                    "`imports` takes no arguments, got `{}`",
                    rest.join(" ")
                ));
            }
        },
        "codegen" => match rest {
            [] => codegen::run(&root, codegen::Mode::Write),
            [flag] if flag == "--check" => codegen::run(&root, codegen::Mode::Check),
            _ => {
                return usage_error(&format!(
                    "`codegen` accepts only `--check`, got `{}`",
                    rest.join(" ")
                ));
            }
        },
        "bench" => match bench::Options::parse(rest) {
            Ok(options) => bench::run(&root, &options),
            Err(message) => return usage_error(&message),
        },
        other => return usage_error(&format!("unknown subcommand `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a command-line usage error and returns exit code 64.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nrun `cargo xtask help` for usage");
    ExitCode::from(EXIT_USAGE)
}
