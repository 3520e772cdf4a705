//! Alerts (`[alerts]`): an account whose authorization failed with mail
//! held for it, an authorization ending within 7 days, messages queued
//! longer than `queued_hours`, the data disk almost full (less free than
//! `disk_free_percent`, 5 by default). Each condition is
//! reported once when it starts and once when it clears, by mail (through
//! the [`AlertMail`] the process gives) and to a webhook (a JSON POST
//! `{"text": …}`, which Teams' and Slack's incoming webhooks take). What is
//! reported is kept in `admin/alerts.json`, so a restart repeats nothing;
//! a report that could not be sent is tried again each round and shown on
//! the overview until it goes out.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// The state file in the console's directory.
pub const ALERTS_FILE: &str = "alerts.json";

/// How often conditions are looked at.
pub const ROUND: Duration = Duration::from_secs(60);

/// How long after a queue or sign-in change they are looked at again (a
/// burst of changes makes one round).
pub const SETTLE: Duration = Duration::from_secs(2);

/// An authorization ending sooner than this is reported.
pub(crate) const ENDING_WITHIN: i64 = 7 * 86_400;

/// The default of `disk_free_percent`: the data disk is almost full with
/// less than this share of it free, in percent.
pub const DEFAULT_DISK_FREE_PERCENT: f64 = 5.0;

/// The default of `queued_hours`.
pub const DEFAULT_QUEUED_HOURS: u32 = 4;

/// A future that sends one alert mail.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// How alert mail is sent: given by the process that runs the console
/// (the CLI sends through the configured account, as apimail sends).
pub trait AlertMail: Send + Sync {
    /// Sends `subject` and `body` to the alert address; `Err` says why not.
    fn send<'a>(&'a self, subject: &'a str, body: &'a str) -> Sending<'a>;
}

/// The `[alerts]` table, resolved.
pub struct AlertConfig {
    /// Mail, if an address is configured.
    pub mail: Option<Arc<dyn AlertMail>>,
    /// The webhook, if configured (https, or http to loopback).
    pub webhook: Option<Url>,
    /// Messages queued longer than this are reported.
    pub queued_hours: u32,
    /// The data directory whose disk is watched.
    pub data_dir: PathBuf,
    /// Its disk is almost full with less than this percentage free (0:
    /// never reported; 100: always, unless the disk is empty).
    pub disk_free_percent: f64,
}

impl std::fmt::Debug for AlertConfig {
    /// The webhook's URL is a secret (it is its own credential).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertConfig")
            .field("mail", &self.mail.is_some())
            .field("webhook", &self.webhook.is_some())
            .field("queued_hours", &self.queued_hours)
            .field("data_dir", &self.data_dir)
            .field("disk_free_percent", &self.disk_free_percent)
            .finish()
    }
}

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// What it is about: `auth_failed:work`, `auth_ending:work`,
    /// `queued_long`, `disk_full`.
    pub key: String,
    /// One line for people.
    pub text: String,
}

/// What was reported of one condition, per channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Reported {
    /// The condition's text when it started.
    pub(crate) text: String,
    /// It holds now.
    pub(crate) active: bool,
    /// The mail channel announced it started (and not yet that it cleared).
    pub(crate) mail: bool,
    /// The webhook announced it started.
    pub(crate) webhook: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StateFile {
    pub(crate) conditions: BTreeMap<String, Reported>,
}

/// A report that could not be sent, for the overview.
#[derive(Debug, Clone, Serialize)]
pub struct AlertFailure {
    /// `mail` or `webhook`.
    pub channel: &'static str,
    /// The condition's text.
    pub text: String,
    /// Why.
    pub error: String,
}

/// The alerts of one console.
#[derive(Debug)]
pub struct Alerts {
    pub(crate) config: AlertConfig,
    /// One round at a time.
    pub(crate) round: tokio::sync::Mutex<()>,
    pub(crate) active: Mutex<Vec<String>>,
    pub(crate) failures: Mutex<Vec<AlertFailure>>,
}

impl Alerts {
    /// Alerts with `config`.
    pub fn new(config: AlertConfig) -> Alerts {
        Alerts {
            config,
            round: tokio::sync::Mutex::new(()),
            active: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// The conditions that hold, as of the last round.
    pub fn active(&self) -> Vec<String> {
        self.active.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The reports the last round could not send.
    pub fn failures(&self) -> Vec<AlertFailure> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// The share of the disk under `dir` still free for apimail.
pub(crate) fn free_share(dir: &Path) -> Option<f64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    if stat.f_blocks == 0 {
        return None;
    }
    Some(stat.f_bavail as f64 / stat.f_blocks as f64)
}

pub(crate) fn load_state(path: &Path) -> StateFile {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(
                "admin console: {} is not an alerts file ({error}); starting afresh",
                path.display()
            );
            StateFile::default()
        }),
        Err(_) => StateFile::default(),
    }
}

pub(crate) fn save_state(path: &Path, state: &StateFile) {
    let text = serde_json::to_vec_pretty(state).unwrap_or_default();
    if let Err(error) = apimail_core::files::write_private(path, &text) {
        tracing::warn!("admin console: cannot keep the alerts' state: {error}");
    }
}

/// The subject and text of a report: the condition started or cleared.
pub(crate) fn report(text: &str, started: bool) -> (String, String) {
    let (en, ja) = if started {
        ("apimail alert", "apimail 警告")
    } else {
        ("apimail alert cleared", "apimail 警告解除")
    };
    let subject = format!("{en} / {ja}: {text}");
    let body = if started {
        format!(
            "{text}\r\n\r\nSee the admin console's overview. / 管理画面の概要を確認してください。\r\n"
        )
    } else {
        format!("Cleared: {text}\r\n\r\nThis no longer holds. / この問題は解消しました。\r\n")
    };
    (subject, body)
}

pub(crate) async fn post_webhook(url: &Url, text: &str) -> Result<(), String> {
    let client = apimail_core::http::shared_client().map_err(|e| e.to_string())?;
    let body = serde_json::json!({ "text": text }).to_string();
    let request = client
        .post(url.clone())
        .header("content-type", "application/json");
    match apimail_core::http::exchange(request, body).await {
        Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
        Ok(answer) => Err(format!("the webhook answered HTTP {}", answer.status)),
        // Never the whole URL: it is the webhook's credential.
        Err(error) => Err(
            match apimail_core::http::NetFailure::diagnose(&*error, url) {
                Some(failure) => format!("the webhook cannot be reached: {failure}"),
                None => format!(
                    "the webhook at {} cannot be reached",
                    url.host_str().unwrap_or_default()
                ),
            },
        ),
    }
}
