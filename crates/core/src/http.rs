//! The one HTTP policy every client apimail builds follows: one rustls
//! configuration (ring) with the roots loaded once per process, one proxy
//! rule set, one user agent, and the same timeouts.
//!
//! - Roots: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the system
//!   bundle ([`tls_config`]).
//! - Proxy: `HTTPS_PROXY` (or `https_proxy`, `ALL_PROXY`) for https
//!   destinations, minus `NO_PROXY`, read once ([`proxy_for`]). Plain http
//!   is only ever allowed to loopback hosts and always connects directly.
//! - Timeouts ([`Timeouts`]): connecting (TCP, proxy tunnel and TLS
//!   handshake) and a stall limit: no byte moved in either direction while
//!   a request is outstanding. A slow but moving upload never hits either.
//!   The overall bound of a whole send is the retry policy's
//!   (`RetryPolicy::max_elapsed`).
//!
//! [`Stall`] wraps a connection's IO for the stall limit (the hyper
//! stack); [`exchange`] keeps the same limit for a reqwest request, whose
//! connection cannot be wrapped; [`NetFailure`] reads what went wrong out
//! of any client's error chain.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use url::Url;

/// The user agent of every request.
pub const USER_AGENT: &str = concat!("apimail/", env!("CARGO_PKG_VERSION"));

/// Overrides [`Timeouts::connect`], in seconds.
pub const CONNECT_TIMEOUT_VAR: &str = "APIMAIL_CONNECT_TIMEOUT_SECONDS";
/// Overrides [`Timeouts::stall`], in seconds.
pub const STALL_TIMEOUT_VAR: &str = "APIMAIL_STALL_TIMEOUT_SECONDS";

/// How long a connection may take to open, and to stand still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, proxy tunnel and TLS handshake together.
    pub connect: Duration,
    /// No byte sent or received while a request is outstanding.
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// `self` with [`CONNECT_TIMEOUT_VAR`] and [`STALL_TIMEOUT_VAR`]
    /// applied; the error names the variable that is not a whole number of
    /// seconds above 0.
    pub fn with_env(mut self) -> Result<Self, String> {
        for (name, field) in [
            (CONNECT_TIMEOUT_VAR, &mut self.connect),
            (STALL_TIMEOUT_VAR, &mut self.stall),
        ] {
            match std::env::var(name) {
                Ok(value) if !value.trim().is_empty() => match value.trim().parse::<u64>() {
                    Ok(seconds) if seconds > 0 => *field = Duration::from_secs(seconds),
                    _ => {
                        return Err(format!(
                            "{name}={value} is not a number of seconds (a whole number above 0)"
                        ));
                    }
                },
                _ => {}
            }
        }
        Ok(self)
    }
}

static TIMEOUTS: OnceLock<Timeouts> = OnceLock::new();

/// Sets the process's timeouts; only the first call counts (the CLI makes
/// it at start-up, from the config file and environment). Returns whether
/// this call set them.
pub fn set_timeouts(timeouts: Timeouts) -> bool {
    TIMEOUTS.set(timeouts).is_ok()
}

/// The process's timeouts: as set, else the defaults with the environment
/// applied (an unusable variable is ignored here; the CLI reports it).
pub fn timeouts() -> Timeouts {
    *TIMEOUTS.get_or_init(|| {
        Timeouts::default()
            .with_env()
            .unwrap_or_else(|_| Timeouts::default())
    })
}

/// Why no TLS configuration could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

/// The rustls client configuration, built once per process: the ring
/// provider, TLS 1.2 and 1.3, and the roots of [`root_source`].
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TlsSetupError>> = OnceLock::new();
    CONFIG.get_or_init(build_tls_config).clone()
}

/// Where the CA certificates come from, for messages: `SSL_CERT_FILE=…`,
/// `SSL_CERT_DIR=…`, or the system's bundle.
pub fn root_source() -> String {
    let configured: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|name| {
            std::env::var_os(name).map(|v| format!("{name}={}", v.to_string_lossy()))
        })
        .collect();
    if configured.is_empty() {
        "the system's CA bundle".to_owned()
    } else {
        configured.join(" and ")
    }
}

