//! The `apimail` command line: argument parsing, configuration and output.
//!
//! This is the only crate that knows about clap and anyhow. It turns
//! flags into calls on apimail-core (and, later, the provider crates),
//! and turns their errors into `error:` / `caused by:` / `hint:` reports
//! with sysexits exit codes.

mod cli;
pub mod codegen;
mod exit;
mod send;

use std::process::ExitCode;

use clap::Parser;

pub use exit::Exit;

/// The clap definition, for man pages and completions.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}

/// Runs apimail with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            // clap prints `error: ...` plus a usage hint, or the help text.
            let _ = error.print();
            return ExitCode::from(code as u8);
        }
    };
    let result = match cli.command {
        cli::Command::Send(args) => send::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.exit as u8)
        }
    }
}
