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

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, Failure};

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
    /// Networks (CIDRs) whose clients may send without AUTH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Allow AUTH without TLS from other hosts (old printers); loud.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext_auth: bool,
    /// The account for this listener's clients that do not AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Senders those clients may use (`*@example.com`); empty: the account's
    /// address only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_from: Vec<String>,
    /// Send their mail from the account's address, keeping their name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewrite_from: bool,
    /// At most this many messages per minute from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_minute: Option<u32>,
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

    /// Whether sending needs no stored tokens (Graph app-only).
    pub fn is_app_only(&self) -> bool {
        matches!(self, Account::Graph(a) if a.app_only)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Gmail,
    Graph,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Gmail => "gmail",
            Provider::Graph => "graph",
        }
    }
}

/// Where the config file is: `--config`, else `$APIMAIL_CONFIG`, else the
/// platform config directory plus `apimail/config.toml`.
pub fn path(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("APIMAIL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    dirs::config_dir()
        .map(|dir| dir.join("apimail").join("config.toml"))
        .ok_or_else(|| {
            Failure::new(
                Exit::Config,
                anyhow!("cannot find a configuration directory"),
            )
            .hint("set APIMAIL_CONFIG=/path/to/config.toml or pass --config")
        })
}

/// Reads the file; a missing file is an empty configuration.
pub fn load(path: &Path) -> Result<Config, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => {
            return Err(Failure::new(
                Exit::Config,
                anyhow!(e).context(format!("cannot read the configuration {}", path.display())),
            )
            .hint("check the file's permissions, or point --config elsewhere"));
        }
    };
    toml::from_str(&text).map_err(|e| {
        Failure::new(
            Exit::Config,
            anyhow!(
                "the configuration {} is not valid: {}",
                path.display(),
                e.message()
            ),
        )
        .hint(format!(
            "fix or remove that key in {} (see `apimail auth status`)",
            path.display()
        ))
    })
}

/// Writes the file atomically (synced, then renamed), readable by its owner
/// only.
pub fn save(path: &Path, config: &Config) -> Result<(), Failure> {
    let text = toml::to_string_pretty(config).expect("the config serializes");
    write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write the configuration {}", path.display()))
        .map_err(|e| {
            Failure::new(Exit::Config, e).hint("check that the directory exists and is writable")
        })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(apimail_core::files::write_private(path, bytes)?)
}

impl Config {
    /// The account to use: `--account`, else `$APIMAIL_ACCOUNT`, else the default.
    pub fn selected_name(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .or_else(|| {
                std::env::var("APIMAIL_ACCOUNT")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| self.default_account.clone())
    }

    /// The aliases file and whether it must exist: `$APIMAIL_ALIASES`, else
    /// the `aliases` key (both required), else `/etc/aliases` if it exists.
    pub fn aliases_path(&self) -> Option<(PathBuf, bool)> {
        let chosen = std::env::var_os("APIMAIL_ALIASES")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.aliases.clone());
        match chosen {
            Some(path) => Some((path, true)),
            None => {
                let system = PathBuf::from("/etc/aliases");
                system.exists().then_some((system, false))
            }
        }
    }

    /// The named account, or a configuration failure naming it.
    pub fn account(&self, name: &str, path: &Path) -> Result<&Account, Failure> {
        self.accounts.get(name).ok_or_else(|| {
            let known = if self.accounts.is_empty() {
                "there are no accounts yet".to_owned()
            } else {
                format!(
                    "known accounts: {}",
                    self.accounts.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            Failure::new(
                Exit::Config,
                anyhow!("account `{name}` is not in {} ({known})", path.display()),
            )
            .hint(format!(
                "run `apimail auth login gmail --account {name} --client-secret FILE`, or pick one with --account"
            ))
        })
    }
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
