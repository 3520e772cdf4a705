//! Picking what to send with at run time: a named account, the default
//! account, or credentials in the environment, by the precedence of flags,
//! environment, configuration and defaults; and an outbox entry's own
//! sender, for the delivery engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use apimail_core::token_store::TokenStore;
use apimail_core::token_vault::TokenVault;
use apimail_core::{Secret, SenderIdentity, StoredTokens};
use apimail_gmail::{GmailTokens, google_auth};
use apimail_graph::{Cloud, GraphTokens, GraphTransport};
use url::Url;

use crate::build::{Endpoints, build};
use crate::config::{Account, Config, GmailAccount, GraphAccount, Provider};
use crate::credentials::Credentials;
use crate::env;
use crate::environment;
use crate::error::ResolveError;
use crate::sender::{Resolved, Sender, Stack};

/// What the caller's command line chose, if anything: the flags that take
/// precedence over the environment and the configuration.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--account`: an account of the configuration, by name.
    pub account: Option<String>,
    /// `--provider`: environment credentials of this provider.
    pub provider: Option<Provider>,
}

/// Everything a command needs to find accounts and their tokens.
#[derive(Debug)]
pub struct Context {
    /// Where the configuration file is (it may not exist).
    pub config_path: PathBuf,
    /// Its contents.
    pub config: Config,
    /// The token vault, once opened: one pool to the shared store for
    /// every account this context resolves (a relay's every entry).
    vault: OnceLock<Arc<dyn TokenVault>>,
}

/// The token store (`$APIMAIL_DATA_DIR`, else the platform's).
pub fn store() -> Result<TokenStore, ResolveError> {
    match env::path(env::DATA_DIR) {
        Some(dir) => Ok(TokenStore::new(dir)),
        None => TokenStore::in_platform_dir().map_err(ResolveError::DataDir),
    }
}

impl Context {
    /// The configuration from `--config` (`flag`), `$APIMAIL_CONFIG` or the
    /// platform's directory; sets the process's network timeouts from it.
    pub fn load(flag: Option<&Path>) -> Result<Self, ResolveError> {
        let config_path = crate::config::path(flag)?;
        let config = crate::config::load(&config_path)?;
        crate::settings::set_http_timeouts(&config)?;
        Ok(Context::new(config_path, config))
    }

    /// A context for `config`, read from `config_path`.
    pub fn new(config_path: PathBuf, config: Config) -> Self {
        Context {
            config_path,
            config,
            vault: OnceLock::new(),
        }
    }

    /// The token store (`$APIMAIL_DATA_DIR`, else the platform's).
    pub fn store(&self) -> Result<TokenStore, ResolveError> {
        store()
    }

    /// Where accounts' tokens are read, refreshed and written: the token
    /// store, or the shared store when the configuration puts them there.
    pub fn token_vault(&self) -> Result<Arc<dyn TokenVault>, ResolveError> {
        if let Some(vault) = self.vault.get() {
            return Ok(vault.clone());
        }
        let vault = crate::tokens::token_vault(&self.config, self.store()?)?;
        Ok(self.vault.get_or_init(|| vault).clone())
    }
}

/// The sender a message was accepted for, and no other: an account by
/// name, or the environment's credentials if they are still the same.
/// Entries queued before identities were recorded use their account, else
/// the usual choice.
pub async fn resolve_identity(
    ctx: &Context,
    identity: Option<&SenderIdentity>,
    account: Option<&str>,
) -> Result<Resolved, ResolveError> {
    match identity {
        None => {
            let flags = Flags {
                account: account.map(str::to_owned),
                provider: None,
            };
            resolve(ctx, &flags).await
        }
        Some(SenderIdentity::Account { name }) => resolve_account(ctx, name).await,
        Some(wanted @ SenderIdentity::Environment { provider, .. }) => {
            let found = match provider.as_str() {
                "gmail" => gmail_from_env().await?,
                "graph" => graph_from_env().await?,
                other => return Err(ResolveError::UnknownProvider(other.to_owned())),
            };
            match found {
                Some(resolved) if &resolved.identity == wanted => Ok(resolved),
                Some(resolved) => Err(ResolveError::IdentityChanged {
                    wanted: Box::new(wanted.clone()),
                    found: Box::new(resolved.identity),
                }),
                None => Err(ResolveError::IdentityGone {
                    wanted: Box::new(wanted.clone()),
                }),
            }
        }
    }
}

