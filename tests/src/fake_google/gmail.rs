//! The Gmail API: `users.messages.send` in its four forms, resumable upload
//! sessions, the Sent list/get calls, and faults.

use std::sync::Mutex;

use base64::Engine as _;
use serde_json::{Value, json};

use super::state::{
    Delivered, Fault, GMAIL_SEND_SCOPE, MAIL_SCOPE, MAX_MESSAGE_BYTES, READ_UNITS, SEND_UNITS,
    Session, State,
};
use crate::fake_common::{STANDARD_ANY, URL_SAFE_ANY, has_recipient, random_hex};
use crate::http::{Reply, Request, Response, lock, percent_decode};
use crate::quota::{Verdict, rfc3339_millis};

/// Scopes any one of which allows `users.messages.send` (per Gmail's docs).
const SEND_SCOPES: [&str; 5] = [
    GMAIL_SEND_SCOPE,
    MAIL_SCOPE,
    "https://www.googleapis.com/auth/gmail.compose",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.addons.current.action.compose",
];

/// The four ways to call `users.messages.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/gmail/v1/...`: JSON body with `raw`.
    Json,
    /// `/upload/gmail/v1/...`: media, multipart or resumable by `uploadType`.
    Upload,
    /// `/resumable/upload/gmail/v1/...`: starts a resumable upload.
    Resumable,
}

/// A request to a Gmail API path: counts it, applies faults, sends.
pub(super) fn gmail(state: &Mutex<State>, request: &Request) -> Reply {
    let fault = {
        let mut state = lock(state);
        state.send_requests += 1;
        state.faults.pop_front().or_else(|| state.forever.clone())
    };
    match fault {
        None => {}
        Some(Fault::Slow(delay)) => std::thread::sleep(delay),
        Some(Fault::DropConnection) => return Reply::Drop,
        Some(Fault::AcceptThenDrop) => {
            let _ = send(state, request);
            return Reply::Drop;
        }
        Some(Fault::AcceptThen504) => {
            let _ = send(state, request);
            return Response::new(504)
                .with_header("Content-Type", "text/html; charset=UTF-8")
                .with_body(b"<html><body><h1>504 Gateway Timeout</h1></body></html>".to_vec())
                .into();
        }
        Some(Fault::Status429 { retry_after_secs }) => {
            let response = google_error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                "rateLimitExceeded",
                "RESOURCE_EXHAUSTED",
            );
            return match retry_after_secs {
                Some(secs) => response.with_header("Retry-After", &secs.to_string()),
                None => response,
            }
            .into();
        }
        Some(Fault::RateLimit403) => {
            return google_error(
                403,
                "User-rate limit exceeded.",
                "userRateLimitExceeded",
                "PERMISSION_DENIED",
            )
            .into();
        }
        Some(Fault::Status503) => return unavailable().into(),
        Some(Fault::Status500) => {
            return google_error(500, "Backend Error", "backendError", "INTERNAL").into();
        }
    }
    send(state, request)
        .unwrap_or_else(|response| response)
        .into()
}

fn send(state: &Mutex<State>, request: &Request) -> Result<Response, Response> {
    let (endpoint, path_user) = parse_send_path(&request.path)
        .filter(|_| request.method == "POST")
        .ok_or_else(|| google_error(404, "Method not found.", "notFound", "NOT_FOUND"))?;
    let mut state = lock(state);
    let (access_token, user) = authenticate(&state, request, &path_user)?;
    let query = request.query_map();
    let upload_type = query.get("uploadType").map(String::as_str);
    match (endpoint, upload_type) {
        (Endpoint::Json, _) => {
            let body: Value = serde_json::from_slice(&request.body)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| invalid_argument("Invalid JSON payload received."))?;
            let raw = match body["raw"].as_str() {
                None | Some("") => {
                    return Err(invalid_argument(
                        "'raw' RFC822 payload message string or uploading message via /upload/* \
                         URL required",
                    ));
                }
                Some(raw) => decode_bytes(raw).ok_or_else(|| {
                    invalid_argument(
                        "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
                    )
                })?,
            };
            let thread_id = body["threadId"].as_str().map(str::to_owned);
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                thread_id,
                "json",
            ))
        }
        (Endpoint::Upload, Some("media")) => {
            check_media_type(request.header("content-type").unwrap_or(""))?;
            let raw = request.body.clone();
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                None,
                "media",
            ))
        }
        (Endpoint::Upload, Some("multipart")) => {
            let content_type = request.header("content-type").unwrap_or("");
            let (metadata, media_type, raw) = parse_multipart(content_type, &request.body)
                .map_err(|why| invalid_argument(&why))?;
            check_media_type(&media_type)?;
            let thread_id = parse_metadata(&metadata)?;
            Ok(deliver(
                &mut state,
                &user,
                &access_token,
                raw,
                thread_id,
                "multipart",
            ))
        }
        (Endpoint::Upload | Endpoint::Resumable, Some("resumable")) => {
            start_session(&mut state, request, user, access_token)
        }
        _ => Err(invalid_argument(
            "Upload requests must include an uploadType URL parameter and a URL path beginning \
             with /upload/",
        )),
    }
}

