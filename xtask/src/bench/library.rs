//! Figure 8: the library (`apimail_mailer::Mailer`, issue 14) against the
//! fakes, run by the release-built example `bench_sends`: 100 sends from one
//! mailer (requests, new connections, own cost per send beyond the injected
//! round trip), and a cold `Mailer::from_env()` plus one send against the
//! command line's cold send with the same environment credentials.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use apimail_tests::Sandbox;
use apimail_tests::fake_google::{self, FakeGoogle};
use apimail_tests::fake_microsoft::FakeMicrosoft;
use serde_json::Value;

use super::Options;
use super::measure::{self, Stats};
use super::world::{Provider, RECIPIENT};
use crate::{Context, Error, Result};

pub(crate) const HEADING: &str = "## 8. Library";

/// Sends in the many-sends rows.
const SENDS: usize = 100;
/// Sends in flight at once in the connections row: more than any mailbox's
/// concurrency, so the mailer's own limit is what holds.
const AT_ONCE: usize = 10;
const GMAIL_USER: &str = "boss@example.com";
const TENANT: &str = "contoso.onmicrosoft.com";
const APP_ID: &str = "0a0b0c0d-1111-2222-3333-444455556666";
const APP_SECRET: &str = "bench~app~secret";
const MAILBOX: &str = "alerts@contoso.com";

/// 100 sends from one mailer, per provider.
#[derive(Debug, Clone)]
pub(crate) struct ManyRow {
    pub(crate) provider: Provider,
    pub(crate) concurrency: usize,
    /// Send requests and token requests the fake saw (the 10-at-once run).
    pub(crate) requests: u64,
    pub(crate) token_requests: u64,
    /// TCP connections the fake accepted, the token endpoint's included.
    pub(crate) connections: u64,
    /// One at a time: each send's time minus the injected round trip, the
    /// first (which fetches the token) left out.
    pub(crate) own_ms: Stats,
}

/// Figure 8's figures.
#[derive(Debug, Clone)]
pub(crate) struct LibraryFigures {
    pub(crate) rtt: Duration,
    pub(crate) many: Vec<ManyRow>,
    /// Process wall time, Gmail service account from the environment.
    pub(crate) cold_library_ms: Stats,
    pub(crate) cold_cli_ms: Stats,
}

/// The fakes with the library's credentials registered.
struct Fakes {
    google: FakeGoogle,
    microsoft: FakeMicrosoft,
    dir: tempfile::TempDir,
}

impl Fakes {
    fn start(rtt: Duration) -> Result<Fakes> {
        let google = FakeGoogle::start();
        google.register_fixture_service_account();
        google.allow_delegation(fake_google::FIXTURE_SERVICE_ACCOUNT, GMAIL_USER);
        let microsoft = FakeMicrosoft::start();
        microsoft.add_app(TENANT, APP_ID, Some(APP_SECRET), None);
        microsoft.add_mailbox(MAILBOX);
        google.traffic().set_delay(rtt);
        microsoft.traffic().set_delay(rtt);
        let dir = tempfile::tempdir().with_context(|| "cannot create a temp dir")?;
        let key = dir.path().join("key.json");
        std::fs::write(
            &key,
            fake_google::service_account_key_json(&google.token_url()),
        )
        .with_context(|| "cannot write the service account key")?;
        Ok(Fakes {
            google,
            microsoft,
            dir,
        })
    }

    /// `program` in a sandbox of the fake Google, with `provider`'s
    /// credentials in its environment.
    fn command(&self, program: &Path, provider: Provider) -> (Sandbox, Command) {
        let sandbox = Sandbox::new(&self.google).with_binary(program.to_owned());
        let mut cmd = sandbox.cmd();
        match provider {
            Provider::Gmail => cmd
                .env(
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    self.dir.path().join("key.json"),
                )
                .env("APIMAIL_GMAIL_USER", GMAIL_USER),
            Provider::Graph => cmd
                .env("AZURE_TENANT_ID", TENANT)
                .env("AZURE_CLIENT_ID", APP_ID)
                .env("AZURE_CLIENT_SECRET", APP_SECRET)
                .env("APIMAIL_GRAPH_USER", MAILBOX)
                .env("APIMAIL_GRAPH_API_URL", self.microsoft.graph_url())
                .env("APIMAIL_MS_AUTHORITY_URL", self.microsoft.authority_url()),
        };
        (sandbox, cmd)
    }

    /// (requests, token requests, connections) so far.
    fn counters(&self, provider: Provider) -> (u64, u64, u64) {
        let (traffic, tokens) = match provider {
            Provider::Gmail => (
                self.google.traffic(),
                self.google.total_token_requests() as u64,
            ),
            Provider::Graph => (
                self.microsoft.traffic(),
                self.microsoft.total_token_requests() as u64,
            ),
        };
        (traffic.requests(), tokens, traffic.connections())
    }
}

fn user(provider: Provider) -> &'static str {
    match provider {
        Provider::Gmail => GMAIL_USER,
        Provider::Graph => MAILBOX,
    }
}

/// Runs `bench_sends`; its JSON line.
fn bench_sends(
    fakes: &Fakes,
    example: &Path,
    provider: Provider,
    count: usize,
    at_once: usize,
) -> Result<Value> {
    let (_sandbox, mut cmd) = fakes.command(example, provider);
    cmd.args([
        user(provider),
        RECIPIENT,
        &count.to_string(),
        &at_once.to_string(),
    ]);
    let out = cmd.output().with_context(|| "cannot run bench_sends")?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "bench_sends failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout).with_context(|| "bench_sends printed no JSON line")
}

