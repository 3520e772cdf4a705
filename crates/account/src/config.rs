//! The configuration file: named accounts, each with a provider and its
//! non-secret settings. Secrets live in the token store, never here.
//!
//! ```toml
//! default_account = "work"
//! aliases = "/etc/aliases"
//!
//! [retry]
//! attempts = 5
//! max_seconds = 120
//!
//! [http]
//! connect_timeout_seconds = 10
//! stall_timeout_seconds = 60
//!
//! [accounts.work]
//! provider = "gmail"
//! address = "me@example.com"
//! client_id = "1234.apps.googleusercontent.com"
//! auth_uri = "https://accounts.google.com/o/oauth2/auth"
//! token_uri = "https://oauth2.googleapis.com/token"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::env;
use crate::error::ResolveError;
pub use crate::provider::Provider;

/// The whole file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
    /// sendmail: the aliases(5) file for local names such as `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<PathBuf>,
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    /// `apimail relay`'s settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelaySettings>,
    /// `[admin]`: `apimail admin serve` (see `apimail_console::Settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSettings>,
    /// `[alerts]`: what the admin console reports, and to whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertSettings>,
    /// `[store]`: the shared PostgreSQL store (see `store_settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreTable>,
    /// `[journal]`: what the delivery journal keeps, and how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalSettings>,
}

/// `[store]`: the outbox, journal and pacing on PostgreSQL, shared by
/// several nodes. The password is never a flag: in the URL (this file
/// is private to its owner; it wins), in `password_file`, or in
/// `PGPASSWORD`.
///
/// ```toml
/// [store]
/// url = "postgres://apimail@db.example.com/apimail?sslmode=require"
/// password_file = "/etc/apimail/store-password"
/// migrate = true    # opening the store runs its migrations first
/// tokens = "store"                      # accounts' OAuth tokens too, encrypted
/// key_file = "/etc/apimail/store.key"   # 32 random bytes in base64
/// ```
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTable {
    /// A PostgreSQL URL (`postgres://user@host:port/db?sslmode=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file whose first line is the database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Whether opening the store first brings its schema up to date (as
    /// `apimail store migrate`); off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<bool>,
    /// Where accounts' OAuth tokens live: `local` (each node's own token
    /// files, the default) or `store` (in the store, encrypted under
    /// `key_file`'s key; one refresh per mailbox for the whole cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensIn>,
    /// The file holding the key tokens in the store are encrypted under
    /// (`apimail store key new --output FILE`); `APIMAIL_STORE_KEY_FILE`
    /// wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[store] tokens`: where accounts' OAuth tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokensIn {
    /// Each node's own token files (the data directory).
    #[default]
    Local,
    /// The shared store, encrypted.
    Store,
}

/// `[relay]`: the SMTP relay. Without listeners it listens on
/// 127.0.0.1:2525 and relays for `account` (else the default account).
///
/// ```toml
/// [relay]
/// account = "work"                 # for clients that do not AUTH
/// postmaster = "it@example.com"    # told about mail that fails for good
/// certificate = "/etc/apimail/relay.pem"
/// private_key = "/etc/apimail/relay.key"
///
/// [relay.listeners.lan]
/// listen = "0.0.0.0:587"
/// allowed_networks = ["192.168.1.0/24"]
/// allowed_from = ["*@example.com"]
/// ```
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The account for clients that do not AUTH (default: `default_account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The name the relay gives in its greeting (default: the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Where reports of accepted mail that failed for good go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster: Option<String>,
    /// A PEM certificate chain for STARTTLS and implicit TLS (default: a
    /// self-signed certificate kept in the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The PEM private key of `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// Connections at once, over all listeners (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections at once from one client address (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_address: Option<usize>,
    /// The largest message in MB, below the account's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_mb: Option<u32>,
    /// Seconds sessions get to finish after SIGTERM (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    /// The listeners by name (default: `local` on 127.0.0.1:2525).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, RelayListener>,
}

