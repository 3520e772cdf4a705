//! The chunk loop of an attachment upload session, on a plain reqwest
//! client.
//!
//! graph-rs-sdk has an upload-session helper, but it reads the whole file
//! into memory a second time, cuts 160 KiB chunks (about 950 PUTs for
//! 150 MB), labels them `application/json`, and cannot resume. This loop
//! sends [`CHUNK_BYTES`] chunks as `application/octet-stream`, without an
//! `Authorization` header (the upload URL carries its own authorization;
//! Microsoft's documentation warns that a bearer token on these PUTs may
//! get them refused), and resumes a failed chunk from the server's
//! `nextExpectedRanges`.
//!
//! The upload URL is a credential: it is never logged, only its host.

use std::time::{Duration, Instant};

use apimail_core::{ErrorKind, TransportError};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use url::Url;

use crate::errors::{self, Answer, Stage};
use crate::source::Chunks;

/// Bytes per PUT: 10 × 320 KiB = 3,276,800. Upload sessions want chunk
/// sizes that are multiples of 320 KiB (327,680 bytes), and Outlook asks
/// for byte ranges under 4 MB per request; ten 320 KiB units keep about
/// 700 KB of headroom under 4,000,000 bytes (proxies and gateways that
/// count the whole request), while a 150 MB attachment still takes fewer
/// than 50 requests (graph-rs-sdk's helper would send about 950).
pub const CHUNK_BYTES: usize = 10 * 320 * 1024;

/// How often one chunk may be resumed (after a broken connection, a 5xx
/// or a 429; a stall, a TLS or a proxy problem ends the upload at once)
/// before the upload gives up. A 416 (the session already has those
/// bytes) is not a failure: the upload goes on from `nextExpectedRanges`.
pub const MAX_RESUMES_PER_CHUNK: u32 = 3;

/// The wait before the first resume; it doubles for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest `Retry-After` honoured inside the loop.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where an upload stopped, and why.
#[derive(Debug)]
pub(crate) struct UploadFailure {
    /// The first byte the server did not confirm.
    pub(crate) at: usize,
    pub(crate) error: TransportError,
    /// The upload URL answered 404: the session expired, was closed, or
    /// finished with an answer that got lost. The caller checks the draft
    /// and, if the attachment is not there, starts a new session.
    pub(crate) session_gone: bool,
}

impl UploadFailure {
    fn new(at: usize, error: TransportError) -> Self {
        let session_gone = error.to_string().starts_with(SESSION_GONE);
        UploadFailure {
            at,
            error,
            session_gone,
        }
    }
}

/// How a 404 from the upload URL starts its error text.
const SESSION_GONE: &str = "the upload session is gone";

/// What a chunk's answer says about the upload.
enum Progress {
    /// The attachment is complete (201).
    Complete,
    /// Go on from this offset.
    Next(usize),
}

enum ChunkError {
    /// Worth asking the server where to go on from.
    Resumable(TransportError),
    /// The session knows the data already (416, or a range already
    /// received): go on from its `nextExpectedRanges` without counting a
    /// resume. `None` when the answer did not say where.
    AlreadyReceived(Option<Option<usize>>),
    /// The session is broken or refused the data.
    Fatal(TransportError),
}