fn build_tls_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let found = system_certificates()?;
    let mut seen = std::collections::HashSet::new();
    let unique = found
        .certs
        .into_iter()
        .filter(|cert| seen.insert(cert.as_ref().to_vec()));
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(unique);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        return Err(TlsSetupError(format!(
            "no usable CA certificate in {}{detail}",
            root_source()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates, each file read once. `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured (both when both are set; a configured file
/// that holds no certificate is a mistake even when the directory holds
/// some); without them the distribution's bundle alone is read when there
/// is one, since rustls-native-certs would also parse every file of the
/// certificate directory: the same certificates again, in a few hundred
/// system calls. Duplicates (a bundle and the hashed links of a directory)
/// are dropped before they are parsed.
fn system_certificates() -> Result<rustls_native_certs::CertificateResult, TlsSetupError> {
    let file = std::env::var_os("SSL_CERT_FILE");
    let dir = std::env::var_os("SSL_CERT_DIR");
    if file.is_none() && dir.is_none() {
        return Ok(match openssl_probe::probe().cert_file {
            Some(bundle) => rustls_native_certs::load_certs_from_paths(Some(&bundle), None),
            None => rustls_native_certs::load_native_certs(),
        });
    }
    let mut found = rustls_native_certs::CertificateResult::default();
    if let Some(file) = &file {
        let from_file = rustls_native_certs::load_certs_from_paths(Some(file.as_ref()), None);
        if from_file.certs.is_empty() {
            let why = from_file
                .errors
                .first()
                .map_or_else(String::new, |e| format!(" ({e})"));
            return Err(TlsSetupError(format!(
                "SSL_CERT_FILE={} holds no CA certificate{why}",
                file.to_string_lossy()
            )));
        }
        found = from_file;
    }
    if let Some(dir) = &dir {
        let from_dir = rustls_native_certs::load_certs_from_paths(None, Some(dir.as_ref()));
        found.certs.extend(from_dir.certs);
        found.errors.extend(from_dir.errors);
    }
    Ok(found)
}

/// The proxy rules from the environment, read once.
pub fn proxy_matcher() -> &'static hyper_util::client::proxy::matcher::Matcher {
    static MATCHER: OnceLock<hyper_util::client::proxy::matcher::Matcher> = OnceLock::new();
    MATCHER.get_or_init(hyper_util::client::proxy::matcher::Matcher::from_env)
}

/// The proxy a request to `url` goes through: only https destinations
/// that `NO_PROXY` does not exclude.
pub fn proxy_for(url: &Url) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    if url.scheme() != "https" {
        return None;
    }
    let uri: http::Uri = url.as_str().parse().ok()?;
    proxy_matcher().intercept(&uri)
}

/// The proxy setting in effect, as the user wrote it (without any
/// password), for messages: `HTTPS_PROXY=http://proxy:3128`.
pub fn proxy_setting() -> Option<String> {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            let shown = match Url::parse(&value) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    let _ = url.set_username("");
                    url.as_str().trim_end_matches('/').to_owned()
                }
                Err(_) => value,
            };
            Some(format!("{name}={shown}"))
        })
}

/// A reqwest client builder under this policy: the shared TLS
/// configuration, the proxy rules, the user agent, no redirects and the
/// connect timeout. It sets no stall limit: requests go through
/// [`exchange`] (a true stall timer), or the client adds the stall limit
/// as reqwest's `read_timeout` ([`shared_client`], for small bodies).
pub fn reqwest_builder() -> Result<reqwest::ClientBuilder, TlsSetupError> {
    let tls = tls_config()?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .no_proxy()
        .proxy(reqwest_proxy())
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts().connect))
}

/// [`proxy_for`] as a reqwest proxy (for clients built elsewhere, such as
/// graph-rs-sdk's).
pub fn reqwest_proxy() -> reqwest::Proxy {
    let proxy =
        reqwest::Proxy::custom(|url| proxy_for(url).map(|intercept| intercept.uri().to_string()));
    // HTTPS_PROXY names one proxy, so its credentials are the same for
    // every destination it serves.
    match proxy_matcher()
        .intercept(&http::Uri::from_static("https://apimail.invalid/"))
        .and_then(|i| i.basic_auth().cloned())
    {
        Some(auth) => proxy.custom_http_auth(auth),
        None => proxy,
    }
}

