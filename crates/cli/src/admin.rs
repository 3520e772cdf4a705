//! `apimail admin`: the admin console (`serve`), and the administrators and
//! API tokens it accepts. The console itself is `apimail-console`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use apimail_console::alerts::{AlertConfig, AlertMail, Sending};
use apimail_console::checks::{CheckResult, CheckStatus, Checking, Checks};
use apimail_console::signin::{Progress, SignIn, Signing};
use apimail_console::{
    AccountInfo, AdminUsers, ApiTokens, Console, ConsoleConfig, DEFAULT_LOGIN_LIMITS, Hook,
    SettingsError, SettingsExt, TokensError, UsersError,
};
use apimail_core::delivery::{IfNotSent, Settled};
use apimail_core::intake::Owner;
use apimail_core::journal::rfc3339;
use apimail_core::retry::RetryPolicy;
use apimail_core::{Mailbox, MessageBuilder};

use crate::cli::{AdminCommand, TokenCommand, UserCommand};
use crate::config;
use crate::exit::{Exit, Failure};
use crate::providers;
use crate::queue;

pub fn run(config_flag: Option<&Path>, command: AdminCommand) -> Result<(), Failure> {
    let dir = queue::data_dir()?.join("admin");
    match command {
        AdminCommand::Serve { listen } => serve(config_flag, &dir, listen.as_deref()),
        AdminCommand::User(command) => users(&dir, command),
        AdminCommand::Token(command) => tokens(&dir, command),
    }
}

fn serve(config_flag: Option<&Path>, dir: &Path, listen: Option<&str>) -> Result<(), Failure> {
    crate::runtime::block_on(async move {
        let console = prepare(config_flag, dir, listen, None, None).await?;
        console.run(stopped()).await
    })
}

/// The console, ready to serve: its address, its TLS, the console.
pub struct Prepared {
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    console: Arc<Console>,
}

impl Prepared {
    /// Listens and serves, with the alerts' rounds, until `shutdown`.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Failure> {
        let addr = self.addr;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::new(Exit::TempFail, anyhow!(e).context(format!("cannot listen on {addr}")))
                .hint("another program may use that port (the relay?); pick another with --listen ADDR:PORT")
        })?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        say(&format!(
            "the admin console is at {scheme}://{addr}/ (API under /api/v1/)"
        ));
        let alerts = Arc::clone(&self.console).watch_alerts();
        let router = apimail_console::router(self.console);
        tokio::select! {
            () = apimail_console::serve(listener, router, self.tls, shutdown) => {}
            () = alerts => {}
        }
        Ok(())
    }
}

