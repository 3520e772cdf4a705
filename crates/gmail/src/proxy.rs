//! The hyper connector google-gmail1 and yup-oauth2 send through, built
//! from apimail-core's HTTP policy (`apimail_core::http`): its proxy rules,
//! its TLS configuration, its connect timeout and its stall limit.
//!
//! https destinations that the proxy settings match go through an HTTP
//! CONNECT tunnel; TLS then runs end to end inside it. Plain http is only
//! ever allowed to loopback hosts, so it always connects directly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use apimail_core::http::{self as policy, HttpTimeout, ProxyError, Stall};
use google_gmail1::hyper_util::client::legacy::connect::HttpConnector;
use google_gmail1::hyper_util::client::legacy::connect::proxy::Tunnel;
use google_gmail1::hyper_util::client::proxy::matcher::Matcher;
use google_gmail1::hyper_util::rt::TokioIo;
use http::Uri;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A TCP connection under the stall limit.
pub type Io = TokioIo<Stall<TcpStream>>;

/// `host:port` of a destination, for messages.
fn address(dst: &Uri) -> String {
    let port = dst
        .port_u16()
        .unwrap_or(if dst.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    format!("{}:{port}", dst.host().unwrap_or("?"))
}

/// TCP connections (to a server or a proxy) under the stall limit.
#[derive(Clone, Debug)]
pub struct TcpConnector {
    http: HttpConnector,
}

impl TcpConnector {
    fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        TcpConnector { http }
    }
}

impl tower_service::Service<Uri> for TcpConnector {
    type Response = Io;
    type Error = BoxError;
    type Future = BoxFuture<Io>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        Box::pin(async move {
            let host = address(&dst);
            let io = tower_service::Service::call(&mut http, dst).await?;
            Ok(TokioIo::new(Stall::new(io.into_inner(), &host)))
        })
    }
}

/// Connects directly, or through the proxy the environment names.
#[derive(Clone, Debug)]
pub struct ProxyConnector {
    tcp: TcpConnector,
    matcher: &'static Matcher,
}

impl ProxyConnector {
    /// Proxy settings from `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (and
    /// their lowercase forms), as curl reads them; read once per process.
    pub fn from_env() -> Self {
        Self::new(policy::proxy_matcher())
    }

    pub(crate) fn new(matcher: &'static Matcher) -> Self {
        ProxyConnector {
            tcp: TcpConnector::new(),
            matcher,
        }
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = Io;
    type Error = BoxError;
    type Future = BoxFuture<Io>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = match dst.scheme_str() {
            Some("https") => self.matcher.intercept(&dst),
            _ => None,
        };
        match proxy {
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.tcp.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let setting = policy::proxy_setting()
                    .unwrap_or_else(|| format!("HTTPS_PROXY={}", proxy.uri()));
                Box::pin(async move {
                    tower_service::Service::call(&mut tunnel, dst)
                        .await
                        .map_err(|e| -> BoxError {
                            let e: BoxError = Box::new(e);
                            if policy::find::<HttpTimeout>(e.as_ref()).is_some() {
                                return e;
                            }
                            Box::new(ProxyError {
                                setting,
                                detail: apimail_core::error_chain(e.as_ref()),
                            })
                        })
                })
            }
            None => {
                let mut tcp = self.tcp.clone();
                Box::pin(async move { tower_service::Service::call(&mut tcp, dst).await })
            }
        }
    }
}

/// The connect timeout around the whole opening of a connection: TCP, the
/// proxy's tunnel and the TLS handshake.
#[derive(Clone, Debug)]
pub struct Timed<C>(pub C);

impl<C> tower_service::Service<Uri> for Timed<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    C::Response: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let host = address(&dst);
        let future = self.0.call(dst);
        Box::pin(async move { policy::connecting(&host, future).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn https_goes_through_the_proxy_as_connect() {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = proxy.local_addr().unwrap().port();
        let seen = tokio::spawn(async move {
            let (mut socket, _) = proxy.accept().await.unwrap();
            let mut buf = vec![0; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let _ = socket.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let matcher = Matcher::builder()
            .https(format!("http://127.0.0.1:{port}"))
            .no("localhost")
            .build();
        let mut connector = ProxyConnector::new(Box::leak(Box::new(matcher)));
        let result = tower_service::Service::call(
            &mut connector,
            "https://gmail.googleapis.com/".parse().unwrap(),
        )
        .await;
        let request = seen.await.unwrap();
        assert!(
            request.starts_with("CONNECT gmail.googleapis.com:443 HTTP/1.1"),
            "{request}"
        );
        let error = result.expect_err("the fake proxy refused").to_string();
        assert!(error.contains("proxy"), "{error}");
    }

    #[tokio::test]
    async fn no_proxy_and_plain_http_connect_directly() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let matcher = Matcher::builder().https("http://127.0.0.1:9").build();
        let mut connector = ProxyConnector::new(Box::leak(Box::new(matcher)));
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let accepted = tokio::spawn(async move { server.accept().await.is_ok() });
        assert!(
            tower_service::Service::call(&mut connector, uri)
                .await
                .is_ok()
        );
        assert!(accepted.await.unwrap());
    }
}
