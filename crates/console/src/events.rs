//! The changes live updates announce (`log`, `queue`, `signin`,
//! `alerts`), on one
//! broadcast channel; `live.rs` serves them as Server-Sent Events. Queue
//! and sign-in changes also wake the alerts' rounds (`alert_rounds.rs`).

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

/// How often the watcher looks.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// One change: its kind (`log`, `queue`) and its JSON data.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) kind: &'static str,
    pub(crate) data: String,
}

/// The listeners' channel and whether the watcher runs.
#[derive(Debug)]
pub(crate) struct Events {
    pub(crate) sender: broadcast::Sender<Change>,
    /// Whether the watcher (`live.rs`) runs.
    pub(crate) watching: AtomicBool,
    /// Woken by a queue or sign-in change: the alerts look again soon.
    pub(crate) alerts: Notify,
}

impl Events {
    pub(crate) fn new() -> Self {
        Events {
            sender: broadcast::channel(64).0,
            watching: AtomicBool::new(false),
            alerts: Notify::new(),
        }
    }

    /// Tells the listeners the queue changed (this console's own actions).
    pub(crate) fn queue_changed(&self) {
        let _ = self.sender.send(Change {
            kind: "queue",
            data: "{}".to_owned(),
        });
        self.alerts.notify_one();
    }

    /// Tells the listeners a sign-in moved on.
    pub(crate) fn signin_changed(&self) {
        let _ = self.sender.send(Change {
            kind: "signin",
            data: "{}".to_owned(),
        });
        self.alerts.notify_one();
    }

    /// Tells the listeners the alerts that hold changed (not the alerts:
    /// they made this change).
    pub(crate) fn alerts_changed(&self) {
        let _ = self.sender.send(Change {
            kind: "alerts",
            data: "{}".to_owned(),
        });
    }

    pub(crate) fn log_added(&self, added: usize) {
        let _ = self.sender.send(Change {
            kind: "log",
            data: serde_json::json!({ "added": added }).to_string(),
        });
    }
}