/// Scopes any one of which allows `users.messages.list` and `.get`.
const READ_SCOPES: [&str; 4] = [
    "https://www.googleapis.com/auth/gmail.metadata",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
    MAIL_SCOPE,
];

/// `GET .../users/{user}/messages` (the `SENT` label, newest first) and
/// `GET .../users/{user}/messages/{id}` (`format=metadata`), as far as a
/// Sent check needs them, with Google's scope rules: `gmail.send` reads
/// nothing, and `gmail.metadata` may not search (`q`).
pub(super) fn read_messages(state: &Mutex<State>, request: &Request) -> Result<Response, Response> {
    let rest = request.path["/gmail/v1/users/".len()..].to_owned();
    let (path_user, tail) = rest
        .split_once("/messages")
        .ok_or_else(|| google_error(404, "Not Found", "notFound", "NOT_FOUND"))?;
    let mut state = lock(state);
    let token = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let grant = token
        .and_then(|token| state.access_tokens.get(token))
        .filter(|grant| !grant.revoked && !grant.expired)
        .ok_or_else(unauthenticated)?;
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    if !READ_SCOPES.iter().any(|scope| scopes.contains(scope)) {
        return Err(google_error_detail(
            403,
            "Request had insufficient authentication scopes.",
            "Insufficient Permission",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        ));
    }
    let user = percent_decode(path_user).unwrap_or_default();
    if user != "me" && !user.eq_ignore_ascii_case(&grant.user) {
        return Err(google_error(
            403,
            "Delegation denied",
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    let grant_user = grant.user.clone();
    let query = request.query_map();
    let metadata_only = !scopes.iter().any(|s| READ_SCOPES[1..].contains(s));
    if metadata_only && query.contains_key("q") {
        return Err(google_error(
            403,
            "Metadata scope does not support 'q' parameter",
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    // A read costs quota units of the same per-user minute as sends.
    if let Some(refused) = over_quota(&mut state, &grant_user, READ_UNITS, 0) {
        return Err(refused);
    }
    let own: Vec<&Delivered> = state
        .messages
        .iter()
        .rev()
        .filter(|m| m.user.eq_ignore_ascii_case(&grant_user))
        .collect();
    match tail.strip_prefix('/') {
        None => {
            let max: usize = query
                .get("maxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            let listed: Vec<Value> = own
                .iter()
                .take(max)
                .map(|m| json!({"id": m.id, "threadId": m.thread_id}))
                .collect();
            Ok(Response::json(
                200,
                &json!({"messages": listed, "resultSizeEstimate": listed.len()}),
            ))
        }
        Some(id) => {
            let message = own.iter().find(|m| m.id == id).ok_or_else(|| {
                google_error(
                    404,
                    "Requested entity was not found.",
                    "notFound",
                    "NOT_FOUND",
                )
            })?;
            let text = String::from_utf8_lossy(&message.raw);
            let headers: Vec<Value> = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| name.eq_ignore_ascii_case("message-id"))
                .map(|(name, value)| json!({"name": name, "value": value.trim()}))
                .collect();
            Ok(Response::json(
                200,
                &json!({
                    "id": message.id,
                    "threadId": message.thread_id,
                    "labelIds": ["SENT"],
                    "payload": {"headers": headers},
                }),
            ))
        }
    }
}

/// Which endpoint a path is, and its percent-decoded user id.
fn parse_send_path(path: &str) -> Option<(Endpoint, String)> {
    let (endpoint, rest) = [
        (Endpoint::Json, "/gmail/v1/users/"),
        (Endpoint::Upload, "/upload/gmail/v1/users/"),
        (Endpoint::Resumable, "/resumable/upload/gmail/v1/users/"),
    ]
    .into_iter()
    .find_map(|(endpoint, prefix)| Some((endpoint, path.strip_prefix(prefix)?)))?;
    let user = rest.strip_suffix("/messages/send")?;
    if user.is_empty() || user.contains('/') {
        return None;
    }
    Some((endpoint, percent_decode(user)?))
}

/// Checks the bearer token and the user id; returns (token, sending user).
fn authenticate(
    state: &State,
    request: &Request,
    path_user: &str,
) -> Result<(String, String), Response> {
    let token = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let grant = token
        .and_then(|token| state.access_tokens.get(token))
        .filter(|grant| !grant.revoked && !grant.expired);
    let (Some(token), Some(grant)) = (token, grant) else {
        return Err(unauthenticated());
    };
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    if !SEND_SCOPES.iter().any(|scope| scopes.contains(scope)) {
        return Err(google_error_detail(
            403,
            "Request had insufficient authentication scopes.",
            "Insufficient Permission",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        )
        .with_header(
            "WWW-Authenticate",
            &format!(
                "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", \
                 scope=\"{GMAIL_SEND_SCOPE}\""
            ),
        ));
    }
    if path_user != "me" && !path_user.eq_ignore_ascii_case(&grant.user) {
        let message = format!("Delegation denied for {}", grant.user);
        return Err(google_error(
            403,
            &message,
            "forbidden",
            "PERMISSION_DENIED",
        ));
    }
    Ok((token.to_owned(), grant.user.clone()))
}

/// Starts a resumable upload: answers with the session URL.
fn start_session(
    state: &mut State,
    request: &Request,
    user: String,
    access_token: String,
) -> Result<Response, Response> {
    if let Some(media_type) = request.header("x-upload-content-type") {
        check_media_type(media_type)?;
    }
    let total = match request.header("x-upload-content-length") {
        None => None,
        Some(length) => Some(
            length
                .parse::<usize>()
                .map_err(|_| invalid_argument("Invalid X-Upload-Content-Length header."))?,
        ),
    };
    if total.is_some_and(|total| total > MAX_MESSAGE_BYTES) {
        return Err(too_large());
    }
    let thread_id = parse_metadata(&request.body)?;
    let id = random_hex(16);
    state.sessions.insert(
        id.clone(),
        Session {
            user,
            access_token,
            thread_id,
            total,
            received: Vec::new(),
            result: None,
        },
    );
    let location = format!("{}/upload-session/{id}", state.base);
    Ok(Response::new(200)
        .with_header("Location", &location)
        .with_header("X-GUploader-UploadID", &id))
}

/// A request to a resumable session URL: a chunk or a status query.
pub(super) fn chunk(state: &Mutex<State>, request: &Request) -> Response {
    let mut guard = lock(state);
    let state = &mut *guard;
    if request.header("authorization").is_some() {
        state.chunks_with_authorization += 1;
    }
    if !matches!(request.method.as_str(), "PUT" | "POST") {
        return google_error(405, "Method not allowed.", "badRequest", "INVALID_ARGUMENT");
    }
    let id = request
        .path
        .trim_start_matches("/upload-session/")
        .to_owned();
    let range = match request.header("content-range") {
        None => ContentRange::Whole,
        Some(value) => match parse_content_range(value) {
            Some(range) => range,
            None => return invalid_argument("Failed to parse Content-Range header."),
        },
    };
    let Some(session) = state.sessions.get_mut(&id) else {
        return google_error(404, "Upload session not found.", "notFound", "NOT_FOUND");
    };
    if let Some(result) = &session.result {
        return result.clone();
    }
    if !matches!(range, ContentRange::Query { .. }) && std::mem::take(&mut state.fail_chunk) {
        return unavailable();
    }
    let body = &request.body;
    let (start, total) = match range {
        ContentRange::Query { total } => {
            if let Some(total) = total {
                session.total.get_or_insert(total);
            }
            return incomplete(session.received.len());
        }
        ContentRange::Whole => (0, Some(body.len())),
        ContentRange::Bytes { start, end, total } => {
            if end + 1 - start != body.len() {
                return invalid_argument("Content-Range does not match the request body's length.");
            }
            (start, total)
        }
    };
    if start > session.received.len() {
        return invalid_argument(&format!(
            "Invalid request. According to the Content-Range header, the upload offset is {start} \
             byte(s), which exceeds already uploaded size of {} byte(s).",
            session.received.len()
        ));
    }
    if let Some(total) = total {
        if session.total.is_some_and(|known| known != total) {
            return invalid_argument(
                "The total size in Content-Range does not match the upload's size.",
            );
        }
        session.total = Some(total);
    }
    if session.total.is_some_and(|total| total > MAX_MESSAGE_BYTES)
        || start + body.len() > MAX_MESSAGE_BYTES
    {
        state.sessions.remove(&id);
        return too_large();
    }
    session.received.truncate(start);
    session.received.extend_from_slice(body);
    match session.total {
        Some(total) if session.received.len() > total => {
            invalid_argument("More bytes were uploaded than the Content-Range total.")
        }
        Some(total) if session.received.len() == total => {
            let raw = std::mem::take(&mut session.received);
            let (user, token) = (session.user.clone(), session.access_token.clone());
            let thread_id = session.thread_id.take();
            let result = deliver(state, &user, &token, raw, thread_id, "resumable");
            if let Some(session) = state.sessions.get_mut(&id) {
                session.result = Some(result.clone());
            }
            result
        }
        _ => incomplete(session.received.len()),
    }
}

/// A parsed `Content-Range` request header.
#[derive(Debug, Clone, Copy)]
enum ContentRange {
    /// `bytes */TOTAL`: how much has arrived?
    Query { total: Option<usize> },
    /// `bytes START-END/TOTAL` (TOTAL may be `*`).
    Bytes {
        start: usize,
        end: usize,
        total: Option<usize>,
    },
    /// No header: the body is the whole upload.
    Whole,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some(ContentRange::Query { total });
    }
    let (start, end) = range.trim().split_once('-')?;
    let (start, end): (usize, usize) = (start.parse().ok()?, end.parse().ok()?);
    if end < start || total.is_some_and(|total| end >= total) {
        return None;
    }
    Some(ContentRange::Bytes { start, end, total })
}

/// 308 "Resume Incomplete", with the bytes kept so far.
fn incomplete(received: usize) -> Response {
    let response = Response::new(308);
    if received == 0 {
        response
    } else {
        response.with_header("Range", &format!("bytes=0-{}", received - 1))
    }
}

/// Checks and stores a message, answering like Gmail.
fn deliver(
    state: &mut State,
    user: &str,
    access_token: &str,
    raw: Vec<u8>,
    thread_id: Option<String>,
    upload_type: &str,
) -> Response {
    if raw.len() > MAX_MESSAGE_BYTES {
        return too_large();
    }
    if !has_recipient(&raw) {
        return invalid_argument("Invalid To header");
    }
    if let Some(refused) = over_quota(state, user, SEND_UNITS, 1) {
        return refused;
    }
    let id = random_hex(8);
    let thread_id = thread_id.unwrap_or_else(|| id.clone());
    let at_millis = (state.quotas.now() * 1000.0) as u64;
    state.messages.push(Delivered {
        user: user.to_owned(),
        raw,
        id: id.clone(),
        thread_id: thread_id.clone(),
        upload_type: upload_type.to_owned(),
        access_token: access_token.to_owned(),
        at_millis,
    });
    Response::json(
        200,
        &json!({"id": id, "threadId": thread_id, "labelIds": ["SENT"]}),
    )
}

/// Charges `user` the quota of one request: `units` of the per-user
/// minute, `messages` of the day. `None` when it fits; else Gmail's answer.
///
/// Gmail answers both with 429 `RESOURCE_EXHAUSTED` and the time to retry
/// in the message rather than in a `Retry-After` header ("User-rate limit
/// exceeded.  Retry after 2026-04-19T23:39:25.148Z"); the daily sending
/// limit adds "(Mail sending)" (Gmail API guide, "Resolve errors": 429
/// "User-rate limit exceeded" "(Mail sending)" "with time to retry").
fn over_quota(state: &mut State, user: &str, units: u64, messages: u64) -> Option<Response> {
    let (retry_at, suffix) = match state.quotas.take(user, units, messages) {
        Verdict::Allowed => return None,
        Verdict::OverMinute { retry_at } => (retry_at, ""),
        Verdict::OverDay { retry_at } => (retry_at, " (Mail sending)"),
    };
    let message = format!(
        "User-rate limit exceeded.  Retry after {}{suffix}",
        rfc3339_millis(retry_at)
    );
    Some(google_error(
        429,
        &message,
        "rateLimitExceeded",
        "RESOURCE_EXHAUSTED",
    ))
}

/// Splits a `multipart/related` body into (metadata, media type, media).
fn parse_multipart(content_type: &str, body: &[u8]) -> Result<(Vec<u8>, String, Vec<u8>), String> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/related") {
        return Err(format!(
            "Invalid multipart request with content type {content_type:?}."
        ));
    }
    let boundary = params
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|boundary| !boundary.is_empty())
        .ok_or("Multipart request has no boundary.")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let malformed = || "Malformed multipart body.".to_owned();
    let mut pos = (0..body.len())
        .find(|&i| (i == 0 || body[i - 1] == b'\n') && body[i..].starts_with(&delimiter))
        .ok_or_else(malformed)?;
    let mut parts = Vec::new();
    loop {
        pos += delimiter.len();
        let rest = body.get(pos..).ok_or_else(malformed)?;
        if rest.starts_with(b"--") {
            break;
        }
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let rest = &rest[padding..];
        let newline = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else {
            return Err(malformed());
        };
        let headers_start = pos + padding + newline;
        let after_delimiter = &body[headers_start..];
        let headers_end = if after_delimiter.starts_with(b"\r\n") {
            (0, 2)
        } else if after_delimiter.starts_with(b"\n") {
            (0, 1)
        } else {
            let crlf = find(after_delimiter, b"\r\n\r\n").map(|i| (i, 4));
            let lf = find(after_delimiter, b"\n\n").map(|i| (i, 2));
            crlf.into_iter().chain(lf).min().ok_or_else(malformed)?
        };
        let head = String::from_utf8_lossy(&after_delimiter[..headers_end.0]);
        let headers: Vec<(String, String)> = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let content_start = headers_start + headers_end.0 + headers_end.1;
        let content_end = match header("content-length") {
            Some(length) => {
                let length: usize = length.parse().map_err(|_| malformed())?;
                content_start
                    .checked_add(length)
                    .filter(|&end| end <= body.len())
                    .ok_or_else(malformed)?
            }
            None => {
                let mut needle = b"\n".to_vec();
                needle.extend_from_slice(&delimiter);
                content_start + find(&body[content_start..], &needle).ok_or_else(malformed)?
            }
        };
        let mut content = &body[content_start..content_end];
        let after = &body[content_end..];
        pos = if after.starts_with(b"\r\n") && after[2..].starts_with(&delimiter) {
            content_end + 2
        } else if after.starts_with(b"\n") && after[1..].starts_with(&delimiter) {
            content_end + 1
        } else {
            return Err(malformed());
        };
        if header("content-length").is_none() {
            content = content.strip_suffix(b"\r").unwrap_or(content);
        }
        parts.push((header("content-type").unwrap_or_default(), content.to_vec()));
    }
    let [(metadata_type, metadata), (media_type, media)]: [(String, Vec<u8>); 2] =
        parts.try_into().map_err(|_| {
            "A multipart upload needs exactly two parts: metadata and media.".to_owned()
        })?;
    let metadata_mime = metadata_type.split(';').next().unwrap_or("").trim();
    if !metadata_mime.eq_ignore_ascii_case("application/json") {
        return Err("The first part of a multipart upload must be application/json.".to_owned());
    }
    Ok((metadata, media_type, media))
}

/// Parses upload metadata (empty or a JSON object); returns its `threadId`.
fn parse_metadata(metadata: &[u8]) -> Result<Option<String>, Response> {
    if metadata.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(metadata)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid_argument("Invalid JSON payload received."))?;
    Ok(value["threadId"].as_str().map(str::to_owned))
}

/// Gmail takes only `message/*` media.
fn check_media_type(media_type: &str) -> Result<(), Response> {
    let mime = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("message/") {
        Ok(())
    } else {
        Err(invalid_argument(&format!(
            "Media type '{mime}' is not supported. Valid media types: [message/*]"
        )))
    }
}

/// Decodes a proto `bytes` JSON value: base64 or base64url, padded or not.
fn decode_bytes(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '/']) {
        STANDARD_ANY.decode(text).ok()
    } else {
        URL_SAFE_ANY.decode(text).ok()
    }
}

