//! The outbox, the delivery engine over it and the journal beside it, built
//! one way for the command line, the relay and the library.

use std::path::{Path, PathBuf};

use apimail_core::delivery::{Engine, Senders};
use apimail_core::journal::{Journal, JournalError};
use apimail_core::outbox::{Outbox, OutboxError};

use apimail_store_postgres::Store as SharedStore;

use crate::error::ResolveError;
use crate::resolve::store;
use crate::settings::Delivery;

/// The data directory (`$APIMAIL_DATA_DIR`, else the platform's).
pub fn data_dir() -> Result<PathBuf, ResolveError> {
    Ok(store()?.dir().to_owned())
}

/// The relay's users and TLS files: `$APIMAIL_DATA_DIR/relay`.
pub fn relay_dir() -> Result<PathBuf, ResolveError> {
    Ok(data_dir()?.join("relay"))
}

/// The command line's outbox: `$APIMAIL_DATA_DIR/outbox`.
pub fn outbox_dir() -> Result<PathBuf, ResolveError> {
    Ok(data_dir()?.join("outbox"))
}

/// The journal of the outbox in `outbox`: `journal/` beside it, so an
/// outbox at `$APIMAIL_DATA_DIR/outbox` journals where `apimail log` reads.
pub fn journal_dir(outbox: &Path) -> PathBuf {
    outbox
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("journal")
}

/// The journal beside the outbox in `outbox`, keeping what `delivery`'s
/// `[journal]` settings say.
pub fn open_journal(outbox: &Path, delivery: &Delivery) -> Result<Journal, JournalError> {
    Ok(Journal::open(journal_dir(outbox))?
        .with_subjects(delivery.journal_subjects)
        .with_keep_days(delivery.journal_keep_days))
}

/// The engine over the outbox in `dir`, settling by `delivery`, with the
/// journal beside it. A journal that cannot be opened never stops a
/// delivery: it is a warning.
pub fn engine<S: Senders>(
    dir: &Path,
    senders: S,
    delivery: &Delivery,
) -> Result<Engine<S>, OutboxError> {
    let outbox = Outbox::open(dir)?;
    let engine = Engine::new(outbox, senders, delivery.settings.clone());
    Ok(match open_journal(dir, delivery) {
        Ok(journal) => engine.with_journal(journal),
        Err(error) => {
            tracing::warn!(
                "deliveries are not journaled: {}",
                apimail_core::error_chain(&error)
            );
            engine
        }
    })
}

/// The engine over the shared `store`, settling by `delivery`, its
/// journal recording subjects as `delivery`'s `[journal]` says: what
/// [`engine`] is for the local outbox, for the command line and the library.
pub fn shared_engine<S: Senders>(
    store: SharedStore,
    senders: S,
    delivery: &Delivery,
) -> Engine<S, SharedStore> {
    let store = store.with_subjects(delivery.journal_subjects);
    Engine::with_store(store, senders, delivery.settings.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_sits_beside_the_outbox() {
        assert_eq!(
            journal_dir(Path::new("/data/outbox")),
            Path::new("/data/journal")
        );
        assert_eq!(journal_dir(Path::new("outbox")), Path::new("./journal"));
    }
}
