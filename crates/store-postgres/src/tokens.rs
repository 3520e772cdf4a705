//! [`SharedTokens`]: accounts' OAuth tokens in the shared store, sealed
//! under the cluster's [`StoreKey`], behind core's
//! [`TokenVault`] seam. One refresh per account across the cluster: the
//! refresh runs holding the account's row (`SELECT … FOR UPDATE`, waiting
//! at most the lock timeout), a node that waited reads the row again and
//! uses the token another node just got, and the answer (a rotated
//! refresh token included) is written in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use apimail_core::token_store::StoredToken;
use apimail_core::token_vault::{Refresh, TokenFuture, TokenVault};
use apimail_core::{AccessToken, TokenError};

use crate::error::{self, StoreError};
use crate::seal::{KeyError, OpenError, StoreKey};
use crate::store::Store;

/// How long a node waits for another one's refresh of the same account.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the shared token store failed. Texts never hold a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A row does not open with this node's key.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Sealing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A row opened but is not a token set.
    #[error("the store's tokens for account `{account}` are not a token set")]
    Corrupt {
        /// The account.
        account: String,
    },
    /// Another node held the account's row past the lock timeout.
    #[error(
        "another node is refreshing the tokens of account `{account}` (waited {}s); try again when it has finished",
        .waited.as_secs()
    )]
    Locked {
        /// The account.
        account: String,
        /// How long this node waited.
        waited: Duration,
    },
}

impl TokensError {
    /// The error as core's: a database away is temporary
    /// ([`TokenError::Unreachable`]); the rest is the store's
    /// ([`TokenError::Store`], which needs the user).
    fn into_token_error(self) -> TokenError {
        match self {
            TokensError::Store(e) if e.is_temporary() => TokenError::Unreachable(Box::new(e)),
            TokensError::Locked { .. } => TokenError::Unreachable(Box::new(self)),
            other => TokenError::Store(Box::new(other)),
        }
    }
}

/// The shared token store of one node: the store and this node's key.
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedTokens {
    store: Store,
    key: Arc<StoreKey>,
    lock_timeout: Duration,
}

