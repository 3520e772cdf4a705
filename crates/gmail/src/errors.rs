//! Google's error answers, mapped onto apimail's error kinds.
//!
//! google-gmail1 turns any non-2xx answer with a JSON body into
//! `Error::BadRequest(json)` and drops the status, so the delegate records
//! the status and `Retry-After` header on the side ([`LastFailure`]), and
//! the `reason` in Google's error JSON decides.

use std::time::Duration;

use apimail_core::{ErrorKind, TransportError};
use google_gmail1::common::Error as GmailError;

/// What the delegate saw of the last failed request.
#[derive(Debug, Default)]
pub(crate) struct LastFailure {
    pub(crate) status: Option<u16>,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) connection: Option<String>,
}

/// Marker message for a 401, which the transport answers with one refresh.
const REJECTED_TOKEN: &str = "the Gmail API rejected the access token (HTTP 401)";

pub(crate) fn is_rejected_token(error: &TransportError) -> bool {
    error.kind() == ErrorKind::Unauthorized && error.to_string() == REJECTED_TOKEN
}

/// `url` is the API root, `delivers` whether the request sends mail.
pub(crate) fn classify(
    error: GmailError,
    last: LastFailure,
    url: &str,
    delivers: bool,
) -> TransportError {
    if let (GmailError::HttpError(e), Ok(url)) = (&error, url::Url::parse(url))
        && let Some(failure) = apimail_core::http::NetFailure::diagnose(e, &url)
    {
        return failure.transport_error(delivers);
    }
    match error {
        GmailError::HttpError(e) if e.is_connect() => {
            TransportError::new(ErrorKind::Temporary, "cannot reach the Gmail API").with_source(e)
        }
        // The request may have gone out whole before the connection broke.
        GmailError::HttpError(e) => TransportError::new(
            ErrorKind::Temporary,
            "the connection to the Gmail API broke before its answer came",
        )
        .with_unknown_outcome()
        .with_source(e),
        GmailError::UploadSizeLimitExceeded(size, limit) => TransportError::new(
            ErrorKind::InvalidMessage,
            format!("the message is {size} bytes; Gmail accepts at most {limit} bytes (35 MiB)"),
        ),
        GmailError::BadRequest(_) | GmailError::Failure(_) => from_response(&last),
        GmailError::Io(e) => TransportError::new(
            ErrorKind::Temporary,
            "the connection to the Gmail API failed",
        )
        .with_source(e),
        other => TransportError::new(
            ErrorKind::Internal,
            format!(
                "the Gmail client failed: {}",
                first_line(&other.to_string())
            ),
        ),
    }
}

fn from_response(last: &LastFailure) -> TransportError {
    let status = last.status.unwrap_or(0);
    let error = last.body.as_ref().and_then(|b| b.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("no error message");
    let reason = error
        .and_then(|e| e.pointer("/errors/0/reason"))
        .and_then(|r| r.as_str())
        .unwrap_or("");
    let kind = match (status, reason) {
        (401, _) => return TransportError::new(ErrorKind::Unauthorized, REJECTED_TOKEN),
        (403, "rateLimitExceeded" | "userRateLimitExceeded" | "dailyLimitExceeded") => {
            ErrorKind::Temporary
        }
        (403, _) => ErrorKind::Unauthorized,
        (413, _) => ErrorKind::InvalidMessage,
        (400, _) => ErrorKind::InvalidMessage,
        (408 | 429, _) => ErrorKind::Temporary,
        (500..=599, _) => ErrorKind::Temporary,
        _ => ErrorKind::Rejected,
    };
    let reason_text = if reason.is_empty() {
        String::new()
    } else {
        format!(", {reason}")
    };
    let mut transport = TransportError::new(
        kind,
        format!("the Gmail API answered HTTP {status}{reason_text}: {message}"),
    )
    .with_provider_error(Some(reason.to_owned()), error.and(Some(message.to_owned())));
    if let Some(delay) = retry_delay(last.retry_after.as_deref(), message) {
        transport = transport.with_retry_after(delay);
    }
    // A gateway's 502 or 504: Gmail behind it may have taken the message.
    if matches!(status, 502 | 504) {
        transport = transport.with_unknown_outcome();
    }
    transport
}

/// `Retry-After` in seconds, or the "Retry after 2026-09-11T20:00:00.000Z"
/// that Gmail puts in rate-limit messages instead.
fn retry_delay(header: Option<&str>, message: &str) -> Option<Duration> {
    if let Some(seconds) = header.and_then(|h| h.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    let stamp = message
        .split("Retry after ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let at = parse_rfc3339_utc(stamp)?;
    let wait = at - apimail_core::now_unix();
    (wait > 0).then(|| Duration::from_secs(wait as u64))
}

/// Parses an RFC 3339 time (`2026-09-11T20:00:00.000Z`) into Unix seconds.
fn parse_rfc3339_utc(stamp: &str) -> Option<i64> {
    let at = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339);
    Some(at.ok()?.unix_timestamp())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failure(status: u16, reason: &str, message: &str) -> LastFailure {
        LastFailure {
            status: Some(status),
            body: Some(
                json!({"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}),
            ),
            ..LastFailure::default()
        }
    }

    #[test]
    fn google_reasons_decide_the_kind() {
        let kind = |status, reason| from_response(&failure(status, reason, "m")).kind();
        assert_eq!(
            kind(403, "insufficientPermissions"),
            ErrorKind::Unauthorized
        );
        assert_eq!(kind(403, "userRateLimitExceeded"), ErrorKind::Temporary);
        assert_eq!(kind(403, "rateLimitExceeded"), ErrorKind::Temporary);
        assert_eq!(kind(429, "rateLimitExceeded"), ErrorKind::Temporary);
        assert_eq!(kind(400, "invalidArgument"), ErrorKind::InvalidMessage);
        assert_eq!(kind(400, "failedPrecondition"), ErrorKind::InvalidMessage);
        assert_eq!(kind(503, "backendError"), ErrorKind::Temporary);
        assert_eq!(kind(404, "notFound"), ErrorKind::Rejected);
        assert!(is_rejected_token(&from_response(&failure(
            401,
            "authError",
            "m"
        ))));
    }

    #[test]
    fn google_message_is_kept() {
        let e = from_response(&failure(400, "invalidArgument", "Invalid To header"));
        assert_eq!(
            e.to_string(),
            "the Gmail API answered HTTP 400, invalidArgument: Invalid To header"
        );
    }

    #[test]
    fn retry_after_from_header_or_message() {
        let mut f = failure(429, "rateLimitExceeded", "slow down");
        f.retry_after = Some("7".into());
        assert_eq!(
            from_response(&f).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_rfc3339_utc("1970-01-02T00:00:01.000Z"), Some(86_401));
        assert_eq!(
            parse_rfc3339_utc("2026-01-01T00:00:00Z"),
            Some(1_767_225_600)
        );
        let f = failure(
            403,
            "userRateLimitExceeded",
            "User-rate limit exceeded.  Retry after 2999-01-01T00:00:00.000Z",
        );
        assert!(from_response(&f).retry_after().is_some());
        let f = failure(
            403,
            "userRateLimitExceeded",
            "User-rate limit exceeded.  Retry after 2000-01-01T00:00:00.000Z",
        );
        assert_eq!(
            from_response(&f).retry_after(),
            None,
            "a past stamp means no wait"
        );
    }
}
