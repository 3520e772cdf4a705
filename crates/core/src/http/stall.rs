//! The stall watchdog: [`Stall`] around a connection's IO (the hyper
//! stack), and the connect timeout around a connector ([`connecting`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chain::find;
use super::timeouts::timeouts;

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
    pub(super) limit: Duration,
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

    pub(super) fn moved(&mut self) {
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
