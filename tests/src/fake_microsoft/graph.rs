//! Microsoft Graph v1.0 mail endpoints: sendMail, drafts, attachments,
//! upload sessions and upload URLs, Sent Items, `/me`, and faults.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Value, json};

use super::state::{
    Attachment, Chunk, Delivered, Fault, GRAPH_APP_ID, Grant, MAX_ATTACHMENT_BYTES,
    MAX_CHUNK_BYTES, MAX_REQUEST_BYTES, Principal, State, StoredDraft, UPLOAD_SESSION_MIN_BYTES,
    UploadSession,
};
use crate::fake_common::{
    has_recipient, header_value, iso_time, now_secs, random_bytes, random_hex, utc, uuid,
};
use crate::http::{Reply, Request, Response, lock, percent_decode};
use crate::quota::{Verdict, seconds_until};

const ACCESS_DENIED: &str = "Access is denied. Check credentials and try again.";

pub(super) fn not_found() -> Response {
    Response::text(404, "Not Found\n")
}

/// A Graph error body. `innerError`'s ids are filled in by
/// [`finish_graph_response`].
fn graph_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {
            "code": code,
            "message": message,
            "innerError": {"date": graph_date(now_secs()), "request-id": "", "client-request-id": ""},
        }}),
    )
}

fn access_denied() -> Response {
    graph_error(403, "ErrorAccessDenied", ACCESS_DENIED)
}

fn too_large() -> Response {
    graph_error(
        413,
        "RequestEntityTooLarge",
        "The maximum request length supported is 4MB.",
    )
}

fn invalid_token(message: &str) -> Response {
    graph_error(401, "InvalidAuthenticationToken", message).with_header(
        "WWW-Authenticate",
        &format!(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/\
             oauth2/authorize\", client_id=\"{GRAPH_APP_ID}\""
        ),
    )
}

