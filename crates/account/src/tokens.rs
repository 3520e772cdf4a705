//! Where accounts' OAuth tokens are kept: each node's own token files
//! (the default), or the shared store, sealed under the cluster's key
//! (`[store] tokens = "store"` with a key file; see `store_settings`).

use std::sync::Arc;

use apimail_core::token_store::TokenStore;
use apimail_core::token_vault::TokenVault;
use apimail_store_postgres::{SharedTokens, Store, StoreKey};

use crate::config::Config;
use crate::error::ResolveError;
use crate::shared_store::{StoreSettings, store_config, store_settings};

/// The token store accounts' tokens are read, refreshed and written
/// through: `local` (the data directory's files) unless `config` puts
/// tokens in the shared store. Opens nothing yet: the store connects at
/// the first token asked for.
pub fn token_vault(
    config: &Config,
    local: TokenStore,
) -> Result<Arc<dyn TokenVault>, ResolveError> {
    match store_settings(config).map_err(ResolveError::StoreSettings)? {
        Some(settings) if settings.token_key.is_some() => Ok(Arc::new(shared_tokens(&settings)?)),
        _ => Ok(Arc::new(local)),
    }
}

/// The shared store's tokens for `settings`, which put them there (its
/// key file read); `Ok(None)` when they do not.
pub fn shared_tokens_for(settings: &StoreSettings) -> Result<Option<SharedTokens>, ResolveError> {
    match settings.token_key {
        Some(_) => shared_tokens(settings).map(Some),
        None => Ok(None),
    }
}

fn shared_tokens(settings: &StoreSettings) -> Result<SharedTokens, ResolveError> {
    let key_file = settings
        .token_key
        .as_ref()
        .expect("called for settings with a key");
    let key = StoreKey::from_file(&key_file.file).map_err(|source| ResolveError::StoreKey {
        from: key_file.from,
        source,
    })?;
    let store = Store::new(&store_config(settings)).map_err(ResolveError::StoreOpen)?;
    Ok(SharedTokens::new(store, key))
}
