//! [`TokenSource`]s built on the OAuth machinery: one over the token
//! store (logged-in accounts), one over a refresh token held in memory
//! (credentials from the environment).

use std::sync::Arc;

use tokio::sync::Mutex;
use url::Url;

use crate::endpoint::checked_url;
use crate::oauth::{self, OAuthClient};
use crate::secret::Secret;
use crate::token::{AccessToken, TokenError, TokenResponse, TokenSource};
use crate::token_store::{StoredToken, TokenStore};
use crate::token_vault::{Refresh, TokenVault};

/// Tokens of a logged-in account, cached and refreshed in a
/// [`TokenVault`]: the local [`TokenStore`], or a shared one (one refresh
/// across processes, or across nodes).
#[derive(Debug, Clone)]
pub struct StoredTokens {
    store: Arc<dyn TokenVault>,
    account: String,
    token_url: Option<Url>,
}

impl StoredTokens {
    /// Tokens of `account` in the local `store`.
    pub fn new(store: TokenStore, account: impl Into<String>) -> Self {
        StoredTokens::in_vault(Arc::new(store), account)
    }

    /// Tokens of `account` in `vault`.
    pub fn in_vault(vault: Arc<dyn TokenVault>, account: impl Into<String>) -> Self {
        StoredTokens {
            store: vault,
            account: account.into(),
            token_url: None,
        }
    }

    /// Where the tokens are kept, for messages.
    pub fn vault(&self) -> &Arc<dyn TokenVault> {
        &self.store
    }

    /// Refreshes at `url` instead of the token URL recorded at login.
    pub fn with_token_url(mut self, url: Option<Url>) -> Self {
        self.token_url = url;
        self
    }
}

impl StoredTokens {
    /// Refreshes now, whatever the cached token's age: one real token
    /// request (for `apimail doctor`).
    pub async fn refresh_now(&self) -> Result<AccessToken, TokenError> {
        let stored =
            self.store
                .load(&self.account)
                .await?
                .ok_or_else(|| TokenError::NotLoggedIn {
                    account: self.account.clone(),
                })?;
        // Whatever is cached counts as rejected, so the store refreshes.
        let current = AccessToken {
            secret: stored.access_token.unwrap_or_else(|| Secret::new("")),
            expires_at: stored.expires_at,
        };
        self.refresh_after_rejection(&current).await
    }
}

impl TokenSource for StoredTokens {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.store.obtain(&self.account, None, self.refresh()).await
    }

    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.store
            .obtain(&self.account, Some(rejected), self.refresh())
            .await
    }
}

impl StoredTokens {
    fn refresh(&self) -> Refresh {
        let url = self.token_url.clone();
        Box::new(move |stored| Box::pin(refresh_stored(stored, url)))
    }
}

async fn refresh_stored(
    stored: StoredToken,
    token_url: Option<Url>,
) -> Result<TokenResponse, TokenError> {
    let refresh_token = stored.refresh_token.ok_or(TokenError::NotLoggedIn {
        account: stored.account.clone(),
    })?;
    let token_url = match token_url {
        Some(url) => url,
        None => checked_url(&stored.token_url).map_err(|e| TokenError::Other(e.to_string()))?,
    };
    let client = OAuthClient {
        client_id: stored.client_id,
        client_secret: stored.client_secret,
        auth_url: None,
        token_url,
        device_auth_url: None,
    };
    oauth::refresh(&client, &refresh_token, &stored.scopes).await
}

/// A refresh token held in memory, e.g. from environment variables: each
/// process refreshes once and keeps the access token for its lifetime.
#[derive(Debug)]
pub struct RefreshTokenSource {
    client: OAuthClient,
    refresh_token: Secret,
    scopes: Vec<String>,
    cached: Mutex<Option<AccessToken>>,
}

impl RefreshTokenSource {
    /// Refreshes `refresh_token` with `client` for `scopes`.
    pub fn new(client: OAuthClient, refresh_token: Secret, scopes: Vec<String>) -> Self {
        RefreshTokenSource {
            client,
            refresh_token,
            scopes,
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self, rejected: Option<&AccessToken>) -> Result<AccessToken, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && token.is_fresh()
            && Some(token) != rejected
        {
            return Ok(token.clone());
        }
        let response = oauth::refresh(&self.client, &self.refresh_token, &self.scopes).await?;
        *cached = Some(response.access_token.clone());
        Ok(response.access_token)
    }
}

impl TokenSource for RefreshTokenSource {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.fetch(None).await
    }

    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.fetch(Some(rejected)).await
    }
}
