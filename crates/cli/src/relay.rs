//! `apimail relay`: the SMTP relay's listeners, users, TLS, signals and
//! delivery workers, from the `[relay]` table and the flags. The SMTP
//! server itself is `apimail_core::relay`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use apimail_core::relay::tls;
use apimail_core::relay::users::{RelayUser, USERS_FILE, Users, UsersError};
use apimail_core::relay::workers::{Pace, Postmaster, Workers};
use apimail_core::relay::{
    Accepted, AccountInfo, Directory, IpNet, Limits, Listener, ListenerTls, Principal, Server,
};
use apimail_core::{Mailbox, Secret, SenderIdentity};
use tokio::sync::watch;

use crate::cli::{RelayArgs, RelayCommand, RelayUserCommand};
use crate::config::{Account, Config, RelayListener, RelaySettings};
use crate::exit::{Exit, Failure};
use crate::providers::Context;
use crate::queue;

/// The listener used when neither flags nor the configuration name one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// How long sessions get to finish after SIGTERM, by default.
const GRACE: Duration = Duration::from_secs(30);

pub async fn run(config_flag: Option<&Path>, args: RelayArgs) -> Result<(), Failure> {
    let ctx = Context::load(config_flag)?;
    match args.command {
        Some(RelayCommand::User(command)) => user(&ctx, command),
        None => serve(ctx, config_flag, &args).await,
    }
}

/// The relay's directory in the data directory: users file, certificate.
pub fn relay_dir() -> Result<PathBuf, Failure> {
    Ok(queue::data_dir()?.join("relay"))
}

/// The users file, loaded.
pub fn load_users() -> Result<Users, Failure> {
    Users::load(&relay_dir()?.join(USERS_FILE)).map_err(users_failure)
}

fn users_failure(error: UsersError) -> Failure {
    let hint = match &error {
        UsersError::BadName(_) => "pick a name such as `scanner` or `printer-2nd-floor`",
        UsersError::EmptyPassword => "type a password, or pipe one on standard input",
        UsersError::Invalid { .. } => {
            "fix the file, or remove it and add the users again with `apimail relay user add`"
        }
        _ => "check the data directory's permissions and free space (apimail doctor)",
    };
    let exit = match &error {
        UsersError::BadName(_) | UsersError::EmptyPassword => Exit::Usage,
        _ => Exit::Config,
    };
    Failure::new(exit, error).hint(hint)
}

// ---- relay user add | list | remove ----------------------------------------

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
            let password = read_password()?;
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
                if user.rewrite_from {
                    out.push_str("  rewrite_from");
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

/// The password: typed twice at a terminal (not echoed), else the first
/// line of standard input. Never from the command line.
fn read_password() -> Result<Secret, Failure> {
    let unreadable = |e: std::io::Error| {
        Failure::new(Exit::NoInput, anyhow!(e).context("cannot read the password"))
            .hint("type it at the prompt, or pipe it: printf '%s\\n' \"$PASS\" | apimail relay user add NAME")
    };
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(unreadable)?;
        let again = rpassword::prompt_password("Again: ").map_err(unreadable)?;
        if first != again {
            return Err(Failure::new(Exit::Usage, anyhow!("the passwords differ"))
                .hint("run the command again and type the same password twice"));
        }
        return Ok(Secret::new(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(unreadable)?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n'])))
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
        })
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
    let bytes = match account {
        Account::Gmail(_) => apimail_gmail::MAX_MESSAGE_BYTES,
        Account::Graph(graph) => apimail_graph::max_message_bytes(graph.max_message_mb)
            .unwrap_or(apimail_graph::DEFAULT_MAX_MESSAGE_BYTES),
    };
    bytes as u64
}

/// One listener as configured, before binding.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    pub addr: SocketAddr,
    pub settings: RelayListener,
}

