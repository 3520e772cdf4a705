//! Microsoft Graph's answers and failures, mapped onto apimail's error
//! kinds.
//!
//! graph-rs-sdk returns every HTTP answer, 4xx and 5xx included, as
//! `Ok(response)`; the transport reads the status, `Retry-After` and the
//! body into an [`Answer`], and [`classify`] decides from the status and
//! the `{"error":{"code","message"}}` body. The raw Graph code and message
//! always appear in the error text, followed by what they usually mean.

use std::time::Duration;

use apimail_core::http::{NetFailure, Phase};
use apimail_core::{ErrorKind, TokenError, TransportError};
use graph_rs_sdk::GraphFailure;

/// An HTTP answer from Graph, read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error.code` and `error.message` of Graph's error body.
    pub(crate) fn graph_error(&self) -> (Option<String>, Option<String>) {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return (None, None);
        };
        let text = |name: &str| {
            body.pointer(&format!("/error/{name}"))
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        (text("code"), text("message"))
    }

    /// A 401 that a new token can fix (not a mailbox without REST access,
    /// which Exchange sometimes reports as 401).
    pub(crate) fn is_rejected_token(&self) -> bool {
        self.status == 401 && self.graph_error().0.as_deref() != Some("MailboxNotEnabledForRESTAPI")
    }
}

/// What the request was for; it changes what a 403 most likely means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `POST {mailbox}/sendMail`.
    SendMail,
    /// `POST {mailbox}/messages`, the draft of a large message.
    CreateDraft,
    /// `POST .../attachments` or `.../createUploadSession`.
    Attachment,
    /// `PUT` of a chunk to an upload session.
    Upload,
    /// `POST .../messages/{id}/send`.
    SendDraft,
    /// `DELETE .../messages/{id}`, cleaning up after a failure.
    DeleteDraft,
    /// `GET` of Sent Items or of a draft's attachments, checking what an
    /// earlier request did.
    Lookup,
}

impl Stage {
    /// The draft route needs Mail.ReadWrite on top of Mail.Send.
    fn needs_read_write(self) -> bool {
        matches!(
            self,
            Stage::CreateDraft | Stage::Attachment | Stage::DeleteDraft | Stage::Lookup
        )
    }
}

/// Why messages over the request limit need more than Mail.Send.
pub(crate) const READ_WRITE_NEEDED: &str = "messages over Graph's 4 MB request limit are sent as a draft with \
     attachments added to it, which needs the Mail.ReadWrite permission on top of Mail.Send; \
     grant it (and consent to it again)";

/// What an app-only `ErrorAccessDenied` on the draft route means.
pub(crate) const APP_READ_WRITE_NEEDED: &str = "messages over Graph's 4 MB request limit are sent \
     as a draft, which needs the Mail.ReadWrite application permission with admin consent; an \
     administrator grants it in the Entra admin center (App registrations > API permissions > \
     Add a permission > Microsoft Graph > Application permissions > Mail.ReadWrite, then Grant \
     admin consent)";

/// What `ErrorSendAsDenied` means, and what fixes it.
pub(crate) const SEND_AS_DENIED: &str = "the account may not send as the mailbox in the From \
     header: an Exchange administrator can grant it Send As on that mailbox, or send from the \
     account's own address";

/// Who the token speaks for: it changes what a refusal means and who can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A signed-in user: a new login can change the grant.
    User,
    /// An application (client credentials): only an administrator can.
    App,
}

/// Maps a non-2xx answer to a [`TransportError`].
pub(crate) fn classify(answer: &Answer, stage: Stage) -> TransportError {
    classify_as(answer, stage, Principal::User)
}

