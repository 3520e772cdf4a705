//! `apimail doctor`: checks, in order, everything a send depends on, and
//! says in plain words what a failure means and what to do.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

use anyhow::anyhow;
use apimail_core::TokenSource;
use apimail_core::endpoint::ProbeFailure;
use url::Url;

use crate::cli::DoctorArgs;
use crate::config::Provider;
use crate::exit::{Exit, Failure};
use apimail_gmail::GmailTokens;
use apimail_graph::GraphTokens;

use crate::providers::{self, Context, Resolved, Sender};

/// The outcome of one check.
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// Passed, with something to do before it fails.
    pub warning: bool,
    pub detail: String,
    pub hint: Option<String>,
    exit: Exit,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            passed: true,
            warning: false,
            detail: detail.into(),
            hint: None,
            exit: Exit::Ok,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            warning: true,
            hint: Some(hint.into()),
            ..Check::ok(name, detail)
        }
    }

    fn fail(
        name: &'static str,
        exit: Exit,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Check {
            name,
            passed: false,
            warning: false,
            detail: detail.into(),
            hint: Some(hint.into()),
            exit,
        }
    }
}

pub async fn run(config_flag: Option<&std::path::Path>, args: DoctorArgs) -> Result<(), Failure> {
    let checks = gather(config_flag, &args).await;
    if args.json {
        report_json(&checks);
    } else {
        report(&checks);
    }
    match checks.iter().find(|c| !c.passed) {
        None => Ok(()),
        Some(first) => Err(Failure::new(
            first.exit,
            anyhow!(
                "{} of {} checks failed; the first: {}",
                checks.iter().filter(|c| !c.passed).count(),
                checks.len(),
                first.name
            ),
        )
        .hint("fix the failures above, first to last, then run `apimail doctor` again")),
    }
}

/// Every check, in order, for `args.account` (else the default account):
/// what `apimail doctor` prints and the admin console's checks page shows.
pub async fn gather(config_flag: Option<&std::path::Path>, args: &DoctorArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    let ctx = match providers::load(config_flag) {
        Ok(ctx) if !ctx.config_path.exists() => {
            let env_credentials = apimail_account::env_credentials_set(Provider::Gmail)
                || apimail_account::env_credentials_set(Provider::Graph);
            if env_credentials {
                checks.push(Check::ok(
                    "configuration",
                    format!(
                        "{} does not exist; credentials come from the environment",
                        ctx.config_path.display()
                    ),
                ));
            } else {
                checks.push(Check::fail(
                    "configuration",
                    Exit::Config,
                    format!(
                        "{} does not exist, and no credentials are in the environment",
                        ctx.config_path.display()
                    ),
                    "log in to create it: `apimail auth login gmail --client-secret client_secret.json` or `apimail auth login graph --client-id CLIENT_ID`",
                ));
            }
            Some(ctx)
        }
        Ok(ctx) => {
            checks.push(Check::ok(
                "configuration",
                format!("{} parses", ctx.config_path.display()),
            ));
            Some(ctx)
        }
        Err(failure) => {
            checks.push(Check::fail(
                "configuration",
                Exit::Config,
                failure.error.to_string(),
                failure.hint.clone().unwrap_or_default(),
            ));
            None
        }
    };
    checks.push(certificates_check());
    if let Some(ctx) = &ctx {
        account_checks(ctx, args, &mut checks).await;
        queue_check(&mut checks);
        store_checks(ctx, &mut checks).await;
        for (name, result) in crate::relay_plan::doctor_checks(ctx) {
            checks.push(match result {
                Ok(detail) => Check::ok(name, detail),
                Err((detail, hint)) => Check::fail(name, Exit::Config, detail, hint),
            });
        }
    }
    checks
}

async fn account_checks(ctx: &Context, args: &DoctorArgs, checks: &mut Vec<Check>) {
    let resolved = match providers::resolve(
        ctx,
        &providers::Flags {
            account: args.account.clone(),
            provider: None,
        },
    )
    .await
    {
        Ok(resolved) => {
            checks.push(Check::ok("account", resolved.label.clone()));
            resolved
        }
        Err(failure) => {
            checks.push(Check::fail(
                "account",
                failure.exit,
                failure.error.to_string(),
                failure.hint.unwrap_or_default(),
            ));
            return;
        }
    };
    checks.push(address_check(ctx, &resolved));
    checks.push(store_check(ctx, args, &resolved.relogin));
    if let Some(check) = authorization_check(ctx, &resolved) {
        checks.push(check);
    }
    checks.push(refresh_check(&resolved).await);
    let mut server_date = None;
    for (url, stack) in &resolved.endpoints {
        let (check, date) = network_check(url, *stack).await;
        checks.push(check);
        server_date = server_date.or(date);
    }
    if let Some(date) = server_date {
        checks.push(clock_check(date));
    }
}