/// The listeners to run: the flags, else `[relay.listeners]`, else
/// `local` on 127.0.0.1:2525.
pub fn planned_listeners(
    settings: &RelaySettings,
    listen: &[String],
    listen_tls: &[String],
) -> Result<Vec<Planned>, Failure> {
    let mut wanted: Vec<(String, RelayListener)> = Vec::new();
    if listen.is_empty() && listen_tls.is_empty() {
        if settings.listeners.is_empty() {
            wanted.push((
                "local".to_owned(),
                RelayListener {
                    listen: DEFAULT_LISTEN.to_owned(),
                    ..RelayListener::default()
                },
            ));
        }
        for (name, listener) in &settings.listeners {
            wanted.push((name.clone(), listener.clone()));
        }
    } else {
        let flags = listen
            .iter()
            .map(|a| (a, "starttls"))
            .chain(listen_tls.iter().map(|a| (a, "implicit")));
        for (n, (addr, tls)) in flags.enumerate() {
            // A listener from the flags serves other hosts only with AUTH.
            let loopback = addr
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().to_canonical().is_loopback());
            wanted.push((
                format!("listen-{}", n + 1),
                RelayListener {
                    listen: addr.clone(),
                    tls: Some(tls.to_owned()),
                    require_auth: !loopback,
                    ..RelayListener::default()
                },
            ));
        }
    }
    wanted
        .into_iter()
        .map(|(name, settings)| {
            let addr: SocketAddr = settings.listen.parse().map_err(|_| {
                Failure::new(
                    Exit::Usage,
                    anyhow!("listener `{name}`: `{}` is not ADDR:PORT", settings.listen),
                )
                .hint("write it as 127.0.0.1:2525, 0.0.0.0:587 or [::1]:2525")
            })?;
            Ok(Planned {
                name,
                addr,
                settings,
            })
        })
        .collect()
}

/// The account a listener's clients that do not AUTH send through.
fn listener_account(
    config: &Config,
    settings: &RelaySettings,
    l: &RelayListener,
) -> Option<String> {
    l.account
        .clone()
        .or_else(|| settings.account.clone())
        .or_else(|| config.selected_name(None))
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
    })
}

/// The problems that keep a listener from starting, as text; none when
/// it may run. Shared with `apimail doctor`.
pub fn listener_problems(config: &Config, planned: &Planned) -> Vec<String> {
    let settings = config.relay.clone().unwrap_or_default();
    let l = &planned.settings;
    let mut problems = Vec::new();
    if !matches!(
        l.tls.as_deref(),
        None | Some("starttls" | "none" | "implicit")
    ) {
        problems.push(format!(
            "listener `{}`: tls `{}` is none of starttls, none, implicit",
            planned.name,
            l.tls.as_deref().unwrap_or_default()
        ));
    }
    for network in &l.allowed_networks {
        if network.parse::<IpNet>().is_err() && network.parse::<IpAddr>().is_err() {
            problems.push(format!(
                "listener `{}`: `{network}` in allowed_networks is not a network (192.168.1.0/24)",
                planned.name
            ));
        }
    }
    let loopback = planned.addr.ip().to_canonical().is_loopback();
    if !loopback && !l.require_auth && l.allowed_networks.is_empty() {
        problems.push(format!(
            "listener `{}` on {} would be an open relay: it neither requires AUTH nor names allowed_networks",
            planned.name, planned.addr
        ));
    }
    if !l.require_auth {
        match listener_account(config, &settings, l) {
            None => problems.push(format!(
                "listener `{}`: clients that do not AUTH have no account to send through",
                planned.name
            )),
            Some(name) if !config.accounts.contains_key(&name) => problems.push(format!(
                "listener `{}`: account `{name}` is not in the configuration",
                planned.name
            )),
            Some(_) => {}
        }
    }
    problems
}