/// `[relay.listeners.NAME]`: one listening address and who may use it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayListener {
    /// `ADDR:PORT`.
    pub listen: String,
    /// `starttls` (default: plain, STARTTLS offered), `none` (plain only)
    /// or `implicit` (TLS from the first byte, port 465 style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Every client must AUTH as a relay user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_auth: bool,
    /// Networks (CIDRs) whose clients may send without AUTH; when set,
    /// loopback clients too must be in one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Allow a network wider than a /8 (IPv6: /32) in `allowed_networks`,
    /// such as `0.0.0.0/0`; loud.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_any_network: bool,
    /// Allow AUTH without TLS from other hosts (old printers); loud.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext_auth: bool,
    /// The account for this listener's clients that do not AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Senders those clients may use besides the account's address
    /// (`*@example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_from: Vec<String>,
    /// Mail from any other sender goes out from the account's address,
    /// keeping their name (default); `false` refuses it with 553.
    #[serde(default = "rewrite_by_default", skip_serializing_if = "is_true")]
    pub rewrite_from: bool,
    /// At most this many messages per minute from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_minute: Option<u32>,
}

fn rewrite_by_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub attempts: Option<u32>,
    pub max_seconds: Option<u64>,
}

/// `[http]`: network timeouts (`apimail_core::http::Timeouts`); the
/// environment variables override them.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub connect_timeout_seconds: Option<u64>,
    pub stall_timeout_seconds: Option<u64>,
}

/// `[delivery]`: how the outbox treats uncertain outcomes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// `resend` (default) or `hold`.
    pub when_unknown: Option<String>,
}

/// One account, with the keys its provider has (`provider = "gmail"` or
/// `"graph"` picks which).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Account {
    Gmail(GmailAccount),
    Graph(GraphAccount),
}

/// A Gmail account's settings.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmailAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmail_api_url: Option<String>,
    /// Where the OAuth client file was, for the re-login hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_file: Option<String>,
}

/// A Microsoft Graph account's settings.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// common, organizations, consumers, a tenant id or a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// global, usgov, usgov-dod or china.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_url: Option<String>,
    /// App-only: send as `user` with client credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_only: bool,
    /// App-only: the mailbox to send as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file holding the client secret (never the secret itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// App-only: a PEM file with the certificate and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_file: Option<String>,
    /// The mailbox's message size limit in MB (35 unless the tenant raised it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_mb: Option<u32>,
    /// App-only: when the client secret expires (YYYY-MM-DD), for a
    /// warning 30 days ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires: Option<String>,
}

impl Account {
    pub fn provider(&self) -> Provider {
        match self {
            Account::Gmail(_) => Provider::Gmail,
            Account::Graph(_) => Provider::Graph,
        }
    }

    /// The address mail is sent from, when known.
    pub fn address(&self) -> Option<&str> {
        match self {
            Account::Gmail(a) => a.address.as_deref(),
            Account::Graph(a) => a.address.as_deref(),
        }
    }

    /// The largest message the account's provider takes, in bytes (Graph:
    /// `$APIMAIL_GRAPH_MAX_MESSAGE_MB`, else `max_message_mb`, else 35 MB).
    pub fn message_limit(&self) -> usize {
        match self {
            Account::Gmail(_) => apimail_gmail::MAX_MESSAGE_BYTES,
            Account::Graph(graph) => crate::environment::graph_message_limit(
                &crate::environment::process,
                graph.max_message_mb,
            )
            .unwrap_or(apimail_graph::DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    /// Whether sending needs no stored tokens (Graph app-only).
    pub fn is_app_only(&self) -> bool {
        matches!(self, Account::Graph(a) if a.app_only)
    }
}

/// Where the config file is: `--config` (`flag`), else `$APIMAIL_CONFIG`,
/// else the platform config directory plus `apimail/config.toml`.
pub fn path(flag: Option<&Path>) -> Result<PathBuf, ResolveError> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = env::path(env::CONFIG) {
        return Ok(path);
    }
    dirs::config_dir()
        .map(|dir| dir.join("apimail").join("config.toml"))
        .ok_or(ResolveError::NoConfigDir)
}

/// Reads the file; a missing file is an empty configuration.
pub fn load(path: &Path) -> Result<Config, ResolveError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(source) => {
            return Err(ResolveError::ConfigUnreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text).map_err(|e| ResolveError::ConfigInvalid {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })
}

/// Writes the file atomically (synced, then renamed), readable by its owner
/// only.
pub fn save(path: &Path, config: &Config) -> Result<(), ResolveError> {
    let text = toml::to_string_pretty(config).expect("the config serializes");
    let unwritable =
        |source: Box<dyn std::error::Error + Send + Sync>| ResolveError::ConfigUnwritable {
            path: path.to_owned(),
            source,
        };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| unwritable(e.into()))?;
    }
    apimail_core::files::write_private(path, text.as_bytes()).map_err(|e| unwritable(e.into()))
}

