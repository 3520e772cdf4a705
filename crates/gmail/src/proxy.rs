//! `HTTPS_PROXY` / `NO_PROXY` for the hyper client google-gmail1 and
//! yup-oauth2 use (reqwest, used for OAuth, reads them by itself).
//!
//! https destinations that the proxy settings match go through an HTTP
//! CONNECT tunnel; TLS then runs end to end inside it. Plain http is only
//! ever allowed to loopback hosts, so it always connects directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use google_gmail1::hyper_util::client::legacy::connect::HttpConnector;
use google_gmail1::hyper_util::client::legacy::connect::proxy::Tunnel;
use google_gmail1::hyper_util::client::proxy::matcher::Matcher;
use google_gmail1::hyper_util::rt::TokioIo;
use http::Uri;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects directly, or through the proxy the environment names.
#[derive(Clone, Debug)]
pub struct ProxyConnector {
    http: HttpConnector,
    matcher: Arc<Matcher>,
}

impl ProxyConnector {
    /// Proxy settings from `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (and
    /// their lowercase forms), as curl reads them.
    pub fn from_env() -> Self {
        Self::new(Matcher::from_env())
    }

    pub(crate) fn new(matcher: Matcher) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        ProxyConnector {
            http,
            matcher: Arc::new(matcher),
        }
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

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
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.http.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    tower_service::Service::call(&mut tunnel, dst)
                        .await
                        .map_err(|e| format!("the proxy refused or failed the tunnel: {e}").into())
                })
            }
            None => {
                let mut http = self.http.clone();
                Box::pin(async move { Ok(tower_service::Service::call(&mut http, dst).await?) })
            }
        }
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
        let mut connector = ProxyConnector::new(matcher);
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
        let mut connector = ProxyConnector::new(matcher);
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
