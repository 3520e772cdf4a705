//! Where the shared PostgreSQL store is: `$APIMAIL_STORE_URL`, else
//! `[store] url`; its password from `$APIMAIL_STORE_PASSWORD_FILE`, else
//! `[store] password_file`, else `$PGPASSWORD`; a password in the URL
//! itself wins over all of them (as in libpq). Accounts' OAuth tokens
//! live there too when `$APIMAIL_STORE_TOKENS`, else `[store] tokens`, is
//! `store`, sealed with the key in `$APIMAIL_STORE_KEY_FILE`, else
//! `[store] key_file` (never the key itself in a variable or a flag).

use std::path::PathBuf;

use apimail_core::Secret;
use apimail_store_postgres::{Store, StoreConfig, StoreError};

use crate::config::{Config, TokensIn};
use crate::env;
pub use crate::error::StoreSettingsError;

/// The store's URL and password, as configured.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The URL (it may hold a password: show it only redacted).
    pub url: Secret,
    /// Where the URL came from: `APIMAIL_STORE_URL` or `[store] url`.
    pub url_from: &'static str,
    /// The password, when one came from a file or `PGPASSWORD`.
    pub password: Option<Secret>,
    /// `[store] migrate = true`: opening the store migrates its schema
    /// first ([`open_store`]).
    pub migrate: bool,
    /// Where accounts' tokens are sealed with, when they live in the store;
    /// `None`: each node keeps its own token files.
    pub token_key: Option<KeyFile>,
}

/// The file holding the key the store's tokens are sealed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The file.
    pub file: PathBuf,
    /// `APIMAIL_STORE_KEY_FILE` or `[store] key_file`.
    pub from: &'static str,
}

/// The store's settings; `None` when no store is configured (the local
/// outbox and journal are used).
pub fn store_settings(config: &Config) -> Result<Option<StoreSettings>, StoreSettingsError> {
    let table = config.store.clone().unwrap_or_default();
    let (tokens, tokens_from) = match env::var(env::STORE_TOKENS) {
        Some(value) => match value.as_str() {
            "local" => (TokensIn::Local, env::STORE_TOKENS),
            "store" => (TokensIn::Store, env::STORE_TOKENS),
            _ => return Err(StoreSettingsError::BadTokensIn { value }),
        },
        None => (table.tokens.unwrap_or_default(), "[store] tokens"),
    };
    let (url, url_from) = match env::var(env::STORE_URL) {
        Some(url) => (url, env::STORE_URL),
        None => match table.url.filter(|u| !u.trim().is_empty()) {
            Some(url) => (url, "[store] url"),
            None if tokens == TokensIn::Store => {
                return Err(StoreSettingsError::TokensWithoutStore {
                    setting: tokens_from,
                });
            }
            None => return Ok(None),
        },
    };
    let token_key = match tokens {
        TokensIn::Local => None,
        TokensIn::Store => Some(match env::path(env::STORE_KEY_FILE) {
            Some(file) => KeyFile {
                file,
                from: env::STORE_KEY_FILE,
            },
            None => match table.key_file {
                Some(file) => KeyFile {
                    file,
                    from: "[store] key_file",
                },
                None => {
                    return Err(StoreSettingsError::TokensWithoutKey {
                        setting: tokens_from,
                    });
                }
            },
        }),
    };
    let file = match env::path(env::STORE_PASSWORD_FILE) {
        Some(file) => Some((file, env::STORE_PASSWORD_FILE)),
        None => table.password_file.map(|f| (f, "[store] password_file")),
    };
    let password = match file {
        Some((file, setting)) => Some(read_password(file, setting)?),
        None => env::var(env::PGPASSWORD).map(Secret::new),
    };
    Ok(Some(StoreSettings {
        url: Secret::new(url),
        url_from,
        password,
        migrate: table.migrate.unwrap_or(false),
        token_key,
    }))
}

