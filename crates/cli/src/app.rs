//! The program: the tokio runtime (current-thread), logging (`warning:`
//! and `debug:` lines on stderr), the panic hook that reports a bug
//! instead of a backtrace, and the dispatch to each command.

use std::process::ExitCode;

use anyhow::anyhow;
use apimail_core::retry::RetryPolicy;
use clap::Parser;

use crate::exit::{Exit, Failure};
use crate::runtime::block_on;
use crate::{
    admin, auth, cli, config, doctor, graph_auth, log, merge, providers, queue, relay, send,
    sendmail, sendmail_args, store,
};

/// Runs apimail with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    // Run as `sendmail` or `mailq` (a symlink): sendmail's own syntax.
    let mut args = std::env::args_os();
    if let Some(program) = args
        .next()
        .as_deref()
        .and_then(sendmail_args::mode_for_program_name)
    {
        let rest: Vec<_> = args.collect();
        return run_sendmail(sendmail_args::parse_as(program, &rest), None);
    }
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
    // The relay logs one line per session and per message without -v.
    let relaying = matches!(&cli.command, cli::Command::Relay(args) if args.command.is_none());
    init_logging(cli.verbose + u8::from(relaying), cli.debug);
    install_panic_hook();
    let result = std::panic::catch_unwind(|| run(cli))
        .unwrap_or_else(|_| Err(Failure::new(Exit::Software, anyhow!("internal error")).silent()));
    finish(result)
}

/// A panic is a bug: report it in the usual form, never as a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let failure = Failure::new(
            Exit::Software,
            anyhow!("apimail hit an internal error: {}", panic_message(info)),
        )
        .hint("this is a bug; please report it, with the command you ran (secrets removed)");
        failure.report();
    }));
}

fn run_sendmail(
    parsed: Result<sendmail_args::Invocation, sendmail_args::UsageError>,
    config: Option<std::path::PathBuf>,
) -> ExitCode {
    let invocation = match parsed {
        Ok(invocation) => invocation,
        Err(usage) => {
            Failure::new(Exit::Usage, anyhow!(usage.message))
                .hint(usage.hint)
                .report();
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    init_logging(u8::from(invocation.verbose), false);
    install_panic_hook();
    let result = std::panic::catch_unwind(move || {
        block_on(async move { sendmail::run(config.as_deref(), invocation).await })
    })
    .unwrap_or_else(|_| Err(Failure::new(Exit::Software, anyhow!("internal error")).silent()));
    finish(result)
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.exit as u8)
        }
    }
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    match info.location() {
        Some(at) => format!("{payload} (at {}:{})", at.file(), at.line()),
        None => payload,
    }
}

fn run(cli: cli::Cli) -> Result<(), Failure> {
    let config = cli.config;
    match cli.command {
        cli::Command::Sendmail(args) => {
            let invocation = sendmail_args::parse(&args.args).map_err(|usage| {
                Failure::new(Exit::Usage, anyhow!(usage.message)).hint(usage.hint)
            })?;
            block_on(async move { sendmail::run(config.as_deref(), invocation).await })
        }
        cli::Command::Doctor(args) => {
            block_on(async move { doctor::run(config.as_deref(), args).await })
        }
        cli::Command::Send(args) => block_on(async move {
            let ctx = providers::Context::load(config.as_deref())?;
            let retry = retry_policy(&ctx.config)?;
            send::run(ctx, *args, retry).await
        }),
        cli::Command::Auth(command) => block_on(async move {
            let ctx = providers::Context::load(config.as_deref())?;
            match command {
                cli::AuthCommand::Login(cli::LoginCommand::Gmail(args)) => {
                    auth::login_gmail(ctx, args).await
                }
                cli::AuthCommand::Login(cli::LoginCommand::Graph(args)) => {
                    graph_auth::login(ctx, args).await
                }
                cli::AuthCommand::ImportSmail(args) => auth::import_smail(ctx, args).await,
                cli::AuthCommand::Status(args) => auth::status(ctx, args).await,
                cli::AuthCommand::Logout(args) => auth::logout(ctx, args).await,
            }
        }),
        cli::Command::Log(args) => block_on(async move { log::run(config.as_deref(), args).await }),
        cli::Command::Relay(args) => {
            block_on(async move { relay::run(config.as_deref(), args).await })
        }
        cli::Command::Admin(command) => admin::run(config.as_deref(), command),
        cli::Command::Store(command) => {
            block_on(async move { store::run(config.as_deref(), command).await })
        }
        cli::Command::Merge(args) => block_on(async move {
            let ctx = providers::Context::load(config.as_deref())?;
            let retry = retry_policy(&ctx.config)?;
            merge::run(ctx, *args, retry).await
        }),
        cli::Command::Queue(command) => block_on(async move {
            let ctx = providers::Context::load(config.as_deref())?;
            queue::run(&ctx, command).await
        }),
    }
}

/// The retry bound: `$APIMAIL_RETRY_ATTEMPTS` / `$APIMAIL_RETRY_MAX_SECONDS`,
/// else the config's `[retry]`, else 5 tries within 2 minutes.
fn retry_policy(config: &config::Config) -> Result<RetryPolicy, Failure> {
    Ok(apimail_account::retry_policy(
        config,
        RetryPolicy::standard(),
    )?)
}

/// Logs go to stderr: warnings always, `-v` adds progress, `--debug` adds
/// every HTTP exchange. No library logs a secret.
fn init_logging(verbose: u8, debug: bool) {
    let level = match (debug, verbose) {
        (true, _) | (_, 2..) => tracing::Level::DEBUG,
        (_, 1) => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .event_format(PlainFormat)
        .try_init();
}

/// `warning: ...`, `debug: ...`, and progress as plain lines: the same
/// shape as the `error:` / `hint:` reports, readable without color.
struct PlainFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prefix = match *event.metadata().level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            tracing::Level::INFO => "",
            _ => "debug: ",
        };
        write!(writer, "{prefix}")?;
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, writer.by_ref(), event)?;
        writeln!(writer)
    }
}
