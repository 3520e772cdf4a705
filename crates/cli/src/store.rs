//! `apimail store migrate`: the shared PostgreSQL store's schema, from
//! the account layer's `store_settings` (`[store] url`,
//! `APIMAIL_STORE_URL`; the password never from a flag).

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;
use apimail_account::{StoreSettings, StoreSettingsError, config, store_config, store_settings};
use apimail_store_postgres::{Store, StoreError, latest_version, redact_url};

use crate::cli::{StoreCommand, StoreMigrateArgs};
use crate::exit::{Exit, Failure};

pub async fn run(config_flag: Option<&Path>, command: StoreCommand) -> Result<(), Failure> {
    let path = config::path(config_flag)?;
    let config = config::load(&path)?;
    let settings = store_settings(&config)
        .map_err(settings_failure)?
        .ok_or_else(|| {
            Failure::new(Exit::Config, anyhow!("no store is configured")).hint(format!(
                "set `[store] url = \"postgres://user@host/db\"` in {}, or APIMAIL_STORE_URL",
                path.display()
            ))
        })?;
    match command {
        StoreCommand::Migrate(args) => migrate(&settings, args).await,
    }
}

async fn migrate(settings: &StoreSettings, args: StoreMigrateArgs) -> Result<(), Failure> {
    let url = settings.url.expose();
    let shown = redact_url(url);
    let failed = |e| store_failure(e, &shown, settings.url_from);
    let store = Store::new(&store_config(settings)).map_err(failed)?;
    let needed = latest_version();
    if args.check {
        let found = store.schema_version().await.map_err(failed)?;
        if found < needed {
            return Err(Failure::new(
                Exit::Config,
                anyhow!("the store's schema at {shown} is at version {found}, this apimail needs {needed}"),
            )
            .hint("run `apimail store migrate`"));
        }
        say(&format!(
            "the store's schema at {shown} is current (version {found})"
        ));
        return Ok(());
    }
    let migrated = store.migrate().await.map_err(failed)?;
    if migrated.applied.is_empty() {
        say(&format!(
            "the store's schema at {shown} is current (version {}); nothing to do",
            migrated.version
        ));
    } else {
        say(&format!(
            "migrated the store at {shown} to version {}: applied {}",
            migrated.version,
            migrated.applied.join(", ")
        ));
    }
    Ok(())
}

pub(crate) fn settings_failure(error: StoreSettingsError) -> Failure {
    let hint = match &error {
        StoreSettingsError::PasswordFileUnreadable { .. } => {
            "check the file's path and that this user may read it"
        }
        StoreSettingsError::PasswordFileEmpty { .. } => "put the password on the file's first line",
    };
    Failure::new(Exit::Config, error).hint(hint)
}

/// A store failure's exit code and next step. `shown`: the URL without
/// its password; `from`: the setting that named it.
pub(crate) fn store_failure(error: StoreError, shown: &str, from: &str) -> Failure {
    let state = error.sqlstate().map(str::to_owned);
    let (exit, hint) = match (&error, state.as_deref()) {
        (StoreError::InvalidUrl { .. }, _) => (
            Exit::Config,
            format!("fix {from}: postgres://user@host:port/database?sslmode=require"),
        ),
        (StoreError::InvalidId(_), _) => (
            Exit::Usage,
            "see `apimail queue list` for the ids".to_owned(),
        ),
        (StoreError::Busy { .. }, _) => (
            Exit::TempFail,
            "another apimail process is sending it; see `apimail queue list` in a moment"
                .to_owned(),
        ),
        (StoreError::SchemaBehind { .. }, _) => (
            Exit::Config,
            "run `apimail store migrate` (from any machine using the store)".to_owned(),
        ),
        (StoreError::Tls(_), _) => (
            Exit::Config,
            "set SSL_CERT_FILE to the CA bundle that signed the database's certificate".to_owned(),
        ),
        (_, Some(code)) if code.starts_with("28") => (
            Exit::NoPerm,
            "check the user name in the URL and the password (APIMAIL_STORE_PASSWORD_FILE, \
             [store] password_file or PGPASSWORD)"
                .to_owned(),
        ),
        (_, Some("3D000")) => (
            Exit::Config,
            format!("create the database first (createdb), or fix {from}"),
        ),
        (_, Some("42501")) => (
            Exit::NoPerm,
            "the store's user needs to own the database (or CREATE on it) to migrate it".to_owned(),
        ),
        _ if error.is_temporary() => (
            Exit::TempFail,
            format!("is PostgreSQL running and reachable at {shown}? ({from})"),
        ),
        _ => (
            Exit::Unavailable,
            format!("the database at {shown} refused; see the cause above"),
        ),
    };
    Failure::new(exit, error).hint(hint)
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