/// An endpoint from the environment, else the account's setting, else the
/// provider's default; checked (https, or http on loopback only).
pub fn endpoint(
    variable: &str,
    configured: Option<&str>,
    key: &str,
    default: &str,
) -> Result<Url, ResolveError> {
    endpoint_from(variable, configured, key, default).map(|(url, _)| url)
}

/// [`endpoint`], with where it was set: the variable, ``account key `KEY` ``,
/// or "the default".
pub fn endpoint_from(
    variable: &str,
    configured: Option<&str>,
    key: &str,
    default: &str,
) -> Result<(Url, String), ResolveError> {
    let (value, source) = match env::var(variable) {
        Some(value) => (value, variable.to_owned()),
        None => match configured {
            Some(value) => (value.to_owned(), format!("account key `{key}`")),
            None => {
                let url = Url::parse(default).expect("defaults are valid URLs");
                return Ok((url, "the default".to_owned()));
            }
        },
    };
    let url =
        apimail_core::endpoint::checked_url(&value).map_err(|e| ResolveError::BadEndpoint {
            setting: source.clone(),
            source: e,
        })?;
    Ok((url, source))
}

/// Where the token URL of account `name` is set: `env`, else its `key`
/// in the config file (when `configured`), else its token file.
fn setting(env_var: &str, key: &str, name: &str, configured: bool, ctx: &Context) -> String {
    if env::is_set(env_var) {
        env_var.to_owned()
    } else if configured {
        format!(
            "`{key}` under [accounts.{name}] in {}",
            ctx.config_path.display()
        )
    } else {
        match ctx.store() {
            Ok(store) => format!("`token_url` in {}", store.path(name).display()),
            Err(_) => format!("the token file of account `{name}`"),
        }
    }
}

/// Picks what to send with: a named account (`--account`, then
/// `$APIMAIL_ACCOUNT`), else with `--provider` the environment's
/// credentials, else the default account, else any environment credentials.
pub async fn resolve(ctx: &Context, flags: &Flags) -> Result<Resolved, ResolveError> {
    let provider = flags.provider;
    let named = flags.account.clone().or_else(|| env::var(env::ACCOUNT));
    if let Some(name) = named {
        return resolve_account(ctx, &name).await;
    }
    let from_env = |provider| async move {
        match provider {
            Provider::Gmail => gmail_from_env().await,
            Provider::Graph => graph_from_env().await,
        }
    };
    if let Some(provider) = provider
        && let Some(resolved) = from_env(provider).await?
    {
        return Ok(resolved);
    }
    if let Some(name) = &ctx.config.default_account {
        return resolve_account(ctx, name).await;
    }
    for provider in [Provider::Gmail, Provider::Graph] {
        if let Some(resolved) = from_env(provider).await? {
            return Ok(resolved);
        }
    }
    Err(ResolveError::NoAccount {
        config_path: ctx.config_path.clone(),
        provider,
    })
}

/// Account `name` of the configuration, with its stored tokens.
pub async fn resolve_account(ctx: &Context, name: &str) -> Result<Resolved, ResolveError> {
    let account = ctx.config.account(name, &ctx.config_path)?;
    let mut resolved = match account {
        Account::Gmail(gmail) => gmail_account(ctx, name, gmail).await,
        Account::Graph(graph) => graph_account(ctx, name, graph).await,
    }?;
    resolved.account = Some(name.to_owned());
    resolved.identity = SenderIdentity::account(name);
    Ok(resolved)
}