/// The process's shared reqwest client (token endpoints, probes), built
/// once from [`reqwest_builder`], with the stall limit as reqwest's
/// `read_timeout`: reqwest runs it from the start of a request to its
/// answer's headers, then per read, which for these small bodies is a
/// stall limit. It keeps no idle connections: a process makes few such
/// requests, and a pooled connection would outlive the tokio runtime that
/// opened it.
pub fn shared_client() -> Result<reqwest::Client, TlsSetupError> {
    static CLIENT: OnceLock<Result<reqwest::Client, TlsSetupError>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest_builder()?
                .read_timeout(timeouts().stall)
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| TlsSetupError(format!("cannot set up the HTTPS client: {e}")))
        })
        .clone()
}

/// What a request was doing when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the connection: TCP, the proxy's tunnel, the TLS handshake.
    Connect,
    /// Sending the request; the server stopped reading.
    Sending,
    /// Waiting for (the rest of) the answer.
    Waiting,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::Sending => "sending",
            Phase::Waiting => "waiting for the answer",
        })
    }
}

/// A connection that opened too slowly or stood still too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HttpTimeout {
    /// `host:port`.
    pub host: String,
    /// What the request was doing.
    pub phase: Phase,
    /// How long nothing happened.
    pub after: Duration,
}

impl fmt::Display for HttpTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.after.as_secs_f64();
        match self.phase {
            Phase::Connect => write!(
                f,
                "{} did not let a connection open within {seconds} s (connecting)",
                self.host
            ),
            phase => write!(
                f,
                "{} stalled: nothing moved for {seconds} s while {phase}",
                self.host
            ),
        }
    }
}

/// Runs a connector's future under the connect timeout; a stall during it
/// (a proxy or TLS handshake that stops) counts as connecting.
pub async fn connecting<T, E>(
    host: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, Box<dyn StdError + Send + Sync>>
where
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let limit = timeouts().connect;
    let timeout = |after| HttpTimeout {
        host: host.to_owned(),
        phase: Phase::Connect,
        after,
    };
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(error)) => {
            let error = error.into();
            match find::<HttpTimeout>(error.as_ref()) {
                Some(stalled) => Err(Box::new(timeout(stalled.after))),
                None => Err(error),
            }
        }
        Err(_) => Err(Box::new(timeout(limit))),
    }
}

/// A connection's IO under the stall limit: when nothing was read or
/// written for the limit while a read or write waits, it fails with
/// [`HttpTimeout`] (as an `io::Error` of kind `TimedOut`).
#[derive(Debug)]
pub struct Stall<T> {
    io: T,
    host: Arc<str>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    write_blocked: bool,
}

impl<T> Stall<T> {
    /// Wraps `io`, a connection to `host` (`host:port`), with the
    /// process's stall limit.
    pub fn new(io: T, host: &str) -> Self {
        let limit = timeouts().stall;
        Stall {
            io,
            host: host.into(),
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            write_blocked: false,
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn moved(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.limit);
    }

    /// Notes a write's progress; a write that cannot go on counts toward
    /// the stall.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(result) => {
                self.write_blocked = false;
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                self.write_blocked = true;
                self.check(cx, Phase::Sending).map(Err)
            }
        }
    }

    /// Polled while the IO is pending: the error once the limit passed.
    fn check(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                HttpTimeout {
                    host: self.host.to_string(),
                    phase,
                    after: self.limit,
                },
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stall<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let phase = if this.write_blocked {
                    Phase::Sending
                } else {
                    Phase::Waiting
                };
                this.check(cx, phase).map(Err)
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stall<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, data);
        this.after_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.check(cx, Phase::Sending).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: hyper_util::client::legacy::connect::Connection>
    hyper_util::client::legacy::connect::Connection for Stall<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.io.connected()
    }
}

/// How much of a request body [`exchange`] hands over at a time; each
/// piece taken counts as progress.
const PIECE_BYTES: usize = 64 * 1024;

/// A whole answer, read by [`exchange`].
#[derive(Debug)]
pub struct Received {
    /// The HTTP status.
    pub status: u16,
    /// The answer's headers.
    pub headers: http::HeaderMap,
    /// The answer's body.
    pub body: Vec<u8>,
}

