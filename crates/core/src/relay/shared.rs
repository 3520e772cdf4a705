//! What every session of a server shares.

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, watch};

use super::policy::{AuthBackoff, RateLimiter};
use super::{Accepted, Directory, Limits};
use crate::outbox::Outbox;

/// What every session of a server shares.
pub(super) struct Shared {
    pub(super) outbox: Outbox,
    pub(super) directory: RwLock<Arc<dyn Directory>>,
    pub(super) limits: Limits,
    pub(super) hostname: String,
    pub(super) accepted: mpsc::UnboundedSender<Accepted>,
    pub(super) backoff: AuthBackoff,
    pub(super) rate: RateLimiter,
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