fn networks(planned: &Planned) -> Vec<IpNet> {
    planned
        .settings
        .allowed_networks
        .iter()
        .filter_map(|n| {
            n.parse::<IpNet>()
                .ok()
                .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// The TLS configuration: the configured certificate, else the
/// self-signed one in the data directory.
pub fn server_tls(
    settings: &RelaySettings,
    hostname: &str,
) -> Result<Arc<rustls::ServerConfig>, Failure> {
    let result = match (&settings.certificate, &settings.private_key) {
        (Some(cert), Some(key)) => tls::from_files(cert, key),
        (None, None) => tls::self_signed(&relay_dir()?.join("tls"), hostname),
        _ => {
            return Err(Failure::new(
                Exit::Config,
                anyhow!("[relay] names a certificate or a private_key, but not both"),
            )
            .hint("set both certificate and private_key, or neither (a self-signed certificate)"));
        }
    };
    result.map_err(|e| {
        Failure::new(Exit::Config, e).hint(
            "point [relay] certificate and private_key at readable PEM files, or remove both to use a self-signed certificate",
        )
    })
}

/// The host name the relay greets with.
fn hostname(settings: &RelaySettings) -> String {
    settings.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

// ---- running ---------------------------------------------------------------

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
            "add require_auth = true or allowed_networks = [\"192.168.1.0/24\"] to the listener, \
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
                allow_plaintext_auth: p.settings.allow_plaintext_auth,
            },
            socket,
        ));
    }

    let limits = limits(&settings);
    let outbox = queue::open_outbox()?;
    let (server, mut accepted) = Server::new(
        outbox,
        Arc::new(directory(&ctx.config, &planned)?),
        limits,
        hostname,
    );
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
        let delivered = deliver(ctx, &state, &mut accepted).await;
        state.send_modify(|s| s.stopping = true);
        delivered
    };
    let signals = signals(config_flag, args, &server, &state);
    let (served, delivered) = tokio::select! {
        both = async { tokio::join!(serving, delivering) } => both,
        () = signals => return Err(Failure::new(Exit::Software, anyhow!("signal handling ended"))),
    };
    served.map_err(|e| {
        Failure::new(Exit::TempFail, anyhow!(e).context("the relay stopped"))
            .hint("see the lines above")
    })?;
    delivered?;
    say("relay stopped; messages not yet delivered stay in the outbox (`apimail queue list`)");
    Ok(())
}

fn limits(settings: &RelaySettings) -> Limits {
    let mut limits = Limits::default();
    if let Some(max) = settings.max_connections {
        limits.max_connections = max.max(1);
    }
    if let Some(mb) = settings.max_message_mb {
        limits.max_message_bytes = u64::from(mb) * 1024 * 1024;
    }
    limits
}