/// Measures figure 8 with the release-built `example` and `apimail`.
pub(crate) fn measure(example: &Path, apimail: &Path, options: &Options) -> Result<LibraryFigures> {
    let rtt = options.rtt;
    let fakes = Fakes::start(rtt)?;
    let mut many = Vec::new();
    for provider in Provider::ALL {
        eprintln!("==> bench: library, {} sends, {}", SENDS, provider.name());
        let before = fakes.counters(provider);
        bench_sends(&fakes, example, provider, SENDS, AT_ONCE)?;
        let after = fakes.counters(provider);
        let one_by_one = bench_sends(&fakes, example, provider, SENDS, 1)?;
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        let own = one_by_one["send_ms"]
            .as_array()
            .map(|times| {
                times
                    .iter()
                    .skip(1)
                    .filter_map(Value::as_f64)
                    .map(|ms| ms - rtt_ms)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        many.push(ManyRow {
            provider,
            concurrency: match provider {
                Provider::Gmail => apimail_mailer::GMAIL_CONCURRENCY,
                Provider::Graph => apimail_mailer::GRAPH_CONCURRENCY,
            },
            requests: after.0 - before.0 - (after.1 - before.1),
            token_requests: after.1 - before.1,
            connections: after.2 - before.2,
            own_ms: Stats::of(own)
                .ok_or_else(|| Error::new("bench_sends reported no send times"))?,
        });
    }
    eprintln!("==> bench: library, cold from_env() + one send vs the CLI's");
    let mut library = Vec::new();
    let mut cli = Vec::new();
    for _ in 0..options.runs.max(3) {
        let (_sandbox, mut cmd) = fakes.command(example, Provider::Gmail);
        cmd.args([GMAIL_USER, RECIPIENT, "1", "1"]);
        library.push(measure::run(&mut cmd, b"")?.wall.as_secs_f64() * 1000.0);
        let (_sandbox, mut cmd) = fakes.command(apimail, Provider::Gmail);
        cmd.args([
            "send",
            "--provider",
            "gmail",
            "--to",
            RECIPIENT,
            "--subject",
            "bench",
            "--text",
            "hello",
        ]);
        cli.push(measure::run(&mut cmd, b"")?.wall.as_secs_f64() * 1000.0);
    }
    Ok(LibraryFigures {
        rtt,
        many,
        cold_library_ms: Stats::of(library).ok_or_else(|| Error::new("no runs"))?,
        cold_cli_ms: Stats::of(cli).ok_or_else(|| Error::new("no runs"))?,
    })
}

/// Figure 8 and its targets, in Markdown.
pub(crate) fn render(figures: &LibraryFigures, profile: &str, out: &mut String) {
    use std::fmt::Write as _;
    let rtt = figures.rtt.as_millis();
    let _ = writeln!(
        out,
        "{HEADING}\n\n`apimail_mailer::Mailer` ({profile} build of the example `bench_sends`) against \
         the fakes on 127.0.0.1 over plain HTTP (the fakes serve no TLS), every request delayed by \
         {rtt} ms. {SENDS} sends of a 2 KB message from one `Mailer::from_env()`: {AT_ONCE} at a time \
         for the request and connection counts, one at a time for the own cost (each send's time \
         minus {rtt} ms, the first send, which fetches the token, left out). Connections count \
         the token endpoint's too (its own client; in production its own host).\n"
    );
    let _ = writeln!(
        out,
        "| provider | concurrency | send requests | token requests | new connections | own ms/send p50 | min | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &figures.many {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            row.provider.name(),
            row.concurrency,
            row.requests,
            row.token_requests,
            row.connections,
            row.own_ms.median,
            row.own_ms.min,
            row.own_ms.max
        );
    }
    let (lib, cli) = (figures.cold_library_ms, figures.cold_cli_ms);
    let _ = writeln!(
        out,
        "\nCold send (a new process, Gmail service account from the environment, one token \
         request each), wall ms median (min–max): library `Mailer::from_env()` + one send \
         {:.1} ({:.1}–{:.1}); `apimail send` {:.1} ({:.1}–{:.1}).\n",
        lib.median, lib.min, lib.max, cli.median, cli.min, cli.max
    );
    let _ = writeln!(out, "| target | met? |\n|---|---|");
    for row in &figures.many {
        let name = row.provider.name();
        let _ = writeln!(
            out,
            "| {name}: {SENDS} send requests + ≤ 1 token request | {} |",
            met(row.requests == SENDS as u64 && row.token_requests <= 1)
        );
        let _ = writeln!(
            out,
            "| {name}: new connections ≤ concurrency ({}), plus the token endpoint's | {} ({}) |",
            row.concurrency,
            met(row.connections <= row.concurrency as u64 + 1),
            row.connections
        );
        let _ = writeln!(
            out,
            "| {name}: own cost ≤ 1 ms per send (median) | {} |",
            met(row.own_ms.median <= 1.0)
        );
    }
    let _ = writeln!(
        out,
        "| cold `Mailer::from_env()` + one send ≤ the CLI's cold send | {} |",
        met(lib.median <= cli.median)
    );
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}