async fn gmail_account(
    ctx: &Context,
    name: &str,
    account: &GmailAccount,
) -> Result<Resolved, ResolveError> {
    let api_url = endpoint(
        env::GMAIL_API_URL,
        account.gmail_api_url.as_deref(),
        "gmail_api_url",
        apimail_gmail::DEFAULT_API_URL,
    )?;
    let token_url = match (env::var(env::GOOGLE_TOKEN_URL), &account.token_uri) {
        (None, None) => None,
        _ => Some(endpoint(
            env::GOOGLE_TOKEN_URL,
            account.token_uri.as_deref(),
            "token_uri",
            google_auth::TOKEN_URL,
        )?),
    };
    let token_endpoint = match &token_url {
        Some(url) => url.clone(),
        None => Url::parse(google_auth::TOKEN_URL).expect("a valid default"),
    };
    let vault = ctx.token_vault()?;
    let sent_check = vault
        .load(name)
        .await
        .ok()
        .flatten()
        .is_some_and(|t| t.scopes.iter().any(|s| s == apimail_gmail::METADATA_SCOPE));
    let tokens = StoredTokens::in_vault(vault, name).with_token_url(token_url);
    let transport = crate::build::gmail(&api_url, "me", GmailTokens::Stored(tokens))?
        .with_sent_check(sent_check);
    Ok(Resolved {
        provider: Provider::Gmail,
        identity: SenderIdentity::account(name),
        account: Some(name.to_owned()),
        endpoints: vec![(token_endpoint, Stack::Tokens), (api_url, Stack::Gmail)],
        token_setting: setting(
            env::GOOGLE_TOKEN_URL,
            "token_uri",
            name,
            account.token_uri.is_some(),
            ctx,
        ),
        label: format!("account `{name}`"),
        address: account.address.clone(),
        relogin: gmail_login_command(name, account),
        relogin_large: None,
        login_fixes_auth: true,
        consent_url: None,
        sender: Sender::Gmail(transport),
    })
}

pub fn gmail_login_command(name: &str, account: &GmailAccount) -> String {
    let file = account
        .client_file
        .as_deref()
        .unwrap_or("client_secret.json");
    format!("apimail auth login gmail --account {name} --client-secret {file}")
}

/// The environment's credentials alone: Gmail's, else Graph's app-only
/// ones; `None` when neither is set.
pub async fn from_env() -> Result<Option<Resolved>, ResolveError> {
    match gmail_from_env().await? {
        Some(resolved) => Ok(Some(resolved)),
        None => graph_from_env().await,
    }
}

/// Whether the environment holds usable credentials of `provider`.
pub fn env_credentials_set(provider: Provider) -> bool {
    match provider {
        Provider::Gmail => matches!(environment::gmail(&environment::process), Ok(Some(_))),
        Provider::Graph => matches!(environment::graph(&environment::process), Ok(Some(_))),
    }
}

/// The client secret of a confidential app for `auth login graph`:
/// `$APIMAIL_GRAPH_CLIENT_SECRET`, else the file given.
pub fn login_client_secret(file: Option<&str>) -> Result<Option<Secret>, ResolveError> {
    match environment::login_secret() {
        Some(secret) => Ok(Some(secret)),
        None => client_secret_file(file),
    }
}