fn item_not_found() -> Response {
    graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Adds `request-id` / `client-request-id` to a Graph response, in its
/// headers and in an error body's `innerError`.
fn finish_graph_response(mut response: Response, request: &Request) -> Response {
    let request_id = uuid();
    let client_request_id = request
        .header("client-request-id")
        .map(str::to_owned)
        .unwrap_or_else(uuid);
    if response.status >= 400
        && let Ok(mut body) = serde_json::from_slice::<Value>(&response.body)
        && let Some(inner) = body["error"]["innerError"].as_object_mut()
    {
        inner.insert("request-id".into(), Value::String(request_id.clone()));
        inner.insert(
            "client-request-id".into(),
            Value::String(client_request_id.clone()),
        );
        response.body = body.to_string().into_bytes();
    }
    response
        .with_header("request-id", &request_id)
        .with_header("client-request-id", &client_request_id)
}

/// A Graph API request: counts it, tracks concurrency, applies faults,
/// serves it.
pub(super) fn graph(state: &Mutex<State>, request: &Request) -> Reply {
    let fault = {
        let mut state = lock(state);
        state.graph_requests += 1;
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.faults.pop_front().or_else(|| state.forever.clone())
    };
    let reply = match fault {
        None => Reply::Respond(graph_api(state, request)),
        Some(Fault::Slow(delay)) => {
            std::thread::sleep(delay);
            Reply::Respond(graph_api(state, request))
        }
        Some(Fault::DropConnection) => Reply::Drop,
        Some(Fault::LoseAnswer) => {
            graph_api(state, request);
            Reply::Drop
        }
        Some(Fault::Status429 { retry_after_secs }) => {
            let response = graph_error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            );
            Reply::Respond(match retry_after_secs {
                Some(secs) => response.with_header("Retry-After", &secs.to_string()),
                None => response,
            })
        }
        Some(Fault::Status503) => Reply::Respond(graph_error(
            503,
            "ServiceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        )),
        Some(Fault::Status504) => Reply::Respond(graph_error(
            504,
            "GatewayTimeout",
            "The gateway did not receive a timely response from the upstream server.",
        )),
        Some(Fault::Error {
            status,
            code,
            message,
        }) => Reply::Respond(graph_error(status, &code, &message)),
    };
    let reply = match reply {
        Reply::Respond(response) => Reply::Respond(finish_graph_response(response, request)),
        Reply::Drop => Reply::Drop,
    };
    let status = match &reply {
        Reply::Respond(response) => response.status,
        Reply::Drop => 0,
    };
    let mut state = lock(state);
    state.in_flight -= 1;
    state
        .graph_log
        .push((request.method.clone(), request.path.clone(), status));
    reply
}

/// Which mailbox a request names.
#[derive(Debug)]
enum Target {
    Me,
    User(String),
}

/// A Graph operation the fake serves.
#[derive(Debug)]
enum Operation {
    Profile,
    SendMail,
    CreateDraft,
    GetDraft(String),
    DeleteDraft(String),
    AddAttachment(String),
    CreateUploadSession(String),
    ListAttachments(String),
    SendDraft(String),
    ListSentItems,
}

impl Operation {
    /// The delegated scopes or app roles of which the operation needs one.
    fn permission(&self) -> &'static [&'static str] {
        match self {
            Operation::Profile => &["User.Read"],
            Operation::SendMail | Operation::SendDraft(_) => &["Mail.Send"],
            Operation::ListSentItems => &["Mail.Read", "Mail.ReadWrite"],
            _ => &["Mail.ReadWrite"],
        }
    }
}

/// Parses `/graph/v1.0/...` into (target, operation).
fn graph_route(request: &Request) -> Result<(Target, Operation), Response> {
    let Some(rest) = request.path.strip_prefix("/graph/v1.0/") else {
        let version = request
            .path
            .trim_start_matches("/graph")
            .trim_start_matches('/');
        let version = version.split('/').next().unwrap_or("");
        return Err(graph_error(
            400,
            "BadRequest",
            &format!("Invalid version: {version}"),
        ));
    };
    let segments: Vec<String> = rest
        .split('/')
        .map(|segment| percent_decode(segment).unwrap_or_else(|| segment.to_owned()))
        .collect();
    let not_found = |segment: &str| {
        graph_error(
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
        )
    };
    let (target, rest) = match segments.as_slice() {
        [first, rest @ ..] if first.eq_ignore_ascii_case("me") => (Target::Me, rest),
        [first, id, rest @ ..] if first.eq_ignore_ascii_case("users") && !id.is_empty() => {
            (Target::User(id.clone()), rest)
        }
        [first, ..] => return Err(not_found(first)),
        [] => return Err(not_found("")),
    };
    let is = |segment: &String, name: &str| segment.eq_ignore_ascii_case(name);
    let method = request.method.as_str();
    let operation = match (rest, method) {
        ([], "GET") if matches!(target, Target::Me) => Some(Operation::Profile),
        ([send], "POST") if is(send, "sendMail") => Some(Operation::SendMail),
        ([messages], "POST") if is(messages, "messages") => Some(Operation::CreateDraft),
        ([messages, id], "GET") if is(messages, "messages") => {
            Some(Operation::GetDraft(id.clone()))
        }
        ([messages, id], "DELETE") if is(messages, "messages") => {
            Some(Operation::DeleteDraft(id.clone()))
        }
        ([messages, id, attachments], "POST")
            if is(messages, "messages") && is(attachments, "attachments") =>
        {
            Some(Operation::AddAttachment(id.clone()))
        }
        ([messages, id, attachments], "GET")
            if is(messages, "messages") && is(attachments, "attachments") =>
        {
            Some(Operation::ListAttachments(id.clone()))
        }
        ([folders, folder, messages], "GET")
            if is(folders, "mailFolders")
                && is(folder, "sentitems")
                && is(messages, "messages") =>
        {
            Some(Operation::ListSentItems)
        }
        ([messages, id, attachments, create], "POST")
            if is(messages, "messages")
                && is(attachments, "attachments")
                && is(create, "createUploadSession") =>
        {
            Some(Operation::CreateUploadSession(id.clone()))
        }
        ([messages, id, send], "POST") if is(messages, "messages") && is(send, "send") => {
            Some(Operation::SendDraft(id.clone()))
        }
        _ => None,
    };
    let Some(operation) = operation else {
        let known = match rest {
            [] => matches!(target, Target::Me),
            [one] => is(one, "sendMail") || is(one, "messages"),
            [messages, _] => is(messages, "messages"),
            [messages, _, last] => {
                is(messages, "messages") && (is(last, "attachments") || is(last, "send"))
            }
            [messages, _, attachments, create] => {
                is(messages, "messages")
                    && is(attachments, "attachments")
                    && is(create, "createUploadSession")
            }
            _ => false,
        };
        return Err(if known {
            graph_error(
                405,
                "Request_BadRequest",
                &format!("The HTTP method '{method}' is not allowed for this resource."),
            )
        } else {
            not_found(rest.last().map(String::as_str).unwrap_or(""))
        });
    };
    Ok((target, operation))
}

/// Serves one Graph API request (after faults).
fn graph_api(state: &Mutex<State>, request: &Request) -> Response {
    let result = (|| {
        if request.body.len() > MAX_REQUEST_BYTES {
            return Err(too_large());
        }
        let mut guard = lock(state);
        let state = &mut *guard;
        let (token, grant) = authenticate(state, request)?;
        let (target, operation) = graph_route(request)?;
        let mailbox = resolve_mailbox(state, &grant, &target, operation.permission())?;
        match operation {
            Operation::Profile => Ok(profile(state, &mailbox)),
            Operation::SendMail => send_mail(state, request, &mailbox, &token),
            Operation::CreateDraft => create_draft(state, request, &mailbox),
            Operation::GetDraft(id) => {
                let draft = find_draft(state, &mailbox, &id)?;
                Ok(Response::json(200, &draft_json(state, draft)))
            }
            Operation::DeleteDraft(id) => {
                find_draft(state, &mailbox, &id)?;
                state.drafts.retain(|draft| draft.id != id);
                state.sessions.retain(|_, session| session.draft_id != id);
                state.deleted_drafts += 1;
                Ok(Response::new(204))
            }
            Operation::AddAttachment(id) => add_attachment(state, request, &mailbox, &id),
            Operation::CreateUploadSession(id) => {
                create_upload_session(state, request, &mailbox, &id)
            }
            Operation::SendDraft(id) => send_draft(state, &mailbox, &id, &token),
            Operation::ListAttachments(id) => {
                let draft = find_draft(state, &mailbox, &id)?;
                let value: Vec<Value> = draft
                    .attachments
                    .iter()
                    .map(|a| json!({"id": a.id, "name": a.name, "size": a.bytes.len()}))
                    .collect();
                Ok(Response::json(200, &json!({ "value": value })))
            }
            Operation::ListSentItems => list_sent_items(state, request, &mailbox),
        }
    })();
    result.unwrap_or_else(|response| response)
}

/// Checks the bearer token; returns it and its grant.
fn authenticate(state: &State, request: &Request) -> Result<(String, Grant), Response> {
    let header = request.header("authorization").unwrap_or("").trim();
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    if token.is_empty() {
        return Err(invalid_token("Access token is empty."));
    }
    let Some(access) = state.access_tokens.get(token) else {
        return Err(invalid_token(
            "CompactToken parsing failed with error code: 80049217",
        ));
    };
    if access.expired {
        return Err(invalid_token(
            "Access token has expired or is not yet valid.",
        ));
    }
    let resource = &access.grant.resource;
    if !resource.eq_ignore_ascii_case(&state.graph_resource)
        && !resource.eq_ignore_ascii_case(GRAPH_APP_ID)
    {
        return Err(invalid_token(
            "Access token validation failure. Invalid audience.",
        ));
    }
    Ok((token.to_owned(), access.grant.clone()))
}

/// Checks the permission and finds the mailbox a request may use; returns
/// its address.
fn resolve_mailbox(
    state: &State,
    grant: &Grant,
    target: &Target,
    permission: &[&str],
) -> Result<String, Response> {
    let address = match (target, &grant.principal) {
        (Target::Me, Principal::App(_)) => {
            return Err(graph_error(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            ));
        }
        (Target::Me, Principal::User(user)) => user.clone(),
        (Target::User(id), _) => id.clone(),
    };
    if !grant.permissions.iter().any(|p| {
        permission
            .iter()
            .any(|needed| p.eq_ignore_ascii_case(needed))
    }) {
        return Err(access_denied());
    }
    match &grant.principal {
        Principal::User(user) if !address.eq_ignore_ascii_case(user) => {
            return Err(access_denied());
        }
        Principal::User(_) => {}
        Principal::App(_) => {
            if !state.mailboxes.contains_key(&address.to_lowercase()) {
                return Err(invalid_user(&address));
            }
            if state
                .app_allowed
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&address.to_lowercase()))
            {
                return Err(access_denied());
            }
        }
    }
    let Some(mailbox) = state.mailboxes.get(&address.to_lowercase()) else {
        return Err(invalid_user(&address));
    };
    if !mailbox.enabled {
        return Err(graph_error(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    Ok(mailbox.address.clone())
}

fn invalid_user(address: &str) -> Response {
    graph_error(
        404,
        "ErrorInvalidUser",
        &format!("The requested user '{address}' is invalid."),
    )
}

/// `GET /me`.
fn profile(state: &State, mailbox: &str) -> Response {
    let name = mailbox.split('@').next().unwrap_or(mailbox);
    let digest = ring::digest::digest(&ring::digest::SHA256, mailbox.to_lowercase().as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Response::json(
        200,
        &json!({
            "@odata.context": format!("{}/graph/v1.0/$metadata#users/$entity", state.base),
            "id": format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]),
            "displayName": name,
            "mail": mailbox,
            "userPrincipalName": mailbox,
        }),
    )
}

/// The media type of a request, lowercased, without parameters.
fn media_type(request: &Request) -> String {
    request
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A request body as Graph reads it: base64 MIME or JSON.
#[derive(Debug)]
enum Body {
    Mime(Vec<u8>),
    Json(Value),
}

fn read_body(request: &Request) -> Result<Body, Response> {
    match media_type(request).as_str() {
        "text/plain" => {
            let text: Vec<u8> = request
                .body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            match general_purpose::STANDARD.decode(&text) {
                Ok(mime) if !mime.is_empty() => Ok(Body::Mime(mime)),
                _ => Err(graph_error(
                    400,
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                )),
            }
        }
        "application/json" => {
            if request.body.iter().all(u8::is_ascii_whitespace) {
                return Err(graph_error(
                    400,
                    "BadRequest",
                    "Empty Payload. JSON content expected.",
                ));
            }
            serde_json::from_slice::<Value>(&request.body)
                .ok()
                .filter(Value::is_object)
                .map(Body::Json)
                .ok_or_else(|| {
                    graph_error(
                        400,
                        "RequestBodyRead",
                        "Invalid JSON. A JSON object was expected.",
                    )
                })
        }
        other => Err(graph_error(
            415,
            "UnsupportedMediaType",
            &format!(
                "The content type '{other}' is not supported: use application/json, or \
                 text/plain for base64 MIME."
            ),
        )),
    }
}

fn no_recipients() -> Response {
    graph_error(
        400,
        "ErrorInvalidRecipients",
        "At least one recipient is not valid., A message can't be sent because it contains no \
         recipients.",
    )
}

/// Whether a JSON message has at least one recipient with an address.
fn json_has_recipient(message: &Value) -> bool {
    ["toRecipients", "ccRecipients", "bccRecipients"]
        .iter()
        .filter_map(|field| message[field].as_array())
        .flatten()
        .any(|recipient| {
            recipient["emailAddress"]["address"]
                .as_str()
                .is_some_and(|address| !address.trim().is_empty())
        })
}

/// Charges `mailbox` one message of its minute and `recipients` of its
/// day; `Err` with the answer when either is used up.
///
/// Over the message rate, Graph's throttling answer: 429 `TooManyRequests`
/// with a `Retry-After` in seconds (Microsoft Graph throttling guidance).
/// Exchange Online documents that it delays the excess of its 30 messages
/// a minute rather than refusing it; the fake refuses, which is stricter,
/// so that a test sees any send over the pace. Over the recipients of a
/// day, 429 `ErrorSubmissionQuotaExceeded` without a time to retry
/// (Exchange's SMTP form of it is "554 5.2.0
/// STOREDRV.Submission.Exception:SubmissionQuotaExceededException").
fn over_quota(state: &mut State, mailbox: &str, recipients: u64) -> Result<(), Response> {
    match state.quotas.take(mailbox, 1, recipients.max(1)) {
        Verdict::Allowed => Ok(()),
        Verdict::OverMinute { retry_at } => {
            let wait = seconds_until(state.quotas.now(), retry_at);
            Err(
                graph_error(429, "TooManyRequests", "Please retry again later.")
                    .with_header("Retry-After", &wait.to_string()),
            )
        }
        Verdict::OverDay { .. } => Err(graph_error(
            429,
            "ErrorSubmissionQuotaExceeded",
            "The sender's submission quota was exceeded.",
        )),
    }
}

/// The addresses of a MIME message's To, Cc and Bcc fields (each `@`).
fn mime_recipients(mime: &[u8]) -> u64 {
    crate::fake_common::header_fields(mime)
        .iter()
        .filter(|(name, _)| {
            ["to", "cc", "bcc"]
                .iter()
                .any(|field| name.eq_ignore_ascii_case(field))
        })
        .map(|(_, value)| value.matches('@').count() as u64)
        .sum()
}

/// The recipients of a JSON message.
fn json_recipients(message: &Value) -> u64 {
    ["toRecipients", "ccRecipients", "bccRecipients"]
        .iter()
        .filter_map(|field| message[field].as_array())
        .map(|list| list.len() as u64)
        .sum()
}

/// `POST .../sendMail`.
fn send_mail(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    token: &str,
) -> Result<Response, Response> {
    let (via, mime, json) = match read_body(request)? {
        Body::Mime(mime) => {
            if !has_recipient(&mime) {
                return Err(no_recipients());
            }
            over_quota(state, mailbox, mime_recipients(&mime))?;
            file_sent_copy(state, mailbox, &mime);
            ("sendMail-mime", mime, None)
        }
        Body::Json(body) => {
            let Some(message) = parameter(&body, "Message").filter(|m| m.is_object()) else {
                return Err(graph_error(
                    400,
                    "ErrorInvalidParameter",
                    "The value of the parameter 'Message' is empty.",
                ));
            };
            if !json_has_recipient(message) {
                return Err(no_recipients());
            }
            over_quota(state, mailbox, json_recipients(message))?;
            ("sendMail-json", Vec::new(), Some(body))
        }
    };
    state.delivered.push(Delivered {
        mailbox: mailbox.to_owned(),
        via: via.to_owned(),
        mime,
        json,
        attachments: Vec::new(),
        access_token: token.to_owned(),
    });
    Ok(Response::new(202))
}

/// The action parameter `name` of a JSON body. Graph matches these names
/// without regard to case: the generated SDKs send `Message`, the docs
/// show `message`.
fn parameter<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// `POST .../messages`: a draft from base64 MIME or JSON.
fn create_draft(state: &mut State, request: &Request, mailbox: &str) -> Result<Response, Response> {
    let (mime, json) = match read_body(request)? {
        Body::Mime(mime) => (mime, None),
        Body::Json(message) => (Vec::new(), Some(message)),
    };
    let subject = match &json {
        Some(message) => message["subject"].as_str().unwrap_or("").to_owned(),
        None => header_value(&mime, "subject").unwrap_or_default(),
    };
    let internet_message_id = header_value(&mime, "message-id").unwrap_or_else(|| {
        format!(
            "<{}@{}.prod.outlook.com>",
            random_hex(12),
            random_hex(4).to_uppercase()
        )
    });
    let draft = StoredDraft {
        id: graph_id(),
        mailbox: mailbox.to_owned(),
        mime,
        json,
        attachments: Vec::new(),
        subject,
        created: iso_time(now_secs()),
        conversation_id: graph_id(),
        internet_message_id,
    };
    let body = draft_json(state, &draft);
    state.drafts.push(draft);
    Ok(Response::json(201, &body))
}

/// A draft as Graph shows it (a few realistic fields).
fn draft_json(state: &State, draft: &StoredDraft) -> Value {
    json!({
        "@odata.context": format!(
            "{}/graph/v1.0/$metadata#users('{}')/messages/$entity",
            state.base, draft.mailbox
        ),
        "@odata.etag": format!("W/\"{}\"", random_hex(8)),
        "id": draft.id,
        "createdDateTime": draft.created,
        "lastModifiedDateTime": draft.created,
        "changeKey": random_hex(8),
        "categories": [],
        "hasAttachments": !draft.attachments.is_empty(),
        "internetMessageId": draft.internet_message_id,
        "subject": draft.subject,
        "importance": "normal",
        "parentFolderId": "AQMkADrafts",
        "conversationId": draft.conversation_id,
        "isRead": true,
        "isDraft": true,
        "webLink": format!(
            "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
            draft.id
        ),
    })
}

fn find_draft<'a>(state: &'a State, mailbox: &str, id: &str) -> Result<&'a StoredDraft, Response> {
    state
        .drafts
        .iter()
        .find(|draft| draft.id == id && draft.mailbox.eq_ignore_ascii_case(mailbox))
        .ok_or_else(item_not_found)
}

