//! The world the bench sends into: the fake Google and Microsoft servers of
//! `tests/`, an apimail account logged in to each, and the same tokens
//! cached for the Python peers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apimail_tests::Sandbox;
use apimail_tests::fake_google::{FakeGoogle, GMAIL_SEND_SCOPE};
use apimail_tests::fake_microsoft::{DEFAULT_USER, FakeMicrosoft};
use apimail_tests::sandbox::{CLIENT_ID, CLIENT_SECRET, MS_CLIENT_ID};
use serde_json::{Value, json};

use super::peers::Peers;
use crate::{Context, Error, Result};

/// The Gmail account's address (the fake's default user).
const GMAIL_USER: &str = "user@example.com";
/// Where every benchmark message goes.
pub(crate) const RECIPIENT: &str = "rcpt@example.net";

/// A mail API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Gmail,
    Graph,
}

impl Provider {
    pub(crate) const ALL: [Provider; 2] = [Provider::Gmail, Provider::Graph];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Provider::Gmail => "Gmail",
            Provider::Graph => "Graph",
        }
    }

    /// The account's address.
    pub(crate) fn user(self) -> &'static str {
        match self {
            Provider::Gmail => GMAIL_USER,
            Provider::Graph => DEFAULT_USER,
        }
    }
}

/// Who sends: apimail or the Python peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    Apimail,
    Python,
}

impl Sender {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sender::Apimail => "apimail",
            Sender::Python => "Python peer",
        }
    }
}

/// What a fake counted, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) requests: u64,
    pub(crate) token_requests: u64,
    pub(crate) bytes_received: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;

    fn sub(self, before: Counters) -> Counters {
        Counters {
            requests: self.requests - before.requests,
            token_requests: self.token_requests - before.token_requests,
            bytes_received: self.bytes_received - before.bytes_received,
        }
    }
}

/// The fakes, and one logged-in apimail sandbox and one peer token cache
/// per provider.
#[derive(Debug)]
pub(crate) struct World {
    google: FakeGoogle,
    microsoft: FakeMicrosoft,
    gmail: Sandbox,
    graph: Sandbox,
    /// Scratch space: peer token caches and message files.
    scratch: tempfile::TempDir,
}

impl World {
    /// Starts the fakes, logs apimail in to both (through the browser flow,
    /// played by the test helpers) and caches tokens for the peers; then
    /// sets every request's delay to `rtt`.
    pub(crate) fn start(apimail: &Path, rtt: Duration) -> Result<World> {
        let world = World::started(apimail)?;
        world.cache_peer_tokens(apimail)?;
        world.google.traffic().set_delay(rtt);
        world.microsoft.traffic().set_delay(rtt);
        Ok(world)
    }

    /// The fakes, with apimail logged in to both.
    fn started(apimail: &Path) -> Result<World> {
        let google = FakeGoogle::start();
        let microsoft = FakeMicrosoft::start();
        // Off the Graph host, as on Graph, or msgraph-sdk sends its token
        // along and the upload URL refuses it.
        microsoft.set_upload_host("localhost");
        let gmail = Sandbox::new(&google).with_binary(apimail.to_owned());
        login(gmail.login_with(&google, &[], |url| url))?;
        let graph = Sandbox::microsoft(&microsoft).with_binary(apimail.to_owned());
        login(graph.login_graph(
            &microsoft,
            &["--login-hint", DEFAULT_USER, "--large-messages"],
        ))?;
        let scratch = tempfile::tempdir().with_context(|| "cannot create a temp dir")?;
        let world = World {
            google,
            microsoft,
            gmail,
            graph,
            scratch,
        };
        Ok(world)
    }

    /// Like [`start`](Self::start), without the peers' token caches.
    pub(crate) fn start_without_peers(apimail: &Path, rtt: Duration) -> Result<World> {
        let world = World::started(apimail)?;
        world.google.traffic().set_delay(rtt);
        world.microsoft.traffic().set_delay(rtt);
        Ok(world)
    }

    /// `provider`'s outbox directory.
    pub(crate) fn outbox_dir(&self, provider: Provider) -> PathBuf {
        self.sandbox(provider).path().join("data/outbox")
    }

    /// `provider`'s data directory (`APIMAIL_DATA_DIR`).
    pub(crate) fn data_dir(&self, provider: Provider) -> PathBuf {
        self.sandbox(provider).path().join("data")
    }

    /// `provider`'s configuration file (`APIMAIL_CONFIG`).
    pub(crate) fn config_path(&self, provider: Provider) -> PathBuf {
        self.sandbox(provider).path().join("config/config.toml")
    }

    /// The files in `provider`'s outbox (`queue/`, `failed/`, `tmp/`).
    pub(crate) fn outbox_files(&self, provider: Provider) -> Vec<PathBuf> {
        let outbox = self.sandbox(provider).path().join("data/outbox");
        ["queue", "failed", "tmp"]
            .iter()
            .flat_map(|folder| std::fs::read_dir(outbox.join(folder)).into_iter().flatten())
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect()
    }

    /// The fake Google, for injecting faults.
    pub(crate) fn google(&self) -> &FakeGoogle {
        &self.google
    }

    /// The fake Microsoft, for injecting faults.
    pub(crate) fn microsoft(&self) -> &FakeMicrosoft {
        &self.microsoft
    }

