//! `apimail relay`: the SMTP relay's listeners, users, TLS, signals and
//! delivery workers, from the `[relay]` table and the flags. The SMTP
//! server itself is `apimail_relay`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use apimail_core::delivery::{Engine, Interrupt, Senders};
use apimail_core::store::Store;
use apimail_core::{Mailbox, SenderIdentity};
use apimail_relay::users::{RelayUser, Users};
use apimail_relay::workers::{Postmaster, Workers};
use apimail_relay::{
    Accepted, AccountInfo, Directory, Limits, Listener, ListenerTls, Principal, Server,
};
use apimail_store_postgres::{Store as PgStore, redact_url};
use tokio::sync::watch;

use crate::cli::{RelayArgs, RelayCommand, RelayUserCommand};
use crate::config::{Account, Config, RelaySettings};
use crate::exit::{Exit, Failure};
use crate::providers::{ConfiguredSenders, Context};
use crate::queue;
use crate::relay_plan::{
    Planned, hostname, listener_account, listener_problems, load_users, networks,
    planned_listeners, server_tls, users_failure,
};

/// How long sessions get to finish after SIGTERM, by default.
const GRACE: Duration = Duration::from_secs(30);

pub async fn run(config_flag: Option<&Path>, args: RelayArgs) -> Result<(), Failure> {
    let ctx = Context::load(config_flag)?;
    match args.command {
        Some(RelayCommand::User(command)) => user(&ctx, command),
        None => serve(ctx, config_flag, &args).await,
    }
}