fn find_draft_mut<'a>(
    state: &'a mut State,
    mailbox: &str,
    id: &str,
) -> Result<&'a mut StoredDraft, Response> {
    state
        .drafts
        .iter_mut()
        .find(|draft| draft.id == id && draft.mailbox.eq_ignore_ascii_case(mailbox))
        .ok_or_else(item_not_found)
}

/// `POST .../messages/{id}/attachments`: a file attachment under 3 MiB.
fn add_attachment(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    id: &str,
) -> Result<Response, Response> {
    find_draft(state, mailbox, id)?;
    let Body::Json(body) = read_body(request)? else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "Attachments are posted as application/json.",
        ));
    };
    if body["@odata.type"].as_str() != Some("#microsoft.graph.fileAttachment") {
        return Err(graph_error(
            400,
            "RequestBodyRead",
            "The attachment must have \"@odata.type\": \"#microsoft.graph.fileAttachment\".",
        ));
    }
    let name = body["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'Name' is empty.",
        ));
    }
    let encoded = body["contentBytes"].as_str().unwrap_or("");
    let Ok(bytes) = general_purpose::STANDARD.decode(encoded) else {
        return Err(graph_error(
            400,
            "RequestBodyRead",
            "Cannot convert the literal value of 'contentBytes' to the expected type \
             'Edm.Binary'.",
        ));
    };
    if bytes.len() as u64 >= UPLOAD_SESSION_MIN_BYTES {
        return Err(too_large());
    }
    let attachment = Attachment {
        id: graph_id(),
        name,
        content_type: body["contentType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        content_id: body["contentId"].as_str().map(str::to_owned),
        is_inline: body["isInline"].as_bool().unwrap_or(false),
        bytes,
        via: "direct".to_owned(),
    };
    let response = json!({
        "@odata.context": format!(
            "{}/graph/v1.0/$metadata#users('{mailbox}')/messages('{id}')/attachments/$entity",
            state.base
        ),
        "@odata.type": "#microsoft.graph.fileAttachment",
        "@odata.mediaContentType": attachment.content_type,
        "id": attachment.id,
        "lastModifiedDateTime": iso_time(now_secs()),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.bytes.len(),
        "isInline": attachment.is_inline,
        "contentId": attachment.content_id,
        "contentLocation": null,
        "contentBytes": encoded,
    });
    find_draft_mut(state, mailbox, id)?
        .attachments
        .push(attachment);
    Ok(Response::json(201, &response))
}

