//! Listeners, the connection limit, graceful shutdown and reload.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::policy::{AuthBackoff, RateLimiter};
use super::session;
use super::shared::Shared;
use super::{Accepted, Directory, Limits, Listener, ListenerTls};
use crate::outbox::Outbox;

/// The relay's SMTP server. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
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
    /// on the returned channel, for the delivery workers.
    pub fn new(
        outbox: Outbox,
        directory: Arc<dyn Directory>,
        limits: Limits,
        hostname: String,
    ) -> (Server, mpsc::UnboundedReceiver<Accepted>) {
        let (accepted, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            outbox,
            directory: RwLock::new(directory),
            backoff: AuthBackoff::new(limits.auth_failures),
            rate: RateLimiter::default(),
            limits,
            hostname,
            accepted,
            closing: watch::Sender::new(false),
        };
        (
            Server {
                shared: Arc::new(shared),
            },
            receiver,
        )
    }

    /// Runs the listeners until `shutdown` resolves, then stops accepting,
    /// closes idle sessions (`421`), and lets the others finish within
    /// `grace` before cutting them off.
    ///
    /// Refuses, before accepting anything, a listener on a non-loopback
    /// address that neither requires AUTH nor names `allowed_networks`:
    /// that would be an open relay.
    pub async fn run(
        &self,
        listeners: Vec<(Listener, TcpListener)>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> io::Result<()> {
        let mut bound = Vec::with_capacity(listeners.len());
        for (listener, socket) in listeners {
            let addr = socket.local_addr()?;
            check_restricted(&listener, addr)?;
            tracing::info!("{}", startup_line(&listener, addr));
            bound.push((Arc::new(listener), socket));
        }
        let slots = Arc::new(Semaphore::new(self.shared.limits.max_connections));
        let (connected, mut connections) = mpsc::channel(64);
        let mut accepting = JoinSet::new();
        for (listener, socket) in bound {
            let server = self.clone();
            let (slots, connected) = (slots.clone(), connected.clone());
            accepting
                .spawn(async move { server.accept_loop(listener, socket, slots, connected).await });
        }
        drop(connected);
        let mut sessions = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                next = connections.recv() => {
                    let Some(Connection { stream, peer, listener, slot }) = next else { break };
                    let server = self.clone();
                    sessions.spawn(async move {
                        server.serve_stream(stream, peer, &listener).await;
                        drop(slot);
                    });
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        accepting.abort_all();
        drop(connections);
        self.shared.closing.send_replace(true);
        tracing::info!(
            "stopping: no new connections; sessions in progress have {}s to finish",
            grace.as_secs()
        );
        let finish = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, finish).await.is_err() {
            tracing::warn!(
                "cut off {} session(s) still running after the grace period; nothing answered 250 is lost",
                sessions.len()
            );
            sessions.shutdown().await;
        }
        Ok(())
    }

    async fn accept_loop(
        &self,
        listener: Arc<Listener>,
        socket: TcpListener,
        slots: Arc<Semaphore>,
        connected: mpsc::Sender<Connection>,
    ) {
        loop {
            let (mut stream, peer) = match socket.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // E.g. out of file descriptors: wait, don't spin.
                    tracing::warn!("{}: accept failed: {e}", listener.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    "{}: refused {peer}: {} connections already",
                    listener.name,
                    self.shared.limits.max_connections
                );
                tokio::spawn(async move {
                    let refuse =
                        stream.write_all(b"421 4.3.2 too many connections, try again later\r\n");
                    let _ = tokio::time::timeout(Duration::from_secs(5), refuse).await;
                });
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                stream,
                peer,
                listener: listener.clone(),
                slot,
            };
            if connected.send(connection).await.is_err() {
                return;
            }
        }
    }

    /// One session over any stream (tests, fuzzing). Not counted against
    /// `max_connections`.
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr, listener: &Listener)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        session::run(&self.shared, Box::new(stream), peer, listener).await;
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

/// An accepted connection holding one of the `max_connections` slots.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    slot: OwnedSemaphorePermit,
}

/// Whether a listener may run: on a non-loopback address it must require
/// AUTH or name the networks it serves.
fn check_restricted(listener: &Listener, addr: SocketAddr) -> io::Result<()> {
    if addr.ip().to_canonical().is_loopback()
        || listener.require_auth
        || !listener.allowed_networks.is_empty()
    {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "relay listener `{}` on {addr} is not restricted: it would be an open relay; require AUTH or set allowed_networks for it",
            listener.name
        ),
    ))
}

/// `relay listener smtp on 0.0.0.0:2525 (STARTTLS): AUTH required; ...`
fn startup_line(listener: &Listener, addr: SocketAddr) -> String {
    let tls = match &listener.tls {
        ListenerTls::Plain { starttls: Some(_) } => "STARTTLS",
        ListenerTls::Plain { starttls: None } => "plain text, no STARTTLS",
        ListenerTls::Implicit(_) => "implicit TLS",
    };
    let mut rules = Vec::new();
    if listener.require_auth {
        rules.push("AUTH required".to_owned());
    } else if addr.ip().to_canonical().is_loopback() {
        rules.push("loopback clients send without AUTH".to_owned());
    }
    if !listener.allowed_networks.is_empty() {
        let nets: Vec<String> = listener
            .allowed_networks
            .iter()
            .map(|n| n.to_string())
            .collect();
        rules.push(format!("without AUTH from {}", nets.join(", ")));
    }
    if listener.allow_plaintext_auth {
        rules.push(
            "WARNING: passwords accepted over plain text from the network (allow_plaintext_auth)"
                .to_owned(),
        );
    }
    format!(
        "relay listener `{}` on {addr} ({tls}): {}",
        listener.name,
        rules.join("; ")
    )
}