impl std::fmt::Debug for SharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokens")
            .field("node", &self.store.node())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SharedTokens {
    /// Tokens in `store`, sealed with `key`.
    pub fn new(store: Store, key: StoreKey) -> SharedTokens {
        SharedTokens {
            store,
            key: Arc::new(key),
            lock_timeout: LOCK_TIMEOUT,
        }
    }

    /// Waits at most `timeout` for another node's refresh (30 s by default).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> SharedTokens {
        self.lock_timeout = timeout;
        self
    }

    /// The key's id (never the key).
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    /// What is stored for `account`.
    pub async fn get(&self, account: &str) -> Result<Option<StoredToken>, TokensError> {
        let client = self.store.client("read tokens").await?;
        let row = client
            .query_opt(
                "SELECT key_id, sealed FROM apimail_tokens WHERE account = $1",
                &[&account],
            )
            .await
            .map_err(error::query("read tokens"))?;
        row.map(|row| self.open(account, row.get(0), row.get(1)))
            .transpose()
    }

    /// Stores `token` for its account, replacing what was there.
    pub async fn put(&self, token: &StoredToken) -> Result<(), TokensError> {
        let client = self.store.client("store tokens").await?;
        let sealed = self.seal(token)?;
        client
            .execute(UPSERT, &[&token.account, &self.key.id(), &sealed])
            .await
            .map_err(error::query("store tokens"))?;
        Ok(())
    }

    /// Removes `account`'s tokens; `false` if there were none.
    pub async fn remove(&self, account: &str) -> Result<bool, TokensError> {
        let client = self.store.client("delete tokens").await?;
        let n = client
            .execute("DELETE FROM apimail_tokens WHERE account = $1", &[&account])
            .await
            .map_err(error::query("delete tokens"))?;
        Ok(n > 0)
    }

    /// The accounts with tokens in the store, sorted.
    pub async fn accounts(&self) -> Result<Vec<String>, TokensError> {
        let client = self.store.client("list tokens").await?;
        let rows = client
            .query("SELECT account FROM apimail_tokens ORDER BY account", &[])
            .await
            .map_err(error::query("list tokens"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn seal(&self, token: &StoredToken) -> Result<Vec<u8>, TokensError> {
        let mut token = token.clone();
        token.updated_at = apimail_core::now_unix();
        let json = serde_json::to_vec(&token).map_err(|_| TokensError::Corrupt {
            account: token.account.clone(),
        })?;
        Ok(self.key.seal(&token.account, &json)?)
    }

    fn open(
        &self,
        account: &str,
        key_id: String,
        sealed: Vec<u8>,
    ) -> Result<StoredToken, TokensError> {
        let plain = self.key.open(account, &key_id, &sealed)?;
        // serde_json's messages may quote a value: keep none of it.
        let token: StoredToken =
            serde_json::from_slice(&plain).map_err(|_| TokensError::Corrupt {
                account: account.to_owned(),
            })?;
        if token.account != account {
            return Err(TokensError::Corrupt {
                account: account.to_owned(),
            });
        }
        Ok(token)
    }

    /// Core's `obtain`: see the module's rules.
    async fn refresh_once(
        &self,
        account: &str,
        rejected: Option<&AccessToken>,
        refresh: Refresh,
    ) -> Result<AccessToken, TokenError> {
        let not_logged_in = || TokenError::NotLoggedIn {
            account: account.to_owned(),
        };
        let failed = TokensError::into_token_error;
        let stored = self
            .get(account)
            .await
            .map_err(failed)?
            .ok_or_else(not_logged_in)?;
        if let Some(token) = stored.usable(rejected) {
            return Ok(token);
        }

        let what = "refresh tokens";
        let mut client = self
            .store
            .client(what)
            .await
            .map_err(|e| failed(e.into()))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| failed(error::query(what)(e).into()))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            self.lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(|e| failed(error::query(what)(e).into()))?;
        let row = match tx
            .query_opt(
                "SELECT key_id, sealed FROM apimail_tokens WHERE account = $1 FOR UPDATE",
                &[&account],
            )
            .await
        {
            Ok(row) => row,
            Err(e)
                if e.as_db_error()
                    .is_some_and(|db| db.code().code() == "55P03") =>
            {
                return Err(failed(TokensError::Locked {
                    account: account.to_owned(),
                    waited: self.lock_timeout,
                }));
            }
            Err(e) => return Err(failed(error::query(what)(e).into())),
        };
        let Some(row) = row else {
            return Err(not_logged_in());
        };
        // Another node may have refreshed while this one waited.
        let mut stored = self.open(account, row.get(0), row.get(1)).map_err(failed)?;
        if let Some(token) = stored.usable(rejected) {
            return Ok(token); // the transaction rolls back: nothing written
        }
        if stored.refresh_token.is_none() {
            return Err(not_logged_in());
        }
        let response = match refresh(stored.clone()).await {
            Ok(response) => response,
            Err(error) => {
                if let TokenError::InvalidGrant { description } = &error {
                    // Recorded for `auth status` and `doctor`; the refusal
                    // is what matters if this write fails.
                    stored.refused(description.as_deref());
                    if let Ok(sealed) = self.seal(&stored) {
                        let written = tx
                            .execute(UPDATE, &[&account, &self.key.id(), &sealed])
                            .await;
                        if written.is_ok() {
                            let _ = tx.commit().await;
                        }
                    }
                }
                return Err(error);
            }
        };
        stored.refreshed(&response);
        // A rotated refresh token is committed before the new access token
        // is used: the old one may already be void.
        let sealed = self.seal(&stored).map_err(failed)?;
        tx.execute(UPDATE, &[&account, &self.key.id(), &sealed])
            .await
            .map_err(|e| failed(error::query(what)(e).into()))?;
        tx.commit()
            .await
            .map_err(|e| failed(error::query(what)(e).into()))?;
        Ok(response.access_token)
    }
}

const UPSERT: &str = "INSERT INTO apimail_tokens (account, key_id, sealed) VALUES ($1, $2, $3) \
     ON CONFLICT (account) DO UPDATE SET key_id = $2, sealed = $3, updated_at = now()";

const UPDATE: &str =
    "UPDATE apimail_tokens SET key_id = $2, sealed = $3, updated_at = now() WHERE account = $1";

impl TokenVault for SharedTokens {
    fn load<'a>(&'a self, account: &'a str) -> TokenFuture<'a, Option<StoredToken>> {
        Box::pin(async move {
            self.get(account)
                .await
                .map_err(TokensError::into_token_error)
        })
    }

    fn save<'a>(&'a self, token: &'a StoredToken) -> TokenFuture<'a, ()> {
        Box::pin(async move { self.put(token).await.map_err(TokensError::into_token_error) })
    }

    fn obtain<'a>(
        &'a self,
        account: &'a str,
        rejected: Option<&'a AccessToken>,
        refresh: Refresh,
    ) -> TokenFuture<'a, AccessToken> {
        Box::pin(self.refresh_once(account, rejected, refresh))
    }

    fn describe(&self, account: &str) -> String {
        format!(
            "the shared store (account `{account}`, key id {})",
            self.key.id()
        )
    }
}
