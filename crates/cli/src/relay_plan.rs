//! The relay's plan from the configuration: its listeners (and what is
//! unsafe about them), its users file, its TLS, and doctor's relay checks.
//! Kept apart from `relay.rs` (which runs it) so that doctor and the
//! console can read it without the relay command.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use apimail_relay::tls;
use apimail_relay::users::{USERS_FILE, Users, UsersError};
use apimail_relay::{IpNet, Listener};

use crate::config::{Config, RelayListener, RelaySettings};
use crate::exit::{Exit, Failure};
use crate::providers::Context;

/// The listener used when neither flags nor the configuration name one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// The relay's directory in the data directory: users file, certificate.
pub fn relay_dir() -> Result<PathBuf, Failure> {
    Ok(apimail_account::relay_dir()?)
}

/// The users file, loaded.
pub fn load_users() -> Result<Users, Failure> {
    Users::load(&relay_dir()?.join(USERS_FILE)).map_err(users_failure)
}

pub(crate) fn users_failure(error: UsersError) -> Failure {
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
pub(crate) fn listener_account(
    config: &Config,
    settings: &RelaySettings,
    l: &RelayListener,
) -> Option<String> {
    l.account
        .clone()
        .or_else(|| settings.account.clone())
        .or_else(|| config.selected_name(None))
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
    if !l.allow_any_network
        && let Some(wide) = networks(planned).into_iter().find(Listener::is_wide)
    {
        problems.push(format!(
            "listener `{}`: allowed_networks holds {wide}, wider than a /8 (IPv6: /32), so anyone there could send without AUTH; narrow it, or set allow_any_network = true for the listener",
            planned.name
        ));
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

pub(crate) fn networks(planned: &Planned) -> Vec<IpNet> {
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
pub(crate) fn hostname(settings: &RelaySettings) -> String {
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

pub(crate) fn listeners_check(
    config: &Config,
    settings: &RelaySettings,
) -> Result<String, (String, String)> {
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

pub(crate) fn tls_check(settings: &RelaySettings) -> Result<String, (String, String)> {
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

pub(crate) fn users_check(ctx: &Context, users: &Users) -> Result<String, (String, String)> {
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