/// Everything `admin serve` and `relay --admin` need before serving: the
/// `[admin]` settings (`listen` overrides its address), TLS (off loopback
/// the configured certificate, else `fallback_tls`: the relay's), the
/// console over the data directory with the relay users and the alerts.
/// `relay_reload` tells a relay in this process about changed users.
/// With a shared store (`[store] url`, `APIMAIL_STORE_URL`) the console
/// shows the store's send log and queue.
pub async fn prepare(
    config_flag: Option<&Path>,
    dir: &Path,
    listen: Option<&str>,
    fallback_tls: Option<Arc<rustls::ServerConfig>>,
    relay_reload: Option<Hook>,
) -> Result<Prepared, Failure> {
    let path = config::path(config_flag)?;
    let config = config::load(&path)?;
    let settings = config.admin.clone().unwrap_or_default();
    let settings_failure = |error: SettingsError| {
        let hint = match &error {
            SettingsError::BadListen(_) => {
                "give an address and port, e.g. --listen 127.0.0.1:8025".to_owned()
            }
            SettingsError::NeedsTls(_) => format!(
                "set certificate and private_key in the [admin] table of {}, or listen on loopback (--listen 127.0.0.1:8025) and reach it through an SSH tunnel",
                path.display()
            ),
            SettingsError::HalfTls => format!(
                "set both certificate and private_key in the [admin] table of {}",
                path.display()
            ),
            SettingsError::BadTimeZone(_) => format!(
                "use an IANA name such as Asia/Tokyo or UTC in [admin] time_zone of {}",
                path.display()
            ),
        };
        let exit = match (&error, listen) {
            (SettingsError::BadListen(_), Some(_)) => Exit::Usage,
            _ => Exit::Config,
        };
        Failure::new(exit, error).hint(hint)
    };
    let addr = settings.listen_addr(listen).map_err(settings_failure)?;
    let tls = match (settings.tls_files(addr), fallback_tls) {
        (Ok(Some((cert, key))), _) => Some(apimail_console::tls::from_files(&cert, &key).map_err(|e| {
            Failure::new(Exit::Config, e).hint(format!(
                "check [admin] certificate and private_key in {} (PEM files, the key matching the certificate)",
                path.display()
            ))
        })?),
        (Ok(None), _) => None,
        // Off loopback without a certificate of its own: the relay's.
        (Err(SettingsError::NeedsTls(_)), Some(relay)) => Some(relay),
        (Err(error), _) => return Err(settings_failure(error)),
    };
    let zone = settings.zone().map_err(settings_failure)?;
    let accounts = config
        .accounts
        .iter()
        .map(|(name, account)| AccountInfo {
            name: name.clone(),
            provider: account.provider().name().to_owned(),
            address: account.address().map(str::to_owned),
            app_only: account.is_app_only(),
        })
        .collect();
    let token_store = apimail_account::store()?;
    let console = Console::open(ConsoleConfig {
        dir: dir.to_owned(),
        journal: queue::open_journal(&config)?,
        outbox: queue::open_outbox()?,
        token_store,
        accounts,
        zone,
        tls: tls.is_some(),
        login_limits: DEFAULT_LOGIN_LIMITS,
    })
    .map_err(|e| {
        Failure::new(Exit::Config, e).hint(format!(
            "check the permissions of {} (apimail doctor); deleting its index.sqlite3 makes the console rebuild it",
            dir.display()
        ))
    })?;
    let settings =
        apimail_account::store_settings(&config).map_err(crate::store::settings_failure)?;
    let (console, index_file) = match settings {
        None => (console, apimail_console::INDEX_FILE),
        Some(settings) => {
            let store = crate::outbox::open_store(&settings).await?;
            let name = apimail_store_postgres::redact_url(settings.url.expose());
            let console = console.with_store(store, &name).map_err(|e| {
                Failure::new(Exit::Config, e).hint(format!(
                    "check the permissions of {} (apimail doctor)",
                    dir.display()
                ))
            })?;
            (console, apimail_console::STORE_INDEX_FILE)
        }
    };
    // Off the runtime: the index waits for the store's journal on it.
    let console = Arc::new(console);
    let indexing = Arc::clone(&console);
    let added = tokio::task::spawn_blocking(move || indexing.update_index())
        .await
        .map_err(|e| Failure::new(Exit::Software, anyhow!("the first indexing stopped: {e}")))?;
    let added = added.map_err(|e| match e {
        // The store answered at its opening: a blip, try again.
        apimail_console::IndexError::Store { .. } => Failure::new(Exit::TempFail, e)
            .hint("check the database with `apimail doctor`, then start the console again"),
        e => Failure::new(Exit::Config, e).hint(format!(
            "check the permissions of {}; deleting its {index_file} makes the console rebuild it",
            dir.display()
        )),
    })?;
    let Ok(console) = Arc::try_unwrap(console) else {
        return Err(Failure::new(
            Exit::Software,
            anyhow!("the console is still shared after its first indexing"),
        ));
    };
    if added > 0 {
        tracing::info!("indexed {added} journal record(s)");
    }
    let users = apimail_account::relay_dir()?.join(apimail_relay::users::USERS_FILE);
    let mut console = console
        .with_relay_users(users, relay_reload)
        .with_checks(Arc::new(DoctorChecks {
            config_flag: config_flag.map(Path::to_owned),
        }))
        .with_sign_in(Arc::new(ConsoleSignIn {
            config_flag: config_flag.map(Path::to_owned),
        }));
    if let Some(alerts) = alert_config(config_flag, &path, &config)? {
        console = console.with_alerts(alerts);
    }
    let console = Arc::new(console);
    let no_users = AdminUsers::load(&console.users_path()).map_or(true, |u| u.list().is_empty());
    if no_users {
        tracing::warn!(
            "no administrator can sign in yet; add one with `apimail admin user add NAME`"
        );
    }
    Ok(Prepared { addr, tls, console })
}

