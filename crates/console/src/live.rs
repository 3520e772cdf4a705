//! Live updates' handlers: `/events` (a session) and `/api/v1/events` (a
//! token) as Server-Sent Events, and the watcher that feeds them while
//! anyone listens: every second it brings the index up to date with the
//! journal (`log`: records added) and looks at the outbox's directories
//! (`queue`: an entry was accepted, rewritten, moved or removed). Other
//! processes' changes (the relay, `sendmail`, `queue retry`) are seen the
//! same way. Over a shared store, the queue's counts and the journal's new
//! records stand for the directories.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::StreamExt as _;
use tokio::sync::broadcast;

use crate::events::{Change, TICK};
use crate::guard::{Admin, ApiClient};
use crate::state::Console;

/// The outbox's directories' modification times: every accept, rewrite,
/// move and removal renames or removes a file in one of them.
fn queue_stamp(console: &Console) -> Vec<Option<SystemTime>> {
    ["queue", "failed"]
        .iter()
        .map(|d| {
            std::fs::metadata(console.outbox.dir().join(d))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}

/// What the watcher compares to see the queue change: the outbox's
/// directories' times, or the shared store's counts.
#[derive(Debug, PartialEq, Eq)]
enum Stamp {
    Local(Vec<Option<SystemTime>>),
    Store(apimail_core::outbox::Summary),
}

/// Starts the watcher unless it runs; it stops when nobody listens.
fn watch(console: &Arc<Console>) {
    if console.events.watching.swap(true, Ordering::SeqCst) {
        return;
    }
    let console = Arc::clone(console);
    tokio::spawn(async move {
        let mut stamp = None;
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let events = &console.events;
            if events.sender.receiver_count() == 0 {
                events.watching.store(false, Ordering::SeqCst);
                // A listener that came meanwhile found the flag set: it
                // is ours to serve unless another watcher took over.
                if events.sender.receiver_count() == 0
                    || events.watching.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
            let look = Arc::clone(&console);
            let seen = tokio::task::spawn_blocking(move || {
                let added = look.update_index();
                (added, queue_stamp(&look))
            })
            .await;
            let Ok((added, local)) = seen else { continue };
            let journaled = match added {
                Ok(0) => false,
                Ok(n) => {
                    events.log_added(n);
                    true
                }
                Err(error) => {
                    tracing::warn!("admin console: {error}");
                    false
                }
            };
            let now = match &console.store {
                None => Stamp::Local(local),
                Some(store) => match store.summary().await {
                    Ok(summary) => Stamp::Store(summary),
                    Err(error) => {
                        tracing::warn!("admin console: {error}");
                        continue;
                    }
                },
            };
            // Over the store, every settle is journaled too; a retry that
            // moves no count is seen only by the console that made it.
            let store_settled = journaled && console.store.is_some();
            if stamp.as_ref().is_some_and(|s| *s != now) || store_settled {
                events.queue_changed();
            }
            stamp = Some(now);
        }
    });
}

fn stream(console: Arc<Console>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = console.events.sender.subscribe();
    watch(&console);
    let changes = tokio_stream_of(receiver)
        .map(|change| Ok::<_, Infallible>(Event::default().event(change.kind).data(change.data)));
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().event("hello").data("{}"))
    });
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The changes as a stream; a listener that fell behind skips what it
/// missed (the page reloads its rows anyway).
fn tokio_stream_of(receiver: broadcast::Receiver<Change>) -> impl Stream<Item = Change> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(change) => return Some((change, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// `GET /events`: for the pages' script.
pub(crate) async fn page_events(
    State(console): State<Arc<Console>>,
    _admin: Admin,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    stream(console)
}

/// `GET /api/v1/events`: the same for an API token.
pub(crate) async fn api_events(
    State(console): State<Arc<Console>>,
    _client: ApiClient,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    stream(console)
}
