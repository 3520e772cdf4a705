//! [`Mailer::from_config`]: an account of the command line's configuration
//! file, with the tokens `apimail auth login` stored.
//!
//! This reads only what sending needs, and ignores the keys it does not
//! know, so the command line stays the owner of the file's format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apimail_core::StoredTokens;
use apimail_core::token_store::TokenStore;
use apimail_gmail::GmailTokens;
use apimail_graph::{GraphTokens, Mailbox};
use serde::Deserialize;

use crate::builder::{self, MailerBuilder};
use crate::limited::Limited;
use crate::{Error, Mailer, Sender};

#[derive(Debug, Default, Deserialize)]
struct Config {
    default_account: Option<String>,
    retry: Option<Retry>,
    #[serde(default)]
    accounts: BTreeMap<String, Account>,
}

#[derive(Debug, Default, Deserialize)]
struct Retry {
    attempts: Option<u32>,
    max_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
enum Account {
    Gmail(GmailAccount),
    Graph(GraphAccount),
}

#[derive(Debug, Deserialize)]
struct GmailAccount {
    token_uri: Option<String>,
    gmail_api_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GraphAccount {
    client_id: Option<String>,
    tenant: Option<String>,
    cloud: Option<String>,
    graph_api_url: Option<String>,
    authority_url: Option<String>,
    #[serde(default)]
    app_only: bool,
    user: Option<String>,
    client_secret_file: Option<String>,
    client_certificate_file: Option<String>,
    max_message_mb: Option<u32>,
}

/// Where the command line looks: `$APIMAIL_CONFIG`, else the platform's
/// configuration directory plus `apimail/config.toml`.
fn default_path() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("APIMAIL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    dirs::config_dir()
        .map(|dir| dir.join("apimail").join("config.toml"))
        .ok_or_else(|| Error::config("cannot find a configuration directory: set APIMAIL_CONFIG"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) async fn mailer(path: Option<&Path>, account: Option<&str>) -> Result<Mailer, Error> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => default_path()?,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::config(format!(
            "cannot read the configuration {}: {e}",
            path.display()
        ))
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        Error::config(format!(
            "the configuration {} is not valid: {}",
            path.display(),
            e.message()
        ))
    })?;
    let name = account
        .map(str::to_owned)
        .or_else(|| config.default_account.clone())
        .ok_or_else(|| {
            Error::config(format!(
                "{} names no default_account; pass an account name",
                path.display()
            ))
        })?;
    let found = config
        .accounts
        .get(&name)
        .ok_or_else(|| Error::config(format!("account `{name}` is not in {}", path.display())))?;
    let settings = config.retry.unwrap_or_default();
    let retry = builder::retry_from_env(
        apimail_core::retry::RetryPolicy::standard(),
        settings.attempts,
        settings.max_seconds,
    )?;
    let sender = match found {
        Account::Gmail(gmail) => gmail_account(&name, gmail)?,
        Account::Graph(graph) if graph.app_only => {
            return graph_app_only(&name, graph)?.retry(retry).build().await;
        }
        Account::Graph(graph) => graph_account(&name, graph)?,
    };
    Mailer::new(Limited::new(sender), retry, None, None)
}

fn store() -> Result<TokenStore, Error> {
    TokenStore::from_env().map_err(|e| Error::config(format!("{e} (set APIMAIL_DATA_DIR)")))
}

/// An endpoint from the environment, else the account's setting.
fn setting(env_name: &str, configured: &Option<String>) -> Option<String> {
    env(env_name).or_else(|| configured.clone())
}

fn gmail_account(name: &str, account: &GmailAccount) -> Result<Sender, Error> {
    let token_url = builder::url(
        setting("APIMAIL_GOOGLE_TOKEN_URL", &account.token_uri).as_deref(),
        None,
    )?;
    let tokens = StoredTokens::new(store()?, name).with_token_url(token_url);
    builder::gmail(
        setting("APIMAIL_GMAIL_API_URL", &account.gmail_api_url).as_deref(),
        "me".to_owned(),
        GmailTokens::Stored(tokens),
    )
}

fn graph_account(name: &str, account: &GraphAccount) -> Result<Sender, Error> {
    let cloud = builder::cloud(account.cloud.as_deref().unwrap_or("global"))?;
    let store = store()?;
    let granted = store
        .load(name)
        .ok()
        .flatten()
        .map(|t| t.scopes)
        .unwrap_or_default();
    let token_url = match setting("APIMAIL_MS_AUTHORITY_URL", &account.authority_url) {
        None => None,
        Some(authority) => Some(apimail_graph::token_url(
            &builder::checked(&authority)?,
            account.tenant.as_deref().unwrap_or("common"),
        )),
    };
    let tokens = StoredTokens::new(store, name).with_token_url(token_url);
    let max = max_message_bytes(account.max_message_mb)?;
    builder::graph(
        setting("APIMAIL_GRAPH_API_URL", &account.graph_api_url).as_deref(),
        cloud,
        Mailbox::Me,
        GraphTokens::Stored(tokens),
        Some(max),
        apimail_graph::allows_large_messages(&granted),
    )
    .map(Sender::Graph)
}

fn graph_app_only(name: &str, account: &GraphAccount) -> Result<MailerBuilder, Error> {
    let missing = |key: &str| {
        Error::config(format!(
            "app-only account `{name}` has no `{key}` in the configuration"
        ))
    };
    let credentials = builder::app_credentials(
        account.tenant.clone().ok_or_else(|| missing("tenant"))?,
        account
            .client_id
            .clone()
            .ok_or_else(|| missing("client_id"))?,
        account.user.clone().ok_or_else(|| missing("user"))?,
        account.client_secret_file.as_deref(),
        account.client_certificate_file.as_deref(),
    )?;
    let mut builder = MailerBuilder::new(credentials)
        .cloud(builder::cloud(
            account.cloud.as_deref().unwrap_or("global"),
        )?)
        .max_message_bytes(max_message_bytes(account.max_message_mb)?);
    if let Some(url) = setting("APIMAIL_GRAPH_API_URL", &account.graph_api_url) {
        builder = builder.graph_api_url(url);
    }
    if let Some(url) = setting("APIMAIL_MS_AUTHORITY_URL", &account.authority_url) {
        builder = builder.authority_url(url);
    }
    Ok(builder)
}

fn max_message_bytes(configured: Option<u32>) -> Result<usize, Error> {
    apimail_graph::max_message_bytes(configured).map_err(|e| Error::config(e.to_string()))
}
