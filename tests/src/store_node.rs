//! Nodes of a cluster on the shared PostgreSQL store: a logged-in sandbox
//! whose commands use one database, and relays with their own
//! configuration file and data directory (tests/tests/relay_store.rs,
//! tests/tests/cluster.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::fake_google::FakeGoogle;
use crate::postgres::PgCluster;
use crate::{Run, Sandbox, run};

/// A logged-in sandbox whose commands use database `db` of `cluster`,
/// migrated.
pub fn sandbox_on(fake: &FakeGoogle, cluster: &PgCluster, db: &str) -> Sandbox {
    let mut sandbox = Sandbox::new(fake);
    let login = sandbox.login(fake, &[]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let file = sandbox.path().join("store-password");
    std::fs::write(&file, format!("{}\n", cluster.password())).unwrap();
    sandbox.set_env("APIMAIL_STORE_URL", &cluster.url(db));
    sandbox.set_env("APIMAIL_STORE_PASSWORD_FILE", file.to_str().unwrap());
    let migrate: Run = run(sandbox.cmd().args(["store", "migrate"]));
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    sandbox
}

/// The sandbox's configuration with a relay listening on `addr` (loopback,
/// no TLS), written to `path`.
pub fn relay_config(sandbox: &Sandbox, path: &Path, addr: &str) {
    let base = std::fs::read_to_string(sandbox.path().join("config/config.toml")).unwrap();
    let base = base.split("\n[relay]\n").next().unwrap().to_owned();
    std::fs::write(
        path,
        format!("{base}\n[relay]\n\n[relay.listeners.main]\nlisten = \"{addr}\"\ntls = \"none\"\n"),
    )
    .unwrap();
}

/// The configuration file and data directory of node `name`.
pub fn node_env(sandbox: &Sandbox, name: &str, command: &mut Command) {
    command
        .env(
            "APIMAIL_CONFIG",
            sandbox.path().join(format!("config-{name}.toml")),
        )
        .env(
            "APIMAIL_DATA_DIR",
            sandbox.path().join(format!("data-{name}")),
        );
}

/// A relay on `addr` with its own configuration file and data directory
/// (the sandbox's tokens and relay users copied in: another node of the
/// same cluster).
pub fn other_node(sandbox: &Sandbox, name: &str, addr: &str) -> Command {
    let config = sandbox.path().join(format!("config-{name}.toml"));
    relay_config(sandbox, &config, addr);
    let data = sandbox.path().join(format!("data-{name}"));
    for sub in ["tokens", "relay"] {
        let from = sandbox.path().join("data").join(sub);
        let Ok(files) = std::fs::read_dir(&from) else {
            continue;
        };
        let to = data.join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for file in files {
            let file = file.unwrap();
            if file.file_type().unwrap().is_file() {
                std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
            }
        }
    }
    let mut command = sandbox.cmd();
    node_env(sandbox, name, &mut command);
    command
}

/// The Message-ID field of `raw`, trimmed (`none` without one).
pub fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            l.strip_prefix("Message-ID: ")
                .or_else(|| l.strip_prefix("Message-Id: "))
        })
        .unwrap_or("none")
        .trim()
        .to_owned()
}

/// How many times each Message-ID reached the fake.
pub fn delivered_ids(fake: &FakeGoogle) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for message in fake.messages() {
        *ids.entry(message_id(&message.raw)).or_default() += 1;
    }
    ids
}
