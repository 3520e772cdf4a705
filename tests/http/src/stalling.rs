//! Listeners that misbehave the way real networks do, for timeout and
//! proxy tests: a server that accepts and never answers, one that stops
//! reading halfway through a request, proxies that stall or refuse after
//! `CONNECT`, and a slow but steady link in front of another server
//! ([`SlowLink`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lock;

/// How a [`Stalling`] listener treats each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Reads everything the client sends and never answers (a hung
    /// backend behind a load balancer).
    NeverAnswers,
    /// Reads this many bytes, then stops reading and never answers (a
    /// wedged upload).
    StopsReadingAfter(usize),
    /// A proxy that answers `CONNECT` with 200 and then forwards nothing.
    ConnectThenStall,
    /// A proxy that refuses every `CONNECT` with 403.
    RefusesConnect,
}

/// A listener on `127.0.0.1` with a free port. Connections stay open until
/// the client closes them or the listener is dropped.
#[derive(Debug)]
pub struct Stalling {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Stalling {
    /// Starts listening.
    pub fn start(behaviour: Behaviour) -> io::Result<Stalling> {
        // A small receive buffer, so that a client's upload stops moving
        // soon after the server stops reading (and does not vanish into
        // megabytes of kernel buffers).
        let listener = small_buffered_listener(false)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (count, bytes, held) = (accepted.clone(), received.clone(), open.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&held).push(clone);
                }
                let bytes = bytes.clone();
                std::thread::spawn(move || serve(stream, behaviour, &bytes));
            }
        });
        Ok(Stalling {
            addr,
            accepted,
            received,
            open,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes read from clients so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Stalling {
    fn drop(&mut self) {
        for stream in lock(&self.open).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, received: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    match behaviour {
        Behaviour::NeverAnswers => drain(&mut stream, &mut buf, usize::MAX, received),
        Behaviour::StopsReadingAfter(limit) => {
            drain(&mut stream, &mut buf, limit, received);
            // Hold the connection, reading nothing more; the listener's
            // drop closes it.
            loop {
                std::thread::park();
            }
        }
        Behaviour::ConnectThenStall | Behaviour::RefusesConnect => {
            if read_head(&mut stream, received).is_none() {
                return;
            }
            let answer: &[u8] = if behaviour == Behaviour::ConnectThenStall {
                b"HTTP/1.1 200 Connection established\r\n\r\n"
            } else {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            if stream.write_all(answer).is_err() || behaviour == Behaviour::RefusesConnect {
                return;
            }
            drain(&mut stream, &mut buf, usize::MAX, received);
        }
    }
}

/// Reads until `limit` bytes came, or the client closed.
fn drain(stream: &mut TcpStream, buf: &mut [u8], limit: usize, received: &AtomicU64) {
    let mut total = 0usize;
    while total < limit {
        let want = buf.len().min(limit - total);
        match stream.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                total += n;
                received.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

/// Reads a request head (up to the blank line).
fn read_head(stream: &mut TcpStream, received: &AtomicU64) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        received.fetch_add(1, Ordering::SeqCst);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A listener on `127.0.0.1:0` with a 64 KiB receive buffer, so that a
/// client's upload stops moving soon after the server stops reading (and
/// does not vanish into megabytes of kernel buffers). With `small_segments`
/// it also asks clients for 1400-byte segments, as on a real network: on
/// loopback (64 KiB segments) a client's send buffer alone grows to
/// megabytes, so that a client would hand over a whole upload at once.
fn small_buffered_listener(small_segments: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(64 * 1024)?;
    if small_segments {
        socket.set_tcp_mss(1400)?;
    }
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A slow but steady link to another server: each connection is relayed
/// to `to`, the client's bytes at `bytes_per_second` (a tenth of that
/// every 100 ms), the answers at full speed.
#[derive(Debug)]
pub struct SlowLink {
    addr: SocketAddr,
    relayed: Arc<AtomicU64>,
}

impl SlowLink {
    /// Starts listening.
    pub fn start(to: SocketAddr, bytes_per_second: usize) -> io::Result<SlowLink> {
        let listener = small_buffered_listener(true)?;
        let addr = listener.local_addr()?;
        let relayed = Arc::new(AtomicU64::new(0));
        let counted = relayed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let counted = counted.clone();
                let (Ok(client_in), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || {
                    trickle(client_in, server_out, bytes_per_second / 10, &counted);
                });
                std::thread::spawn(move || copy_back(server, client));
            }
        });
        Ok(SlowLink { addr, relayed })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes relayed from clients so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, at most `per_tick` bytes every 100 ms.
fn trickle(mut from: TcpStream, mut to: TcpStream, per_tick: usize, relayed: &AtomicU64) {
    let mut buf = vec![0u8; per_tick.max(1)];
    loop {
        let tick = std::time::Instant::now() + Duration::from_millis(100);
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        relayed.fetch_add(n as u64, Ordering::SeqCst);
        std::thread::sleep(tick.saturating_duration_since(std::time::Instant::now()));
    }
}

fn copy_back(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
