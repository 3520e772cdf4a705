//! Picking the provider at run time: from a named account, the default
//! account, or credentials in the environment; and turning provider
//! failures into reports with the next command to run.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use apimail_core::token_store::TokenStore;
use apimail_core::{
    AccessToken, ErrorKind, Receipt, RefreshTokenSource, Secret, StoredTokens, TokenError,
    TokenSource, Transport, TransportError,
};
use apimail_gmail::{GmailTransport, ServiceAccountTokens, google_auth};
use url::Url;

use crate::config::{Account, Config, Provider};
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

/// Where the messages of one send go.
#[derive(Debug)]
pub struct Resolved {
    /// What the user knows this as: an account name, or the environment.
    pub label: String,
    /// The address to send as when --from is not given.
    pub address: Option<String>,
    /// The command that authorizes again.
    pub relogin: String,
    pub sender: Sender,
}

#[derive(Debug)]
pub enum Sender {
    Gmail(GmailTransport<GmailTokens>),
}

impl Sender {
    pub async fn send(&self, message: &apimail_core::Message) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_raw(message.envelope(), message.as_bytes()).await,
        }
    }
}

/// The ways a Gmail transport gets tokens.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per process")]
pub enum GmailTokens {
    Stored(StoredTokens),
    ServiceAccount(ServiceAccountTokens),
    Environment(RefreshTokenSource),
}

impl TokenSource for GmailTokens {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        match self {
            GmailTokens::Stored(t) => t.token().await,
            GmailTokens::ServiceAccount(t) => t.token().await,
            GmailTokens::Environment(t) => t.token().await,
        }
    }

    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        match self {
            GmailTokens::Stored(t) => t.refresh_after_rejection(rejected).await,
            GmailTokens::ServiceAccount(t) => t.refresh_after_rejection(rejected).await,
            GmailTokens::Environment(t) => t.refresh_after_rejection(rejected).await,
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
    let (value, source) = match std::env::var(env).ok().filter(|v| !v.is_empty()) {
        Some(value) => (value, env.to_owned()),
        None => match configured {
            Some(value) => (value.to_owned(), format!("account key `{key}`")),
            None => return Ok(Url::parse(default).expect("defaults are valid URLs")),
        },
    };
    apimail_core::endpoint::checked_url(&value).map_err(|e| {
        Failure::new(Exit::Config, anyhow!("{source}: {e}")).hint(format!(
            "set {source} to an https:// URL (plain http:// only for 127.0.0.1 or localhost)"
        ))
    })
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
    if provider == Some(Provider::Gmail)
        && let Some(resolved) = gmail_from_env().await?
    {
        return Ok(resolved);
    }
    if let Some(name) = &ctx.config.default_account {
        return from_account(ctx, name).await;
    }
    if let Some(resolved) = gmail_from_env().await? {
        return Ok(resolved);
    }
    Err(Failure::new(
        Exit::Config,
        anyhow!("no account to send from: {} has none, and no credentials are in the environment", ctx.config_path.display()),
    )
    .hint("run `apimail auth login gmail --client-secret client_secret.json`, or use --dry-run to only print the message")
    .note("servers can use GOOGLE_APPLICATION_CREDENTIALS with APIMAIL_GMAIL_USER (service account), or APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET and APIMAIL_GOOGLE_REFRESH_TOKEN"))
}

async fn from_account(ctx: &Context, name: &str) -> Result<Resolved, Failure> {
    let account = ctx.config.account(name, &ctx.config_path)?;
    match account.provider {
        Provider::Gmail => gmail_account(ctx, name, account),
    }
}

fn gmail_account(ctx: &Context, name: &str, account: &Account) -> Result<Resolved, Failure> {
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
    let tokens = StoredTokens::new(ctx.store()?, name).with_token_url(token_url);
    let transport = GmailTransport::new(client()?, &api_url, "me", GmailTokens::Stored(tokens));
    Ok(Resolved {
        label: format!("account `{name}`"),
        address: account.address.clone(),
        relogin: gmail_login_command(name, account),
        sender: Sender::Gmail(transport),
    })
}

