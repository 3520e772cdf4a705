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
    /// sendmail: the aliases(5) file for local names such as `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<PathBuf>,
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub attempts: Option<u32>,
    pub max_seconds: Option<u64>,
}

/// `[delivery]`: how the outbox treats uncertain outcomes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// `resend` (default) or `hold`.
    pub when_unknown: Option<String>,
}

/// One account. Which keys apply depends on the provider.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub provider: Provider,
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
    /// Gmail: where the OAuth client file was, for the re-login hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_file: Option<String>,
    /// Graph: common, organizations, consumers, a tenant id or a domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Graph: global, usgov, usgov-dod or china.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_url: Option<String>,
    /// Graph app-only: send as this mailbox with client credentials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_only: bool,
    /// Graph app-only: the mailbox to send as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Graph: a file holding the client secret (never the secret itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// Graph app-only: a PEM file with the certificate and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_file: Option<String>,
    /// Graph: the mailbox's message size limit in MB (35 unless the tenant raised it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_mb: Option<u32>,
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