/// `POST .../messages/{id}/attachments/createUploadSession`.
fn create_upload_session(
    state: &mut State,
    request: &Request,
    mailbox: &str,
    id: &str,
) -> Result<Response, Response> {
    find_draft(state, mailbox, id)?;
    let Body::Json(body) = read_body(request)? else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "createUploadSession takes application/json.",
        ));
    };
    let item = parameter(&body, "AttachmentItem")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| {
            graph_error(
                400,
                "ErrorInvalidParameter",
                "The value of the parameter 'AttachmentItem' is empty.",
            )
        })?;
    if !item["attachmentType"]
        .as_str()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("file"))
    {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "AttachmentItem.attachmentType must be 'file'.",
        ));
    }
    let name = item["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "The value of the parameter 'AttachmentItem.Name' is empty.",
        ));
    }
    let Some(size) = item["size"].as_u64().filter(|&size| size > 0) else {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "AttachmentItem.size must be a positive number of bytes.",
        ));
    };
    if size > MAX_ATTACHMENT_BYTES {
        return Err(graph_error(
            400,
            "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize",
            "The attachment size exceeds the maximum of 150 MB for an upload session.",
        ));
    }
    if state.enforce_session_minimum && size < UPLOAD_SESSION_MIN_BYTES {
        return Err(graph_error(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be at least 3 MB for an upload session; attach smaller files \
             with a single POST to the attachments navigation property.",
        ));
    }
    let session_id = random_hex(16);
    let authtoken = format!("eyJhbGciOiJSUzI1NiJ9.fake-{}", random_hex(24));
    let expires = iso_time(now_secs() + 6 * 3600);
    state.sessions.insert(
        session_id.clone(),
        UploadSession {
            authtoken: authtoken.clone(),
            mailbox: mailbox.to_owned(),
            draft_id: id.to_owned(),
            name,
            content_type: item["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_owned(),
            content_id: item["contentId"].as_str().map(str::to_owned),
            is_inline: item["isInline"].as_bool().unwrap_or(false),
            size,
            received: Vec::new(),
            expires: expires.clone(),
        },
    );
    Ok(Response::json(
        201,
        &json!({
            "@odata.context": format!(
                "{}/graph/v1.0/$metadata#microsoft.graph.uploadSession",
                state.base
            ),
            "uploadUrl": format!(
                "{}/upload/{session_id}?authtoken={authtoken}",
                state.upload_base.as_deref().unwrap_or(&state.base)
            ),
            "expirationDateTime": expires,
            "nextExpectedRanges": ["0-"],
        }),
    ))
}

