//! A limit on concurrent work shared by every apimail process on the
//! machine: `count` lock files, one held per piece of work. The kernel
//! releases a lock when its process dies, so a crash never leaks a slot.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);
const GIVE_UP: Duration = Duration::from_secs(300);

/// `count` slots named `key` under `dir`.
#[derive(Debug, Clone)]
pub struct ProcessSlots {
    dir: PathBuf,
    key: String,
    count: usize,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _file: File,
}

impl ProcessSlots {
    /// Slots for `key` (any text: it is hashed into a file name).
    pub fn new(dir: impl Into<PathBuf>, key: &str, count: usize) -> Self {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        ProcessSlots {
            dir: dir.into(),
            key: format!("{hash:016x}"),
            count: count.max(1),
        }
    }

    /// Waits for a free slot. `None` when the directory cannot hold lock
    /// files or nothing frees up for five minutes: the caller then goes on
    /// with its in-process limit only, rather than failing a send.
    pub async fn acquire(&self) -> Option<Slot> {
        std::fs::create_dir_all(&self.dir).ok()?;
        let files: Vec<File> = (0..self.count)
            .map(|i| {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(self.dir.join(format!("{}.{i}.lock", self.key)))
            })
            .collect::<Result<_, _>>()
            .ok()?;
        let started = Instant::now();
        loop {
            for file in &files {
                match file.try_lock() {
                    Ok(()) => {
                        let file = file.try_clone().ok()?;
                        return Some(Slot { _file: file });
                    }
                    Err(TryLockError::WouldBlock) => {}
                    Err(TryLockError::Error(_)) => return None,
                }
            }
            if started.elapsed() > GIVE_UP {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_more_than_count_holders() {
        let dir = tempfile::tempdir().unwrap();
        let slots = ProcessSlots::new(dir.path(), "mailbox@example.com", 2);
        let a = slots.acquire().await.unwrap();
        let b = ProcessSlots::new(dir.path(), "mailbox@example.com", 2)
            .acquire()
            .await
            .unwrap();
        let third = tokio::time::timeout(Duration::from_millis(200), slots.acquire()).await;
        assert!(third.is_err(), "a third holder waits");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(2), slots.acquire()).await;
        assert!(c.unwrap().is_some(), "a freed slot is taken");
        drop(b);
        let other = ProcessSlots::new(dir.path(), "other@example.com", 1)
            .acquire()
            .await;
        assert!(other.is_some(), "keys do not share slots");
    }
}
