//! The token store as a seam: where [`StoredTokens`](crate::StoredTokens)
//! reads, refreshes and writes an account's tokens. Core names no backend:
//! the local files ([`TokenStore`]) are the default, and other crates
//! (such as `apimail-store-postgres`, which keeps them encrypted in the
//! shared store) implement the same trait with the same rules:
//!
//! - a fresh cached access token is used without a lock;
//! - otherwise one refresh per account at a time, across every process
//!   that shares the backend: whoever waited reads the account again and
//!   uses the token another one just got ([`StoredToken::usable`]);
//! - a refresh's answer, a rotated refresh token included, is durable
//!   before the new access token is handed out
//!   ([`StoredToken::refreshed`]); a refused refresh is recorded
//!   ([`StoredToken::refused`]) and the tokens kept.

use std::future::Future;
use std::pin::Pin;

use crate::token::{AccessToken, TokenError, TokenResponse};
use crate::token_store::{StoredToken, TokenStore};

/// A boxed, sendable future of a token operation.
pub type TokenFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TokenError>> + Send + 'a>>;

/// The network half of a refresh: given what is stored, ask the token
/// endpoint. A backend calls it at most once per
/// [`obtain`](TokenVault::obtain), under its lock.
pub type Refresh = Box<dyn FnOnce(StoredToken) -> TokenFuture<'static, TokenResponse> + Send>;

/// Where accounts' OAuth tokens live.
pub trait TokenVault: Send + Sync + std::fmt::Debug {
    /// What is stored for `account`, or `None`.
    fn load<'a>(&'a self, account: &'a str) -> TokenFuture<'a, Option<StoredToken>>;

    /// Stores `token` (a login, an import), replacing what was there.
    fn save<'a>(&'a self, token: &'a StoredToken) -> TokenFuture<'a, ()>;

    /// A usable access token for `account`, not `rejected` (one the API
    /// refused): the cached one if fresh, else a new one from `refresh`,
    /// once across everyone sharing the backend (see the module's rules).
    fn obtain<'a>(
        &'a self,
        account: &'a str,
        rejected: Option<&'a AccessToken>,
        refresh: Refresh,
    ) -> TokenFuture<'a, AccessToken>;

    /// Where the tokens are, for messages: a file, "the shared store".
    fn describe(&self, account: &str) -> String;
}

impl TokenVault for TokenStore {
    fn load<'a>(&'a self, account: &'a str) -> TokenFuture<'a, Option<StoredToken>> {
        Box::pin(async move {
            TokenStore::load(self, account).map_err(|e| TokenError::Store(Box::new(e)))
        })
    }

    fn save<'a>(&'a self, token: &'a StoredToken) -> TokenFuture<'a, ()> {
        Box::pin(async move {
            TokenStore::save(self, token).map_err(|e| TokenError::Store(Box::new(e)))
        })
    }

    fn obtain<'a>(
        &'a self,
        account: &'a str,
        rejected: Option<&'a AccessToken>,
        refresh: Refresh,
    ) -> TokenFuture<'a, AccessToken> {
        Box::pin(async move {
            match rejected {
                None => self.access_token(account, refresh).await,
                Some(rejected) => {
                    self.refresh_after_rejection(account, rejected, refresh)
                        .await
                }
            }
        })
    }

    fn describe(&self, account: &str) -> String {
        self.path(account).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use crate::token::now_unix;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn stored(expires_in: i64) -> StoredToken {
        StoredToken {
            account: "work".into(),
            provider: "graph".into(),
            address: None,
            client_id: "client".into(),
            client_secret: None,
            token_url: "https://login.example.com/token".into(),
            scopes: vec!["Mail.Send".into()],
            refresh_token: Some(Secret::new("refresh-0")),
            access_token: Some(Secret::new("access-0")),
            expires_at: Some(now_unix() + expires_in),
            updated_at: 0,
            authorized_at: None,
            refreshed_at: None,
            refresh_refused: None,
        }
    }

    #[tokio::test]
    async fn the_file_store_behind_the_seam_refreshes_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let vault: Arc<dyn TokenVault> = Arc::new(TokenStore::new(dir.path()));
        vault.save(&stored(-10)).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let refresh: Refresh = Box::new(move |old| {
            counter.fetch_add(1, Ordering::SeqCst);
            assert_eq!(old.refresh_token.unwrap().expose(), "refresh-0");
            Box::pin(async {
                Ok(TokenResponse {
                    access_token: AccessToken {
                        secret: Secret::new("access-1"),
                        expires_at: Some(now_unix() + 3600),
                    },
                    refresh_token: Some(Secret::new("refresh-1")),
                    scopes: None,
                    id_token: None,
                })
            })
        });
        let token = vault.obtain("work", None, refresh).await.unwrap();
        assert_eq!(token.secret.expose(), "access-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let loaded = vault.load("work").await.unwrap().unwrap();
        assert_eq!(loaded.refresh_token.unwrap().expose(), "refresh-1");
        assert!(loaded.refreshed_at.is_some());
        // Fresh now: no refresh.
        let again = vault
            .obtain("work", None, Box::new(|_| panic!("refreshed twice")))
            .await
            .unwrap();
        assert_eq!(again, token);
        assert!(vault.describe("work").ends_with("work.json"));
    }
}
