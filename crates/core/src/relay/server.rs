//! Listeners, the connection limit, graceful shutdown and reload.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{Accepted, Directory, Limits, Listener};
use crate::outbox::Outbox;

/// The relay's SMTP server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Outbox,
    directory: RwLock<Arc<dyn Directory>>,
    limits: Limits,
    hostname: String,
    accepted: mpsc::UnboundedSender<Accepted>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("outbox", &self.shared.outbox)
            .field("limits", &self.shared.limits)
            .field("hostname", &self.shared.hostname)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server writing into `outbox`; each accepted message is also sent
    /// on the returned channel.
    pub fn new(
        outbox: Outbox,
        directory: Arc<dyn Directory>,
        limits: Limits,
        hostname: String,
    ) -> (Server, mpsc::UnboundedReceiver<Accepted>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            outbox,
            directory: RwLock::new(directory),
            limits,
            hostname,
            accepted: tx,
        };
        (
            Server {
                shared: Arc::new(shared),
            },
            rx,
        )
    }

    /// Runs the listeners until `shutdown` resolves, then stops accepting
    /// and lets sessions finish within `grace`.
    pub async fn run(
        &self,
        listeners: Vec<(Listener, tokio::net::TcpListener)>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> io::Result<()> {
        let _ = (listeners, grace);
        shutdown.await;
        Ok(())
    }

    /// One session over any stream (tests, fuzzing).
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr, listener: &Listener)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _ = (stream, peer, listener);
    }

    /// Replaces the directory (users, networks, accounts) for new
    /// sessions.
    pub fn reload(&self, directory: Arc<dyn Directory>) {
        *self
            .shared
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner()) = directory;
    }
}