/// Sends `request` (from a [`reqwest_builder`] client, which has no
/// `read_timeout`) with `body`, and reads the whole answer, under the
/// stall limit: the body goes out in 64 KiB pieces, and each piece the
/// connection takes, the answer's head and each piece of its body are
/// progress. It fails with [`HttpTimeout`] only when nothing moved for the
/// stall limit: [`Phase::Sending`] while pieces are unwritten, else
/// [`Phase::Waiting`]. The limit runs from the start, so opening the
/// connection counts toward the first one (as with reqwest's
/// `read_timeout`; reqwest's connect timeout bounds the opening itself).
/// reqwest's own errors come back without their URL (an upload URL is a
/// credential).
pub async fn exchange(
    request: reqwest::RequestBuilder,
    body: impl Into<bytes::Bytes>,
) -> Result<Received, Box<dyn StdError + Send + Sync>> {
    exchange_within(request, body.into(), timeouts()).await
}

async fn exchange_within(
    request: reqwest::RequestBuilder,
    body: bytes::Bytes,
    timeouts: Timeouts,
) -> Result<Received, Box<dyn StdError + Send + Sync>> {
    let (client, request) = request.build_split();
    let mut request = request.map_err(reqwest::Error::without_url)?;
    let url = request.url();
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(443)
    );
    let progress = Arc::new(Progress::new(Pieces::count(body.len())));
    if !body.is_empty() {
        *request.body_mut() = Some(reqwest::Body::wrap(Pieces {
            rest: body,
            progress: progress.clone(),
        }));
    }
    let work = async {
        let mut response = client.execute(request).await?;
        progress.moved();
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(piece) = response.chunk().await? {
            progress.moved();
            body.extend_from_slice(&piece);
        }
        Ok::<_, reqwest::Error>(Received {
            status,
            headers,
            body,
        })
    };
    tokio::select! {
        done = work => done.map_err(|e| e.without_url().into()),
        stalled = progress.stalled(&host, timeouts) => Err(stalled.into()),
    }
}

/// When an [`exchange`] last moved, and how many pieces of its body are
/// not written yet.
#[derive(Debug)]
struct Progress(std::sync::Mutex<Moved>);

#[derive(Debug, Clone, Copy)]
struct Moved {
    at: Instant,
    unwritten: usize,
}

impl Progress {
    fn new(pieces: usize) -> Self {
        Progress(std::sync::Mutex::new(Moved {
            at: Instant::now(),
            unwritten: pieces,
        }))
    }

    fn update(&self, change: impl FnOnce(&mut Moved)) {
        let mut moved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        moved.at = Instant::now();
        change(&mut moved);
    }

    fn moved(&self) {
        self.update(|_| {});
    }

    fn written(&self) {
        self.update(|moved| moved.unwritten = moved.unwritten.saturating_sub(1));
    }

    /// Returns once nothing moved for the limit.
    async fn stalled(&self, host: &str, timeouts: Timeouts) -> HttpTimeout {
        loop {
            let moved = *self.0.lock().unwrap_or_else(|e| e.into_inner());
            let limit = timeouts.stall;
            if Instant::now() >= moved.at + limit {
                return HttpTimeout {
                    host: host.to_owned(),
                    phase: if moved.unwritten > 0 {
                        Phase::Sending
                    } else {
                        Phase::Waiting
                    },
                    after: limit,
                };
            }
            tokio::time::sleep_until(moved.at + limit).await;
        }
    }
}

/// A request body handed over [`PIECE_BYTES`] at a time. Taking a piece
/// is progress, and so is a piece's end: hyper lets go of a piece once
/// the connection took all of it, as [`Stall`] counts a write. Its exact
/// size gives the request a Content-Length.
struct Pieces {
    rest: bytes::Bytes,
    progress: Arc<Progress>,
}

impl Pieces {
    fn count(len: usize) -> usize {
        len.div_ceil(PIECE_BYTES)
    }
}

/// One piece of [`Pieces`]; dropping it notes it written.
struct Piece {
    data: bytes::Bytes,
    progress: Arc<Progress>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.progress.written();
    }
}

