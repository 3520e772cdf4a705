//! The admin console in a real browser: headless Chromium (Debian's
//! `chromium`) driven by npm's `playwright-core` (`tests/browser/`, which
//! `cargo xtask ci`'s test tools step installs), against the real `apimail
//! relay` and `apimail admin serve` and the fake Gmail. The script
//! (`tests/browser/console.mjs`) logs in, submits a message through the
//! relay with smtplib and waits for its row, filters it, downloads the CSV,
//! opens its timeline; makes two messages uncertain, retries one from the
//! queue page and drops the other after its confirmation; has the fake
//! revoke the refresh token, sees the held message's alert on the
//! overview, signs in again from the console (playing the fake's consent
//! in a popup) and sees the held message delivered; adds a relay user,
//! runs the checks, switches to Japanese, is refused a POST without a
//! CSRF token and is locked out after wrong passwords. This test then
//! compares the CSV with `apimail log --csv` of the same moment, and
//! checks what the fake Gmail and the alerts' webhook received.
//!
//! The script reaches the fake and the log through a control server here
//! (`CONTROL_URL`): `POST /revoke` revokes the refresh tokens,
//! `POST /uncertain?n=N` makes the next N sends be stored but answered
//! 504, `GET /log.csv` is `apimail log --csv --status sent` now; `/hook`
//! is the alerts' webhook.
//!
//! Without Chromium, node or playwright-core the test says so and skips.
//! Screenshots go to a temporary directory, or with `APIMAIL_BLESS=1` to
//! `docs/console/` (the README shows those).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::http::{Reply, Response, Server};
use apimail_tests::{Process, Sandbox, free_port, run, run_with_stdin};

const ADMIN: &str = "ann";
const PASSWORD: &str = "correct horse battery";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the browser test needs, or why it cannot run here.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .ok_or("Chromium is not installed (Debian: apt-get install chromium)")?;
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|_| "node is not installed (Debian: apt-get install nodejs npm)")?;
    if !node.status.success() {
        return Err("node does not run".to_owned());
    }
    let script = root().join("tests/browser/console.mjs");
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Err(
            "playwright-core is not installed (cargo xtask ci's test tools step, or `npm ci` in tests/browser)"
                .to_owned(),
        );
    }
    Ok((chromium, script))
}

fn shots_dir(scratch: &Path) -> PathBuf {
    if std::env::var_os("APIMAIL_BLESS").is_some() {
        root().join("docs/console")
    } else {
        scratch.join("shots")
    }
}

