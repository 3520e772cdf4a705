//! What every session of a server shares.

use std::sync::{Arc, RwLock};

use tokio::sync::{Semaphore, mpsc, watch};

use super::intake::Intake;
use super::policy::RateLimiter;
use super::split::Splits;
use super::{Accepted, Directory, Limits};
use apimail_core::login_backoff::LoginBackoff;
use apimail_core::outbox::Outbox;

/// What every session of a server shares.
pub(super) struct Shared {
    /// The outbox: where messages are accepted, or, with a shared
    /// `store`, where large ones wait in `tmp/` until the end of DATA.
    pub(super) outbox: Outbox,
    /// The shared store messages are accepted into, when configured.
    pub(super) store: Option<Arc<dyn Intake>>,
    pub(super) directory: RwLock<Arc<dyn Directory>>,
    pub(super) limits: Limits,
    pub(super) hostname: String,
    pub(super) accepted: mpsc::UnboundedSender<Accepted>,
    pub(super) backoff: LoginBackoff,
    pub(super) rate: RateLimiter,
    /// Recent messages' recipients, for split envelopes.
    pub(super) splits: Splits,
    /// Password verifications at once (`Limits::max_auth_checks`); tokio's
    /// semaphore serves waiters first come, first served.
    pub(super) auth_checks: Arc<Semaphore>,
    /// Turns true when the server stops accepting: idle sessions close.
    pub(super) closing: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn directory(&self) -> Arc<dyn Directory> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