fn user(ctx: &Context, command: RelayUserCommand) -> Result<(), Failure> {
    let mut users = load_users()?;
    match command {
        RelayUserCommand::Add {
            name,
            account,
            allowed_from,
            rewrite_from,
            messages_per_minute,
        } => {
            let account = ctx
                .config
                .selected_name(account.as_deref())
                .ok_or_else(|| {
                    Failure::new(
                        Exit::Usage,
                        anyhow!("which account does `{name}` send through?"),
                    )
                    .hint(format!(
                        "pass --account NAME: apimail relay user add {name} --account NAME"
                    ))
                })?;
            ctx.config.account(&account, &ctx.config_path)?;
            let password = crate::password::read_password("apimail relay user add NAME")?;
            let user = RelayUser {
                name: name.clone(),
                password_hash: String::new(),
                account: account.clone(),
                allowed_from,
                rewrite_from,
                messages_per_minute,
            };
            let replaced = users.add(user, &password).map_err(users_failure)?;
            users.save().map_err(users_failure)?;
            let verb = if replaced { "updated" } else { "added" };
            say(&format!(
                "{verb} relay user `{name}` sending through account `{account}`; \
                 a running relay picks it up on SIGHUP"
            ));
            Ok(())
        }
        RelayUserCommand::List => {
            let mut out = String::new();
            if users.list().is_empty() {
                say("there are no relay users (add one with `apimail relay user add NAME`)");
            }
            for user in users.list() {
                out.push_str(&format!("{}  account {}", user.name, user.account));
                if !user.allowed_from.is_empty() {
                    out.push_str(&format!("  from {}", user.allowed_from.join(", ")));
                }
                if !user.rewrite_from {
                    out.push_str("  other senders refused");
                }
                if let Some(n) = user.messages_per_minute {
                    out.push_str(&format!("  {n}/min"));
                }
                if !ctx.config.accounts.contains_key(&user.account) {
                    out.push_str("  (account missing from the configuration)");
                }
                out.push('\n');
            }
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
            Ok(())
        }
        RelayUserCommand::Remove { name } => {
            if !users.remove(&name) {
                return Err(Failure::new(
                    Exit::NoInput,
                    anyhow!("there is no relay user `{name}`"),
                )
                .hint("see `apimail relay user list`"));
            }
            users.save().map_err(users_failure)?;
            say(&format!("removed relay user `{name}`"));
            Ok(())
        }
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

// ---- the directory: who may send, as which account -------------------------

/// Users, networks and accounts, as the SMTP sessions ask about them.
struct RelayDirectory {
    users: Users,
    config: Config,
    /// The principal of each listener's clients that do not AUTH.
    networks: Vec<(String, Principal)>,
    /// How long each entry may wait in the queue (the account layer's).
    max_age_secs: i64,
}

impl Directory for RelayDirectory {
    fn authenticate(&self, user: &str, password: &str) -> Option<Principal> {
        self.users.verify(user, password).map(|u| Principal {
            name: u.name.clone(),
            account: u.account.clone(),
            allowed_from: u.allowed_from.clone(),
            rewrite_from: u.rewrite_from,
            messages_per_minute: u.messages_per_minute,
        })
    }

    fn for_client(&self, listener: &str, _ip: IpAddr) -> Option<Principal> {
        self.networks
            .iter()
            .find(|(name, _)| name == listener)
            .map(|(_, principal)| principal.clone())
    }

    fn account(&self, name: &str) -> Option<AccountInfo> {
        let account = self.config.accounts.get(name)?;
        Some(AccountInfo {
            identity: SenderIdentity::account(name),
            address: account_address(account),
            max_message_bytes: account_limit(account),
            provider: Some(account.provider().name().to_owned()),
            max_age_secs: self.max_age_secs,
        })
    }

    fn largest_message_bytes(&self) -> Option<u64> {
        self.config.accounts.values().map(account_limit).max()
    }
}

/// The address an account sends from, when known.
fn account_address(account: &Account) -> Option<String> {
    match account {
        Account::Graph(graph) if graph.app_only => graph.user.clone().or(graph.address.clone()),
        other => other.address().map(str::to_owned),
    }
}

/// The largest message the account's provider takes.
fn account_limit(account: &Account) -> u64 {
    account.message_limit() as u64
}

/// The directory from the configuration and the users file.
fn directory(config: &Config, planned: &[Planned]) -> Result<RelayDirectory, Failure> {
    let settings = config.relay.clone().unwrap_or_default();
    let networks = planned
        .iter()
        .filter_map(|p| {
            let account = listener_account(config, &settings, &p.settings)?;
            Some((
                p.name.clone(),
                Principal {
                    name: format!("listener {}", p.name),
                    account,
                    allowed_from: p.settings.allowed_from.clone(),
                    rewrite_from: p.settings.rewrite_from,
                    messages_per_minute: p.settings.messages_per_minute,
                },
            ))
        })
        .collect();
    Ok(RelayDirectory {
        users: load_users()?,
        config: config.clone(),
        networks,
        max_age_secs: apimail_account::max_age_secs(),
    })
}

/// What the signal handler tells the server and the workers.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Bumped by each SIGHUP that reloaded.
    generation: u64,
    /// SIGTERM or SIGINT arrived.
    stopping: bool,
}

async fn serve(ctx: Context, config_flag: Option<&Path>, args: &RelayArgs) -> Result<(), Failure> {
    let settings = ctx.config.relay.clone().unwrap_or_default();
    let planned = planned_listeners(&settings, &args.listen, &args.listen_tls)?;
    let problems: Vec<String> = planned
        .iter()
        .flat_map(|p| listener_problems(&ctx.config, p))
        .collect();
    if let Some(first) = problems.first() {
        let mut failure = Failure::new(Exit::Config, anyhow!("{first}")).hint(
            "add require_auth = true or allowed_networks = [\"192.168.1.0/24\"] to the listener \
             (a network wider than a /8 also needs allow_any_network = true), \
             set [relay] account (or default_account), and see `apimail doctor`",
        );
        for more in &problems[1..] {
            failure = failure.note(more);
        }
        return Err(failure);
    }
    let hostname = hostname(&settings);
    let needs_tls = planned
        .iter()
        .any(|p| p.settings.tls.as_deref() != Some("none"));
    let server_tls = if needs_tls {
        Some(server_tls(&settings, &hostname)?)
    } else {
        None
    };
    // The console, when asked for: ready (or refused) before any listener.
    let reload_users = Arc::new(tokio::sync::Notify::new());
    let console = match &args.admin {
        Some(addr) => {
            // Off loopback, the relay's certificate unless [admin] has one.
            let loopback = addr
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
            let fallback = match &server_tls {
                _ if loopback => None,
                Some(config) => Some(config.clone()),
                None => Some(self::server_tls(&settings, &hostname)?),
            };
            let asked = Arc::clone(&reload_users);
            let hook = apimail_console::Hook::new(move || asked.notify_one());
            Some(
                crate::admin::prepare(
                    config_flag,
                    &queue::data_dir()?.join("admin"),
                    Some(addr),
                    fallback,
                    Some(hook),
                )
                .await?,
            )
        }
        None => None,
    };
    let mut listeners = Vec::new();
    for p in &planned {
        let socket = tokio::net::TcpListener::bind(p.addr).await.map_err(|e| {
            Failure::new(
                Exit::Config,
                anyhow!(e).context(format!("cannot listen on {} (listener `{}`)", p.addr, p.name)),
            )
            .hint("another program may use that port, or it needs privileges; pick another with --listen")
        })?;
        let tls = match (p.settings.tls.as_deref(), &server_tls) {
            (Some("implicit"), Some(config)) => ListenerTls::Implicit(config.clone()),
            (Some("none"), _) | (_, None) => ListenerTls::Plain { starttls: None },
            (_, Some(config)) => ListenerTls::Plain {
                starttls: Some(config.clone()),
            },
        };
        listeners.push((
            Listener {
                name: p.name.clone(),
                tls,
                require_auth: p.settings.require_auth,
                allowed_networks: networks(p),
                allow_any_network: p.settings.allow_any_network,
                allow_plaintext_auth: p.settings.allow_plaintext_auth,
            },
            socket,
        ));
    }

    let limits = limits(&settings);
    let outbox = queue::open_outbox()?;
    let store = shared_store(&ctx.config).await?;
    let directory = Arc::new(directory(&ctx.config, &planned)?);
    let (server, mut accepted) = match &store {
        None => Server::new(outbox, directory, limits, hostname),
        Some(store) => Server::over_store(outbox, store.clone(), directory, limits, hostname),
    };
    let grace = settings.grace_seconds.map_or(GRACE, Duration::from_secs);
    let (state, _) = watch::channel(State::default());

    let serving = async {
        let mut stopping = state.subscribe();
        let served = server
            .run(
                listeners,
                async move {
                    let _ = stopping.wait_for(|s| s.stopping).await;
                },
                grace,
            )
            .await;
        state.send_modify(|s| s.stopping = true);
        served
    };
    let delivering = async {
        let delivered = deliver(ctx, &state, &mut accepted, store.as_ref()).await;
        state.send_modify(|s| s.stopping = true);
        delivered
    };
    let signals = signals(config_flag, args, &server, &state, &reload_users);
    let admin = async {
        let Some(console) = console else {
            return std::future::pending::<std::convert::Infallible>().await;
        };
        let mut stopping = state.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|s| s.stopping).await;
        };
        if let Err(failure) = console.run(stopped).await {
            // The relay goes on without its console.
            tracing::warn!("the admin console stopped: {:#}", failure.error);
        }
        std::future::pending::<std::convert::Infallible>().await
    };
    let (served, delivered) = tokio::select! {
        both = async { tokio::join!(serving, delivering) } => both,
        never = admin => match never {},
        () = signals => return Err(Failure::new(Exit::Software, anyhow!("signal handling ended"))),
    };
    served.map_err(|e| {
        Failure::new(Exit::TempFail, anyhow!(e).context("the relay stopped"))
            .hint("see the lines above")
    })?;
    delivered?;
    say(if store.is_some() {
        "relay stopped; messages not yet delivered stay in the shared store"
    } else {
        "relay stopped; messages not yet delivered stay in the outbox (`apimail queue list`)"
    });
    Ok(())
}