/// `POST .../messages/{id}/send`.
fn send_draft(
    state: &mut State,
    mailbox: &str,
    id: &str,
    token: &str,
) -> Result<Response, Response> {
    let draft = find_draft(state, mailbox, id)?.clone();
    let has_recipient = match &draft.json {
        Some(message) => json_has_recipient(message),
        None => has_recipient(&draft.mime),
    };
    if !has_recipient {
        return Err(no_recipients());
    }
    let recipients = match &draft.json {
        Some(message) => json_recipients(message),
        None => mime_recipients(&draft.mime),
    };
    over_quota(state, mailbox, recipients)?;
    state.drafts.retain(|d| d.id != draft.id);
    state
        .sessions
        .retain(|_, session| session.draft_id != draft.id);
    // The draft leaves Drafts; its sent copy gets a new id in Sent Items.
    state.sent_items.push((
        draft.mailbox.clone(),
        draft.internet_message_id.clone(),
        graph_id(),
    ));
    state.delivered.push(Delivered {
        mailbox: draft.mailbox,
        via: "draft".to_owned(),
        mime: draft.mime,
        json: draft.json,
        attachments: draft.attachments,
        access_token: token.to_owned(),
    });
    Ok(Response::new(202))
}

/// Exchange files a copy of each sent message in Sent Items.
fn file_sent_copy(state: &mut State, mailbox: &str, mime: &[u8]) {
    if let Some(message_id) = header_value(mime, "message-id") {
        state
            .sent_items
            .push((mailbox.to_owned(), message_id, graph_id()));
    }
}

