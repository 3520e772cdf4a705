//! A small HTTP/1.1 server and blocking client over `std::net`, for local
//! fakes of remote services (no TLS, no async runtime).
//!
//! The server reads each request whole (Content-Length or chunked body,
//! `Expect: 100-continue` answered), hands it to a handler on the
//! connection's own thread, and writes the response with a Content-Length.
//! Connections are kept alive unless the client asks to close (or speaks
//! HTTP/1.0 without asking to keep it). A handler may also drop the
//! connection without answering, for fault injection.

pub mod stalling;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request body the server reads (bigger ones get 413 and a close).
pub const MAX_BODY: usize = 128 << 20;
/// Largest request line plus headers the server reads.
const MAX_HEAD: usize = 64 << 10;

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Path of the request target, still percent-encoded.
    pub path: String,
    /// Query string without the `?` (empty if none), still encoded.
    pub query: String,
    /// Headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The query's name/value pairs, form-decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    /// The query as a map (the first of repeated names wins).
    pub fn query_map(&self) -> HashMap<String, String> {
        first_wins(self.query_pairs())
    }

    /// An `application/x-www-form-urlencoded` body as a map (the first of
    /// repeated names wins).
    pub fn form(&self) -> HashMap<String, String> {
        first_wins(
            url::form_urlencoded::parse(&self.body)
                .into_owned()
                .collect(),
        )
    }
}

/// A response: what a handler returns, and what the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names as written (the server adds Content-Length itself).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response (`Content-Type: application/json; charset=UTF-8`).
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status)
            .with_header("Content-Type", "application/json; charset=UTF-8")
            .with_body(value.to_string().into_bytes())
    }

    /// A plain-text response.
    pub fn text(status: u16, text: &str) -> Self {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(text.as_bytes().to_vec())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body, lossily decoded as UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics (showing the body) if it is not.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {}, body {:?}",
                self.status,
                self.body_text()
            )
        })
    }
}

/// What a handler wants done with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Send this response.
    Respond(Response),
    /// Close the connection without answering.
    Drop,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Respond(response)
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync + 'static;

/// What a server has seen on the wire, and the delay it adds: shared by
/// all its connections, for benchmarks.
#[derive(Debug, Default)]
pub struct Traffic {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    delay_micros: AtomicU64,
}

impl Traffic {
    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far (malformed ones included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes read from clients so far: request lines, headers and bodies.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::SeqCst)
    }

    /// Bytes written to clients so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }

    /// Makes every later request wait `delay` before it is answered, like
    /// a network round trip.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::SeqCst);
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }
}

/// A connection's stream, counting the bytes that cross it.
struct CountedStream {
    stream: TcpStream,
    traffic: Arc<Traffic>,
}