impl http_body::Body for Pieces {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        this.progress.moved();
        let piece = Piece {
            data: this.rest.split_to(PIECE_BYTES.min(this.rest.len())),
            progress: this.progress.clone(),
        };
        Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_owner(
            piece,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// Every error in `error`'s chain, including the custom errors inside
/// `io::Error`s (which `source` skips).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        all.push(current);
        next = match current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    all
}

/// The first `E` in `error`'s chain.
pub fn find<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    chain(error).into_iter().find_map(|e| e.downcast_ref::<E>())
}

/// What went wrong on the way to a server, when it is one of the failures
/// apimail explains: a timeout (temporary), or a TLS or proxy problem that
/// only a configuration change fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFailure {
    /// Too slow to connect, or a stall.
    Timeout(HttpTimeout),
    /// The server's certificate does not chain to a trusted root.
    Untrusted {
        /// `host`.
        host: String,
        /// rustls's reason.
        detail: String,
    },
    /// The certificate is valid but for other names.
    WrongName {
        /// `host`.
        host: String,
        /// The names the certificate is for.
        presented: Vec<String>,
    },
    /// TLS was spoken to something that does not speak it (an `https://`
    /// URL on a plain-HTTP port).
    NotTls {
        /// `host:port`.
        address: String,
    },
    /// The proxy refused the connection or the tunnel.
    Proxy {
        /// `HTTPS_PROXY=…`.
        setting: String,
        /// What happened.
        detail: String,
    },
}

impl NetFailure {
    /// Reads `error` (from any client) for a request to `url`.
    pub fn diagnose(error: &(dyn StdError + 'static), url: &Url) -> Option<NetFailure> {
        let causes = chain(error);
        if let Some(timeout) = causes.iter().find_map(|e| e.downcast_ref::<HttpTimeout>()) {
            return Some(NetFailure::Timeout(timeout.clone()));
        }
        let host = url.host_str().unwrap_or("the server").to_owned();
        let address = format!("{host}:{}", url.port_or_known_default().unwrap_or(443));
        if let Some(proxy) = causes.iter().find_map(|e| e.downcast_ref::<ProxyError>()) {
            return Some(NetFailure::Proxy {
                setting: proxy.setting.clone(),
                detail: proxy.detail.clone(),
            });
        }
        for cause in &causes {
            if let Some(rustls_error) = cause.downcast_ref::<rustls::Error>() {
                return Some(match rustls_error {
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { presented, .. },
                    ) => NetFailure::WrongName {
                        host,
                        presented: presented.iter().map(|name| plain_name(name)).collect(),
                    },
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName,
                    ) => NetFailure::WrongName {
                        host,
                        presented: Vec::new(),
                    },
                    rustls::Error::InvalidCertificate(reason) => NetFailure::Untrusted {
                        host,
                        detail: format!("{reason:?}"),
                    },
                    rustls::Error::InvalidMessage(_)
                    | rustls::Error::InappropriateMessage { .. } => NetFailure::NotTls { address },
                    _ => continue,
                });
            }
        }
        // A reqwest timeout carries no phase; its timers are this policy's.
        if let Some(timed_out) = causes
            .iter()
            .find_map(|e| e.downcast_ref::<reqwest::Error>())
            && timed_out.is_timeout()
        {
            let timeouts = timeouts();
            let (phase, after) = if timed_out.is_connect() {
                (Phase::Connect, timeouts.connect)
            } else {
                (Phase::Waiting, timeouts.stall)
            };
            return Some(NetFailure::Timeout(HttpTimeout {
                host: address,
                phase,
                after,
            }));
        }
        let text = causes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        let proxied = proxy_for(url).is_some();
        if proxied && (text.contains("proxy") || text.contains("tunnel") || is_refused(&causes)) {
            return Some(NetFailure::Proxy {
                setting: proxy_setting().unwrap_or_else(|| "HTTPS_PROXY".to_owned()),
                detail: last_line(&text),
            });
        }
        None
    }

    /// The failure as a [`TransportError`](crate::TransportError): a timeout is temporary (its
    /// outcome unknown when `delivers` and the connection had opened), the
    /// rest are configuration problems. The failure stays reachable as the
    /// error's source, for [`NetFailure::hint`].
    pub fn transport_error(self, delivers: bool) -> crate::TransportError {
        use crate::ErrorKind;
        let (kind, unknown) = match &self {
            NetFailure::Timeout(t) => (ErrorKind::Temporary, delivers && t.phase != Phase::Connect),
            _ => (ErrorKind::Config, false),
        };
        let error = crate::TransportError::new(kind, self.to_string());
        let error = if unknown {
            error.with_unknown_outcome()
        } else {
            error
        };
        error.with_source(self)
    }

    /// Whether retrying could help: only for timeouts.
    pub fn is_temporary(&self) -> bool {
        matches!(self, NetFailure::Timeout(_))
    }

    /// The next step for the user.
    pub fn hint(&self) -> String {
        match self {
            NetFailure::Timeout(_) => format!(
                "try again later (`apimail queue flush` sends what is queued); the limits are {CONNECT_TIMEOUT_VAR}, {STALL_TIMEOUT_VAR} or [http] in the config file"
            ),
            NetFailure::Untrusted { .. } => "set SSL_CERT_FILE to your CA bundle; behind a TLS-inspecting proxy, add its CA".to_owned(),
            NetFailure::WrongName { .. } => "check the endpoint URL's host name; a proxy or DNS entry may send it to another server".to_owned(),
            NetFailure::NotTls { .. } => "the URL says https:// but the port speaks plain HTTP; check the port or the scheme".to_owned(),
            NetFailure::Proxy { .. } => "check HTTPS_PROXY (host, port, credentials) or exclude the host with NO_PROXY".to_owned(),
        }
    }
}

