//! The ways a Gmail transport gets tokens, and what Google's end of an
//! authorization looks like. Credentials come in as values: the account
//! layer (`apimail-account`) reads the environment and the configuration.

use apimail_core::{AccessToken, TokenError};
use apimail_core::{RefreshTokenSource, StoredTokens, TokenSource};

use crate::ServiceAccountTokens;

/// Google's documented reasons for `invalid_grant`: why an authorization
/// ends.
pub const INVALID_GRANT_CAUSES: &[&str] = &[
    "the OAuth app is still in \"Testing\" publishing status, so its tokens last 7 days (publish it to stop this)",
    "the token was not used for 6 months",
    "the account's password was changed",
    "access was revoked (myaccount.google.com/permissions)",
];

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