/// Gmail credentials from the environment alone, if any are set.
async fn gmail_from_env() -> Result<Option<Resolved>, ResolveError> {
    let Some(found) = environment::gmail(&environment::process)? else {
        return Ok(None);
    };
    let api_url = endpoint(
        env::GMAIL_API_URL,
        None,
        "gmail_api_url",
        apimail_gmail::DEFAULT_API_URL,
    )?;
    let token_url = endpoint(
        env::GOOGLE_TOKEN_URL,
        None,
        "token_uri",
        google_auth::TOKEN_URL,
    )?;
    let explicit_token_url = env::var(env::GOOGLE_TOKEN_URL).map(|_| token_url.clone());
    let identity = found.credentials.identity_as(found.user.as_deref());
    let address = found.user.clone();
    let (label, relogin, token_stack) = match &found.credentials {
        Credentials::GmailServiceAccount { user, .. } => (
            format!("service account acting as {user}"),
            "check the service account's domain-wide delegation (client id and the gmail.send scope) in the Google Workspace admin console".to_owned(),
            Stack::Gmail,
        ),
        _ => (
            format!("the refresh token in {}", env::GOOGLE_REFRESH_TOKEN),
            format!(
                "get a new refresh token (for example with `apimail auth login gmail`) and update {}",
                env::GOOGLE_REFRESH_TOKEN
            ),
            Stack::Tokens,
        ),
    };
    let endpoints = Endpoints {
        gmail_api: api_url.clone(),
        google_token: explicit_token_url.clone(),
        ..Endpoints::defaults(Cloud::Global)
    };
    let sender = build(found.credentials, &endpoints).await?;
    Ok(Some(Resolved {
        provider: Provider::Gmail,
        identity,
        account: None,
        login_fixes_auth: false,
        endpoints: vec![(token_url, token_stack), (api_url, Stack::Gmail)],
        token_setting: if explicit_token_url.is_some() {
            env::GOOGLE_TOKEN_URL.to_owned()
        } else {
            "the built-in default".to_owned()
        },
        relogin_large: None,
        label,
        address,
        relogin,
        consent_url: None,
        sender,
    }))
}

async fn graph_account(
    ctx: &Context,
    name: &str,
    account: &GraphAccount,
) -> Result<Resolved, ResolveError> {
    let cloud = cloud(account.cloud.as_deref())?;
    let api = graph_api(Some(account), cloud)?;
    let tenant = account.tenant.as_deref().unwrap_or("common");
    let max = graph_message_limit(account.max_message_mb)?;
    let authority_url = authority(Some(account), cloud)?;
    let authority_token_url = apimail_graph::token_url(&authority_url, tenant);
    let consent_url = account
        .client_id
        .as_deref()
        .map(|client_id| apimail_graph::admin_consent_url(&authority_url, tenant, client_id));
    if account.app_only {
        let user = account
            .user
            .clone()
            .ok_or_else(|| ResolveError::AppOnlyNoUser {
                name: name.to_owned(),
                config_path: ctx.config_path.clone(),
            })?;
        let credentials = app_only_credentials(
            account.client_id.as_deref(),
            Some(tenant),
            account.client_secret_file.as_deref(),
            account.client_certificate_file.as_deref(),
            &user,
            &format!("account `{name}`"),
        )?;
        let endpoints = Endpoints {
            graph_api: api,
            authority: authority_url,
            cloud,
            graph_max_message_bytes: max,
            ..Endpoints::defaults(cloud)
        };
        let Sender::Graph(transport) = build(credentials, &endpoints).await? else {
            unreachable!("Graph credentials build a Graph sender")
        };
        let mut resolved = graph_resolved(
            SenderIdentity::account(name),
            format!("account `{name}` (app-only, as {user})"),
            Some(user.clone()),
            transport,
            authority_token_url,
            format!(
                "an administrator checks the app's Mail.Send application permission and admin consent for account `{name}`"
            ),
            None,
        );
        resolved.consent_url = consent_url;
        return Ok(resolved);
    }
    let vault = ctx.token_vault()?;
    let granted = vault
        .load(name)
        .await
        .ok()
        .flatten()
        .map(|t| t.scopes)
        .unwrap_or_default();
    let large_allowed = apimail_graph::allows_large_messages(&granted);
    let token_url = match (env::var(env::MS_AUTHORITY_URL), &account.authority_url) {
        (None, None) => None,
        _ => Some(apimail_graph::token_url(
            &authority(Some(account), cloud)?,
            tenant,
        )),
    };
    let stored_token_url = token_url
        .clone()
        .unwrap_or_else(|| authority_token_url.clone());
    let tokens = StoredTokens::in_vault(vault, name).with_token_url(token_url);
    let mut resolved = graph_resolved(
        SenderIdentity::account(name),
        format!("account `{name}`"),
        account.address.clone(),
        crate::build::graph_stored(&api, GraphTokens::Stored(tokens), max, large_allowed),
        stored_token_url,
        login_command(name, account, large_allowed),
        Some(login_command(name, account, true)),
    );
    resolved.token_setting = setting(
        env::MS_AUTHORITY_URL,
        "authority_url",
        name,
        account.authority_url.is_some(),
        ctx,
    );
    resolved.consent_url = consent_url;
    Ok(resolved)
}

