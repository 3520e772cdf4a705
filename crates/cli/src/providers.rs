//! Picking the provider at run time: from a named account, the default
//! account, or credentials in the environment; and turning provider
//! failures into reports with the next command to run.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use apimail_core::delivery::Senders;
use apimail_core::outbox::Entry;
use apimail_core::token_store::TokenStore;
use apimail_core::{
    DeliveryNotes, Envelope, ErrorKind, Receipt, RefreshTokenSource, Secret, SenderIdentity,
    StoredMessage, StoredTokens, TokenError, Transport, TransportError,
};
use apimail_gmail::{GmailTokens, GmailTransport, ServiceAccountTokens, google_auth};
use apimail_graph::{AppOnlyTokens, Cloud, GraphTokens, GraphTransport, Mailbox};
use url::Url;

use crate::config::{Account, Config, GmailAccount, GraphAccount, Provider};
use crate::exit::{Exit, Failure};

/// Everything a command needs to find accounts and their tokens.
#[derive(Debug)]
pub struct Context {
    pub config_path: PathBuf,
    pub config: Config,
}

impl Context {
    pub fn load(flag: Option<&Path>) -> Result<Self, Failure> {
        let config_path = crate::config::path(flag)?;
        let config = crate::config::load(&config_path)?;
        set_http_timeouts(&config)?;
        Ok(Context {
            config_path,
            config,
        })
    }

    pub fn store(&self) -> Result<TokenStore, Failure> {
        TokenStore::from_env().map_err(|e| {
            Failure::new(Exit::Config, e)
                .hint("set APIMAIL_DATA_DIR to a directory apimail may write")
        })
    }
}

/// The process's network timeouts: `[http]` in the config file, then
/// `APIMAIL_CONNECT_TIMEOUT_SECONDS` / `APIMAIL_STALL_TIMEOUT_SECONDS`.
fn set_http_timeouts(config: &Config) -> Result<(), Failure> {
    use apimail_core::http::{self, Timeouts};
    let settings = config.http.clone().unwrap_or_default();
    let mut timeouts = Timeouts::default();
    for (key, value, field) in [
        (
            "connect_timeout_seconds",
            settings.connect_timeout_seconds,
            &mut timeouts.connect,
        ),
        (
            "stall_timeout_seconds",
            settings.stall_timeout_seconds,
            &mut timeouts.stall,
        ),
    ] {
        match value {
            Some(0) => {
                return Err(Failure::new(
                    Exit::Config,
                    anyhow!("[http] {key} = 0 is not a timeout"),
                )
                .hint(format!(
                    "set [http] {key} to a number of seconds above 0, or remove it"
                )));
            }
            Some(seconds) => *field = std::time::Duration::from_secs(seconds),
            None => {}
        }
    }
    let timeouts = timeouts.with_env().map_err(|message| {
        Failure::new(Exit::Config, anyhow!(message))
            .hint("set it to a whole number of seconds, or unset it")
    })?;
    http::set_timeouts(timeouts);
    Ok(())
}

/// The client stack a request goes through (see `apimail_core::http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The shared reqwest client of token requests.
    Tokens,
    /// Gmail's hyper client (google-gmail1, yup-oauth2).
    Gmail,
    /// graph-rs-sdk's client.
    Graph,
}

impl Stack {
    /// A `HEAD` to `url`'s root through this stack.
    pub async fn probe(
        self,
        url: &Url,
    ) -> Result<apimail_core::endpoint::Probe, (apimail_core::endpoint::ProbeFailure, String)> {
        match self {
            Stack::Tokens => apimail_core::endpoint::probe(url).await,
            Stack::Gmail => apimail_gmail::probe(url).await,
            Stack::Graph => apimail_graph::probe(url).await,
        }
    }
}

