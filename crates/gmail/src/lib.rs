//! apimail-gmail: send RFC 5322 messages through the Gmail API's
//! `users.messages.send`, via google-gmail1's upload path.
//!
//! - The message bytes go unchanged as `message/rfc822` media, always with
//!   `Scope::Send` (google-gmail1 would otherwise default to the
//!   full-mailbox scope).
//! - Messages up to [`RESUMABLE_THRESHOLD`] go in one multipart request, so
//!   a send with a cached token is exactly one HTTPS request. Larger ones
//!   use a resumable session in [`CHUNK_SIZE`] chunks: API gateways and
//!   proxies often cap single request bodies, and a failure shows up per
//!   chunk. On any failure the whole upload starts over in a new session,
//!   because google-gmail1's chunk loop advances past a failed chunk.
//! - Tokens come from any [`TokenSource`]; a 401 triggers one refresh and
//!   one resend. Retries of temporary failures are the caller's policy
//!   (`apimail_core::retry`), informed by [`TransportError::retry_after`].
//!
//! Service accounts with domain-wide delegation use yup-oauth2's
//! authenticator: see [`ServiceAccountTokens`].
//!
//! [`TokenSource`]: apimail_core::TokenSource
//! [`TransportError::retry_after`]: apimail_core::TransportError::retry_after

#![deny(missing_docs)]

mod client;
mod errors;
pub mod google_auth;
mod proxy;
mod scopes;
mod service_account;
mod tokens;
mod transport;

pub use client::{HttpsClient, https_client, probe};
pub use proxy::ProxyConnector;
pub use scopes::{METADATA_SCOPE, SEND_SCOPE, SENT_CHECK_DEPTH, SIGN_IN_SCOPES, consent_box};
pub use service_account::{ServiceAccountTokens, key_client_email};
pub use tokens::{GmailTokens, INVALID_GRANT_CAUSES};
pub use transport::{
    CHUNK_SIZE, DEFAULT_API_URL, GmailTransport, MAX_MESSAGE_BYTES, PACE, RESUMABLE_THRESHOLD,
    token_failure,
};