fn limits(settings: &RelaySettings) -> Limits {
    let mut limits = Limits::default();
    if let Some(max) = settings.max_connections {
        limits.max_connections = max.max(1);
    }
    if let Some(max) = settings.max_connections_per_address {
        limits.max_connections_per_address = max.max(1);
    }
    if let Some(mb) = settings.max_message_mb {
        limits.max_message_bytes = u64::from(mb) * 1024 * 1024;
    }
    limits
}

/// The shared store, when `[store] url` or `APIMAIL_STORE_URL` names one:
/// the relay then accepts into it and delivers from it. A database away at
/// start is a warning (every message is answered 451 until it is back); a
/// schema that is not current, or a bad URL, stops the relay.
async fn shared_store(config: &Config) -> Result<Option<PgStore>, Failure> {
    let settings = match apimail_account::store_settings(config) {
        Ok(Some(settings)) => settings,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(Failure::new(Exit::Config, error)
                .hint("check the store's password file (`[store] password_file`)"));
        }
    };
    let shown = redact_url(settings.url.expose());
    let store = PgStore::new(&apimail_account::store_config(&settings)).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(e).context(format!("cannot use the store at {shown}")),
        )
        .hint(format!("check {}", settings.url_from))
    })?;
    match store.check_schema().await {
        Ok(()) => say(&format!(
            "relay: accepting into and delivering from the shared store at {shown}"
        )),
        Err(error) if error.is_temporary() => tracing::warn!(
            "the shared store at {shown} does not answer yet ({}); messages are answered 451 until it does",
            apimail_core::error_chain(&error)
        ),
        Err(error) => {
            return Err(Failure::new(
                Exit::Config,
                anyhow!(error).context(format!("cannot use the store at {shown}")),
            )
            .hint("run `apimail store migrate`, and see `apimail doctor`"));
        }
    }
    Ok(Some(store))
}