/// The address `send` uses when --from is not given.
fn address_check(ctx: &Context, resolved: &Resolved) -> Check {
    if let Some(address) = &resolved.address {
        return Check::ok(
            "address",
            format!("sends as {address} unless --from says otherwise"),
        );
    }
    let fix = match &resolved.account {
        Some(name) => format!(
            "log in again (`{}`): the login now learns the address; or set `address = \"you@example.com\"` under [accounts.{name}] in {}",
            resolved.relogin,
            ctx.config_path.display()
        ),
        None => {
            "set the sender's address in the environment (APIMAIL_GMAIL_USER or APIMAIL_GRAPH_USER)"
                .to_owned()
        }
    };
    Check::fail(
        "address",
        Exit::Config,
        format!(
            "the address of {} is unknown, so `send` without --from fails",
            resolved.label
        ),
        fix,
    )
}

/// How long the account's authorization lasts: when it was authorized and
/// last refreshed, and warnings of an end ahead.
fn authorization_check(ctx: &Context, resolved: &Resolved) -> Option<Check> {
    let name = resolved.account.as_deref()?;
    let now = apimail_core::now_unix();
    if let Some(crate::config::Account::Graph(graph)) = ctx.config.accounts.get(name)
        && graph.app_only
    {
        return Some(match crate::auth::secret_expiry_warning(graph, now) {
            Some(warning) => Check::warn("authorization", "app-only credentials", warning),
            None => Check::ok("authorization", "app-only credentials"),
        });
    }
    let stored = ctx.store().ok()?.load(name).ok()??;
    let lifetime = crate::auth::lifetime(&stored, now);
    let facts = if lifetime.facts.is_empty() {
        "no dates recorded (logged in with an older apimail)".to_owned()
    } else {
        lifetime.facts.join("; ")
    };
    Some(if lifetime.warnings.is_empty() {
        Check::ok("authorization", facts)
    } else {
        Check::warn("authorization", facts, lifetime.warnings.join("; "))
    })
}

/// The token file of a stored account: present, 0600, in a 0700 folder.
fn store_check(ctx: &Context, args: &DoctorArgs, relogin: &str) -> Check {
    let Some(name) = ctx.config.selected_name(args.account.as_deref()) else {
        return Check::ok("token store", "not used (credentials from the environment)");
    };
    if ctx
        .config
        .accounts
        .get(&name)
        .is_some_and(crate::config::Account::is_app_only)
    {
        return Check::ok("token store", "not used (app-only credentials)");
    }
    let store = match ctx.store().map_err(Failure::from) {
        Ok(store) => store,
        Err(f) => {
            return Check::fail(
                "token store",
                Exit::Config,
                f.error.to_string(),
                f.hint.unwrap_or_default(),
            );
        }
    };
    let path = store.path(&name);
    let metadata = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return Check::fail(
                "token store",
                Exit::NoPerm,
                format!(
                    "{} does not exist: account `{name}` has no stored tokens",
                    path.display()
                ),
                format!("log in: `{relogin}`"),
            );
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Check::fail(
                "token store",
                Exit::Config,
                format!(
                    "{} is mode {mode:o}: other users can read the tokens",
                    path.display()
                ),
                format!("chmod 600 {}", path.display()),
            );
        }
        if let Some(dir) = path.parent()
            && let Ok(dir_meta) = std::fs::metadata(dir)
            && dir_meta.permissions().mode() & 0o077 != 0
        {
            return Check::fail(
                "token store",
                Exit::Config,
                format!("{} is open to other users", dir.display()),
                format!("chmod 700 {}", dir.display()),
            );
        }
    }
    let _ = metadata;
    Check::ok(
        "token store",
        format!("{} is private (0600)", path.display()),
    )
}