/// The connection settings for `settings`: its URL and password.
pub fn store_config(settings: &StoreSettings) -> StoreConfig {
    let mut config = StoreConfig::new(settings.url.expose());
    config.password = settings.password.clone();
    config
}

/// The store `settings` name, open: the database answers and its schema
/// is current (migrated first when `settings.migrate`), and this node's
/// heartbeat is recorded. The one way the command line, the relay, the
/// console and the library open it.
pub async fn open_store(settings: &StoreSettings) -> Result<Store, StoreError> {
    let store = Store::new(&store_config(settings))?;
    if settings.migrate {
        let migrated = store.migrate().await?;
        if !migrated.applied.is_empty() {
            tracing::info!(
                "migrated the store to version {}: applied {}",
                migrated.version,
                migrated.applied.join(", ")
            );
        }
    }
    store.ready().await?;
    Ok(store)
}

/// The file's first line, without its line ending.
fn read_password(file: PathBuf, setting: &'static str) -> Result<Secret, StoreSettingsError> {
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(source) => {
            return Err(StoreSettingsError::PasswordFileUnreadable {
                file,
                setting,
                source,
            });
        }
    };
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if line.is_empty() {
        return Err(StoreSettingsError::PasswordFileEmpty { file, setting });
    }
    Ok(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreTable;

    #[test]
    fn the_config_names_the_store_and_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let config = Config {
            store: Some(StoreTable {
                url: Some("postgres://apimail@db/mail".into()),
                password_file: Some(file.clone()),
                migrate: Some(true),
                ..StoreTable::default()
            }),
            ..Config::default()
        };
        // The environment may name a store of its own on a developer's
        // machine; the test reads the configuration only when it does not.
        if [
            env::STORE_URL,
            env::STORE_PASSWORD_FILE,
            env::STORE_TOKENS,
            env::STORE_KEY_FILE,
        ]
        .iter()
        .any(|v| env::is_set(v))
        {
            return;
        }
        let settings = store_settings(&config).unwrap().unwrap();
        assert_eq!(settings.url.expose(), "postgres://apimail@db/mail");
        assert_eq!(settings.url_from, "[store] url");
        assert_eq!(settings.password.unwrap().expose(), "s3cret");
        assert!(settings.migrate);

        std::fs::write(&file, "\n").unwrap();
        let error = store_settings(&config).unwrap_err();
        assert!(
            matches!(error, StoreSettingsError::PasswordFileEmpty { .. }),
            "{error}"
        );
        assert!(store_settings(&Config::default()).unwrap().is_none());
    }

    #[test]
    fn tokens_in_the_store_need_a_store_and_a_key() {
        if [env::STORE_URL, env::STORE_TOKENS, env::STORE_KEY_FILE]
            .iter()
            .any(|v| env::is_set(v))
        {
            return;
        }
        let with = |url: Option<&str>, tokens, key_file: Option<&str>| Config {
            store: Some(StoreTable {
                url: url.map(str::to_owned),
                tokens,
                key_file: key_file.map(PathBuf::from),
                ..StoreTable::default()
            }),
            ..Config::default()
        };
        let url = Some("postgres://apimail@db/mail");
        // Local by default, even with a key file.
        let settings = store_settings(&with(url, None, Some("/k")))
            .unwrap()
            .unwrap();
        assert_eq!(settings.token_key, None);
        let settings = store_settings(&with(url, Some(TokensIn::Store), Some("/k")))
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.token_key,
            Some(KeyFile {
                file: "/k".into(),
                from: "[store] key_file"
            })
        );
        let error = store_settings(&with(url, Some(TokensIn::Store), None)).unwrap_err();
        assert!(
            matches!(error, StoreSettingsError::TokensWithoutKey { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("APIMAIL_STORE_KEY_FILE"),
            "{error}"
        );
        let error = store_settings(&with(None, Some(TokensIn::Store), Some("/k"))).unwrap_err();
        assert!(
            matches!(error, StoreSettingsError::TokensWithoutStore { .. }),
            "{error}"
        );
    }
}