/// The delivery workers, restarted with the configuration reloaded at each
/// SIGHUP, until SIGTERM.
async fn deliver(
    first: Context,
    state: &watch::Sender<State>,
    accepted: &mut tokio::sync::mpsc::UnboundedReceiver<Accepted>,
) -> Result<(), Failure> {
    let mut ctx = first;
    loop {
        let mut changes = state.subscribe();
        let generation = changes.borrow().generation;
        {
            let engine = queue::engine(&ctx)?;
            let accounts = ctx.config.accounts.clone();
            let providers = accounts.clone();
            let mut workers = Workers::new(&engine).with_pace(move |entry| {
                let provider = entry
                    .account
                    .as_ref()
                    .and_then(|name| providers.get(name))
                    .map(|a| a.provider().name())
                    .or(entry.provider.as_deref());
                Pace::for_provider(provider)
            });
            let postmaster = ctx.config.relay.as_ref().and_then(|r| r.postmaster.clone());
            if let Some(address) = postmaster {
                match address.parse::<Mailbox>() {
                    Ok(to) => {
                        workers = workers.with_postmaster(Postmaster { to }, move |entry| {
                            entry
                                .account
                                .as_ref()
                                .and_then(|name| accounts.get(name))
                                .and_then(account_address)
                                .and_then(|a| a.parse().ok())
                        });
                    }
                    Err(e) => tracing::warn!(
                        "[relay] postmaster is not an address ({e}); failures are not reported by mail"
                    ),
                }
            }
            workers
                .run(accepted, async {
                    let _ = changes
                        .wait_for(|s| s.stopping || s.generation != generation)
                        .await;
                })
                .await;
        }
        if state.borrow().stopping {
            return Ok(());
        }
        match Context::load(Some(&ctx.config_path)) {
            Ok(reloaded) => ctx = reloaded,
            Err(failure) => tracing::warn!(
                "the delivery workers keep the old configuration: {:#}",
                failure.error
            ),
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
            _ = hangup.recv() => {
                let reloaded = Context::load(config_flag).and_then(|ctx| {
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

/// One relay check for `apimail doctor`: its name, and what passed or
/// what failed with a hint.
pub type RelayCheck = (&'static str, Result<String, (String, String)>);

/// The relay's checks, when the configuration has a `[relay]` table or
/// relay users exist: listeners restricted, certificates readable, users
/// mapped to accounts that can send.
pub fn doctor_checks(ctx: &Context) -> Vec<RelayCheck> {
    let users = load_users();
    let has_users = users.as_ref().is_ok_and(|u| !u.list().is_empty());
    let Some(settings) = ctx
        .config
        .relay
        .clone()
        .or_else(|| has_users.then(RelaySettings::default))
    else {
        return Vec::new();
    };
    let users_check = match users {
        Ok(users) => users_check(ctx, &users),
        Err(failure) => Err((failure.error.to_string(), failure.hint.unwrap_or_default())),
    };
    vec![
        ("relay listeners", listeners_check(&ctx.config, &settings)),
        ("relay TLS", tls_check(&settings)),
        ("relay users", users_check),
    ]
}

fn listeners_check(config: &Config, settings: &RelaySettings) -> Result<String, (String, String)> {
    let planned = planned_listeners(settings, &[], &[])
        .map_err(|f| (f.error.to_string(), f.hint.unwrap_or_default()))?;
    let problems: Vec<String> = planned
        .iter()
        .flat_map(|p| listener_problems(config, p))
        .collect();
    if !problems.is_empty() {
        return Err((
            problems.join("; "),
            "give each listener off loopback require_auth = true or allowed_networks, and an account for clients that do not AUTH".to_owned(),
        ));
    }
    let described: Vec<String> = planned
        .iter()
        .map(|p| {
            let how = if p.settings.require_auth {
                "AUTH required".to_owned()
            } else if p.settings.allowed_networks.is_empty() {
                "loopback only without AUTH".to_owned()
            } else {
                format!(
                    "without AUTH from {}",
                    p.settings.allowed_networks.join(", ")
                )
            };
            let loud = if p.settings.allow_plaintext_auth {
                ", passwords allowed over plain text"
            } else {
                ""
            };
            format!("`{}` on {} ({how}{loud})", p.name, p.addr)
        })
        .collect();
    Ok(described.join("; "))
}

fn tls_check(settings: &RelaySettings) -> Result<String, (String, String)> {
    let hint = "point [relay] certificate and private_key at readable PEM files, or remove both to use a self-signed certificate";
    match (&settings.certificate, &settings.private_key) {
        (Some(cert), Some(key)) => tls::from_files(cert, key)
            .map(|_| format!("{} and its key are readable and match", cert.display()))
            .map_err(|e| (e.to_string(), hint.to_owned())),
        (None, None) => {
            let dir = relay_dir()
                .map_err(|f| (f.error.to_string(), f.hint.unwrap_or_default()))?
                .join("tls");
            let cert = dir.join(tls::SELF_SIGNED_CERT);
            if !cert.exists() {
                return Ok("a self-signed certificate is made on the first start".to_owned());
            }
            tls::from_files(&cert, &dir.join(tls::SELF_SIGNED_KEY))
                .map(|_| format!("self-signed, {}", cert.display()))
                .map_err(|e| {
                    (
                        e.to_string(),
                        format!("remove {} to make a new one", dir.display()),
                    )
                })
        }
        _ => Err((
            "[relay] names a certificate or a private_key, but not both".to_owned(),
            hint.to_owned(),
        )),
    }
}

fn users_check(ctx: &Context, users: &Users) -> Result<String, (String, String)> {
    let store = ctx.store().ok();
    let mut problems = Vec::new();
    for user in users.list() {
        match ctx.config.accounts.get(&user.account) {
            None => problems.push(format!(
                "user `{}` sends through account `{}`, which is not configured",
                user.name, user.account
            )),
            Some(account) if !account.is_app_only() => {
                let stored = store
                    .as_ref()
                    .is_some_and(|s| s.path(&user.account).exists());
                if !stored {
                    problems.push(format!(
                        "user `{}` sends through account `{}`, which has no stored login",
                        user.name, user.account
                    ));
                }
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "{} user(s), each mapped to a configured account",
            users.list().len()
        ))
    } else {
        Err((
            problems.join("; "),
            "log the account in (`apimail auth login …`), or move the user: `apimail relay user add NAME --account ACCOUNT`".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lan = planned.iter().find(|p| p.name == "lan").unwrap();
        assert_eq!(networks(lan).len(), 2);
    }
}
