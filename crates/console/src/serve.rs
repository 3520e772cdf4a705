//! The console's listener: HTTP/1.1 (hyper), over TLS when configured,
//! with bounded connections and timeouts, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's header section must arrive within this (also the idle
/// limit between requests on a kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`
/// completes; connections still open then are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.map(TlsAcceptor::from);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: wait a moment rather than spin.
                    tracing::warn!("admin console: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            connection(stream, peer, router, acceptor).await;
            drop(permit);
        });
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

async fn connection(stream: TcpStream, peer: SocketAddr, router: Router, tls: Option<TlsAcceptor>) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 << 10);
    let served = match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                Ok(Err(error)) => {
                    tracing::debug!("admin console: TLS handshake with {peer} failed: {error}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("admin console: TLS handshake with {peer} timed out");
                    return;
                }
            }
        }
        None => http.serve_connection(TokioIo::new(stream), service).await,
    };
    if let Err(error) = served {
        tracing::debug!("admin console: connection with {peer}: {error}");
    }
}