/// [`classify`] for a token of `principal`.
pub(crate) fn classify_as(answer: &Answer, stage: Stage, principal: Principal) -> TransportError {
    let status = answer.status;
    let (code, message) = answer.graph_error();
    let code_text = code.as_deref().unwrap_or("");
    let (kind, hint): (ErrorKind, Option<&str>) = match (status, code_text) {
        (_, "MailboxNotEnabledForRESTAPI" | "MailboxNotSupportedForRESTAPI") => (
            ErrorKind::Rejected,
            Some(
                "the account has no Exchange Online mailbox or licence (or its mailbox is \
                 on-premises or inactive), so Graph cannot send from it",
            ),
        ),
        // No login changes mailbox rights: an administrator must.
        (_, "ErrorSendAsDenied") => (ErrorKind::Rejected, Some(SEND_AS_DENIED)),
        (_, "ErrorInvalidRecipients") => (
            ErrorKind::InvalidMessage,
            Some("check the To, Cc and Bcc addresses; at least one is needed"),
        ),
        (_, "ErrorMimeContentInvalidBase64String") => (
            ErrorKind::Internal,
            Some("Graph could not decode the base64 MIME apimail sent; this is a bug in apimail"),
        ),
        // An upload session is never the message's or the recipients'
        // fault: a broken one is retried with a new draft.
        (400 | 411 | 413, _) if stage == Stage::Upload => (
            ErrorKind::Internal,
            Some("the upload session refused a chunk apimail sent; this is a bug in apimail"),
        ),
        (_, _) if stage == Stage::Upload => (ErrorKind::Temporary, None),
        (401, _) => (
            ErrorKind::Unauthorized,
            Some("the access token was rejected even after a refresh; authorize again"),
        ),
        (403, _) if stage.needs_read_write() && principal == Principal::App => {
            (ErrorKind::Config, Some(APP_READ_WRITE_NEEDED))
        }
        (403, _) if stage.needs_read_write() => (ErrorKind::Unauthorized, Some(READ_WRITE_NEEDED)),
        (403, _) if principal == Principal::App => (ErrorKind::Config, Some(APP_MAIL_SEND_NEEDED)),
        (403, _) => (
            ErrorKind::Unauthorized,
            Some(
                "the Mail.Send permission or its consent is missing, or the mailbox is outside \
                 the app's allowed scope (an application access policy or RBAC for \
                 Applications)",
            ),
        ),
        (429 | 503 | 504, _) => (ErrorKind::Temporary, None),
        (500..=599, _) => (ErrorKind::Temporary, None),
        (408, _) => (ErrorKind::Temporary, None),
        (413, _) => (
            ErrorKind::InvalidMessage,
            Some("the request is over Graph's size limit"),
        ),
        (400, _) => (ErrorKind::InvalidMessage, None),
        (404, _) if stage == Stage::SendMail || stage == Stage::CreateDraft => (
            ErrorKind::Rejected,
            Some("the mailbox was not found: check the user id or address"),
        ),
        // A draft that vanished between requests: a new attempt builds a
        // new one.
        (404, _) if stage != Stage::DeleteDraft => (ErrorKind::Temporary, None),
        _ => (ErrorKind::Rejected, None),
    };
    let mut text = format!("Microsoft Graph answered HTTP {status}");
    match (&code, &message) {
        (Some(code), Some(message)) => text.push_str(&format!(" {code}: {message}")),
        (Some(code), None) => text.push_str(&format!(" {code}")),
        (None, Some(message)) => text.push_str(&format!(": {message}")),
        (None, None) => text.push_str(" without error details"),
    }
    if let Some(hint) = hint {
        text.push_str(&format!(" ({hint})"));
    }
    let mut error = TransportError::new(kind, text).with_provider_error(code, message);
    if kind == ErrorKind::Temporary
        && let Some(delay) = answer.retry_after
    {
        error = error.with_retry_after(delay);
    }
    // The request went out whole and a gateway lost the answer.
    if matches!(stage, Stage::SendMail | Stage::SendDraft) && matches!(status, 502 | 504) {
        error = error.with_unknown_outcome();
    }
    error
}

/// The next step for a failed Graph send, when Graph's answer says more
/// than the error's kind: who can fix it and where. For the command line's
/// `hint:`; `None` when the kind's usual advice fits.
pub fn failure_hint(error: &TransportError) -> Option<&'static str> {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    FAILURE_HINTS
        .iter()
        .find(|(marker, _)| text.contains(marker))
        .map(|(_, hint)| *hint)
}

/// (what the error text contains, the hint).
const FAILURE_HINTS: &[(&str, &str)] = &[
    (
        "ErrorSendAsDenied",
        "ask an Exchange administrator to grant the account Send As on the From mailbox, or send \
         from the account's own address (leave out --from)",
    ),
    (
        APP_READ_WRITE_NEEDED,
        "an administrator must grant the app the Mail.ReadWrite application permission with admin \
         consent (Entra admin center > App registrations > API permissions); no login can replace it",
    ),
    (
        APP_MAIL_SEND_NEEDED,
        "an administrator must grant the app the Mail.Send application permission with admin \
         consent, or allow this mailbox in the app's application access policy",
    ),
    (
        TOO_LARGE_FOR_MAILBOX,
        "if the tenant allows larger messages (Exchange Online: up to 150 MB), set max_message_mb \
         in the account (or APIMAIL_GRAPH_MAX_MESSAGE_MB); otherwise send the files another way",
    ),
];

/// What the text of a message over the mailbox's limit contains.
pub(crate) const TOO_LARGE_FOR_MAILBOX: &str = "the mailbox's configured limit (max_message_mb)";

/// What an app-only `ErrorAccessDenied` outside the draft route means.
pub(crate) const APP_MAIL_SEND_NEEDED: &str = "the app lacks the Mail.Send application permission \
     or its admin consent, or the mailbox is outside the app's allowed scope (an application \
     access policy or RBAC for Applications); an administrator can change that";