impl fmt::Display for NetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFailure::Timeout(timeout) => timeout.fmt(f),
            NetFailure::Untrusted { host, detail } => write!(
                f,
                "this machine does not trust the certificate of {host}: {detail} (CA certificates from {})",
                root_source()
            ),
            NetFailure::WrongName { host, presented } if presented.is_empty() => {
                write!(f, "the certificate of {host} is for another name")
            }
            NetFailure::WrongName { host, presented } => write!(
                f,
                "the certificate of {host} is for {}",
                presented.join(", ")
            ),
            NetFailure::NotTls { address } => write!(f, "{address} does not speak TLS"),
            NetFailure::Proxy { setting, detail } => {
                write!(f, "the proxy at {setting} refused the connection: {detail}")
            }
        }
    }
}

impl StdError for NetFailure {}

/// A proxy's refusal, raised by connectors that know the proxy was used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the proxy at {setting} refused the connection: {detail}")]
pub struct ProxyError {
    /// `HTTPS_PROXY=…`.
    pub setting: String,
    /// What happened.
    pub detail: String,
}

fn is_refused(causes: &[&(dyn StdError + 'static)]) -> bool {
    causes.iter().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    })
}

/// `other.example` out of rustls's `DnsName("other.example")`.
fn plain_name(presented: &str) -> String {
    match presented.split_once('"') {
        Some((_, rest)) => rest.trim_end_matches([')', '"']).to_owned(),
        None => presented.to_owned(),
    }
}

