//! Gmail credentials from the environment alone (servers, CI, cloud
//! functions), and what Google's end of an authorization looks like.

use std::path::PathBuf;

use apimail_core::{AccessToken, TokenError};
use apimail_core::{RefreshTokenSource, Secret, SenderIdentity, StoredTokens, TokenSource};

use crate::ServiceAccountTokens;

/// The variables [`credentials_from_env`] reads, for help texts.
pub const ENV_VARS: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "APIMAIL_GMAIL_USER",
    "APIMAIL_GOOGLE_CLIENT_ID",
    "APIMAIL_GOOGLE_CLIENT_SECRET",
    "APIMAIL_GOOGLE_REFRESH_TOKEN",
];

/// Google's documented reasons for `invalid_grant`: why an authorization
/// ends.
pub const INVALID_GRANT_CAUSES: &[&str] = &[
    "the OAuth app is still in \"Testing\" publishing status, so its tokens last 7 days (publish it to stop this)",
    "the token was not used for 6 months",
    "the account's password was changed",
    "access was revoked (myaccount.google.com/permissions)",
];

/// Gmail credentials found in the environment.
#[derive(Debug)]
pub enum EnvCredentials {
    /// `GOOGLE_APPLICATION_CREDENTIALS` (a service account key) acting as
    /// `APIMAIL_GMAIL_USER` (domain-wide delegation).
    ServiceAccount {
        /// Where the key file is.
        key_path: PathBuf,
        /// The key file's contents.
        key: Secret,
        /// The service account's own address, from the key.
        client_email: String,
        /// The user of the domain it sends as.
        user: String,
    },
    /// `APIMAIL_GOOGLE_CLIENT_ID`, `_CLIENT_SECRET` and `_REFRESH_TOKEN`.
    RefreshToken {
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: Secret,
        /// The refresh token.
        refresh_token: Secret,
        /// `APIMAIL_GMAIL_USER`, the address, when set.
        user: Option<String>,
    },
}

/// Why the environment's Gmail credentials cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A service account key is set but not the user it acts as.
    #[error("GOOGLE_APPLICATION_CREDENTIALS is set but APIMAIL_GMAIL_USER is not")]
    MissingUser,
    /// The service account key file cannot be read.
    #[error("cannot read GOOGLE_APPLICATION_CREDENTIALS `{path}`")]
    UnreadableKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The Gmail credentials in the environment, if any are set: a service
/// account first, else a client with a refresh token.
pub fn credentials_from_env() -> Result<Option<EnvCredentials>, EnvError> {
    let user = var("APIMAIL_GMAIL_USER");
    if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS") {
        let user = user.ok_or(EnvError::MissingUser)?;
        let key_path = PathBuf::from(path);
        let key = std::fs::read_to_string(&key_path).map_err(|source| EnvError::UnreadableKey {
            path: key_path.clone(),
            source,
        })?;
        let client_email = serde_json::from_str::<serde_json::Value>(&key)
            .ok()
            .and_then(|v| v.get("client_email")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Ok(Some(EnvCredentials::ServiceAccount {
            key_path,
            key: Secret::new(key),
            client_email,
            user,
        }));
    }
    let (Some(client_id), Some(client_secret), Some(refresh_token)) = (
        var("APIMAIL_GOOGLE_CLIENT_ID"),
        var("APIMAIL_GOOGLE_CLIENT_SECRET"),
        var("APIMAIL_GOOGLE_REFRESH_TOKEN"),
    ) else {
        return Ok(None);
    };
    Ok(Some(EnvCredentials::RefreshToken {
        client_id,
        client_secret: Secret::new(client_secret),
        refresh_token: Secret::new(refresh_token),
        user,
    }))
}

impl EnvCredentials {
    /// Who these credentials send as, recorded with queued messages.
    pub fn identity(&self) -> SenderIdentity {
        let (credential, principal) = match self {
            EnvCredentials::ServiceAccount {
                client_email, user, ..
            } => ("service_account", format!("{client_email} as {user}")),
            EnvCredentials::RefreshToken {
                client_id, user, ..
            } => (
                "refresh_token",
                match user {
                    Some(user) => format!("client {client_id} as {user}"),
                    None => format!("client {client_id}"),
                },
            ),
        };
        SenderIdentity::Environment {
            provider: "gmail".into(),
            credential: credential.into(),
            principal,
        }
    }

    /// The address mail is sent from, when known.
    pub fn address(&self) -> Option<&str> {
        match self {
            EnvCredentials::ServiceAccount { user, .. } => Some(user),
            EnvCredentials::RefreshToken { user, .. } => user.as_deref(),
        }
    }
}

/// The ways a Gmail transport gets tokens.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per sender")]
pub enum GmailTokens {
    /// An account's stored tokens.
    Stored(StoredTokens),
    /// A service account with domain-wide delegation.
    ServiceAccount(ServiceAccountTokens),
    /// A refresh token from the environment.
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
