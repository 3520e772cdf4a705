//! What the fake's handlers share: constants and the recorded state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::http::Response;
use crate::quota::Quotas;

/// The scope that allows `users.messages.send` and nothing else.
pub const GMAIL_SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";
/// Full access to Gmail.
pub const MAIL_SCOPE: &str = "https://mail.google.com/";
/// Largest message Gmail accepts: 35 MiB.
pub const MAX_MESSAGE_BYTES: usize = 36_700_160;
/// `client_email` of the fixture service account.
pub const FIXTURE_SERVICE_ACCOUNT: &str = "apimail-test@apimail-test.iam.gserviceaccount.com";
/// The JWT-bearer grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Quota units one `messages.send` costs (Gmail's per-method table).
pub const SEND_UNITS: u64 = 100;
/// Quota units one `messages.list` or `messages.get` costs.
pub const READ_UNITS: u64 = 5;
/// Gmail's per-user rate limit: 15,000 quota units a minute, so 150
/// `messages.send` a minute.
pub const UNITS_PER_MINUTE: u64 = 15_000;

/// A failure to inject into upcoming Gmail send requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `RESOURCE_EXHAUSTED` / `rateLimitExceeded`, with `Retry-After`
    /// if given.
    Status429 {
        /// Seconds for the `Retry-After` header.
        retry_after_secs: Option<u64>,
    },
    /// 403 `userRateLimitExceeded`, "User-rate limit exceeded.".
    RateLimit403,
    /// 503 `backendError` / `UNAVAILABLE`.
    Status503,
    /// 500 `backendError` / `INTERNAL`.
    Status500,
    /// Read the request, then close the connection without answering.
    DropConnection,
    /// Accept and store the message, then close the connection without
    /// answering: the client cannot know the message went through.
    AcceptThenDrop,
    /// Accept and store the message, then answer 504 as a gateway whose
    /// upstream answered too late would.
    AcceptThen504,
    /// Sleep this long, then handle the request normally.
    Slow(Duration),
}

/// A message the fake Gmail accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sending user (the access token's user).
    pub user: String,
    /// The RFC 5322 message bytes exactly as received.
    pub raw: Vec<u8>,
    /// Message id returned to the client.
    pub id: String,
    /// Thread id returned to the client.
    pub thread_id: String,
    /// `"multipart"`, `"media"`, `"resumable"` or `"json"`.
    pub upload_type: String,
    /// The access token the send was authorized with.
    pub access_token: String,
    /// When the fake accepted it: Unix milliseconds on its quota clock
    /// (see [`FakeGoogle::clock_now`](super::FakeGoogle::clock_now)).
    pub at_millis: u64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) base: String,
    pub(super) clients: HashMap<String, String>,
    pub(super) user_email: String,
    pub(super) deny: bool,
    /// Scopes the user unticks on the consent screen.
    pub(super) unticked: HashSet<String>,
    /// client_email -> RSAPublicKey (PKCS#1) DER.
    pub(super) service_accounts: HashMap<String, Vec<u8>>,
    /// (client_email, user) pairs allowed to impersonate.
    pub(super) delegations: HashSet<(String, String)>,
    pub(super) authorize_requests: Vec<HashMap<String, String>>,
    pub(super) codes: HashMap<String, Code>,
    pub(super) refresh_tokens: HashMap<String, RefreshGrant>,
    pub(super) access_tokens: HashMap<String, AccessGrant>,
    pub(super) token_forms: Vec<HashMap<String, String>>,
    pub(super) token_requests: HashMap<String, usize>,
    pub(super) total_token_requests: usize,
    pub(super) revoke_requests: usize,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) messages: Vec<Delivered>,
    pub(super) send_requests: usize,
    pub(super) chunks_with_authorization: usize,
    pub(super) faults: VecDeque<Fault>,
    pub(super) forever: Option<Fault>,
    pub(super) fail_chunk: bool,
    /// Per-user sending quotas (off unless a test sets them).
    pub(super) quotas: Quotas,
}

#[derive(Debug)]
pub(super) struct Code {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) challenge: String,
    pub(super) scope: String,
    pub(super) user: String,
    pub(super) used: bool,
}

#[derive(Debug)]
pub(super) struct RefreshGrant {
    pub(super) client_id: String,
    pub(super) user: String,
    pub(super) scope: String,
    pub(super) revoked: bool,
}

#[derive(Debug)]
pub(super) struct AccessGrant {
    pub(super) user: String,
    pub(super) scope: String,
    pub(super) refresh_token: Option<String>,
    pub(super) revoked: bool,
    pub(super) expired: bool,
}

/// A resumable upload in progress (or finished: `result` is set).
#[derive(Debug)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) access_token: String,
    pub(super) thread_id: Option<String>,
    pub(super) total: Option<usize>,
    pub(super) received: Vec<u8>,
    pub(super) result: Option<Response>,
}