/// `[alerts]`, resolved: the address (default `[relay] postmaster`) and
/// the webhook. `None` without the table.
fn alert_config(
    config_flag: Option<&Path>,
    path: &Path,
    config: &config::Config,
) -> Result<Option<AlertConfig>, Failure> {
    let Some(alerts) = &config.alerts else {
        return Ok(None);
    };
    let postmaster = config.relay.as_ref().and_then(|r| r.postmaster.clone());
    let mail = match alerts.address.clone().or(postmaster) {
        Some(text) => {
            let to = text.parse::<Mailbox>().map_err(|e| {
                Failure::new(
                    Exit::Config,
                    anyhow!("[alerts] address `{text}` is not an address: {e}"),
                )
                .hint(format!("fix [alerts] address in {}", path.display()))
            })?;
            Some(Arc::new(AlertMailer {
                config_flag: config_flag.map(Path::to_owned),
                to,
            }) as Arc<dyn AlertMail>)
        }
        None => None,
    };
    let webhook = match &alerts.webhook {
        Some(text) => Some(apimail_core::endpoint::checked_url(text).map_err(|e| {
            Failure::new(Exit::Config, anyhow!("[alerts] webhook {}", e.reason)).hint(format!(
                "give an https:// URL in [alerts] webhook of {}",
                path.display()
            ))
        })?),
        None => None,
    };
    if mail.is_none() && webhook.is_none() {
        return Err(Failure::new(
            Exit::Config,
            anyhow!(
                "[alerts] names neither an address nor a webhook, and [relay] has no postmaster"
            ),
        )
        .hint(format!(
            "set [alerts] address or webhook in {}",
            path.display()
        )));
    }
    let disk_free_percent = alerts
        .disk_free_percent
        .unwrap_or(apimail_console::alerts::DEFAULT_DISK_FREE_PERCENT);
    if !(0.0..=100.0).contains(&disk_free_percent) {
        return Err(Failure::new(
            Exit::Config,
            anyhow!("[alerts] disk_free_percent is {disk_free_percent}, not a percentage"),
        )
        .hint(format!(
            "set it between 0 (no disk alert) and 100 in {}, or remove it for the default 5",
            path.display()
        )));
    }
    Ok(Some(AlertConfig {
        mail,
        webhook,
        queued_hours: alerts
            .queued_hours
            .unwrap_or(apimail_console::alerts::DEFAULT_QUEUED_HOURS),
        data_dir: queue::data_dir()?,
        disk_free_percent,
    }))
}

/// Alert mail, sent as `apimail send` sends: from the default account, to
/// the alert address, through the outbox and the delivery engine. A
/// message not sent at once is removed again: the next round sends a new
/// one, so nothing goes out twice.
struct AlertMailer {
    config_flag: Option<PathBuf>,
    to: Mailbox,
}

impl AlertMailer {
    async fn deliver(&self, subject: &str, body: &str) -> Result<(), Failure> {
        let ctx = providers::Context::load(self.config_flag.as_deref())?;
        let resolved = providers::resolve(&ctx, &providers::Flags::default()).await?;
        let from = match resolved.address.as_deref().map(str::parse::<Mailbox>) {
            Some(Ok(from)) => from,
            _ => {
                return Err(Failure::new(
                    Exit::Config,
                    anyhow!("the default account has no address to send alerts from"),
                )
                .hint("set address in the default account's table"));
            }
        };
        let message = MessageBuilder::new()
            .from(from.clone())
            .to(self.to.clone())
            .subject(subject)
            .header("Auto-Submitted", "auto-generated")
            .text(body)
            .build()
            .map_err(|e| Failure::new(Exit::Software, e))?;
        let owner = Owner {
            account: resolved.account.clone(),
            provider: Some(resolved.provider.name().to_owned()),
            max_age_secs: queue::max_age_secs(),
            ..Owner::new(resolved.identity.clone())
        };
        let engine = queue::engine(&ctx)?;
        let id = engine
            .outbox()
            .accept(
                message.as_bytes(),
                owner.entry(&from, std::slice::from_ref(&self.to), message.message_id()),
            )
            .map_err(queue::outbox_failure)?;
        let retry = apimail_account::retry_policy(&ctx.config, RetryPolicy::standard())?;
        let delivery = engine
            .deliver(&id, &resolved, &retry, IfNotSent::Drop)
            .await
            .map_err(queue::outbox_failure)?;
        match delivery.settled {
            Settled::Sent(_) | Settled::VerifiedSent => Ok(()),
            _ => Err(Failure::new(
                Exit::TempFail,
                match delivery.error {
                    Some(error) => anyhow!(error),
                    None => anyhow!("the alert mail was not sent"),
                },
            )),
        }
    }
}

/// "Sign in again" runs `apimail auth login`'s flows with the account's
/// own settings, shown on the console's page.
struct ConsoleSignIn {
    config_flag: Option<PathBuf>,
}

impl SignIn for ConsoleSignIn {
    fn run(&self, account: String, progress: Progress) -> Signing {
        let config_flag = self.config_flag.clone();
        Box::pin(async move {
            let surface = crate::auth::Surface::Console(progress);
            match crate::sign_in_again::login_again(config_flag.as_deref(), &account, &surface)
                .await
            {
                Ok(name) => Ok(format!("account `{name}`; its held mail can go out now")),
                Err(failure) => Err(match &failure.hint {
                    Some(hint) => format!("{:#} (hint: {hint})", failure.error),
                    None => format!("{:#}", failure.error),
                }),
            }
        })
    }
}

/// The checks page runs `apimail doctor`'s checks.
struct DoctorChecks {
    config_flag: Option<PathBuf>,
}

