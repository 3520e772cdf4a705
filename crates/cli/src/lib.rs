//! The `apimail` command line: argument parsing, configuration and output.
//!
//! This is the only crate that knows about clap and anyhow. It turns
//! flags into calls on apimail-core and the provider crates, and turns
//! their errors into `error:` / `caused by:` / `hint:` reports with
//! sysexits exit codes. It also owns the async runtime and the log output.

mod aadsts;
mod admin;
mod app;
mod auth;
mod cli;
pub mod codegen;
use apimail_account::config;
mod doctor;
mod exit;
mod graph_auth;
mod limit;
mod log;
mod merge;
mod outbox;
mod password;
mod providers;
mod queue;
mod relay;
mod relay_plan;
mod runtime;
mod send;
mod sendmail;
mod sendmail_args;
mod sign_in_again;
mod store;
mod store_doctor;

pub use app::main;
pub use cli::command;
pub use exit::Exit;