fn graph_resolved(
    identity: SenderIdentity,
    label: String,
    address: Option<String>,
    transport: GraphTransport<GraphTokens>,
    token_url: Url,
    relogin: String,
    relogin_large: Option<String>,
) -> Resolved {
    let endpoints = vec![
        (token_url, Stack::Tokens),
        (transport.api_url().clone(), Stack::Graph),
    ];
    // Graph's 4-requests-per-mailbox limit holds across processes too
    // (cron jobs, queue flushes), through lock files in the data directory.
    let transport = match store() {
        Ok(store) => transport.with_machine_limit(store.dir().join("limits"), address.as_deref()),
        Err(_) => transport,
    };
    Resolved {
        provider: Provider::Graph,
        identity,
        account: None,
        endpoints,
        label,
        address,
        login_fixes_auth: relogin_large.is_some(),
        token_setting: match env::var(env::MS_AUTHORITY_URL) {
            Some(_) => env::MS_AUTHORITY_URL.to_owned(),
            None => "the built-in default".to_owned(),
        },
        relogin,
        relogin_large,
        consent_url: None,
        sender: Sender::Graph(transport),
    }
}

/// The Graph mailbox's size limit: `$APIMAIL_GRAPH_MAX_MESSAGE_MB`, else
/// `configured` (an account's `max_message_mb`), else 35 MB.
pub fn graph_message_limit(configured: Option<u32>) -> Result<usize, ResolveError> {
    environment::graph_message_limit(&environment::process, configured)
}

/// App-only credentials sending as `mailbox`: a client secret
/// (`$AZURE_CLIENT_SECRET`, else the file) or a certificate
/// (`$AZURE_CLIENT_CERTIFICATE_PATH`, else the file).
fn app_only_credentials(
    client_id: Option<&str>,
    tenant: Option<&str>,
    secret_file: Option<&str>,
    certificate_file: Option<&str>,
    mailbox: &str,
    label: &str,
) -> Result<Credentials, ResolveError> {
    let (Some(client_id), Some(tenant)) = (client_id, tenant) else {
        return Err(ResolveError::AppOnlyIds {
            label: label.to_owned(),
        });
    };
    let (client_id, tenant, mailbox) =
        (client_id.to_owned(), tenant.to_owned(), mailbox.to_owned());
    let secret = match environment::app_secret() {
        Some(secret) => Some(secret),
        None => client_secret_file(secret_file)?,
    };
    let certificate_path = environment::certificate_path().or(certificate_file.map(str::to_owned));
    match (secret, certificate_path) {
        (Some(secret), _) => Ok(Credentials::GraphAppSecret {
            tenant,
            client_id,
            secret,
            mailbox,
        }),
        (None, Some(path)) => {
            let pem =
                std::fs::read(&path).map_err(|source| ResolveError::CertificateUnreadable {
                    path: path.clone(),
                    source,
                })?;
            Ok(Credentials::GraphAppCertificate {
                tenant,
                client_id,
                pem: Secret::new(String::from_utf8_lossy(&pem).into_owned()),
                mailbox,
            })
        }
        (None, None) => Err(ResolveError::NoAppCredential {
            label: label.to_owned(),
        }),
    }
}