pub fn gmail_login_command(name: &str, account: &Account) -> String {
    let file = account
        .client_secret_file
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
    let user = env("APIMAIL_GMAIL_USER");
    if let Some(key_path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
        let Some(user) = user else {
            return Err(Failure::new(
                Exit::Config,
                anyhow!("GOOGLE_APPLICATION_CREDENTIALS is set but APIMAIL_GMAIL_USER is not"),
            )
            .hint("set APIMAIL_GMAIL_USER=sender@your-domain: a service account sends as a user of its domain (domain-wide delegation)"));
        };
        let key = std::fs::read(&key_path).map_err(|e| {
            Failure::new(
                Exit::NoInput,
                anyhow!(e).context(format!(
                    "cannot read GOOGLE_APPLICATION_CREDENTIALS `{key_path}`"
                )),
            )
            .hint("point GOOGLE_APPLICATION_CREDENTIALS at the service account's JSON key file")
        })?;
        let explicit_token_url = env("APIMAIL_GOOGLE_TOKEN_URL").map(|_| token_url.clone());
        let tokens = ServiceAccountTokens::new(&key, &user, explicit_token_url.as_ref())
            .await
            .map_err(|e| {
                Failure::new(Exit::Config, e).hint("download a new JSON key for the service account (IAM & Admin > Service Accounts > Keys)")
            })?;
        let transport = GmailTransport::new(
            client()?,
            &api_url,
            user.clone(),
            GmailTokens::ServiceAccount(tokens),
        );
        return Ok(Some(Resolved {
            label: format!("service account acting as {user}"),
            address: Some(user),
            relogin: "check the service account's domain-wide delegation (client id and the gmail.send scope) in the Google Workspace admin console".into(),
            sender: Sender::Gmail(transport),
        }));
    }
    let (Some(client_id), Some(secret), Some(refresh)) = (
        env("APIMAIL_GOOGLE_CLIENT_ID"),
        env("APIMAIL_GOOGLE_CLIENT_SECRET"),
        env("APIMAIL_GOOGLE_REFRESH_TOKEN"),
    ) else {
        return Ok(None);
    };
    let client = apimail_core::oauth::OAuthClient {
        client_id,
        client_secret: Some(Secret::new(secret)),
        auth_url: None,
        token_url,
        device_auth_url: None,
    };
    let tokens = RefreshTokenSource::new(
        client,
        Secret::new(refresh),
        vec![apimail_gmail::SEND_SCOPE.to_owned()],
    );
    let transport = GmailTransport::new(
        self::client()?,
        &api_url,
        "me",
        GmailTokens::Environment(tokens),
    );
    Ok(Some(Resolved {
        label: "the refresh token in APIMAIL_GOOGLE_REFRESH_TOKEN".into(),
        address: user,
        relogin: "get a new refresh token (for example with `apimail auth login gmail`) and update APIMAIL_GOOGLE_REFRESH_TOKEN".into(),
        sender: Sender::Gmail(transport),
    }))
}

/// Google's documented reasons for `invalid_grant`.
const GOOGLE_INVALID_GRANT_CAUSES: &[&str] = &[
    "the OAuth app is still in \"Testing\" publishing status, so its tokens last 7 days (publish it to stop this)",
    "the token was not used for 6 months",
    "the account's password was changed",
    "access was revoked (myaccount.google.com/permissions)",
];

/// A failed send, as the user should see it.
pub fn send_failure(error: TransportError, resolved: &Resolved) -> Failure {
    let token_error =
        std::error::Error::source(&error).and_then(|s| s.downcast_ref::<TokenError>());
    match token_error {
        Some(TokenError::InvalidGrant { .. }) => {
            let mut failure = Failure::new(
                Exit::NoPerm,
                anyhow::Error::new(error).context(format!(
                    "the Gmail authorization of {} is no longer valid",
                    resolved.label
                )),
            )
            .hint(format!(
                "run `{}`",
                resolved.relogin.trim_start_matches("run ")
            ));
            for cause in GOOGLE_INVALID_GRANT_CAUSES {
                failure = failure.note(format!("Google ends authorizations when {cause}"));
            }
            return failure;
        }
        Some(TokenError::NotLoggedIn { .. } | TokenError::Refused { .. }) => {
            return Failure::new(Exit::NoPerm, error).hint(format!("run `{}`", resolved.relogin));
        }
        Some(TokenError::Unreachable(_)) => {
            return Failure::new(Exit::TempFail, error)
                .hint("check the network connection (and HTTPS_PROXY, if you use a proxy), then try again");
        }
        _ => {}
    }
    let (exit, hint) = match error.kind() {
        ErrorKind::Temporary => (
            Exit::TempFail,
            "the provider is busy or unreachable; try again later".to_owned(),
        ),
        ErrorKind::Unauthorized => (
            Exit::NoPerm,
            format!(
                "authorize again with the gmail.send scope: `{}`",
                resolved.relogin
            ),
        ),
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
    Failure::new(exit, error).hint(hint)
}