impl Config {
    /// The account to use: `--account`, else `$APIMAIL_ACCOUNT`, else the default.
    pub fn selected_name(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| env::var(env::ACCOUNT))
            .or_else(|| self.default_account.clone())
    }

    /// The aliases file and whether it must exist: `$APIMAIL_ALIASES`, else
    /// the `aliases` key (both required), else `/etc/aliases` if it exists.
    pub fn aliases_path(&self) -> Option<(PathBuf, bool)> {
        let chosen = env::path(env::ALIASES).or_else(|| self.aliases.clone());
        match chosen {
            Some(path) => Some((path, true)),
            None => {
                let system = PathBuf::from("/etc/aliases");
                system.exists().then_some((system, false))
            }
        }
    }

    /// The named account, or an error naming it and the known ones.
    pub fn account(&self, name: &str, path: &Path) -> Result<&Account, ResolveError> {
        self.accounts
            .get(name)
            .ok_or_else(|| ResolveError::UnknownAccount {
                name: name.to_owned(),
                path: path.to_owned(),
                known: self.accounts.keys().cloned().collect(),
            })
    }
}

/// `[journal]`: the delivery journal.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    /// `false` leaves each message's Subject out of the journal (default
    /// `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<bool>,
    /// How many days records are kept (default 400), besides the bound by
    /// size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

/// `[admin]`: the admin console.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `ADDR:PORT` (default `127.0.0.1:8025`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A PEM certificate chain; required off loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The PEM private key of `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// An IANA time zone (`Asia/Tokyo`) for the times shown (default: the
    /// system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `[alerts]`: the admin console's alerts (an authorization failed with
/// mail held for it, an authorization ending within 7 days, a message
/// queued too long, the data disk almost full), each reported once when it
/// starts and once when it clears.
///
/// ```toml
/// [alerts]
/// address = "it@example.com"   # default: [relay] postmaster
/// webhook = "https://example.webhook.office.com/webhookb2/..."
/// queued_hours = 4
/// disk_free_percent = 5        # the data disk is almost full below this
/// ```
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Where alert mail goes (default: `[relay] postmaster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A URL that takes a JSON POST `{"text": …}` (Teams' and Slack's
    /// incoming webhooks do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A message queued longer than this many hours is reported (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_hours: Option<u32>,
    /// The data disk is reported almost full with less than this
    /// percentage of it free (default 5; 0 turns the alert off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_percent: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_takes_only_its_own_keys() {
        let config: Config = toml::from_str(
            "[accounts.work]\nprovider = \"graph\"\napp_only = true\nuser = \"ops@contoso.com\"\ntenant = \"contoso.com\"\n\n[accounts.home]\nprovider = \"gmail\"\nclient_file = \"/etc/apimail/client.json\"\n",
        )
        .unwrap();
        assert!(config.accounts["work"].is_app_only());
        assert_eq!(config.accounts["home"].provider(), Provider::Gmail);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("provider = \"graph\""), "{text}");

        let wrong = toml::from_str::<Config>(
            "[accounts.home]\nprovider = \"gmail\"\ntenant = \"contoso.com\"\n",
        );
        let error = wrong.unwrap_err().to_string();
        assert!(error.contains("tenant"), "{error}");
    }
}