    /// A scratch directory removed with the world.
    pub(crate) fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    fn sandbox(&self, provider: Provider) -> &Sandbox {
        match provider {
            Provider::Gmail => &self.gmail,
            Provider::Graph => &self.graph,
        }
    }

    /// An apimail command in `provider`'s sandbox.
    /// `cargo xtask` runs under cargo's `LD_LIBRARY_PATH` (the target's
    /// build directories), which would make the dynamic loader probe some
    /// 90 paths per process; a user's apimail has none.
    pub(crate) fn apimail(&self, provider: Provider) -> Command {
        let mut cmd = self.sandbox(provider).cmd();
        cmd.env_remove("LD_LIBRARY_PATH");
        cmd
    }

    /// A command that sends one message through `provider` as `sender`;
    /// the caller adds the message's arguments.
    pub(crate) fn send(&self, peers: &Peers, provider: Provider, sender: Sender) -> Command {
        match sender {
            Sender::Apimail => {
                let mut cmd = self.apimail(provider);
                cmd.arg("send");
                cmd
            }
            Sender::Python => self.peer(peers, provider),
        }
    }

    /// A peer command for `provider`: the script with its token and
    /// endpoint arguments.
    fn peer(&self, peers: &Peers, provider: Provider) -> Command {
        let token = self.peer_token_file(provider);
        match provider {
            Provider::Gmail => {
                let mut cmd = peers.script("gmail_send.py");
                cmd.arg("--token").arg(token);
                cmd.args(["--token-uri", &self.google.token_url()]);
                cmd.args(["--api-endpoint", &self.google.gmail_url()]);
                cmd.args(["--from", GMAIL_USER]);
                cmd
            }
            Provider::Graph => {
                let mut cmd = peers.script("graph_send.py");
                cmd.arg("--token").arg(token);
                cmd.args(["--graph-url", &self.microsoft.graph_url()]);
                cmd
            }
        }
    }

    /// What `provider`'s fake has counted so far.
    pub(crate) fn counters(&self, provider: Provider) -> Counters {
        let (traffic, token_requests) = match provider {
            Provider::Gmail => (self.google.traffic(), self.google.total_token_requests()),
            Provider::Graph => (
                self.microsoft.traffic(),
                self.microsoft.total_token_requests(),
            ),
        };
        Counters {
            requests: traffic.requests(),
            token_requests: token_requests as u64,
            bytes_received: traffic.bytes_received(),
        }
    }

    /// Makes the cached access token of `sender` for `provider` look
    /// expired, so the next send must refresh it.
    pub(crate) fn expire_token(&self, provider: Provider, sender: Sender) -> Result<()> {
        match sender {
            Sender::Apimail => {
                self.sandbox(provider).expire_stored_token(provider.user());
                Ok(())
            }
            Sender::Python => {
                let path = self.peer_token_file(provider);
                let mut token = read_json(&path)?;
                match provider {
                    // google-auth reads a naive UTC timestamp.
                    Provider::Gmail => token["expiry"] = json!("2000-01-01T00:00:00Z"),
                    Provider::Graph => token["expires_at"] = json!(1),
                }
                write_json(&path, &token)
            }
        }
    }

    fn peer_token_file(&self, provider: Provider) -> PathBuf {
        self.scratch().join(match provider {
            Provider::Gmail => "gmail-token.json",
            Provider::Graph => "graph-token.json",
        })
    }

    /// Logs a second apimail sandbox in to each fake and writes its tokens
    /// in the format each peer reads: the Gmail quickstart's `token.json`,
    /// and the Graph peer's cache.
    fn cache_peer_tokens(&self, apimail: &Path) -> Result<()> {
        let google = Sandbox::new(&self.google).with_binary(apimail.to_owned());
        login(google.login_with(&self.google, &[], |url| url))?;
        let stored = google.token_json(GMAIL_USER);
        let token = json!({
            "token": stored["access_token"],
            "refresh_token": stored["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": [GMAIL_SEND_SCOPE],
            "expiry": iso8601_utc(stored["expires_at"].as_i64().unwrap_or(0)),
        });
        write_json(&self.peer_token_file(Provider::Gmail), &token)?;

        let microsoft = Sandbox::microsoft(&self.microsoft).with_binary(apimail.to_owned());
        login(microsoft.login_graph(
            &self.microsoft,
            &["--login-hint", DEFAULT_USER, "--large-messages"],
        ))?;
        let stored = microsoft.token_json(DEFAULT_USER);
        let token = json!({
            "access_token": stored["access_token"],
            "refresh_token": stored["refresh_token"],
            "expires_at": stored["expires_at"],
            "client_id": MS_CLIENT_ID,
            "token_url": self.microsoft.token_url("common"),
            "scope": stored["scopes"].as_array().map(|scopes| {
                scopes.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
            }),
        });
        write_json(&self.peer_token_file(Provider::Graph), &token)
    }
}

/// Fails with apimail's stderr unless the login succeeded.
fn login(run: apimail_tests::Run) -> Result<()> {
    if run.code == 0 {
        Ok(())
    } else {
        Err(Error::new(format!(
            "logging in to the fake failed (exit {}):\n{}",
            run.code, run.stderr
        )))
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    fs::write(path, value.to_string()).with_context(|| format!("cannot write {}", path.display()))
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn iso8601_utc(secs: i64) -> String {
    let at =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_utc_formats_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