/// Graph app-only credentials from the azure-identity variables.
async fn graph_from_env() -> Result<Option<Resolved>, ResolveError> {
    let Some(found) = environment::graph(&environment::process)? else {
        return Ok(None);
    };
    let cloud = cloud(found.cloud.as_deref())?;
    let credentials = app_only_credentials(
        Some(&found.client_id),
        Some(&found.tenant),
        None,
        None,
        &found.user,
        "the environment",
    )?;
    let identity = credentials.identity();
    let authority = authority(None, cloud)?;
    let endpoints = Endpoints {
        graph_api: graph_api(None, cloud)?,
        authority: authority.clone(),
        cloud,
        graph_max_message_bytes: graph_message_limit(None)?,
        ..Endpoints::defaults(cloud)
    };
    let Sender::Graph(transport) = build(credentials, &endpoints).await? else {
        unreachable!("Graph credentials build a Graph sender")
    };
    let user = found.user;
    Ok(Some(graph_resolved(
        identity,
        format!("app-only credentials in the environment, as {user}"),
        Some(user),
        transport,
        apimail_graph::token_url(&authority, &found.tenant),
        format!(
            "check {} (or the certificate); an administrator checks the app's Mail.Send application permission and admin consent",
            env::AZURE_CLIENT_SECRET
        ),
        None,
    )))
}

/// The cloud named by `--cloud` or the account's `cloud` key.
pub fn cloud(name: Option<&str>) -> Result<Cloud, ResolveError> {
    let name = name.unwrap_or("global");
    name.parse().map_err(|_| ResolveError::UnknownCloud {
        name: name.to_owned(),
    })
}

/// The login host: `$APIMAIL_MS_AUTHORITY_URL`, else the account's
/// `authority_url`, else the cloud's.
pub fn authority(account: Option<&GraphAccount>, cloud: Cloud) -> Result<Url, ResolveError> {
    endpoint(
        env::MS_AUTHORITY_URL,
        account.and_then(|a| a.authority_url.as_deref()),
        "authority_url",
        cloud.login_url().as_str(),
    )
}

/// The Graph root: `$APIMAIL_GRAPH_API_URL`, else the account's
/// `graph_api_url`, else the cloud's.
pub fn graph_api(account: Option<&GraphAccount>, cloud: Cloud) -> Result<Url, ResolveError> {
    endpoint(
        env::GRAPH_API_URL,
        account.and_then(|a| a.graph_api_url.as_deref()),
        "graph_api_url",
        cloud.graph_url().as_str(),
    )
}

/// A client secret from a file: never from the command line, where other
/// users could read it.
pub fn client_secret_file(file: Option<&str>) -> Result<Option<Secret>, ResolveError> {
    let Some(file) = file else { return Ok(None) };
    let text =
        std::fs::read_to_string(file).map_err(|source| ResolveError::SecretFileUnreadable {
            file: file.to_owned(),
            source,
        })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ResolveError::SecretFileEmpty {
            file: file.to_owned(),
        });
    }
    Ok(Some(Secret::new(secret)))
}

/// The command that logs this Graph account in again, with the same settings.
pub fn login_command(name: &str, account: &GraphAccount, large_messages: bool) -> String {
    let mut command = format!(
        "apimail auth login graph --account {name} --client-id {}",
        account.client_id.as_deref().unwrap_or("CLIENT_ID")
    );
    if let Some(tenant) = account.tenant.as_deref().filter(|t| *t != "common") {
        command.push_str(&format!(" --tenant {tenant}"));
    }
    if let Some(cloud) = account.cloud.as_deref().filter(|c| *c != "global") {
        command.push_str(&format!(" --cloud {cloud}"));
    }
    if large_messages {
        command.push_str(" --large-messages");
    }
    command
}