/// Where the messages of one send go.
#[derive(Debug)]
pub struct Resolved {
    pub provider: Provider,
    /// Who sends: recorded with queued messages.
    pub identity: SenderIdentity,
    /// The configured account's name; `None` for environment credentials.
    pub account: Option<String>,
    /// What the user knows this as: an account name, or the environment.
    pub label: String,
    /// The address to send as when --from is not given.
    pub address: Option<String>,
    /// The command that authorizes again.
    pub relogin: String,
    /// The command that authorizes again with Mail.ReadWrite (Graph).
    pub relogin_large: Option<String>,
    /// Whether `relogin` is a login that can fix a refused authorization;
    /// false for environment and app-only credentials, whose fixes are an
    /// administrator's.
    pub login_fixes_auth: bool,
    /// The token and API endpoints, each with the client stack that
    /// sends to it, for `apimail doctor`.
    pub endpoints: Vec<(Url, Stack)>,
    /// Where the token URL was set, for an error that says it is wrong.
    pub token_setting: String,
    pub sender: Sender,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per process")]
pub enum Sender {
    Gmail(GmailTransport<GmailTokens>),
    Graph(GraphTransport<GraphTokens>),
}

impl Transport for Sender {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_raw(envelope, message).await,
            Sender::Graph(t) => t.send_raw(envelope, message).await,
        }
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_noted(envelope, message, notes).await,
            Sender::Graph(t) => t.send_noted(envelope, message, notes).await,
        }
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_stored(envelope, message, notes).await,
            Sender::Graph(t) => t.send_stored(envelope, message, notes).await,
        }
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        match self {
            Sender::Gmail(t) => t.was_sent(message_id).await,
            Sender::Graph(t) => t.was_sent(message_id).await,
        }
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match self {
            Sender::Gmail(t) => t.discard(notes).await,
            Sender::Graph(t) => t.discard(notes).await,
        }
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match self {
            Sender::Gmail(t) => t.interrupted(notes).await,
            Sender::Graph(t) => t.interrupted(notes).await,
        }
    }
}

impl Transport for Resolved {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.sender.send_raw(envelope, message).await
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.sender.send_noted(envelope, message, notes).await
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.sender.send_stored(envelope, message, notes).await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        self.sender.was_sent(message_id).await
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.sender.discard(notes).await
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.sender.interrupted(notes).await
    }
}

/// Resolves an outbox entry's sender from the configuration and the
/// environment, for the delivery engine.
#[derive(Debug)]
pub struct ConfiguredSenders<'a> {
    pub ctx: &'a Context,
}

impl Senders for ConfiguredSenders<'_> {
    type Sender = Resolved;

    async fn resolve(&self, entry: &Entry) -> Result<Resolved, String> {
        resolve_identity(self.ctx, entry.identity.as_ref(), entry.account.as_deref())
            .await
            .map_err(|failure| failure.error.to_string())
    }

    fn login_can_fix(&self, sender: &Resolved) -> bool {
        sender.login_fixes_auth
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
) -> Result<Resolved, Failure> {
    match identity {
        None => resolve(ctx, account, None).await,
        Some(SenderIdentity::Account { name }) => from_account(ctx, name).await,
        Some(wanted @ SenderIdentity::Environment { provider, .. }) => {
            let found = match provider.as_str() {
                "gmail" => gmail_from_env().await?,
                "graph" => graph_from_env()?,
                other => {
                    return Err(Failure::new(
                        Exit::Config,
                        anyhow!("the message was accepted for an unknown provider `{other}`"),
                    ));
                }
            };
            match found {
                Some(resolved) if &resolved.identity == wanted => Ok(resolved),
                Some(resolved) => Err(Failure::new(
                    Exit::Config,
                    anyhow!(
                        "the message was accepted for {wanted}, but the environment now holds {}",
                        resolved.identity
                    ),
                )),
                None => Err(Failure::new(
                    Exit::Config,
                    anyhow!(
                        "the message was accepted for {wanted}, and those credentials are no longer in the environment"
                    ),
                )),
            }
        }
    }
}

/// An endpoint from the environment, else the account's setting, else the
/// provider's default; checked (https, or http on loopback only).
pub fn endpoint(
    env: &str,
    configured: Option<&str>,
    key: &str,
    default: &str,
) -> Result<Url, Failure> {
    endpoint_from(env, configured, key, default).map(|(url, _)| url)
}