/// The delivery workers, restarted with the configuration reloaded at each
/// SIGHUP, until SIGTERM: over the local outbox, or over the shared
/// `store`.
async fn deliver(
    first: Context,
    state: &watch::Sender<State>,
    accepted: &mut tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    store: Option<&PgStore>,
) -> Result<(), Failure> {
    let mut ctx = first;
    loop {
        let mut changes = state.subscribe();
        let generation = changes.borrow().generation;
        let stop = async {
            let _ = changes
                .wait_for(|s| s.stopping || s.generation != generation)
                .await;
        };
        match store {
            None => {
                let engine = queue::engine(&ctx)?;
                // Each mailbox goes at its sender's pace (`Transport::pace`).
                let workers = with_postmaster(Workers::new(&engine), &ctx);
                workers.run(accepted, stop).await;
            }
            Some(store) => {
                let delivery = apimail_account::Delivery::from_config(&ctx.config)?;
                let engine = Engine::with_store(
                    store.clone(),
                    ConfiguredSenders { ctx: &ctx },
                    delivery.settings.clone(),
                )
                .with_interrupt(Interrupt::new(queue::signal));
                let workers = with_postmaster(Workers::new(&engine), &ctx);
                workers.run_shared(accepted, stop).await;
            }
        }
        if state.borrow().stopping {
            return Ok(());
        }
        match crate::providers::load(Some(&ctx.config_path)) {
            Ok(reloaded) => ctx = reloaded,
            Err(failure) => tracing::warn!(
                "the delivery workers keep the old configuration: {:#}",
                failure.error
            ),
        }
    }
}

/// `workers`, reporting failures to `[relay] postmaster` when it is set.
fn with_postmaster<'e, S: Senders, B: Store>(
    workers: Workers<'e, S, B>,
    ctx: &Context,
) -> Workers<'e, S, B> {
    let accounts = ctx.config.accounts.clone();
    let postmaster = ctx.config.relay.as_ref().and_then(|r| r.postmaster.clone());
    let Some(address) = postmaster else {
        return workers;
    };
    match address.parse::<Mailbox>() {
        Ok(to) => workers.with_postmaster(Postmaster { to }, move |entry| {
            entry
                .account
                .as_ref()
                .and_then(|name| accounts.get(name))
                .and_then(account_address)
                .and_then(|a| a.parse().ok())
        }),
        Err(e) => {
            tracing::warn!(
                "[relay] postmaster is not an address ({e}); failures are not reported by mail"
            );
            workers
        }
    }
}

