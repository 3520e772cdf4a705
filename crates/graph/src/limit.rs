//! Graph allows 4 concurrent requests per mailbox. This holds a send to
//! that within the process (a semaphore) and, when given a directory,
//! across every apimail process on the machine (lock-file slots).

use apimail_core::Pace;
use apimail_core::slots::{ProcessSlots, Slot};
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

/// Graph's limit of concurrent requests per mailbox.
pub const MAX_CONCURRENT_REQUESTS: usize = 4;

/// Graph's pace per mailbox: [`MAX_CONCURRENT_REQUESTS`] at once and 30
/// messages a minute (Exchange Online's sending limit).
pub const PACE: Pace = Pace {
    concurrency: MAX_CONCURRENT_REQUESTS,
    per_minute: 30,
};

/// The request limit of one mailbox.
#[derive(Debug)]
pub(crate) struct Permits {
    local: Semaphore,
    machine: Option<ProcessSlots>,
}

/// One request's right to run; dropping it lets the next one go.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    _local: SemaphorePermit<'a>,
    _machine: Option<Slot>,
}

impl Permits {
    pub(crate) fn new(machine: Option<ProcessSlots>) -> Self {
        Permits {
            local: Semaphore::new(MAX_CONCURRENT_REQUESTS),
            machine,
        }
    }

    pub(crate) async fn acquire(&self) -> Result<Permit<'_>, AcquireError> {
        let local = self.local.acquire().await?;
        let machine = match &self.machine {
            Some(slots) => slots.acquire().await,
            None => None,
        };
        Ok(Permit {
            _local: local,
            _machine: machine,
        })
    }
}