#[test]
#[allow(clippy::print_stderr)] // says why it is skipped
fn the_console_in_a_browser() {
    let (chromium, script) = match tools() {
        Ok(tools) => tools,
        Err(why) => {
            eprintln!("SKIPPED the admin console's browser test: {why}");
            return;
        }
    };
    let fake = Arc::new(FakeGoogle::start());
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);

    // The control server: the script's hand on the fake and the log, and
    // the alerts' webhook.
    let hooks = Arc::new(Mutex::new(Vec::<String>::new()));
    let control = {
        let (fake, hooks) = (Arc::clone(&fake), Arc::clone(&hooks));
        let (env, dir) = (sandbox.env().to_vec(), sandbox.path().to_owned());
        Server::start("control", move |request| {
            let answer = match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/revoke") => {
                    fake.revoke_refresh_tokens();
                    Response::text(200, "revoked")
                }
                ("POST", "/uncertain") => {
                    let n = request
                        .query_map()
                        .get("n")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    fake.inject_n(Fault::AcceptThen504, n);
                    Response::text(200, "injected")
                }
                ("GET", "/log.csv") => {
                    let log = run(apimail_tests::apimail()
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .current_dir(&dir)
                        .args(["log", "--csv", "--status", "sent"]));
                    if log.code == 0 {
                        Response::new(200).with_body(log.stdout)
                    } else {
                        Response::text(500, &log.stderr)
                    }
                }
                ("POST", "/hook") => {
                    hooks
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request.body).into_owned());
                    Response::text(200, "1")
                }
                _ => Response::text(404, "no such control"),
            };
            Reply::Respond(answer)
        })
        .unwrap()
    };

    let relay_addr = format!("127.0.0.1:{}", free_port());
    let config = sandbox.path().join("config/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[relay]\n[relay.listeners.main]\nlisten = \"{relay_addr}\"\n\
         \n[delivery]\nwhen_unknown = \"hold\"\n\
         \n[alerts]\nwebhook = \"{}/hook\"\n",
        control.base_url()
    ));
    std::fs::write(&config, text).unwrap();
    let added = run_with_stdin(
        sandbox.cmd().args(["admin", "user", "add", ADMIN]),
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(added.code, 0, "{}", added.stderr);

    let mut relay = sandbox.cmd();
    relay.arg("relay");
    let relay = Process::start(&mut relay, "relay listener", Duration::from_secs(60));
    let console_addr = format!("127.0.0.1:{}", free_port());
    let mut console = sandbox.cmd();
    console.args(["admin", "serve", "--listen", &console_addr]);
    let console = Process::start(
        &mut console,
        "the admin console is at",
        Duration::from_secs(60),
    );

    let scratch = sandbox.path().join("browser");
    let shots = shots_dir(&scratch);
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let subject = "Scan <b>42</b> & 請求書";
    let out = Command::new("node")
        .arg(&script)
        .current_dir(root().join("tests/browser"))
        .env("CONSOLE_URL", format!("http://{console_addr}"))
        .env("ADMIN_USER", ADMIN)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("RELAY_ADDR", &relay_addr)
        .env("CONTROL_URL", control.base_url())
        .env("SUBJECT", subject)
        .env("CHROMIUM", &chromium)
        .env("OUT", &scratch)
        .env("SHOTS", &shots)
        .env("HOME", sandbox.path().join("home"))
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser script failed:\n{said}\n{}\nrelay:\n{}\nconsole:\n{}",
        String::from_utf8_lossy(&out.stderr),
        relay.log(),
        console.log()
    );
    assert!(said.contains("step: done"), "{said}");

    // The downloaded CSV (one message, its latest record: sent) is what
    // `apimail log --csv` gave for its sent record at that moment, byte
    // for byte.
    let downloaded = std::fs::read(scratch.join("console.csv")).unwrap();
    let logged = std::fs::read(scratch.join("apimail-log.csv")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&downloaded),
        String::from_utf8_lossy(&logged)
    );
    let csv = String::from_utf8_lossy(&downloaded);
    assert_eq!(csv.lines().count(), 2, "a header and one row:\n{csv}");
    assert!(
        csv.contains(&format!("{subject},127.0.0.1,\r\n")),
        "subject and client in the CSV:\n{csv}"
    );

    // What the fake Gmail received, by Subject: the first message once;
    // the retried uncertain one twice (the 504's stored copy and the
    // resend); the dropped one only as the 504's stored copy; the held
    // one once, after the new sign-in.
    let subjects: Vec<String> = fake
        .messages()
        .iter()
        .map(|m| {
            mail_parser::MessageParser::default()
                .parse(&m.raw)
                .and_then(|p| p.subject().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let count = |s: &str| subjects.iter().filter(|x| x.as_str() == s).count();
    assert_eq!(count(subject), 1, "{subjects:?}");
    assert_eq!(count("Uncertain one"), 2, "{subjects:?}");
    assert_eq!(count("Uncertain two"), 1, "{subjects:?}");
    assert_eq!(count("Held for a sign-in"), 1, "{subjects:?}");
    assert!(
        sandbox.outbox_entries("queue").is_empty(),
        "the queue is empty"
    );

    // The alerts' webhook: the refused account once when it started, once
    // when it cleared.
    let posted = hooks.lock().unwrap().clone();
    let texts: Vec<String> = posted
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let refused = |prefix: &str| {
        texts
            .iter()
            .filter(|t| t.starts_with(prefix) && t.contains("refused its authorization"))
            .count()
    };
    assert_eq!(refused("apimail alert /"), 1, "{texts:?}");
    assert_eq!(refused("apimail alert cleared /"), 1, "{texts:?}");
}