/// Uploads `data` to `upload_url`, one permit of `permits` per request.
/// Each chunk is decoded from the message as it is sent.
pub(crate) async fn upload(
    http: &reqwest::Client,
    permits: &crate::limit::Permits,
    upload_url: &Url,
    data: &mut Chunks<'_>,
) -> Result<(), UploadFailure> {
    let total = data.len();
    let host = upload_url.host_str().unwrap_or("?").to_owned();
    let mut offset = 0usize;
    let mut resumed_at = usize::MAX;
    let mut resumes = 0u32;
    // A server that never advances must not keep us here forever.
    let mut budget = (total / CHUNK_BYTES + 1) * (MAX_RESUMES_PER_CHUNK as usize + 2) + 4;
    loop {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            return Err(UploadFailure::new(
                offset,
                TransportError::new(
                    ErrorKind::Temporary,
                    format!("the upload session on {host} does not advance"),
                ),
            ));
        }
        let end = (offset + CHUNK_BYTES).min(total);
        let chunk = data.read(offset, end).map_err(|e| {
            UploadFailure::new(
                offset,
                TransportError::new(
                    ErrorKind::Internal,
                    "cannot read the attachment from the queued message",
                )
                .with_source(e),
            )
        })?;
        let error = match put_chunk(http, permits, upload_url, &host, chunk, offset, total).await {
            Ok(Progress::Complete) => return Ok(()),
            Ok(Progress::Next(next)) => {
                offset = next.min(total);
                continue;
            }
            Err(ChunkError::Fatal(error)) => return Err(UploadFailure::new(offset, error)),
            Err(ChunkError::AlreadyReceived(Some(Some(next)))) => {
                tracing::debug!(
                    "the upload session on {host} already has bytes {offset}..; going on from byte {next}"
                );
                offset = next.min(total);
                continue;
            }
            Err(ChunkError::AlreadyReceived(Some(None))) => return Ok(()),
            Err(ChunkError::AlreadyReceived(None)) => {
                match next_expected(http, permits, upload_url, &host).await {
                    Ok(Some(next)) => {
                        offset = next.min(total);
                        continue;
                    }
                    Ok(None) => return Ok(()),
                    Err(error) => error,
                }
            }
            Err(ChunkError::Resumable(error)) => error,
        };
        if resumed_at != offset {
            resumed_at = offset;
            resumes = 0;
        }
        resumes += 1;
        if resumes > MAX_RESUMES_PER_CHUNK {
            return Err(UploadFailure::new(offset, error));
        }
        let backoff = FIRST_BACKOFF * 2u32.pow(resumes - 1);
        let wait = error
            .retry_after()
            .map_or(backoff, |after| after.clamp(backoff, MAX_BACKOFF));
        tracing::debug!(
            "chunk at byte {offset} of {total} to {host} failed ({error}); asking where to resume in {} ms (resume {resumes} of {MAX_RESUMES_PER_CHUNK})",
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
        match next_expected(http, permits, upload_url, &host).await {
            Ok(Some(next)) => {
                if next == 0 && offset != 0 {
                    tracing::debug!("the upload session on {host} asks to start over from byte 0");
                }
                offset = next.min(total);
            }
            // The session knows of nothing missing: the last chunk's answer
            // was lost, but the upload is complete.
            Ok(None) => return Ok(()),
            Err(e) if e.to_string().starts_with(SESSION_GONE) => {
                return Err(UploadFailure::new(offset, e));
            }
            // Could not ask: try the same chunk again.
            Err(e) => tracing::debug!("asking {host} for the next expected range failed: {e}"),
        }
    }
}

async fn put_chunk(
    http: &reqwest::Client,
    permits: &crate::limit::Permits,
    upload_url: &Url,
    host: &str,
    chunk: Vec<u8>,
    offset: usize,
    total: usize,
) -> Result<Progress, ChunkError> {
    let end = offset + chunk.len();
    let range = format!("bytes {offset}-{}/{total}", end.saturating_sub(1));
    let _permit = permits.acquire().await.map_err(closed)?;
    let started = Instant::now();
    // Under the policy's stall timer: a slow but moving chunk finishes.
    let request = http
        .put(upload_url.clone())
        .header(CONTENT_RANGE, &range)
        .header(CONTENT_TYPE, "application/octet-stream");
    let answer = apimail_core::http::exchange(request, chunk)
        .await
        .map(received);
    let elapsed = started.elapsed().as_millis();
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!("PUT upload session on {host} ({range}) failed after {elapsed} ms");
            // Not resumed here: a TLS or proxy problem (only a setting fixes
            // it), nor a stall (the server stood still for the whole stall
            // limit; resuming would wait for it again and again, past the
            // overall limit, hiding which host stalled). The retry policy
            // decides about the next attempt.
            return Err(
                match apimail_core::http::NetFailure::diagnose(e.as_ref(), upload_url) {
                    Some(failure) => ChunkError::Fatal(failure.transport_error(false)),
                    None => ChunkError::Resumable(
                        TransportError::new(
                            ErrorKind::Temporary,
                            format!("the connection to the upload session on {host} failed"),
                        )
                        .with_source_boxed(e),
                    ),
                },
            );
        }
    };
    tracing::debug!(
        "PUT upload session on {host} ({range}, {} bytes) -> {} in {elapsed} ms",
        end - offset,
        answer.status
    );
    match answer.status {
        201 => Ok(Progress::Complete),
        200..=299 => match next_from(&answer.body) {
            Some(Some(next)) => Ok(Progress::Next(next)),
            Some(None) => Ok(Progress::Complete),
            None if end >= total => Ok(Progress::Complete),
            None => Ok(Progress::Next(end)),
        },
        416 => Err(ChunkError::AlreadyReceived(next_from(&answer.body))),
        404 => Err(ChunkError::Fatal(session_gone(&answer, host))),
        429 | 500..=599 | 408 => Err(ChunkError::Resumable(errors::classify(
            &answer,
            Stage::Upload,
        ))),
        _ => Err(ChunkError::Fatal(errors::classify(&answer, Stage::Upload))),
    }
}