/// [`endpoint`], with where it was set: the variable, ``account key `KEY` ``,
/// or "the default".
pub fn endpoint_from(
    env: &str,
    configured: Option<&str>,
    key: &str,
    default: &str,
) -> Result<(Url, String), Failure> {
    let (value, source) = match std::env::var(env).ok().filter(|v| !v.is_empty()) {
        Some(value) => (value, env.to_owned()),
        None => match configured {
            Some(value) => (value.to_owned(), format!("account key `{key}`")),
            None => {
                let url = Url::parse(default).expect("defaults are valid URLs");
                return Ok((url, "the default".to_owned()));
            }
        },
    };
    let url = apimail_core::endpoint::checked_url(&value).map_err(|e| {
        Failure::new(Exit::Config, anyhow!("{source}: {e}")).hint(format!(
            "set {source} to an https:// URL (plain http:// only for 127.0.0.1 or localhost)"
        ))
    })?;
    Ok((url, source))
}

/// Where the token URL of account `name` is set: `env`, else its `key`
/// in the config file (when `configured`), else its token file.
fn setting(env_var: &str, key: &str, name: &str, configured: bool, ctx: &Context) -> String {
    if env(env_var).is_some() {
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

/// A token URL that answered with no OAuth at all: names the URL (the
/// error carries it without its query) and the setting it came from.
pub fn wrong_token_url(error: &TokenError, setting: &str, provider: Provider) -> Failure {
    let right = match provider {
        Provider::Gmail => format!("Google's is {}", google_auth::TOKEN_URL),
        Provider::Graph => "Microsoft's is https://login.microsoftonline.com/TENANT/oauth2/v2.0/token; set the authority (https://login.microsoftonline.com), not the token URL".to_owned(),
    };
    Failure::new(
        Exit::Config,
        anyhow!("the token URL from {setting} is wrong: {error}"),
    )
    .hint(format!("correct {setting} ({right})"))
}

/// Picks what to send with: a named account (`--account`, then
/// `$APIMAIL_ACCOUNT`), else with `--provider` the environment's
/// credentials, else the default account, else any environment credentials.
pub async fn resolve(
    ctx: &Context,
    account: Option<&str>,
    provider: Option<Provider>,
) -> Result<Resolved, Failure> {
    let named = account.map(str::to_owned).or_else(|| {
        std::env::var("APIMAIL_ACCOUNT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(name) = named {
        return from_account(ctx, &name).await;
    }
    let from_env = |provider| async move {
        match provider {
            Provider::Gmail => gmail_from_env().await,
            Provider::Graph => graph_from_env(),
        }
    };
    if let Some(provider) = provider
        && let Some(resolved) = from_env(provider).await?
    {
        return Ok(resolved);
    }
    if let Some(name) = &ctx.config.default_account {
        return from_account(ctx, name).await;
    }
    for provider in [Provider::Gmail, Provider::Graph] {
        if let Some(resolved) = from_env(provider).await? {
            return Ok(resolved);
        }
    }
    let login = match provider {
        Some(Provider::Graph) => "apimail auth login graph --client-id CLIENT_ID",
        _ => "apimail auth login gmail --client-secret client_secret.json",
    };
    Err(Failure::new(
        Exit::Config,
        anyhow!("no account to send from: {} has none, and no credentials are in the environment", ctx.config_path.display()),
    )
    .hint(format!("run `{login}`, or use --dry-run to only print the message"))
    .note("servers can use GOOGLE_APPLICATION_CREDENTIALS with APIMAIL_GMAIL_USER (service account), or APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET and APIMAIL_GOOGLE_REFRESH_TOKEN")
    .note("for Microsoft Graph: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) and APIMAIL_GRAPH_USER"))
}

async fn from_account(ctx: &Context, name: &str) -> Result<Resolved, Failure> {
    let account = ctx.config.account(name, &ctx.config_path)?;
    let mut resolved = match account {
        Account::Gmail(gmail) => gmail_account(ctx, name, gmail),
        Account::Graph(graph) => graph_account(ctx, name, graph),
    }?;
    resolved.account = Some(name.to_owned());
    resolved.identity = SenderIdentity::account(name);
    Ok(resolved)
}

fn gmail_account(ctx: &Context, name: &str, account: &GmailAccount) -> Result<Resolved, Failure> {
    let api_url = endpoint(
        "APIMAIL_GMAIL_API_URL",
        account.gmail_api_url.as_deref(),
        "gmail_api_url",
        apimail_gmail::DEFAULT_API_URL,
    )?;
    let token_url = match (
        std::env::var("APIMAIL_GOOGLE_TOKEN_URL").ok(),
        &account.token_uri,
    ) {
        (None, None) => None,
        _ => Some(endpoint(
            "APIMAIL_GOOGLE_TOKEN_URL",
            account.token_uri.as_deref(),
            "token_uri",
            google_auth::TOKEN_URL,
        )?),
    };
    let token_endpoint = match &token_url {
        Some(url) => url.clone(),
        None => Url::parse(google_auth::TOKEN_URL).expect("a valid default"),
    };
    let store = ctx.store()?;
    let sent_check = store
        .load(name)
        .ok()
        .flatten()
        .is_some_and(|t| t.scopes.iter().any(|s| s == apimail_gmail::METADATA_SCOPE));
    let tokens = StoredTokens::new(store, name).with_token_url(token_url);
    let transport = GmailTransport::new(client()?, &api_url, "me", GmailTokens::Stored(tokens))
        .with_sent_check(sent_check);
    Ok(Resolved {
        provider: Provider::Gmail,
        identity: SenderIdentity::account(name),
        account: Some(name.to_owned()),
        endpoints: vec![(token_endpoint, Stack::Tokens), (api_url, Stack::Gmail)],
        token_setting: setting(
            "APIMAIL_GOOGLE_TOKEN_URL",
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

fn client() -> Result<apimail_gmail::HttpsClient, Failure> {
    apimail_gmail::https_client().map_err(|e| {
        Failure::new(Exit::Config, e).hint("install the system CA certificates (Debian: apt-get install ca-certificates) or set SSL_CERT_FILE")
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Gmail credentials from the environment alone, if any are set.
async fn gmail_from_env() -> Result<Option<Resolved>, Failure> {
    let credentials = apimail_gmail::credentials_from_env().map_err(|e| match e {
        apimail_gmail::EnvError::MissingUser => Failure::new(Exit::Config, e)
            .hint("set APIMAIL_GMAIL_USER=sender@your-domain: a service account sends as a user of its domain (domain-wide delegation)"),
        _ => Failure::new(Exit::NoInput, e)
            .hint("point GOOGLE_APPLICATION_CREDENTIALS at the service account's JSON key file"),
    })?;
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    let api_url = endpoint(
        "APIMAIL_GMAIL_API_URL",
        None,
        "gmail_api_url",
        apimail_gmail::DEFAULT_API_URL,
    )?;
    let token_url = endpoint(
        "APIMAIL_GOOGLE_TOKEN_URL",
        None,
        "token_uri",
        google_auth::TOKEN_URL,
    )?;
    let explicit_token_url = env("APIMAIL_GOOGLE_TOKEN_URL").map(|_| token_url.clone());
    let identity = credentials.identity();
    let address = credentials.address().map(str::to_owned);
    let (tokens, user, label, relogin) = match credentials {
        apimail_gmail::EnvCredentials::ServiceAccount { key, user, .. } => {
            let tokens = ServiceAccountTokens::new(key.expose().as_bytes(), &user, explicit_token_url.as_ref())
                .await
                .map_err(|e| {
                    Failure::new(Exit::Config, e).hint("download a new JSON key for the service account (IAM & Admin > Service Accounts > Keys)")
                })?;
            (
                GmailTokens::ServiceAccount(tokens),
                user.clone(),
                format!("service account acting as {user}"),
                "check the service account's domain-wide delegation (client id and the gmail.send scope) in the Google Workspace admin console".to_owned(),
            )
        }
        apimail_gmail::EnvCredentials::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => {
            let client = apimail_core::oauth::OAuthClient {
                client_id,
                client_secret: Some(client_secret),
                auth_url: None,
                token_url: token_url.clone(),
                device_auth_url: None,
            };
            let tokens = RefreshTokenSource::new(
                client,
                refresh_token,
                vec![apimail_gmail::SEND_SCOPE.to_owned()],
            );
            (
                GmailTokens::Environment(tokens),
                "me".to_owned(),
                "the refresh token in APIMAIL_GOOGLE_REFRESH_TOKEN".to_owned(),
                "get a new refresh token (for example with `apimail auth login gmail`) and update APIMAIL_GOOGLE_REFRESH_TOKEN".to_owned(),
            )
        }
    };
    let token_stack = match &tokens {
        GmailTokens::ServiceAccount(_) => Stack::Gmail,
        _ => Stack::Tokens,
    };
    let transport = GmailTransport::new(client()?, &api_url, user, tokens);
    Ok(Some(Resolved {
        provider: Provider::Gmail,
        identity,
        account: None,
        login_fixes_auth: false,
        endpoints: vec![(token_url, token_stack), (api_url, Stack::Gmail)],
        token_setting: if explicit_token_url.is_some() {
            "APIMAIL_GOOGLE_TOKEN_URL".to_owned()
        } else {
            "the built-in default".to_owned()
        },
        relogin_large: None,
        label,
        address,
        relogin,
        sender: Sender::Gmail(transport),
    }))
}

fn graph_account(ctx: &Context, name: &str, account: &GraphAccount) -> Result<Resolved, Failure> {
    let cloud = cloud(account.cloud.as_deref())?;
    let api = graph_api(Some(account), cloud)?;
    let tenant = account.tenant.as_deref().unwrap_or("common");
    let max = max_message_bytes(account.max_message_mb)?;
    let authority_token_url = apimail_graph::token_url(&authority(Some(account), cloud)?, tenant);
    if account.app_only {
        let user = account.user.clone().ok_or_else(|| {
            Failure::new(
                Exit::Config,
                anyhow!("app-only account `{name}` has no `user` (the mailbox to send as)"),
            )
            .hint(format!(
                "add user = \"sender@contoso.com\" under [accounts.{name}] in {}",
                ctx.config_path.display()
            ))
        })?;
        let tokens = app_only_tokens(
            account.client_id.as_deref(),
            Some(tenant),
            account.client_secret_file.as_deref(),
            account.client_certificate_file.as_deref(),
            Some(account),
            cloud,
            &format!("account `{name}`"),
        )?;
        return Ok(graph_resolved(
            SenderIdentity::account(name),
            format!("account `{name}` (app-only, as {user})"),
            Some(user.clone()),
            GraphTransport::new(
                &api,
                Mailbox::User(user),
                GraphTokens::AppOnly(tokens),
                max,
                true,
            )
            .app_only(),
            authority_token_url,
            format!(
                "an administrator checks the app's Mail.Send application permission and admin consent for account `{name}`"
            ),
            None,
        ));
    }
    let store = ctx.store()?;
    let granted = store
        .load(name)
        .ok()
        .flatten()
        .map(|t| t.scopes)
        .unwrap_or_default();
    let large_allowed = apimail_graph::allows_large_messages(&granted);
    let token_url = match (
        std::env::var_os("APIMAIL_MS_AUTHORITY_URL"),
        &account.authority_url,
    ) {
        (None, None) => None,
        _ => Some(apimail_graph::token_url(
            &authority(Some(account), cloud)?,
            tenant,
        )),
    };
    let stored_token_url = token_url
        .clone()
        .unwrap_or_else(|| authority_token_url.clone());
    let tokens = StoredTokens::new(store, name).with_token_url(token_url);
    let mut resolved = graph_resolved(
        SenderIdentity::account(name),
        format!("account `{name}`"),
        account.address.clone(),
        GraphTransport::new(
            &api,
            Mailbox::Me,
            GraphTokens::Stored(tokens),
            max,
            large_allowed,
        ),
        stored_token_url,
        login_command(name, account, large_allowed),
        Some(login_command(name, account, true)),
    );
    resolved.token_setting = setting(
        "APIMAIL_MS_AUTHORITY_URL",
        "authority_url",
        name,
        account.authority_url.is_some(),
        ctx,
    );
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
    let transport = match TokenStore::from_env() {
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
        token_setting: match env("APIMAIL_MS_AUTHORITY_URL") {
            Some(_) => "APIMAIL_MS_AUTHORITY_URL".to_owned(),
            None => "the built-in default".to_owned(),
        },
        relogin,
        relogin_large,
        sender: Sender::Graph(transport),
    }
}

impl Resolved {
    /// The largest message the provider takes, in bytes.
    pub fn message_limit(&self) -> usize {
        match &self.sender {
            Sender::Gmail(_) => apimail_gmail::MAX_MESSAGE_BYTES,
            Sender::Graph(t) => t.max_message_bytes(),
        }
    }
}

/// A message over the provider's limit: `size` is its size (`exact`), or
/// what it was known to reach when reading or writing stopped.
pub fn too_large(size: u64, exact: bool, limit: usize) -> Failure {
    let size = if exact {
        format!("{size} bytes")
    } else {
        format!("at least {size} bytes (apimail stopped there)")
    };
    Failure::new(
        Exit::DataErr,
        anyhow!("the message is {size}; the provider accepts at most {limit} bytes"),
    )
    .note("nothing was queued")
    .hint("send large files as links, or raise the mailbox limit (Graph: max_message_mb)")
}

/// The mailbox's size limit (see [`apimail_graph::max_message_bytes`]).
fn max_message_bytes(configured: Option<u32>) -> Result<usize, Failure> {
    apimail_graph::max_message_bytes(configured).map_err(|e| {
        Failure::new(Exit::Config, e)
            .hint("set max_message_mb (or APIMAIL_GRAPH_MAX_MESSAGE_MB) to the mailbox's limit, between 1 and 150")
    })
}

/// App-only credentials: a client secret (file or `$AZURE_CLIENT_SECRET`)
/// or a certificate (file or `$AZURE_CLIENT_CERTIFICATE_PATH`).
fn app_only_tokens(
    client_id: Option<&str>,
    tenant: Option<&str>,
    secret_file: Option<&str>,
    certificate_file: Option<&str>,
    account: Option<&GraphAccount>,
    cloud: apimail_graph::Cloud,
    label: &str,
) -> Result<AppOnlyTokens, Failure> {
    let (Some(client_id), Some(tenant)) = (client_id, tenant) else {
        return Err(Failure::new(
            Exit::Config,
            anyhow!("{label} needs a client id and a tenant id for app-only sending"),
        )
        .hint("set client_id and tenant in the account, or AZURE_CLIENT_ID and AZURE_TENANT_ID"));
    };
    let authority = authority(account, cloud)?;
    let token_url = apimail_graph::token_url(&authority, tenant);
    let secret = match apimail_graph::secret_from_env() {
        Some(secret) => Some(secret),
        None => client_secret_file(secret_file)?,
    };
    let certificate_path =
        apimail_graph::certificate_path_from_env().or(certificate_file.map(str::to_owned));
    let credential = match (secret, certificate_path) {
        (Some(secret), _) => apimail_graph::AppCredential::Secret(secret),
        (None, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| {
                Failure::new(Exit::NoInput, anyhow!(e).context(format!("cannot read the client certificate `{path}`")))
                    .hint("point AZURE_CLIENT_CERTIFICATE_PATH at a PEM file holding the certificate and its private key")
            })?;
            apimail_graph::AppCredential::Certificate(Secret::new(
                String::from_utf8_lossy(&pem).into_owned(),
            ))
        }
        (None, None) => {
            return Err(Failure::new(Exit::Config, anyhow!("{label} has no client secret or certificate"))
                .hint("set AZURE_CLIENT_SECRET, or AZURE_CLIENT_CERTIFICATE_PATH to a PEM with the certificate and key"));
        }
    };
    AppOnlyTokens::new(client_id, token_url, cloud, credential).map_err(|e| {
        Failure::new(Exit::Config, e).hint(
            "check the certificate file: it needs the certificate and its RSA private key, in PEM",
        )
    })
}

/// Graph app-only credentials from the azure-identity variables.
fn graph_from_env() -> Result<Option<Resolved>, Failure> {
    let credentials = apimail_graph::credentials_from_env().map_err(|e| {
        Failure::new(Exit::Config, e).hint("set APIMAIL_GRAPH_USER=sender@contoso.com: app-only credentials send as a mailbox of the tenant")
    })?;
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    let cloud = cloud(credentials.cloud.as_deref())?;
    let api = graph_api(None, cloud)?;
    let tokens = app_only_tokens(
        Some(&credentials.client_id),
        Some(&credentials.tenant),
        None,
        None,
        None,
        cloud,
        "the environment",
    )?;
    let max = max_message_bytes(None)?;
    let user = credentials.user.clone();
    Ok(Some(graph_resolved(
        credentials.identity(),
        format!("app-only credentials in the environment, as {user}"),
        Some(user.clone()),
        GraphTransport::new(&api, Mailbox::User(user), GraphTokens::AppOnly(tokens), max, true)
            .app_only(),
        apimail_graph::token_url(&authority(None, cloud)?, &credentials.tenant),
        "check AZURE_CLIENT_SECRET (or the certificate); an administrator checks the app's Mail.Send application permission and admin consent".into(),
        None,
    )))
}

/// The cloud named by `--cloud` or the account's `cloud` key.
pub fn cloud(name: Option<&str>) -> Result<Cloud, Failure> {
    let name = name.unwrap_or("global");
    name.parse().map_err(|_| {
        Failure::new(Exit::Usage, anyhow!("unknown Microsoft cloud `{name}`"))
            .hint("use global, usgov, usgov-dod or china")
    })
}

/// The login host: `$APIMAIL_MS_AUTHORITY_URL`, else the account's
/// `authority_url`, else the cloud's.
pub fn authority(account: Option<&GraphAccount>, cloud: Cloud) -> Result<Url, Failure> {
    endpoint(
        "APIMAIL_MS_AUTHORITY_URL",
        account.and_then(|a| a.authority_url.as_deref()),
        "authority_url",
        cloud.login_url().as_str(),
    )
}

/// The Graph root: `$APIMAIL_GRAPH_API_URL`, else the account's
/// `graph_api_url`, else the cloud's.
pub fn graph_api(account: Option<&GraphAccount>, cloud: Cloud) -> Result<Url, Failure> {
    endpoint(
        "APIMAIL_GRAPH_API_URL",
        account.and_then(|a| a.graph_api_url.as_deref()),
        "graph_api_url",
        cloud.graph_url().as_str(),
    )
}

/// A client secret from a file: never from the command line, where other
/// users could read it.
pub fn client_secret_file(file: Option<&str>) -> Result<Option<Secret>, Failure> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::new(
            Exit::NoInput,
            anyhow!(e).context(format!("cannot read the client secret file `{file}`")),
        )
        .hint("point it at a file that holds only the secret value (mode 0600)")
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Failure::new(
            Exit::Config,
            anyhow!("the client secret file `{file}` is empty"),
        )
        .hint("write the secret value (Certificates & secrets > Client secrets > Value) into it"));
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

/// A failed send, as the user should see it.
pub fn send_failure(error: TransportError, resolved: &Resolved) -> Failure {
    if let Some(failure) = network_failure(&error) {
        let exit = if failure.is_temporary() {
            Exit::TempFail
        } else {
            Exit::Config
        };
        return Failure::new(exit, error).hint(failure.hint());
    }
    let token_error =
        std::error::Error::source(&error).and_then(|s| s.downcast_ref::<TokenError>());
    if resolved.provider == Provider::Graph
        && let Some(
            TokenError::InvalidGrant { description } | TokenError::Refused { description, .. },
        ) = token_error
        && let Some(code) = description.as_deref().and_then(crate::aadsts::code)
        && let Some(advice) = crate::aadsts::advice(code, None, "", &relogin_hint(resolved))
    {
        return Failure::new(advice.exit, anyhow::Error::new(error).context(advice.cause))
            .hint(advice.fix);
    }
    match token_error {
        Some(TokenError::InvalidGrant { .. }) => {
            let (service, company, causes) = match resolved.provider {
                Provider::Gmail => ("Gmail", "Google", apimail_gmail::INVALID_GRANT_CAUSES),
                Provider::Graph => (
                    "Microsoft",
                    "Microsoft",
                    apimail_graph::INVALID_GRANT_CAUSES,
                ),
            };
            let mut failure = Failure::new(
                Exit::NoPerm,
                anyhow::Error::new(error).context(format!(
                    "the {service} authorization of {} is no longer valid",
                    resolved.label
                )),
            )
            .hint(relogin_hint(resolved));
            for cause in causes {
                failure = failure.note(format!("{company} ends authorizations when {cause}"));
            }
            return failure;
        }
        Some(TokenError::NotLoggedIn { .. } | TokenError::Refused { .. }) => {
            return Failure::new(Exit::NoPerm, error).hint(relogin_hint(resolved));
        }
        Some(wrong @ TokenError::NotTokenEndpoint { .. }) => {
            return wrong_token_url(wrong, &resolved.token_setting, resolved.provider);
        }
        Some(TokenError::Unreachable(_)) => {
            return Failure::new(Exit::TempFail, error)
                .hint("check the network connection (and HTTPS_PROXY, if you use a proxy), then try again");
        }
        _ => {}
    }
    let graph_hint = match resolved.provider {
        Provider::Graph => apimail_graph::failure_hint(&error),
        Provider::Gmail => None,
    };
    let (exit, hint) = match error.kind() {
        ErrorKind::Temporary => (
            Exit::TempFail,
            "the provider is busy or unreachable; try again later".to_owned(),
        ),
        ErrorKind::Unauthorized => (Exit::NoPerm, unauthorized_hint(&error, resolved)),
        ErrorKind::InvalidMessage => (
            Exit::DataErr,
            "fix the message (see the provider's answer above) and send again".to_owned(),
        ),
        ErrorKind::Rejected => (
            Exit::Unavailable,
            "the provider refused this message for good; check the recipients and the account"
                .to_owned(),
        ),
        ErrorKind::Config => (
            Exit::Config,
            "check the configuration (`apimail auth status`)".to_owned(),
        ),
        _ => (
            Exit::Software,
            "this is a bug in apimail; please report it with the output of --debug".to_owned(),
        ),
    };
    Failure::new(exit, error).hint(graph_hint.map_or(hint, str::to_owned))
}

/// The timeout, TLS or proxy failure behind `error`, if that is what it is.
pub fn network_failure(
    error: &(dyn std::error::Error + 'static),
) -> Option<apimail_core::http::NetFailure> {
    apimail_core::http::find::<apimail_core::http::NetFailure>(error)
        .cloned()
        .or_else(|| match apimail_core::http::find::<TokenError>(error) {
            Some(TokenError::Network(failure)) => Some(failure.clone()),
            _ => None,
        })
}

/// `run \`apimail auth login …\`` when a login can fix it, else what can.
fn relogin_hint(resolved: &Resolved) -> String {
    if resolved.login_fixes_auth {
        format!("run `{}`", resolved.relogin)
    } else {
        resolved.relogin.clone()
    }
}

fn unauthorized_hint(error: &TransportError, resolved: &Resolved) -> String {
    match (&resolved.relogin_large, resolved.provider) {
        (Some(large), _) if error.to_string().contains("Mail.ReadWrite") => {
            format!("log in again with Mail.ReadWrite: `{large}`")
        }
        (_, Provider::Gmail) if !resolved.login_fixes_auth => resolved.relogin.clone(),
        (_, Provider::Gmail) => format!(
            "authorize again with the gmail.send scope: `{}`",
            resolved.relogin
        ),
        (_, Provider::Graph) if resolved.login_fixes_auth => format!(
            "grant the app the permission (or admin consent), or `{}`",
            resolved.relogin
        ),
        (_, Provider::Graph) => resolved.relogin.clone(),
    }
}
