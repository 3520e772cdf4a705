//! Where the shared PostgreSQL store is: `$APIMAIL_STORE_URL`, else
//! `[store] url`; its password from `$APIMAIL_STORE_PASSWORD_FILE`, else
//! `[store] password_file`, else `$PGPASSWORD`; a password in the URL
//! itself wins over all of them (as in libpq).

use std::path::PathBuf;

use apimail_core::Secret;
use apimail_store_postgres::{Store, StoreConfig, StoreError};

use crate::config::Config;
use crate::env;

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
}

/// Why the store's settings cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreSettingsError {
    /// The password file cannot be read.
    #[error("cannot read the store's password file `{}` ({setting})", file.display())]
    PasswordFileUnreadable {
        /// The file.
        file: PathBuf,
        /// `APIMAIL_STORE_PASSWORD_FILE` or `[store] password_file`.
        setting: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The password file's first line is empty.
    #[error("the store's password file `{}` is empty ({setting})", file.display())]
    PasswordFileEmpty {
        /// The file.
        file: PathBuf,
        /// Where it was named.
        setting: &'static str,
    },
}

/// The store's settings; `None` when no store is configured (the local
/// outbox and journal are used).
pub fn store_settings(config: &Config) -> Result<Option<StoreSettings>, StoreSettingsError> {
    let table = config.store.clone().unwrap_or_default();
    let (url, url_from) = match env::var(env::STORE_URL) {
        Some(url) => (url, env::STORE_URL),
        None => match table.url.filter(|u| !u.trim().is_empty()) {
            Some(url) => (url, "[store] url"),
            None => return Ok(None),
        },
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
            }),
            ..Config::default()
        };
        // The environment may name a store of its own on a developer's
        // machine; the test reads the configuration only when it does not.
        if env::is_set(env::STORE_URL) || env::is_set(env::STORE_PASSWORD_FILE) {
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
}
