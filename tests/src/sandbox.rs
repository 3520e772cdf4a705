//! A private home for one test: its own config file and data directory,
//! endpoints pointing at the fake Google, and a client file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::fake_google::FakeGoogle;
use crate::fake_microsoft::FakeMicrosoft;
use crate::{Run, apimail_at, apimail_bin, http};

/// The OAuth client the sandboxes register with the fake.
pub const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
/// Its secret.
pub const CLIENT_SECRET: &str = "GOCSPX-test-client-secret";
/// The public client the Microsoft sandboxes register with the fake.
pub const MS_CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";

/// A temporary directory holding everything apimail reads and writes.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
}

impl Sandbox {
    /// A sandbox whose Google endpoints are `fake`'s, with the test client
    /// registered there and written to `client_secret.json`.
    pub fn new(fake: &FakeGoogle) -> Sandbox {
        fake.add_client(CLIENT_ID, CLIENT_SECRET);
        let dir = tempfile::tempdir().expect("a temp dir");
        let client = serde_json::json!({"installed": {
            "client_id": CLIENT_ID,
            "project_id": "apimail-test",
            "auth_uri": fake.auth_url(),
            "token_uri": fake.token_url(),
            "client_secret": CLIENT_SECRET,
            "redirect_uris": ["http://localhost"],
        }});
        std::fs::write(dir.path().join("client_secret.json"), client.to_string()).unwrap();
        Sandbox::in_dir(
            dir,
            &[
                ("APIMAIL_GMAIL_API_URL", fake.gmail_url()),
                ("APIMAIL_GOOGLE_AUTH_URL", fake.auth_url()),
                ("APIMAIL_GOOGLE_TOKEN_URL", fake.token_url()),
                ("APIMAIL_GOOGLE_REVOKE_URL", fake.revoke_url()),
            ],
        )
    }

    /// A sandbox whose Microsoft endpoints are `fake`'s, with the public
    /// client [`MS_CLIENT_ID`] registered for `http://localhost/callback`.
    pub fn microsoft(fake: &FakeMicrosoft) -> Sandbox {
        fake.add_public_client(MS_CLIENT_ID);
        fake.add_redirect_uri(MS_CLIENT_ID, "http://localhost/callback");
        Sandbox::in_dir(
            tempfile::tempdir().expect("a temp dir"),
            &[
                ("APIMAIL_GRAPH_API_URL", fake.graph_url()),
                ("APIMAIL_MS_AUTHORITY_URL", fake.authority_url()),
            ],
        )
    }

