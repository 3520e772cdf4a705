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

mod bench;
mod ci;
mod codegen;
mod imports;

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Exit code for command-line usage errors (`EX_USAGE` from sysexits.h).
const EXIT_USAGE: u8 = 64;

const USAGE: &str = "\
xtask: developer automation for the apimail workspace

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    ci                  Run every check CI runs, in order, stopping at the first failure:
                        no-OpenSSL dependency check, import loops, rustfmt, clippy, rustdoc,
                        codegen --check, tests, bench --quick, and every fuzz
                        target for 60 s (if fuzz/ exists; APIMAIL_FUZZ_SECONDS
                        sets the seconds per target, 0 only builds them)
    fuzz                Only CI's fuzz step: run every fuzz target from its corpus
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
            [] => ci::run(&root),
            _ => {
                return usage_error(&format!(
                    "`ci` takes no arguments, got `{}`",
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

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// An error with an optional hint telling the user how to fix it.
#[derive(Debug)]
pub(crate) struct Error {
    message: String,
    hint: Option<String>,
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prepends `context: ` to the message, keeping the hint.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// Attaches a lazily built context message to any displayable error.
pub(crate) trait Context<T> {
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::new(format!("{}: {e}", context())))
    }
}

/// A `cargo` command: the `CARGO` binary cargo gave us, else `cargo` from `PATH`.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Announces `cmd` on stderr, runs it with inherited stdio and fails unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("`{shown}` failed ({status})")))
    }
}

/// Like [`run`], but captures and returns stdout (stderr stays inherited).
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if !out.status.success() {
        return Err(Error::new(format!("`{shown}` failed ({})", out.status)));
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8 output"))
}

/// A shell-like rendering of `cmd` for messages, e.g. `RUSTDOCFLAGS='-D warnings' cargo doc`.
/// The program is shown by file name only, so `$CARGO=/long/path/cargo` shows as `cargo`.
pub(crate) fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    words.push(quote(program));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    const LONGEST: usize = 60;
    let mut word = word.to_string_lossy();
    if word.chars().count() > LONGEST {
        let start: String = word.chars().take(LONGEST - 3).collect();
        word = format!("{start}...").into();
    }
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        let mut cmd = Command::new("/opt/rust/bin/cargo");
        cmd.args(["doc", "--workspace"])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            display(&cmd),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace"
        );
    }

    #[test]
    fn error_display_includes_hint() {
        let e = Error::new("bad").with_hint("fix it").context("step");
        assert_eq!(e.to_string(), "step: bad\nhint: fix it");
    }
}