fn last_line(text: &str) -> String {
    text.rsplit(": ").next().unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_peer_stalls_while_waiting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keep = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _server = keep.await.unwrap().unwrap();
        let mut io = Stall::new(stream, "example:1");
        io.limit = Duration::from_millis(200);
        io.moved();
        io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0; 16];
        let error = io.read(&mut buf).await.unwrap_err();
        let timeout = find::<HttpTimeout>(&error).expect("an HttpTimeout");
        assert_eq!(timeout.phase, Phase::Waiting);
        assert_eq!(timeout.host, "example:1");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_stalls_while_sending() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keep = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _server = keep.await.unwrap().unwrap();
        let mut io = Stall::new(stream, "example:1");
        io.limit = Duration::from_millis(300);
        io.moved();
        let chunk = vec![0u8; 1 << 20];
        let error = loop {
            if let Err(error) = io.write_all(&chunk).await {
                break error;
            }
        };
        let timeout = find::<HttpTimeout>(&error).expect("an HttpTimeout");
        assert_eq!(timeout.phase, Phase::Sending);
    }

    fn client() -> reqwest::Client {
        reqwest_builder().unwrap().build().unwrap()
    }

    const QUICK: Timeouts = Timeouts {
        connect: Duration::from_secs(2),
        stall: Duration::from_secs(1),
    };

    /// A body that takes about 5 s through a 1 MB/s link, while the stall
    /// limit is 3 s: it finishes, with a Content-Length. (The client's
    /// kernel buffers take about 1.5 MB at once on loopback; draining them
    /// must take less than the limit.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_but_steady_upload_finishes() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let server = apimail_test_http::Server::start("slow", move |request| {
            record.lock().unwrap().push(request.clone());
            apimail_test_http::Response::json(202, &serde_json::json!({"ok": true})).into()
        })
        .unwrap();
        let link = apimail_test_http::stalling::SlowLink::start(server.addr(), 1_000_000).unwrap();
        let body = bytes::Bytes::from(vec![5u8; 5_000_000]);
        let limits = Timeouts {
            connect: Duration::from_secs(2),
            stall: Duration::from_secs(3),
        };
        let started = std::time::Instant::now();
        let request = client().put(format!("{}/upload", link.base_url()));
        let received = exchange_within(request, body, limits).await.unwrap();
        let took = started.elapsed();
        assert_eq!(received.status, 202);
        assert_eq!(received.body, br#"{"ok":true}"#);
        assert!(
            took > limits.stall * 3 / 2,
            "took {took:?}: not slow enough"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].body.len(), 5_000_000);
        assert_eq!(seen[0].header("content-length"), Some("5000000"));
        assert_eq!(seen[0].header("transfer-encoding"), None);
    }

    #[tokio::test]
    async fn an_exchange_with_a_server_that_stops_reading_stalls_while_sending() {
        use apimail_test_http::stalling::{Behaviour, Stalling};
        let wedged = Stalling::start(Behaviour::StopsReadingAfter(64 * 1024)).unwrap();
        let started = std::time::Instant::now();
        let request = client().put(format!("{}/upload?secret=1", wedged.base_url()));
        let error = exchange_within(request, vec![1u8; 16 << 20].into(), QUICK)
            .await
            .unwrap_err();
        let timeout = find::<HttpTimeout>(error.as_ref()).expect("an HttpTimeout");
        assert_eq!(timeout.phase, Phase::Sending);
        assert_eq!(timeout.host, wedged.addr().to_string());
        assert_eq!(timeout.after, QUICK.stall);
        assert!(started.elapsed() < Duration::from_secs(4));
        let url = Url::parse(&wedged.base_url()).unwrap();
        let failure = NetFailure::diagnose(error.as_ref(), &url).unwrap();
        assert!(failure.is_temporary());
    }

    #[tokio::test]
    async fn an_exchange_with_a_silent_server_stalls_while_waiting() {
        use apimail_test_http::stalling::{Behaviour, Stalling};
        let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
        for body in [bytes::Bytes::new(), bytes::Bytes::from_static(b"small")] {
            let started = std::time::Instant::now();
            let request = client().put(format!("{}/upload", silent.base_url()));
            let error = exchange_within(request, body.clone(), QUICK)
                .await
                .unwrap_err();
            let timeout = find::<HttpTimeout>(error.as_ref()).expect("an HttpTimeout");
            assert_eq!(timeout.phase, Phase::Waiting);
            let limit = QUICK.stall;
            assert_eq!(timeout.after, limit);
            let took = started.elapsed();
            assert!(
                took >= limit && took < limit + Duration::from_millis(500),
                "{took:?} for {} bytes",
                body.len()
            );
        }
    }

    #[tokio::test]
    async fn exchange_errors_do_not_show_the_url() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let request = client().get(format!("http://127.0.0.1:{port}/upload?authtoken=SECRET"));
        let error = exchange_within(request, bytes::Bytes::new(), QUICK)
            .await
            .unwrap_err();
        let text = chain(error.as_ref())
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn timeout_messages_name_host_phase_and_time() {
        let stalled = HttpTimeout {
            host: "gmail.googleapis.com:443".into(),
            phase: Phase::Waiting,
            after: Duration::from_secs(2),
        };
        assert_eq!(
            stalled.to_string(),
            "gmail.googleapis.com:443 stalled: nothing moved for 2 s while waiting for the answer"
        );
        let connect = HttpTimeout {
            phase: Phase::Connect,
            ..stalled
        };
        assert!(connect.to_string().contains("(connecting)"));
    }
}
