//! The relay over the shared PostgreSQL store (issue 25), for figure 6's
//! PostgreSQL row: a throwaway cluster (`apimail-test-postgres`) that
//! syncs its commits as a production server does, a
//! database migrated with `apimail store migrate`, and the environment
//! that makes the Gmail account's relay accept into it, with a data
//! directory of its own (the sandbox's tokens copied in) so that nothing
//! of the local spool's relay is shared.

use std::ffi::OsString;
use std::path::Path;

use apimail_tests::postgres::{BIN_VAR, PgCluster};

use super::world::{Provider, World};

/// A migrated database of a running cluster, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Store {
    /// Kept for its lifetime: the cluster stops when it is dropped.
    _cluster: PgCluster,
    env: Vec<(&'static str, OsString)>,
}

impl Store {
    /// Starts a cluster and migrates a database for `world`'s Gmail
    /// account, or says why it cannot (PostgreSQL not installed, or a step
    /// that failed).
    pub(crate) fn start(world: &World) -> Result<Store, String> {
        // Synced commits, as the local spool syncs before its 250.
        let cluster = PgCluster::start_durable().map_err(|e| {
            format!(
                "PostgreSQL is unavailable: {e} (install Debian's `postgresql`, as \
                     `cargo xtask ci` does as root, or set {BIN_VAR} to the directory of initdb)"
            )
        })?;
        let db = cluster
            .new_database("bench_relay")
            .map_err(|e| format!("cannot create the database: {e}"))?;
        let dir = world.scratch().join("store-relay");
        let data = dir.join("data");
        copy_data(&world.data_dir(Provider::Gmail), &data)
            .map_err(|e| format!("cannot copy the sandbox's data directory: {e}"))?;
        let password = dir.join("store-password");
        std::fs::write(&password, format!("{}\n", cluster.password()))
            .map_err(|e| format!("cannot write {}: {e}", password.display()))?;
        let env = vec![
            ("APIMAIL_STORE_URL", OsString::from(cluster.url(&db))),
            ("APIMAIL_STORE_PASSWORD_FILE", password.into_os_string()),
            ("APIMAIL_DATA_DIR", data.into_os_string()),
        ];
        let store = Store {
            _cluster: cluster,
            env,
        };
        let mut migrate = store.apimail(world);
        migrate.args(["store", "migrate"]);
        let out = migrate
            .output()
            .map_err(|e| format!("cannot run apimail store migrate: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "apimail store migrate failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(store)
    }

    /// The variables that put an apimail command on this store.
    pub(crate) fn env(&self) -> &[(&'static str, OsString)] {
        &self.env
    }

    /// An apimail command of the Gmail account on this store.
    fn apimail(&self, world: &World) -> std::process::Command {
        let mut command = world.apimail(Provider::Gmail);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// Copies the data directory `from` to `to`, without the local spool's
/// outbox and journal.
fn copy_data(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "outbox" || name == "journal" {
            continue;
        }
        copy_tree(&entry.path(), &to.join(name))?;
    }
    Ok(())
}

/// Copies the directories and regular files under `from` (no sockets, no
/// links).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let kind = std::fs::symlink_metadata(from)?.file_type();
    if kind.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if kind.is_file() {
        std::fs::copy(from, to).map(|_| ())
    } else {
        Ok(())
    }
}