/// One real token request.
async fn refresh_check(resolved: &Resolved) -> Check {
    let started = Instant::now();
    let result = match &resolved.sender {
        Sender::Gmail(t) => match t.tokens() {
            GmailTokens::Stored(s) => s.refresh_now().await,
            other => other.token().await,
        },
        Sender::Graph(t) => match t.tokens() {
            GraphTokens::Stored(s) => s.refresh_now().await,
            other => other.token().await,
        },
    };
    match result {
        Ok(_) => Check::ok(
            "token refresh",
            format!("a new access token in {} ms", started.elapsed().as_millis()),
        ),
        Err(error) => {
            let failure = providers::send_failure(
                match &resolved.sender {
                    Sender::Gmail(_) => apimail_gmail::token_failure(error),
                    Sender::Graph(_) => apimail_graph::token_failure(error),
                },
                resolved,
            );
            let mut detail = failure.error.to_string();
            for cause in failure.error.chain().skip(1) {
                let _ = write!(detail, ": {cause}");
            }
            Check::fail(
                "token refresh",
                failure.exit,
                detail,
                failure.hint.unwrap_or_default(),
            )
        }
    }
}

/// The CA certificates every HTTPS client trusts, loaded once.
fn certificates_check() -> Check {
    let source = apimail_core::http::root_source();
    match apimail_core::http::tls_config() {
        Ok(_) => Check::ok("certificates", format!("CA certificates from {source}")),
        Err(error) => Check::fail(
            "certificates",
            Exit::Config,
            error.to_string(),
            "point SSL_CERT_FILE at a CA bundle (PEM), or unset it to use the system's (Debian: apt-get install ca-certificates)",
        ),
    }
}

/// DNS, TCP, TLS and proxy to one endpoint, through the client stack that
/// sends to it; any HTTP answer counts.
async fn network_check(url: &Url, stack: providers::Stack) -> (Check, Option<String>) {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let name = "network";
    let shown = apimail_core::endpoint::probe_url(url);
    let behind_proxy = apimail_core::http::proxy_for(url).is_some();
    if !behind_proxy
        && tokio::net::lookup_host((host.as_str(), port))
            .await
            .is_err()
    {
        return (
            Check::fail(
                name,
                Exit::TempFail,
                format!("cannot resolve {host}: DNS does not know this name"),
                "check /etc/resolv.conf and the network connection, or the endpoint setting",
            ),
            None,
        );
    }
    match stack.probe(url).await {
        Ok(probe) => {
            let via = match apimail_core::http::proxy_setting() {
                Some(proxy) if behind_proxy => format!(" through {proxy}"),
                _ => String::new(),
            };
            let detail = format!(
                "{shown} answers (HTTP {}) in {} ms{via}",
                probe.status,
                probe.elapsed.as_millis()
            );
            (Check::ok(name, detail), probe.date)
        }
        Err((failure, text)) => {
            let (exit, detail, hint) = explain(failure, &text, &host, port);
            (Check::fail(name, exit, detail, hint), None)
        }
    }
}

/// A probe failure in plain words: certificates, TLS, proxies, refused
/// connections, timeouts.
fn explain(failure: ProbeFailure, text: &str, host: &str, port: u16) -> (Exit, String, String) {
    match failure {
        ProbeFailure::Net(failure) => {
            let exit = if failure.is_temporary() {
                Exit::TempFail
            } else {
                Exit::Config
            };
            let hint = match &failure {
                apimail_core::http::NetFailure::Timeout(_) => {
                    "a firewall may be dropping the traffic; check the endpoint, or set HTTPS_PROXY".to_owned()
                }
                other => other.hint(),
            };
            (exit, failure.to_string(), hint)
        }
        ProbeFailure::Setup => (
            Exit::Config,
            text.to_owned(),
            "point SSL_CERT_FILE at a CA bundle (PEM), or unset it to use the system's (Debian: apt-get install ca-certificates)".into(),
        ),
        ProbeFailure::Refused => (
            Exit::TempFail,
            format!("nothing answers at {host}:{port}: the service is down or a firewall blocks it ({text})"),
            "check that the endpoint is right (`apimail auth status`) and that outgoing HTTPS is allowed; set HTTPS_PROXY if you must use a proxy".into(),
        ),
        ProbeFailure::Other => (
            Exit::TempFail,
            format!("cannot reach {host}:{port} ({text})"),
            "check the network connection".into(),
        ),
    }
}

