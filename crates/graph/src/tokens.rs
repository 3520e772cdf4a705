//! The ways a Graph transport gets tokens, the mailbox size limit, and
//! what Microsoft's end of an authorization looks like. Credentials and
//! settings come in as values: the account layer (`apimail-account`) reads
//! the environment and the configuration.

use apimail_core::{AccessToken, RefreshTokenSource, StoredTokens, TokenError, TokenSource};

use crate::AppOnlyTokens;

/// Microsoft's usual reasons for `invalid_grant`: why an authorization ends.
pub const INVALID_GRANT_CAUSES: &[&str] = &[
    "the refresh token was not used for 90 days (AADSTS700082)",
    "the password was changed or all sessions were revoked (AADSTS50173)",
    "a Conditional Access policy requires signing in again",
    "an administrator removed the consent for the app",
];

/// A mailbox size limit outside what Exchange Online allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a mailbox limit of {0} MB is outside Exchange Online's 1 to 150 MB")]
pub struct LimitOutOfRange(pub u32);

/// The mailbox's size limit in bytes: `mb` megabytes (1 to 150), else
/// 35 MB.
pub fn message_limit(mb: Option<u32>) -> Result<usize, LimitOutOfRange> {
    match mb {
        None => Ok(crate::DEFAULT_MAX_MESSAGE_BYTES),
        Some(mb @ 1..=150) => Ok(mb as usize * 1024 * 1024),
        Some(mb) => Err(LimitOutOfRange(mb)),
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