impl Read for CountedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.traffic
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Write for CountedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.traffic
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A server on `127.0.0.1` with a free port, serving until dropped.
pub struct Server {
    addr: SocketAddr,
    traffic: Arc<Traffic>,
    shutdown: Arc<AtomicBool>,
    connections: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `127.0.0.1:0` and serves each connection on its own thread.
    /// `name` prefixes the debug log (stderr, only with `APIMAIL_FAKE_LOG`).
    pub fn start<H>(name: &str, handler: H) -> io::Result<Server>
    where
        H: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let traffic = Arc::new(Traffic::default());
        let connections = Arc::new(Mutex::new(HashMap::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = std::env::var_os("APIMAIL_FAKE_LOG").is_some();
        let name = name.to_owned();
        let accept_thread = {
            let (shutdown, connections) = (shutdown.clone(), connections.clone());
            let traffic = traffic.clone();
            std::thread::spawn(move || {
                let next_id = AtomicU64::new(0);
                for stream in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    traffic.connections.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        lock(&connections).insert(id, clone);
                    }
                    let (handler, connections) = (handler.clone(), connections.clone());
                    let conn = Connection {
                        name: name.clone(),
                        log,
                        handler,
                        traffic: traffic.clone(),
                    };
                    std::thread::spawn(move || {
                        conn.serve(stream);
                        lock(&connections).remove(&id);
                    });
                }
            })
        };
        Ok(Server {
            addr,
            traffic,
            shutdown,
            connections,
            accept_thread: Some(accept_thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's traffic counters and injected delay.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop, then cut every open connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for (_, stream) in lock(&self.connections).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    name: String,
    log: bool,
    handler: Arc<Handler>,
    traffic: Arc<Traffic>,
}

impl Connection {
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(CountedStream {
            stream,
            traffic: self.traffic.clone(),
        });
        loop {
            let request = read_request(&mut reader);
            if !matches!(request, Ok(None) | Err(ReadError::Io)) {
                self.traffic.requests.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(self.traffic.delay());
            }
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(ReadError::Io) => return,
                Err(ReadError::Bad(status, why)) => {
                    self.debug(&format!("bad request: {why}"));
                    let response = Response::text(status, &format!("{why}\n"));
                    let _ = write_response(reader.get_mut(), &response, true, false);
                    return;
                }
            };
            let close = wants_close(&request);
            let reply = (self.handler)(&request);
            match reply {
                Reply::Drop => {
                    self.debug(&format!(
                        "{} {} -> (connection dropped)",
                        request.method, request.path
                    ));
                    let _ = reader.get_ref().stream.shutdown(Shutdown::Both);
                    return;
                }
                Reply::Respond(response) => {
                    self.debug(&format!(
                        "{} {}{}{} -> {}",
                        request.method,
                        request.path,
                        if request.query.is_empty() { "" } else { "?" },
                        request.query,
                        response.status
                    ));
                    let head_only = request.method.eq_ignore_ascii_case("HEAD");
                    if write_response(reader.get_mut(), &response, close, head_only).is_err()
                        || close
                    {
                        let _ = reader.get_ref().stream.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
        }
    }

    #[allow(
        clippy::print_stderr,
        reason = "an opt-in debug log of the fake servers, on stderr only"
    )]
    fn debug(&self, line: &str) {
        if self.log {
            eprintln!("[{}] {line}", self.name);
        }
    }
}

/// Why a request could not be read.
enum ReadError {
    /// The connection failed or closed mid-request: nothing to answer.
    Io,
    /// The request is malformed: answer with this status and reason.
    Bad(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

fn bad(why: &str) -> ReadError {
    ReadError::Bad(400, why.to_owned())
}

/// Reads one request; `None` if the connection closed before it began.
fn read_request(reader: &mut BufReader<CountedStream>) -> Result<Option<Request>, ReadError> {
    let mut budget = MAX_HEAD;
    let mut line = String::new();
    // Tolerate empty lines before a request line (RFC 9112 section 2.2).
    loop {
        line.clear();
        if read_line(reader, &mut line, &mut budget)? == 0 {
            return Ok(None);
        }
        if !line.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(bad("unsupported HTTP version or bad method"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(bad("request target must be a path"));
    }
    let mut headers = read_headers(reader, &mut budget)?;
    if version == "HTTP/1.0" && find_header(&headers, "connection").is_none() {
        headers.push(("Connection".to_owned(), "close".to_owned()));
    }
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(reader, &headers)?;
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    }))
}

/// Reads one line into `line`, charging it to `budget`.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut String,
    budget: &mut usize,
) -> Result<usize, ReadError> {
    let mut bytes = Vec::new();
    let n = reader
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut bytes)?;
    if n > *budget {
        return Err(ReadError::Bad(431, "request head too large".to_owned()));
    }
    *budget -= n;
    if n > 0 && !bytes.ends_with(b"\n") {
        return Err(ReadError::Io);
    }
    *line = String::from_utf8(bytes).map_err(|_| bad("request head is not UTF-8"))?;
    Ok(n)
}

/// Reads header lines up to the empty line.
fn read_headers(
    reader: &mut impl BufRead,
    budget: &mut usize,
) -> Result<Vec<(String, String)>, ReadError> {
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        if read_line(reader, &mut line, budget)? == 0 {
            return Err(ReadError::Io);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header line"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(bad("malformed header name"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

/// Reads a body framed by `Transfer-Encoding: chunked` or Content-Length.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
) -> Result<Vec<u8>, ReadError> {
    let chunked = find_header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader);
    }
    let Some(length) = find_header(headers, "content-length") else {
        return Ok(Vec::new());
    };
    let length: usize = length.parse().map_err(|_| bad("invalid Content-Length"))?;
    if length > MAX_BODY {
        return Err(ReadError::Bad(413, "request body too large".to_owned()));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    let mut line = String::new();
    loop {
        if read_line(reader, &mut line, &mut budget)? == 0 {
            return Err(ReadError::Io);
        }
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad("invalid chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            read_headers(reader, &mut budget)?;
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "request body too large".to_owned()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
}

/// Whether the connection should close after answering `request`.
fn wants_close(request: &Request) -> bool {
    request.header("connection").is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
    })
}

fn write_response(
    stream: &mut impl Write,
    response: &Response,
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    stream.write_all(&bytes)?;
    stream.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// GETs `url` (no redirects followed); panics if the exchange fails.
pub fn get(url: &str) -> Response {
    request("GET", url, &[], b"").unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// POSTs `form` as `application/x-www-form-urlencoded`; panics if the
/// exchange fails.
pub fn post_form(url: &str, form: &[(&str, &str)]) -> Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    request("POST", url, &headers, body.as_bytes()).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the response. Adds Host and, unless `headers` has Content-Length or
/// Transfer-Encoding, a Content-Length for `body`; `body` is sent as is.
/// Redirects are not followed. An `Err` means the exchange failed, e.g. the
/// server closed the connection without answering.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let parsed =
        url::Url::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an http:// URL: {url}"),
        )
    };
    if parsed.scheme() != "http" {
        return Err(invalid());
    }
    let host = parsed.host_str().ok_or_else(invalid)?;
    let port = parsed.port_or_known_default().ok_or_else(invalid)?;
    let mut target = parsed.path().to_owned();
    if let Some(query) = parsed.query() {
        target.push('?');
        target.push_str(query);
    }
    let stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let framed = find_header_refs(headers, "content-length").is_some()
        || find_header_refs(headers, "transfer-encoding").is_some();
    if !framed && (!body.is_empty() || !matches!(method, "GET" | "HEAD")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let mut writer = stream.try_clone()?;
    writer.write_all(&out)?;
    writer.flush()?;
    read_response(
        &mut BufReader::new(stream),
        method.eq_ignore_ascii_case("HEAD"),
    )
}

/// Reads one response from `reader` (skipping any `100 Continue`): body
/// framed by chunked encoding, Content-Length, or the end of the stream.
/// `head_request` says the request was HEAD, so no body follows.
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> io::Result<Response> {
    let bad_response = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    loop {
        let mut budget = MAX_HEAD;
        let mut line = String::new();
        let n = read_line(reader, &mut line, &mut budget)
            .map_err(|_| bad_response("bad status line"))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed without a response",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.trim().parse().ok())
            .ok_or_else(|| bad_response("bad status line"))?;
        let headers = read_headers(reader, &mut budget).map_err(|_| bad_response("bad headers"))?;
        if status == 100 {
            continue;
        }
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if find_header(&headers, "transfer-encoding").is_some()
            || find_header(&headers, "content-length").is_some()
        {
            read_body(reader, &headers).map_err(|_| bad_response("bad body"))?
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        };
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find_header_refs<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Turns pairs into a map where the first of repeated names wins.
pub fn first_wins(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, value) in pairs {
        map.entry(name).or_insert(value);
    }
    map
}

/// Locks `mutex`, ignoring poisoning (a panicked test thread must not wedge
/// the server).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Percent-decodes a URL path segment (`+` stays `+`); `None` if not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn form_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " ")).unwrap_or_else(|| text.to_owned())
}