/// The server's `Date` against ours: tokens and signed assertions fail
/// when the clock is off.
fn clock_check(server_date: String) -> Check {
    let Some(server) = parse_http_date(&server_date) else {
        return Check::ok(
            "clock",
            "the server's Date header could not be read; skipped",
        );
    };
    let skew = apimail_core::now_unix() - server;
    if skew.abs() <= 60 {
        Check::ok("clock", format!("within {}s of the server", skew.abs()))
    } else {
        Check::fail(
            "clock",
            Exit::Config,
            format!(
                "this machine's clock is {}s {} the server's",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" }
            ),
            "turn on time synchronization (timedatectl set-ntp true, or chrony/ntpd): OAuth tokens and signed assertions fail when the clock is off",
        )
    }
}

/// RFC 7231 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, into Unix
/// seconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822);
    Some(at.ok()?.unix_timestamp())
}

fn queue_check(checks: &mut Vec<Check>) {
    match crate::queue::open_outbox() {
        Ok(outbox) => match outbox.summary() {
            Ok(summary) => {
                let oldest = summary
                    .oldest_created_at
                    .map(|t| format!(", oldest {} min old", (apimail_core::now_unix() - t) / 60))
                    .unwrap_or_default();
                let detail = format!(
                    "{} queued, {} held, {} failed{oldest}",
                    summary.queued, summary.held, summary.failed
                );
                if summary.held > 0 {
                    // Each held message with its reason: a login, a fix of
                    // its sender, or the user's decision on an uncertain one.
                    let reasons: Vec<String> = outbox
                        .list()
                        .unwrap_or_default()
                        .iter()
                        .filter(|e| e.state == apimail_core::outbox::EntryState::Held)
                        .map(|e| {
                            let why = e.last_error.as_deref().unwrap_or("held");
                            let uncertain = if e.outcome_unknown {
                                " (may have been sent already)"
                            } else {
                                ""
                            };
                            format!("{}{uncertain}: {why}", e.id)
                        })
                        .collect();
                    checks.push(Check::fail(
                        "queue",
                        Exit::NoPerm,
                        format!("{detail}; held: {}", reasons.join("; ")),
                        "fix what each reason names (often `apimail auth login ...`), then `apimail queue retry ID`; `apimail queue drop ID` gives one up",
                    ));
                } else if summary.failed > 0 {
                    checks.push(Check::fail(
                        "queue",
                        Exit::DataErr,
                        format!("{detail}: failed messages will not be retried by themselves"),
                        "see `apimail queue list`, then `apimail queue retry ID` or `apimail queue drop ID`",
                    ));
                } else {
                    checks.push(Check::ok("queue", detail));
                }
            }
            Err(e) => checks.push(Check::fail(
                "queue",
                Exit::Config,
                e.to_string(),
                "check the data directory's permissions",
            )),
        },
        Err(f) => checks.push(Check::fail(
            "queue",
            Exit::Config,
            f.error.to_string(),
            f.hint.unwrap_or_default(),
        )),
    }
}

/// The shared store's checks, when one is configured (see `store_doctor`).
async fn store_checks(ctx: &Context, checks: &mut Vec<Check>) {
    use crate::store_doctor::Outcome;
    for (name, outcome) in crate::store_doctor::checks(&ctx.config).await {
        checks.push(match outcome {
            Outcome::Ok(detail) => Check::ok(name, detail),
            Outcome::Warn(detail, hint) => Check::warn(name, detail, hint),
            Outcome::Fail(exit, detail, hint) => Check::fail(name, exit, detail, hint),
        });
    }
}

fn report(checks: &[Check]) {
    let mut out = String::new();
    for check in checks {
        let mark = match (check.passed, check.warning) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok  ",
        };
        let _ = writeln!(out, "{mark}  {:<14} {}", check.name, check.detail);
        if let Some(hint) = &check.hint {
            let _ = writeln!(out, "      {:<14} hint: {hint}", "");
        }
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

/// `--json`: `{"ok": …, "checks": [{"name", "status", "detail", "hint",
/// "exit"}]}` on one line, for monitoring.
fn report_json(checks: &[Check]) {
    let list: Vec<serde_json::Value> = checks
        .iter()
        .map(|check| {
            let status = match (check.passed, check.warning) {
                (false, _) => "fail",
                (true, true) => "warn",
                (true, false) => "ok",
            };
            serde_json::json!({
                "name": check.name,
                "status": status,
                "detail": check.detail,
                "hint": check.hint,
                "exit": check.exit as i32,
            })
        })
        .collect();
    let report = serde_json::json!({
        "ok": checks.iter().all(|c| c.passed),
        "checks": list,
    });
    let _ = writeln!(std::io::stdout().lock(), "{report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT"),
            Some(1_767_225_600)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