/// `Retry-After` as seconds (Graph sends whole seconds; fractions are
/// accepted). HTTP dates and absurd values are ignored.
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let seconds: f64 = value?.trim().parse().ok()?;
    (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

/// A boxed error as a concrete one, so it can be a `source`.
#[derive(Debug)]
struct Cause(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// graph-rs-sdk's whole-request timeout (it has no per-read one):
/// connect + 2 × stall, as its bodies are at most 4 MB.
pub(crate) fn whole_request_limit() -> Duration {
    let timeouts = apimail_core::http::timeouts();
    timeouts.connect + 2 * timeouts.stall
}

/// Maps a graph-rs-sdk failure (no HTTP answer at all) to a
/// [`TransportError`]: network trouble and timeouts are temporary, the
/// rest is a bug. `request` names the request (`POST /v1.0/me/sendMail`).
pub(crate) fn request_failure(
    error: GraphFailure,
    url: &url::Url,
    request: &str,
    delivers: bool,
) -> TransportError {
    let diagnosed = match &error {
        GraphFailure::ReqwestError(e) => NetFailure::diagnose(e, url),
        GraphFailure::Other(e) => NetFailure::diagnose(e.as_ref(), url),
        GraphFailure::Io(e) => NetFailure::diagnose(e, url),
        _ => None,
    };
    if let Some(failure) = diagnosed {
        // graph-rs-sdk's client times out only the whole request: say how
        // long that was, not the stall limit.
        let failure = match failure {
            NetFailure::Timeout(mut timeout) if timeout.phase != Phase::Connect => {
                timeout.after = whole_request_limit();
                NetFailure::Timeout(timeout)
            }
            other => other,
        };
        return failure.transport_error(delivers);
    }
    let reqwest = |e: &reqwest::Error| {
        if e.is_timeout() {
            let maybe = if delivers {
                "; the message may or may not have been sent"
            } else {
                ""
            };
            format!("no answer from Microsoft Graph in time to {request}{maybe}")
        } else {
            format!("cannot reach Microsoft Graph ({request})")
        }
    };
    // Unless the connection never opened, a delivering request may have
    // arrived whole.
    let unknown = |error: TransportError, connect: bool| {
        if delivers && !connect {
            error.with_unknown_outcome()
        } else {
            error
        }
    };
    match error {
        GraphFailure::ReqwestError(e) => {
            let connect = e.is_connect();
            unknown(
                TransportError::new(ErrorKind::Temporary, reqwest(&e)).with_source(e),
                connect,
            )
        }
        GraphFailure::Other(e) => {
            let (text, connect) = match e.downcast_ref::<reqwest::Error>() {
                Some(r) => (reqwest(r), r.is_connect()),
                None => (format!("cannot reach Microsoft Graph ({request})"), false),
            };
            unknown(
                TransportError::new(ErrorKind::Temporary, text).with_source(Cause(e)),
                connect,
            )
        }
        GraphFailure::Io(e) => unknown(
            TransportError::new(
                ErrorKind::Temporary,
                format!("the connection to Microsoft Graph failed ({request})"),
            )
            .with_source(e),
            false,
        ),
        other => TransportError::new(
            ErrorKind::Internal,
            format!(
                "graph-rs-sdk could not build the request {request}: {}",
                first_line(&other.to_string())
            ),
        ),
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Maps a failure to get a token onto the transport's error kinds.
pub fn token_failure(error: TokenError) -> TransportError {
    let kind = match &error {
        TokenError::InvalidGrant { .. } | TokenError::NotLoggedIn { .. } => ErrorKind::Unauthorized,
        TokenError::Refused { .. } => ErrorKind::Unauthorized,
        TokenError::Unreachable(_) => ErrorKind::Temporary,
        TokenError::Network(failure) if failure.is_temporary() => ErrorKind::Temporary,
        TokenError::Network(_) | TokenError::Store(_) | TokenError::NotTokenEndpoint { .. } => {
            ErrorKind::Config
        }
        _ => ErrorKind::Internal,
    };
    TransportError::new(
        kind,
        error.headline("could not get an access token for Microsoft Graph"),
    )
    .with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: json!({"error": {"code": code, "message": message, "innerError": {"request-id": "r"}}})
                .to_string()
                .into_bytes(),
        }
    }

    fn kind(status: u16, code: &str, stage: Stage) -> ErrorKind {
        classify(&answer(status, code, "m"), stage).kind()
    }

    #[test]
    fn graph_codes_decide_the_kind() {
        use ErrorKind::*;
        use Stage::*;
        assert_eq!(kind(403, "ErrorAccessDenied", SendMail), Unauthorized);
        assert_eq!(kind(403, "ErrorSendAsDenied", SendMail), Rejected);
        assert_eq!(kind(404, "MailboxNotEnabledForRESTAPI", SendMail), Rejected);
        assert_eq!(kind(401, "MailboxNotEnabledForRESTAPI", SendMail), Rejected);
        assert_eq!(
            kind(400, "ErrorInvalidRecipients", SendMail),
            InvalidMessage
        );
        assert_eq!(
            kind(400, "ErrorMimeContentInvalidBase64String", SendMail),
            Internal
        );
        assert_eq!(kind(400, "RequestBodyRead", SendMail), InvalidMessage);
        assert_eq!(kind(404, "ErrorInvalidUser", SendMail), Rejected);
        assert_eq!(kind(404, "ErrorItemNotFound", SendDraft), Temporary);
        assert_eq!(kind(404, "ErrorItemNotFound", Upload), Temporary);
        assert_eq!(kind(416, "InvalidRange", Upload), Temporary);
        assert_eq!(kind(400, "InvalidRequest", Upload), Internal);
        let app =
            |status, code, stage| classify_as(&answer(status, code, "m"), stage, Principal::App);
        assert_eq!(app(403, "ErrorAccessDenied", CreateDraft).kind(), Config);
        assert!(
            app(403, "ErrorAccessDenied", CreateDraft)
                .to_string()
                .contains("Mail.ReadWrite application permission with admin consent")
        );
        assert_eq!(app(403, "ErrorAccessDenied", SendMail).kind(), Config);
        assert_eq!(kind(403, "ErrorAccessDenied", CreateDraft), Unauthorized);
        assert!(classify(&answer(504, "GatewayTimeout", "m"), SendDraft).is_outcome_unknown());
        assert!(!classify(&answer(503, "x", "m"), SendDraft).is_outcome_unknown());
        assert_eq!(
            kind(401, "InvalidAuthenticationToken", SendMail),
            Unauthorized
        );
        assert_eq!(kind(429, "ApplicationThrottled", SendMail), Temporary);
        assert_eq!(kind(503, "ServiceNotAvailable", SendMail), Temporary);
        assert_eq!(kind(504, "GatewayTimeout", SendMail), Temporary);
        assert_eq!(kind(500, "InternalServerError", SendMail), Temporary);
        assert_eq!(kind(502, "", SendMail), Temporary);
        assert_eq!(kind(413, "", Attachment), InvalidMessage);
        assert_eq!(kind(409, "Conflict", SendDraft), Rejected);
    }

    #[test]
    fn the_raw_code_and_message_are_kept() {
        let e = classify(
            &answer(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ),
            Stage::SendMail,
        );
        assert!(
            e.to_string().starts_with(
                "Microsoft Graph answered HTTP 403 ErrorAccessDenied: Access is denied. Check credentials and try again. ("
            ),
            "{e}"
        );
        assert!(e.to_string().contains("allowed scope"), "{e}");

        let e = classify(
            &answer(403, "ErrorAccessDenied", "Access is denied."),
            Stage::CreateDraft,
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(e.to_string().contains("Mail.ReadWrite"), "{e}");

        let e = classify(&answer(403, "ErrorSendAsDenied", "no"), Stage::SendMail);
        assert!(e.to_string().contains("Send As"), "{e}");
        let e = classify(
            &answer(404, "MailboxNotEnabledForRESTAPI", "inactive"),
            Stage::SendMail,
        );
        assert!(e.to_string().contains("licence"), "{e}");

        let bare = Answer {
            status: 502,
            retry_after: None,
            body: b"<html>Bad Gateway</html>".to_vec(),
        };
        assert_eq!(
            classify(&bare, Stage::SendMail).to_string(),
            "Microsoft Graph answered HTTP 502 without error details"
        );
    }

    #[test]
    fn retry_after_is_kept_for_temporary_failures() {
        let mut throttled = answer(429, "ApplicationThrottled", "slow down");
        throttled.retry_after = parse_retry_after(Some(" 7 "));
        assert_eq!(
            classify(&throttled, Stage::SendMail).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn rejected_token_is_a_401_that_a_refresh_can_fix() {
        assert!(answer(401, "InvalidAuthenticationToken", "expired").is_rejected_token());
        assert!(!answer(401, "MailboxNotEnabledForRESTAPI", "x").is_rejected_token());
        assert!(!answer(403, "ErrorAccessDenied", "x").is_rejected_token());
    }

    #[test]
    fn token_failures_map_like_gmail() {
        let e = token_failure(TokenError::InvalidGrant { description: None });
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.downcast_ref::<TokenError>().is_some());
        assert_eq!(
            token_failure(TokenError::Unreachable("down".into())).kind(),
            ErrorKind::Temporary
        );
        assert_eq!(
            token_failure(TokenError::Store("disk".into())).kind(),
            ErrorKind::Config
        );
        assert_eq!(
            token_failure(TokenError::Other("?".into())).kind(),
            ErrorKind::Internal
        );
    }
}