impl Checks for DoctorChecks {
    fn run<'a>(&'a self, account: Option<&'a str>) -> Checking<'a> {
        Box::pin(async move {
            let args = crate::cli::DoctorArgs {
                account: account.map(str::to_owned),
                json: false,
            };
            crate::doctor::gather(self.config_flag.as_deref(), &args)
                .await
                .into_iter()
                .map(|check| CheckResult {
                    name: check.name.to_owned(),
                    status: match (check.passed, check.warning) {
                        (false, _) => CheckStatus::Fail,
                        (true, true) => CheckStatus::Warn,
                        (true, false) => CheckStatus::Ok,
                    },
                    detail: check.detail,
                    hint: check.hint,
                })
                .collect()
        })
    }
}

impl AlertMail for AlertMailer {
    fn send<'a>(&'a self, subject: &'a str, body: &'a str) -> Sending<'a> {
        Box::pin(async move {
            self.deliver(subject, body)
                .await
                .map_err(|failure| failure.error.to_string())
        })
    }
}

/// SIGINT or SIGTERM.
pub async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn users_failure(error: UsersError) -> Failure {
    match error {
        UsersError::BadName(_) | UsersError::ShortPassword => Failure::new(Exit::Usage, error)
            .hint("use a name without spaces and a password of at least 8 characters"),
        _ => Failure::new(Exit::Config, error)
            .hint("check the data directory's permissions (apimail doctor)"),
    }
}

fn users(dir: &Path, command: UserCommand) -> Result<(), Failure> {
    let path: PathBuf = dir.join(apimail_console::users::USERS_FILE);
    let mut users = AdminUsers::load(&path).map_err(users_failure)?;
    match command {
        UserCommand::Add { name } => {
            let password = crate::password::read_password("apimail admin user add NAME")?;
            let replaced = users.add(&name, &password).map_err(users_failure)?;
            users.save().map_err(users_failure)?;
            say(&if replaced {
                format!("administrator `{name}` has a new password")
            } else {
                format!(
                    "added administrator `{name}`; sign in at the console (apimail admin serve)"
                )
            });
        }
        UserCommand::List => {
            let mut out = std::io::stdout().lock();
            for user in users.list() {
                let _ = writeln!(out, "{}  added {}", user.name, rfc3339(user.created_at));
            }
            if users.list().is_empty() {
                say("no administrators; add one with `apimail admin user add NAME`");
            }
        }
        UserCommand::Remove { name } => {
            if !users.remove(&name) {
                return Err(Failure::new(
                    Exit::Usage,
                    anyhow!("there is no administrator `{name}`"),
                )
                .hint("see `apimail admin user list`"));
            }
            users.save().map_err(users_failure)?;
            say(&format!("removed administrator `{name}`"));
        }
    }
    Ok(())
}

fn tokens_failure(error: TokensError) -> Failure {
    match error {
        TokensError::BadName(_) => {
            Failure::new(Exit::Usage, error).hint("name it e.g. `monitoring`")
        }
        TokensError::Exists(ref name) => {
            let hint = format!(
                "revoke it first (apimail admin token revoke {name}), or pick another name"
            );
            Failure::new(Exit::Usage, error).hint(hint)
        }
        TokensError::Random => Failure::new(Exit::Software, error),
        TokensError::File(_) => Failure::new(Exit::Config, error)
            .hint("check the data directory's permissions (apimail doctor)"),
    }
}

fn tokens(dir: &Path, command: TokenCommand) -> Result<(), Failure> {
    let path = dir.join(apimail_console::tokens::TOKENS_FILE);
    let mut tokens = ApiTokens::load(&path).map_err(tokens_failure)?;
    match command {
        TokenCommand::Create { name, read_only } => {
            let token = tokens.create(&name, read_only).map_err(tokens_failure)?;
            tokens.save().map_err(tokens_failure)?;
            // The one time the token is shown: on standard output, for a
            // pipe into a secret store.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", token.expose());
            say(&format!(
                "created {}token `{name}`; it is shown only this once (send it as Authorization: Bearer TOKEN)",
                if read_only { "read-only " } else { "" }
            ));
        }
        TokenCommand::List => {
            let mut out = std::io::stdout().lock();
            for token in tokens.list() {
                let access = if token.read_only {
                    "read-only"
                } else {
                    "read-write"
                };
                let _ = writeln!(
                    out,
                    "{}  {access}  created {}",
                    token.name,
                    rfc3339(token.created_at)
                );
            }
            if tokens.list().is_empty() {
                say("no API tokens; create one with `apimail admin token create NAME`");
            }
        }
        TokenCommand::Revoke { name } => {
            if !tokens.revoke(&name) {
                return Err(
                    Failure::new(Exit::Usage, anyhow!("there is no API token `{name}`"))
                        .hint("see `apimail admin token list`"),
                );
            }
            tokens.save().map_err(tokens_failure)?;
            say(&format!("revoked API token `{name}`"));
        }
    }
    Ok(())
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