/// SIGHUP reloads the users and settings; SIGTERM or SIGINT stops. Never
/// returns.
async fn signals(
    config_flag: Option<&Path>,
    args: &RelayArgs,
    server: &Server,
    state: &watch::Sender<State>,
    reload_users: &tokio::sync::Notify,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; stop the relay with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            // SIGHUP, or the console changed a relay user.
            _ = async { tokio::select! { _ = hangup.recv() => {}, () = reload_users.notified() => {} } } => {
                let reloaded = crate::providers::load(config_flag).and_then(|ctx| {
                    let settings = ctx.config.relay.clone().unwrap_or_default();
                    let planned = planned_listeners(&settings, &args.listen, &args.listen_tls)?;
                    directory(&ctx.config, &planned)
                });
                match reloaded {
                    Ok(directory) => {
                        server.reload(Arc::new(directory));
                        state.send_modify(|s| s.generation += 1);
                        tracing::info!("SIGHUP: reloaded the relay users and settings (listeners change on restart)");
                    }
                    Err(failure) => tracing::warn!(
                        "SIGHUP: kept the old users and settings: {:#}",
                        failure.error
                    ),
                }
            }
            _ = terminate.recv() => state.send_modify(|s| s.stopping = true),
            _ = interrupt.recv() => state.send_modify(|s| s.stopping = true),
        }
    }
}

// ---- apimail doctor ----------------------------------------------------------
#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay_plan::DEFAULT_LISTEN;

    fn config(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_default_listener_is_loopback_2525_and_flags_off_loopback_require_auth() {
        let settings = RelaySettings::default();
        let planned = planned_listeners(&settings, &[], &[]).unwrap();
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].addr.to_string(), DEFAULT_LISTEN);
        assert!(!planned[0].settings.require_auth);

        let flags = ["0.0.0.0:587".to_owned(), "127.0.0.1:2525".to_owned()];
        let planned = planned_listeners(&settings, &flags, &["[::]:465".to_owned()]).unwrap();
        let auth: Vec<bool> = planned.iter().map(|p| p.settings.require_auth).collect();
        assert_eq!(auth, [true, false, true]);
        assert_eq!(planned[2].settings.tls.as_deref(), Some("implicit"));

        let error = planned_listeners(&settings, &["printer:25".to_owned()], &[]).unwrap_err();
        assert_eq!(error.exit, Exit::Usage);
    }

    fn config_with_network(network: &str, any: bool) -> Vec<String> {
        let config = config(&format!(
            "default_account = \"work\"\n[accounts.work]\nprovider = \"gmail\"\n\
             [relay.listeners.lan]\nlisten = \"0.0.0.0:2526\"\nallowed_networks = [\"{network}\"]\n\
             allow_any_network = {any}\n"
        ));
        let settings = config.relay.clone().unwrap();
        let planned = planned_listeners(&settings, &[], &[]).unwrap();
        listener_problems(&config, &planned[0])
    }

    #[test]
    fn an_open_listener_and_a_missing_account_are_problems() {
        let config = config(
            "default_account = \"work\"\n[accounts.work]\nprovider = \"gmail\"\n\
             [relay.listeners.open]\nlisten = \"0.0.0.0:25\"\n\
             [relay.listeners.lan]\nlisten = \"0.0.0.0:2526\"\nallowed_networks = [\"192.168.1.0/24\", \"10.1.2.3\"]\n\
             [relay.listeners.gone]\nlisten = \"127.0.0.1:2527\"\naccount = \"gone\"\n",
        );
        let settings = config.relay.clone().unwrap();
        let planned = planned_listeners(&settings, &[], &[]).unwrap();
        let problems = |name: &str| {
            let p = planned.iter().find(|p| p.name == name).unwrap();
            listener_problems(&config, p)
        };
        assert!(problems("open")[0].contains("open relay"));
        assert!(problems("lan").is_empty(), "{:?}", problems("lan"));
        assert!(problems("gone")[0].contains("account `gone`"));
        let wide = config_with_network("0.0.0.0/0", false);
        assert!(
            wide[0].contains("0.0.0.0/0") && wide[0].contains("allow_any_network = true"),
            "{wide:?}"
        );
        assert!(config_with_network("0.0.0.0/0", true).is_empty());
        assert!(config_with_network("10.0.0.0/8", false).is_empty());
        let lan = planned.iter().find(|p| p.name == "lan").unwrap();
        assert_eq!(networks(lan).len(), 2);
    }
}
