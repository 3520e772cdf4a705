//! apimail-graph: send RFC 5322 messages through Microsoft Graph, via
//! graph-rs-sdk's typed request builders.
//!
//! # Routes
//!
//! - **Small messages** (base64 MIME up to [`MAX_REQUEST_BYTES`]) go in
//!   one `POST {mailbox}/sendMail` with `Content-Type: text/plain` and the
//!   base64 MIME as the body. Graph answers 202 with no body, so the
//!   [`Receipt`] carries no id. A 413 sends the message down the large
//!   route instead.
//! - **Large messages** (up to the configured maximum,
//!   [`DEFAULT_MAX_MESSAGE_BYTES`] by default) cannot go in one request.
//!   The attachment parts are cut out of the MIME (every header and body
//!   part stays byte-for-byte), the rest becomes a draft
//!   (`POST {mailbox}/messages`, base64 MIME), each attachment is added to
//!   it (`POST .../attachments` under [`UPLOAD_SESSION_THRESHOLD`], an
//!   upload session in [`CHUNK_BYTES`] chunks from there on), and the draft
//!   is sent (`POST .../messages/{id}/send`). The receipt carries the
//!   draft's id. This route needs the Mail.ReadWrite permission. With
//!   [`Transport::send_noted`], the draft is recorded in the notes so the
//!   next attempt re-sends a complete draft or deletes an incomplete one
//!   (see the `draft` module); with [`Transport::send_raw`], a draft is
//!   deleted after any failure.
//!
//! # Memory
//!
//! [`Transport::send_stored`] reads the outbox file whole only for
//! `sendMail` (a message up to 3,000,000 bytes, whose base64 fits in
//! [`MAX_REQUEST_BYTES`]). The large route never holds the message: one
//! streaming pass finds its MIME structure (a skeleton with long body runs
//! left out, which mail-parser classifies), the draft (at most 3,000,000
//! bytes, base64 at most 4 MB) is copied from the file without the
//! attachments' byte ranges, an attachment under
//! [`UPLOAD_SESSION_THRESHOLD`] is decoded into memory on its own, and each
//! upload-session chunk is decoded from the file just before its PUT. A
//! resume from an earlier offset decodes the part again from its start.
//!
//! # graph-rs-sdk, and where it is bypassed
//!
//! Every Graph API request is built with graph-rs-sdk's typed builders
//! (`me()`/`user(id)` → `send_mail`, `messages().create_messages`,
//! `message(id).attachments().create_attachments` /
//! `create_upload_session`, `message(id).send`,
//! `message(id).delete_messages`) on a `GraphClient` made from
//! `GraphClientConfiguration::new().access_token(..).timeout(..)` and
//! reused while the token stays the same (one connection pool), with
//! these deliberate choices:
//!
//! - The endpoint is always set with `use_test_endpoint` (the configured
//!   root plus `/v1.0`). `custom_endpoint`/`use_endpoint` **panic** for
//!   any host outside Microsoft's list, which would make a local fake or
//!   a gateway crash the program; `use_test_endpoint` does no host check.
//!   The URL was already checked (https, or http on a loopback host only),
//!   and `https_only(false)` is set only for a loopback http URL.
//! - No `retry(..)` (it re-POSTs `sendMail` at once on any 5xx: a double
//!   send), no `wait_for_retry_after_headers` (it waits without a cap),
//!   no `concurrency_limit` (a new limiter per request: it limits
//!   nothing). Retrying temporary failures is the caller's policy
//!   (`apimail_core::retry`), informed by
//!   [`TransportError::retry_after`]; this crate never re-sends a POST
//!   by itself, apart from once per request after a 401 with a refreshed
//!   token.
//! - At most [`MAX_CONCURRENT_REQUESTS`] requests are in flight per
//!   transport (Graph's per-mailbox concurrency limit), through a
//!   semaphore that clones share.
//! - Message bodies are raw `reqwest::Body` values with an explicit
//!   `text/plain` content type: a `&String` would be JSON-quoted.
//! - graph-rs-sdk splits the ids it renders into paths at `/`; when its
//!   URL differs from the correctly encoded one, the request is sent to
//!   the correctly encoded URL instead.
//! - Upload-session chunks go through a plain reqwest client, not
//!   graph-rs-sdk's upload helper (see [`CHUNK_BYTES`] for why).
//! - Tokens come from any [`TokenSource`], never from graph-oauth (its
//!   token URLs cannot be overridden and several of its flows are
//!   broken). App-only tokens: [`AppOnlyTokens`]; scopes and sign-in
//!   URLs per national cloud: [`cloud`].
//!
//! # Logging
//!
//! `tracing::debug!` records each request (method, Graph API path,
//! status, sizes, time) and the chosen route. Access tokens and upload
//! URLs (which carry their own authorization) are never logged; for
//! uploads only the host is.
//!
//! [`Receipt`]: apimail_core::Receipt
//! [`TokenSource`]: apimail_core::TokenSource
//! [`Transport::send_noted`]: apimail_core::Transport::send_noted
//! [`Transport::send_raw`]: apimail_core::Transport::send_raw
//! [`Transport::send_stored`]: apimail_core::Transport::send_stored
//! [`TransportError::retry_after`]: apimail_core::TransportError::retry_after

#![deny(missing_docs)]

mod app_only;
mod assertion;
pub mod cloud;
mod draft;
mod errors;
mod limit;
mod mime;
mod scan;
mod send;
mod source;
mod tokens;
mod transport;
mod upload;

pub use app_only::{AppCredential, AppOnlyTokens};
pub use assertion::{ASSERTION_LIFETIME_SECS, AssertionError, client_assertion};
pub use cloud::{
    Cloud, UnknownCloud, admin_consent_url, app_scope, authorize_url, delegated_scopes,
    device_code_url, token_url,
};
pub use draft::{NOTE_COMPLETE, NOTE_DRAFT_ID, NOTE_SEND_UNKNOWN, after_interruption};
pub use errors::{failure_hint, token_failure};
pub use limit::{MAX_CONCURRENT_REQUESTS, PACE};
pub use tokens::{
    GraphTokens, INVALID_GRANT_CAUSES, LimitOutOfRange, allows_large_messages, message_limit,
};
pub use transport::{
    API_VERSION, DEFAULT_API_URL, DEFAULT_MAX_MESSAGE_BYTES, GraphTransport, MAX_REQUEST_BYTES,
    Mailbox, UPLOAD_SESSION_THRESHOLD, probe,
};
pub use upload::{CHUNK_BYTES, MAX_RESUMES_PER_CHUNK};