/// `GET .../mailFolders/sentitems/messages?$filter=internetMessageId eq '…'`:
/// the only filter the fake understands (Graph's OData string literal, `''`
/// for a quote).
fn list_sent_items(state: &State, request: &Request, mailbox: &str) -> Result<Response, Response> {
    let query = request.query_map();
    let wanted = match query.get("$filter") {
        None => None,
        Some(filter) => {
            let literal = filter
                .trim()
                .strip_prefix("internetMessageId eq '")
                .and_then(|rest| rest.strip_suffix('\''))
                .ok_or_else(|| {
                    graph_error(
                        400,
                        "BadRequest",
                        &format!("Invalid filter clause: the fake understands only internetMessageId eq '...', not {filter}"),
                    )
                })?;
            Some(literal.replace("''", "'"))
        }
    };
    let value: Vec<Value> = state
        .sent_items
        .iter()
        .filter(|(m, message_id, _)| {
            m.eq_ignore_ascii_case(mailbox) && wanted.as_ref().is_none_or(|w| w == message_id)
        })
        .map(|(_, message_id, id)| json!({"id": id, "internetMessageId": message_id}))
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "@odata.context": format!("{}/graph/v1.0/$metadata#users('{mailbox}')/mailFolders('sentitems')/messages", state.base),
            "value": value,
        }),
    ))
}