pub(super) fn google_error(code: u16, message: &str, reason: &str, status: &str) -> Response {
    google_error_detail(code, message, message, reason, status)
}

/// Google's JSON error, where the `errors[0].message` differs.
fn google_error_detail(
    code: u16,
    message: &str,
    detail: &str,
    reason: &str,
    status: &str,
) -> Response {
    Response::json(
        code,
        &json!({"error": {
            "code": code,
            "message": message,
            "errors": [{"message": detail, "domain": "global", "reason": reason}],
            "status": status,
        }}),
    )
}

fn invalid_argument(message: &str) -> Response {
    google_error(400, message, "invalidArgument", "INVALID_ARGUMENT")
}

fn unavailable() -> Response {
    google_error(
        503,
        "The service is currently unavailable.",
        "backendError",
        "UNAVAILABLE",
    )
}

fn too_large() -> Response {
    let message = "Request Too Large";
    Response::json(
        413,
        &json!({"error": {
            "code": 413,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "uploadTooLarge"}],
        }}),
    )
}

fn unauthenticated() -> Response {
    Response::json(
        401,
        &json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access \
                        token, login cookie or other valid authentication credential.",
            "errors": [{
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }],
            "status": "UNAUTHENTICATED",
        }}),
    )
    .with_header(
        "WWW-Authenticate",
        "Bearer realm=\"https://accounts.google.com/\"",
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
