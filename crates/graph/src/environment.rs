//! Graph app-only credentials from the environment (the azure-identity
//! variables), the mailbox size limit, and what Microsoft's end of an
//! authorization looks like.

use apimail_core::{
    AccessToken, RefreshTokenSource, SenderIdentity, StoredTokens, TokenError, TokenSource,
};

use crate::AppOnlyTokens;

/// The variables this crate reads, for help texts.
pub const ENV_VARS: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "APIMAIL_GRAPH_USER",
    "APIMAIL_GRAPH_CLIENT_SECRET",
    "APIMAIL_GRAPH_CLOUD",
    "APIMAIL_GRAPH_MAX_MESSAGE_MB",
];

/// Microsoft's usual reasons for `invalid_grant`: why an authorization ends.
pub const INVALID_GRANT_CAUSES: &[&str] = &[
    "the refresh token was not used for 90 days (AADSTS700082)",
    "the password was changed or all sessions were revoked (AADSTS50173)",
    "a Conditional Access policy requires signing in again",
    "an administrator removed the consent for the app",
];

/// App-only credentials named by the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCredentials {
    /// `AZURE_TENANT_ID`.
    pub tenant: String,
    /// `AZURE_CLIENT_ID`.
    pub client_id: String,
    /// `APIMAIL_GRAPH_USER`: the mailbox to send as.
    pub user: String,
    /// `APIMAIL_GRAPH_CLOUD`, when set.
    pub cloud: Option<String>,
}

/// Why the environment's Graph credentials cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A tenant and client are set but not the mailbox.
    #[error("AZURE_TENANT_ID and AZURE_CLIENT_ID are set but APIMAIL_GRAPH_USER is not")]
    MissingUser,
    /// `APIMAIL_GRAPH_MAX_MESSAGE_MB` is not a number.
    #[error("APIMAIL_GRAPH_MAX_MESSAGE_MB `{0}` is not a whole number")]
    BadLimit(String),
    /// A limit outside what Exchange Online allows.
    #[error("a mailbox limit of {0} MB is outside Exchange Online's 1 to 150 MB")]
    LimitOutOfRange(u32),
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The app-only credentials in the environment, if a tenant and client id
/// are set. The secret or certificate is read by [`secret_from_env`] and
/// [`certificate_path_from_env`] when the token source is built.
pub fn credentials_from_env() -> Result<Option<EnvCredentials>, EnvError> {
    let (Some(tenant), Some(client_id)) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID")) else {
        return Ok(None);
    };
    let user = var("APIMAIL_GRAPH_USER").ok_or(EnvError::MissingUser)?;
    Ok(Some(EnvCredentials {
        tenant,
        client_id,
        user,
        cloud: var("APIMAIL_GRAPH_CLOUD"),
    }))
}

/// `AZURE_CLIENT_SECRET`, when set.
pub fn secret_from_env() -> Option<apimail_core::Secret> {
    var("AZURE_CLIENT_SECRET").map(apimail_core::Secret::new)
}

/// `APIMAIL_GRAPH_CLIENT_SECRET`, the secret of a confidential client
/// used for delegated logins, when set.
pub fn login_secret_from_env() -> Option<apimail_core::Secret> {
    var("APIMAIL_GRAPH_CLIENT_SECRET").map(apimail_core::Secret::new)
}

/// `AZURE_CLIENT_CERTIFICATE_PATH`, when set.
pub fn certificate_path_from_env() -> Option<String> {
    var("AZURE_CLIENT_CERTIFICATE_PATH")
}

impl EnvCredentials {
    /// Who these credentials send as, recorded with queued messages.
    pub fn identity(&self) -> SenderIdentity {
        SenderIdentity::Environment {
            provider: "graph".into(),
            credential: "app_only".into(),
            principal: format!(
                "client {} of tenant {} as {}",
                self.client_id, self.tenant, self.user
            ),
        }
    }
}

/// The mailbox's size limit: `$APIMAIL_GRAPH_MAX_MESSAGE_MB`, else
/// `configured` (an account's `max_message_mb`), else 35 MB.
pub fn max_message_bytes(configured: Option<u32>) -> Result<usize, EnvError> {
    let mb = match var("APIMAIL_GRAPH_MAX_MESSAGE_MB") {
        Some(v) => Some(v.trim().parse::<u32>().map_err(|_| EnvError::BadLimit(v))?),
        None => configured,
    };
    match mb {
        None => Ok(crate::DEFAULT_MAX_MESSAGE_BYTES),
        Some(mb @ 1..=150) => Ok(mb as usize * 1024 * 1024),
        Some(mb) => Err(EnvError::LimitOutOfRange(mb)),
    }
}

/// Whether granted `scopes` allow the draft path for large messages.
pub fn allows_large_messages(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s.ends_with("Mail.ReadWrite"))
}

/// The ways a Graph transport gets tokens.
#[derive(Debug)]
pub enum GraphTokens {
    /// An account's stored (delegated) tokens.
    Stored(StoredTokens),
    /// App-only client credentials.
    AppOnly(AppOnlyTokens),
    /// A delegated refresh token held in memory (the library's explicit
    /// credentials).
    Refresh(RefreshTokenSource),
}

impl TokenSource for GraphTokens {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        match self {
            GraphTokens::Stored(t) => t.token().await,
            GraphTokens::AppOnly(t) => t.token().await,
            GraphTokens::Refresh(t) => t.token().await,
        }
    }

    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        match self {
            GraphTokens::Stored(t) => t.refresh_after_rejection(rejected).await,
            GraphTokens::AppOnly(t) => t.refresh_after_rejection(rejected).await,
            GraphTokens::Refresh(t) => t.refresh_after_rejection(rejected).await,
        }
    }
}