// ---- Upload URLs ------------------------------------------------------------

/// A request to an upload URL (pre-authenticated: no `Authorization`).
pub(super) fn upload(state: &Mutex<State>, request: &Request, session_id: &str) -> Reply {
    let mut guard = lock(state);
    let state = &mut *guard;
    let had_authorization = request.header("authorization").is_some();
    if had_authorization {
        state.uploads_with_authorization += 1;
    }
    if request.method == "PUT" {
        let index = state.chunk_puts;
        state.chunk_puts += 1;
        let range = request
            .header("content-range")
            .and_then(parse_content_range);
        let (start, end, total) = range.unwrap_or((0, 0, 0));
        let mut chunk = Chunk {
            session: session_id.to_owned(),
            start,
            end,
            total,
            len: request.body.len(),
            had_authorization,
            status: 0,
        };
        if state.fail_chunk_at == Some(index) {
            state.fail_chunk_at = None;
            state.chunks.push(chunk);
            return Reply::Drop;
        }
        let response = upload_request(state, request, session_id, had_authorization, range);
        let response = finish_graph_response(response, request);
        chunk.status = response.status;
        if state.lose_chunk_answer_at == Some(index) {
            state.lose_chunk_answer_at = None;
            chunk.status = 0;
            state.chunks.push(chunk);
            return Reply::Drop;
        }
        state.chunks.push(chunk);
        return response.into();
    }
    let response = upload_request(state, request, session_id, had_authorization, None);
    finish_graph_response(response, request).into()
}

