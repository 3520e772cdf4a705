//! Listeners, the connection limit, graceful shutdown and reload.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::intake::Intake;
use crate::policy::RateLimiter;
use crate::session;
use crate::shared::Shared;
use crate::{Accepted, Directory, Limits, Listener, ListenerTls};
use apimail_core::login_backoff::LoginBackoff;
use apimail_core::outbox::Outbox;
use apimail_core::store::Store;

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
        Server::build(outbox, None, directory, limits, hostname)
    }

    /// A server accepting into `store` (a database several relays share):
    /// a message is answered 250 only once its transaction has committed,
    /// and 451 when the store cannot take it. Large messages wait in the
    /// `tmp/` of `outbox` until the end of DATA, then stream into the
    /// store in bounded pieces.
    pub fn over_store<B>(
        outbox: Outbox,
        store: B,
        directory: Arc<dyn Directory>,
        limits: Limits,
        hostname: String,
    ) -> (Server, mpsc::UnboundedReceiver<Accepted>)
    where
        B: Store + 'static,
        B::Incoming: 'static,
    {
        let store: Arc<dyn Intake> = Arc::new(store);
        Server::build(outbox, Some(store), directory, limits, hostname)
    }

    fn build(
        outbox: Outbox,
        store: Option<Arc<dyn Intake>>,
        directory: Arc<dyn Directory>,
        limits: Limits,
        hostname: String,
    ) -> (Server, mpsc::UnboundedReceiver<Accepted>) {
        let (accepted, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            outbox,
            store,
            directory: RwLock::new(directory),
            backoff: LoginBackoff::new(limits.auth_failures),
            rate: RateLimiter::default(),
            splits: Default::default(),
            auth_checks: Arc::new(Semaphore::new(limits.max_auth_checks.max(1))),
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
    /// that would be an open relay; and one whose `allowed_networks` holds
    /// a network wider than [`Listener::is_wide`] allows, unless it sets
    /// `allow_any_network` (then a warning is logged).
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
            check_networks(&listener)?;
            tracing::info!("{}", startup_line(&listener, addr));
            bound.push((Arc::new(listener), socket));
        }
        let slots = Arc::new(Semaphore::new(self.shared.limits.max_connections));
        let per_address = Arc::new(PerAddress::new(
            self.shared.limits.max_connections_per_address,
        ));
        let (connected, mut connections) = mpsc::channel(64);
        let mut accepting = JoinSet::new();
        for (listener, socket) in bound {
            let server = self.clone();
            let slots = Slots {
                all: slots.clone(),
                per_address: per_address.clone(),
            };
            let connected = connected.clone();
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
                    let Some(Connection { stream, peer, listener, slot, address_slot }) = next else { break };
                    let server = self.clone();
                    sessions.spawn(async move {
                        server.serve_stream(stream, peer, &listener).await;
                        drop((slot, address_slot));
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
        slots: Slots,
        connected: mpsc::Sender<Connection>,
    ) {
        loop {
            let (stream, peer) = match socket.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // E.g. out of file descriptors: wait, don't spin.
                    tracing::warn!("{}: accept failed: {e}", listener.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.all.clone().try_acquire_owned() else {
                tracing::warn!(
                    "{}: refused {peer}: {} connections already",
                    listener.name,
                    self.shared.limits.max_connections
                );
                refuse(
                    stream,
                    "421 4.3.2 too many connections, try again later\r\n",
                );
                continue;
            };
            let Some(address_slot) = slots.per_address.take(peer.ip().to_canonical()) else {
                tracing::warn!(
                    "{}: refused {peer}: {} connections from {} already (max_connections_per_address)",
                    listener.name,
                    self.shared.limits.max_connections_per_address,
                    peer.ip().to_canonical()
                );
                refuse(
                    stream,
                    "421 4.7.0 too many connections from your address, try again later\r\n",
                );
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                stream,
                peer,
                listener: listener.clone(),
                slot,
                address_slot,
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

/// An accepted connection holding one of the `max_connections` slots and
/// one of its address's.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    slot: OwnedSemaphorePermit,
    address_slot: AddressSlot,
}

/// The connection limits an accept loop takes from.
struct Slots {
    all: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
}

/// Connections per client address, under `max_connections_per_address`.
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of an address; counted until dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn new(max: usize) -> Self {
        PerAddress {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection over a limit with `line`, then closes it.
fn refuse(mut stream: TcpStream, line: &'static str) {
    tokio::spawn(async move {
        let refuse = stream.write_all(line.as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(5), refuse).await;
    });
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

/// Whether a listener's networks are narrow enough: a network wider than
/// [`Listener::is_wide`] allows needs `allow_any_network`, and gets a
/// warning.
fn check_networks(listener: &Listener) -> io::Result<()> {
    let wide: Vec<String> = listener
        .allowed_networks
        .iter()
        .filter(|net| Listener::is_wide(net))
        .map(|net| net.to_string())
        .collect();
    if wide.is_empty() {
        return Ok(());
    }
    if !listener.allow_any_network {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "relay listener `{}`: allowed_networks holds {}, wider than a /8 (IPv6: /32): anyone there could send without AUTH; narrow it, or set allow_any_network = true for the listener",
                listener.name,
                wide.join(", ")
            ),
        ));
    }
    tracing::warn!(
        "WARNING: relay listener `{}` lets every client in {} send without AUTH (allow_any_network)",
        listener.name,
        wide.join(", ")
    );
    Ok(())
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
    } else if addr.ip().to_canonical().is_loopback() && listener.allowed_networks.is_empty() {
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