    fn in_dir(dir: tempfile::TempDir, endpoints: &[(&str, String)]) -> Sandbox {
        let path = |p: &str| dir.path().join(p).display().to_string();
        let mut env = vec![
            ("APIMAIL_CONFIG".to_owned(), path("config/config.toml")),
            ("APIMAIL_DATA_DIR".to_owned(), path("data")),
            ("HOME".to_owned(), path("home")),
        ];
        env.extend(endpoints.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        Sandbox {
            dir,
            env,
            bin: None,
        }
    }

    /// Sets (or replaces) a variable every command gets.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs the `apimail` at `bin` instead of [`apimail_bin`]'s.
    pub fn with_binary(mut self, bin: PathBuf) -> Sandbox {
        self.bin = Some(bin);
        self
    }

    /// The environment every command gets: config, data dir, home and
    /// the fake's endpoints.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The client file written for the fake.
    pub fn client_secret_file(&self) -> PathBuf {
        self.path().join("client_secret.json")
    }

    /// The outbox entries in `folder` (`queue` or `failed`), as their JSON:
    /// read from the files without opening the outbox (which would clean
    /// up): a `<id>.msg`'s `<id>.state`, else the metadata the `.msg`
    /// carries after its message; a `<id>.json` (the two-file format).
    pub fn outbox_entries(&self, folder: &str) -> Vec<serde_json::Value> {
        let dir = self.path().join("data/outbox").join(folder);
        let Ok(read) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for path in read.filter_map(Result::ok).map(|e| e.path()) {
            let json = match path.extension().and_then(|x| x.to_str()) {
                Some("json") => std::fs::read(&path).ok(),
                Some("msg") => match std::fs::read(path.with_extension("state")) {
                    Ok(state) => Some(state),
                    Err(_) => std::fs::read(&path).ok().map(|file| one_file_meta(&file)),
                },
                _ => None,
            };
            // Gone meanwhile (sent, moved): not an entry any more.
            if let Some(json) = json {
                entries.push(serde_json::from_slice(&json).unwrap());
            }
        }
        entries
    }

    /// The token file of `account`.
    pub fn token_file(&self, account: &str) -> PathBuf {
        self.path()
            .join("data/tokens")
            .join(format!("{account}.json"))
    }

    /// Reads the token file of `account` as JSON.
    pub fn token_json(&self, account: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.token_file(account)).unwrap()).unwrap()
    }

    /// Makes the stored access token of `account` look expired.
    pub fn expire_stored_token(&self, account: &str) {
        let mut token = self.token_json(account);
        token["expires_at"] = serde_json::json!(1);
        std::fs::write(self.token_file(account), token.to_string()).unwrap();
    }

    /// An `apimail` command inside the sandbox, current dir included.
    pub fn cmd(&self) -> Command {
        let mut command = match &self.bin {
            Some(bin) => apimail_at(bin),
            None => apimail_at(&apimail_bin()),
        };
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.path());
        command
    }

    /// Starts `auth login gmail` with the given extra arguments, plays the
    /// browser (follows the printed URL to the fake and its redirect back),
    /// and returns the finished run. `tamper` may rewrite the redirect back
    /// to apimail before it is followed.
    pub fn login_with(
        &self,
        fake: &FakeGoogle,
        args: &[&str],
        tamper: impl FnOnce(String) -> String,
    ) -> Run {
        let mut command = self.cmd();
        command
            .args([
                "auth",
                "login",
                "gmail",
                "--no-browser",
                "--port",
                "0",
                "--timeout",
                "20",
            ])
            .arg("--client-secret")
            .arg(self.client_secret_file())
            .args(args);
        play_browser(command, &fake.auth_url(), tamper)
    }

    /// `auth login graph` with the sandbox's client, playing the browser.
    pub fn login_graph(&self, fake: &FakeMicrosoft, args: &[&str]) -> Run {
        let mut command = self.cmd();
        command
            .args([
                "auth",
                "login",
                "graph",
                "--no-browser",
                "--port",
                "0",
                "--timeout",
                "20",
            ])
            .args(["--client-id", MS_CLIENT_ID])
            .args(args);
        let tenant = args
            .iter()
            .position(|a| *a == "--tenant")
            .map_or("common", |i| args[i + 1]);
        play_browser(command, &fake.authorize_url(tenant), |url| url)
    }

    /// `login_with` without extra arguments or tampering; asserts success.
    pub fn login(&self, fake: &FakeGoogle, args: &[&str]) -> Run {
        let run = self.login_with(fake, args, |url| url);
        assert_eq!(run.code, 0, "login failed: {}", run.stderr);
        run
    }
}

/// Runs a login command, follows the authorize URL it prints to the fake,
/// and follows the fake's redirect back to apimail.
pub fn play_browser(
    mut command: Command,
    auth_url: &str,
    tamper: impl FnOnce(String) -> String,
) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apimail starts");
    let (url, stderr_rest) = wait_for_authorize_url(&mut child, auth_url);
    let to_fake = http::get(&url);
    assert_eq!(
        to_fake.status,
        302,
        "the fake authorize endpoint redirects: {}",
        to_fake.body_text()
    );
    let back = tamper(to_fake.header("location").expect("a Location").to_owned());
    // apimail answers the browser, then exchanges the code.
    let page = http::request("GET", &back, &[], b"");
    let output = child.wait_with_output().expect("apimail finishes");
    let mut run: Run = output.into();
    run.stderr = stderr_rest
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_default()
        + &run.stderr;
    if let Ok(page) = page {
        run.stderr.push_str(&format!(
            "\n[browser page: {} {}]",
            page.status,
            page.body_text()
        ));
    }
    run
}

/// Reads apimail's stderr until the authorize URL appears; the rest of
/// stderr is collected in the background and delivered on the channel.
fn wait_for_authorize_url(child: &mut Child, auth_url: &str) -> (String, mpsc::Receiver<String>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (url_tx, url_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    let prefix = auth_url.to_owned();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut url_tx = Some(url_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(&prefix)
                && let Some(tx) = url_tx.take()
            {
                let _ = tx.send(line.trim().to_owned());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = rest_tx.send(seen);
    });
    match url_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(url) => (url, rest_rx),
        Err(_) => {
            let _ = child.kill();
            let seen = rest_rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_default();
            panic!("apimail never printed an authorize URL; stderr:\n{seen}");
        }
    }
}

/// The metadata of an outbox `.msg` file: after the message, before the
/// 60-byte footer `\napimail-queue v1 <message length> <metadata length>\n`.
fn one_file_meta(file: &[u8]) -> Vec<u8> {
    let footer = std::str::from_utf8(&file[file.len() - 60..]).unwrap();
    let fields: Vec<&str> = footer.split_whitespace().collect();
    assert_eq!(fields[..2], ["apimail-queue", "v1"], "{footer:?}");
    let message_len: usize = fields[2].parse().unwrap();
    let meta_len: usize = fields[3].parse().unwrap();
    file[message_len..message_len + meta_len].to_vec()
}