fn upload_request(
    state: &mut State,
    request: &Request,
    session_id: &str,
    had_authorization: bool,
    range: Option<(u64, u64, u64)>,
) -> Response {
    if had_authorization {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: do not send an Authorization header with \
             requests to it.",
        );
    }
    let Some(session) = state.sessions.get_mut(session_id) else {
        return item_not_found();
    };
    if request.query_map().get("authtoken") != Some(&session.authtoken) {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "The authtoken of the upload URL is missing or invalid.",
        );
    }
    match request.method.as_str() {
        "GET" => Response::json(200, &session_status(session)),
        "DELETE" => {
            state.sessions.remove(session_id);
            Response::new(204)
        }
        "PUT" => put_chunk(state, request, session_id, range),
        _ => graph_error(
            405,
            "Request_BadRequest",
            "An upload URL takes PUT, GET and DELETE.",
        ),
    }
}

fn session_status(session: &UploadSession) -> Value {
    json!({
        "expirationDateTime": session.expires,
        "nextExpectedRanges": [session.received.len().to_string()],
    })
}

fn put_chunk(
    state: &mut State,
    request: &Request,
    session_id: &str,
    range: Option<(u64, u64, u64)>,
) -> Response {
    let invalid = |message: &str| graph_error(400, "InvalidRequest", message);
    let Some(session) = state.sessions.get_mut(session_id) else {
        return item_not_found();
    };
    let Some((start, end, total)) = range else {
        return invalid("The Content-Range header is missing or malformed.");
    };
    if request.header("content-length").is_none() {
        return graph_error(
            411,
            "LengthRequired",
            "The Content-Length header is required.",
        );
    }
    let body = &request.body;
    if (end - start + 1) as usize != body.len() {
        return invalid("The Content-Range header does not match the length of the body.");
    }
    if body.len() > MAX_CHUNK_BYTES {
        return invalid("The Content-Range header length exceeds the chunk size limit of 4 MB.");
    }
    if total != session.size {
        return invalid(&format!(
            "The Content-Range total {total} does not match the upload session's size {}.",
            session.size
        ));
    }
    let next = session.received.len() as u64;
    if start != next {
        return Response::json(
            416,
            &json!({
                "error": {
                    "code": "InvalidRange",
                    "message": format!(
                        "The uploaded fragment must start at byte {next}, not {start}. Expected \
                         ranges: {next}-"
                    ),
                    "innerError": {"date": graph_date(now_secs()), "request-id": "", "client-request-id": ""},
                },
                "nextExpectedRanges": [next.to_string()],
            }),
        );
    }
    session.received.extend_from_slice(body);
    if (session.received.len() as u64) < session.size {
        return Response::json(
            200,
            &json!({
                "@odata.context": format!(
                    "{}/graph/v1.0/$metadata#microsoft.graph.uploadSession",
                    state.base
                ),
                "expirationDateTime": session.expires,
                "nextExpectedRanges": [session.received.len().to_string()],
            }),
        );
    }
    let Some(session) = state.sessions.remove(session_id) else {
        return item_not_found();
    };
    let attachment = Attachment {
        id: graph_id(),
        name: session.name,
        content_type: session.content_type,
        content_id: session.content_id,
        is_inline: session.is_inline,
        bytes: session.received,
        via: "upload-session".to_owned(),
    };
    let location = format!(
        "{}/graph/v1.0/users('{}')/messages('{}')/attachments('{}')",
        state.base, session.mailbox, session.draft_id, attachment.id
    );
    match find_draft_mut(state, &session.mailbox, &session.draft_id) {
        Ok(draft) => draft.attachments.push(attachment),
        Err(response) => return response,
    }
    Response::new(201).with_header("Location", &location)
}

/// Parses `bytes START-END/TOTAL`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let (start, end, total): (u64, u64, u64) = (
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (start <= end && end < total).then_some((start, end, total))
}

/// An Exchange-style item id: `AAMkAD` + base64url with padding (may hold
/// `-`, `_` and `=`).
fn graph_id() -> String {
    format!(
        "AAMkAD{}",
        general_purpose::URL_SAFE.encode(random_bytes(40))
    )
}

/// Graph's `innerError.date`: `2026-11-21T10:00:00`.
fn graph_date(secs: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    utc(secs).format(&format).unwrap_or_default()
}
