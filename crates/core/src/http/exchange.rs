//! [`exchange`]: a reqwest request and its whole answer under the stall
//! limit, since reqwest's connection cannot be wrapped in [`Stall`].
//!
//! [`Stall`]: super::Stall

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::stall::{HttpTimeout, Phase};
use super::timeouts::{Timeouts, timeouts};

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

/// Sends `request` (from a [`reqwest_builder`](super::reqwest_builder) client, which has no
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

pub(super) async fn exchange_within(
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