fn session_gone(answer: &Answer, host: &str) -> TransportError {
    TransportError::new(
        ErrorKind::Temporary,
        format!("{SESSION_GONE} (HTTP {} from {host})", answer.status),
    )
}

/// `GET uploadUrl`: the first byte the server still expects, `None` when
/// it expects nothing more.
async fn next_expected(
    http: &reqwest::Client,
    permits: &crate::limit::Permits,
    upload_url: &Url,
    host: &str,
) -> Result<Option<usize>, TransportError> {
    let _permit = permits.acquire().await.map_err(|_| limiter_closed())?;
    let started = Instant::now();
    let answer = apimail_core::http::exchange(http.get(upload_url.clone()), Vec::new())
        .await
        .map(received)
        .map_err(|e| {
            TransportError::new(
                ErrorKind::Temporary,
                format!("cannot reach the upload session on {host}"),
            )
            .with_source_boxed(e)
        })?;
    tracing::debug!(
        "GET upload session on {host} -> {} in {} ms",
        answer.status,
        started.elapsed().as_millis()
    );
    if answer.status == 404 {
        return Err(session_gone(&answer, host));
    }
    if !answer.is_success() {
        return Err(errors::classify(&answer, Stage::Upload));
    }
    next_from(&answer.body).ok_or_else(|| {
        TransportError::new(
            ErrorKind::Temporary,
            format!("the upload session on {host} answered without nextExpectedRanges"),
        )
    })
}

/// `nextExpectedRanges` of a session answer: `Some(Some(start))` for the
/// lowest range start, `Some(None)` for an empty list, `None` when the
/// answer has no such field.
fn next_from(body: &[u8]) -> Option<Option<usize>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ranges = value.get("nextExpectedRanges")?.as_array()?;
    Some(
        ranges
            .iter()
            .filter_map(|r| r.as_str())
            .filter_map(|r| r.split('-').next()?.trim().parse::<usize>().ok())
            .min(),
    )
}

pub(crate) async fn read(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok(received(apimail_core::http::Received {
        status,
        headers,
        body,
    }))
}

/// A whole answer as Graph's errors read it.
fn received(received: apimail_core::http::Received) -> Answer {
    Answer {
        status: received.status,
        retry_after: errors::parse_retry_after(
            received
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        ),
        body: received.body,
    }
}

fn closed(_: tokio::sync::AcquireError) -> ChunkError {
    ChunkError::Fatal(limiter_closed())
}

fn limiter_closed() -> TransportError {
    TransportError::new(ErrorKind::Internal, "the request limiter was closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_is_a_multiple_of_320_kib_under_4_mb() {
        assert_eq!(CHUNK_BYTES, 3_276_800);
        assert_eq!(CHUNK_BYTES % (320 * 1024), 0);
        const { assert!(CHUNK_BYTES < 4_000_000) };
        const { assert!(150 * 1024 * 1024 / CHUNK_BYTES < 50) };
    }

    #[test]
    fn next_expected_ranges() {
        assert_eq!(
            next_from(br#"{"nextExpectedRanges":["3276800-"]}"#),
            Some(Some(3_276_800))
        );
        assert_eq!(
            next_from(br#"{"nextExpectedRanges":["900-999","12-20"]}"#),
            Some(Some(12))
        );
        assert_eq!(next_from(br#"{"nextExpectedRanges":[]}"#), Some(None));
        assert_eq!(next_from(br#"{"id":"x"}"#), None);
        assert_eq!(next_from(b""), None);
    }
}
