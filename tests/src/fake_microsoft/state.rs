//! What the fake's handlers share: constants and the recorded state.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;

use crate::quota::Quotas;

/// The global Graph resource, the default audience of Graph tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Microsoft Graph's application id, also accepted as its resource.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Delegated `Mail.Send` in full form.
pub const MAIL_SEND: &str = "https://graph.microsoft.com/Mail.Send";
/// Delegated `Mail.ReadWrite` in full form.
pub const MAIL_READWRITE: &str = "https://graph.microsoft.com/Mail.ReadWrite";
/// Delegated `User.Read` in full form.
pub const USER_READ: &str = "https://graph.microsoft.com/User.Read";
/// The app-only scope for the global cloud.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The device code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `client_assertion_type` of certificate (JWT) client authentication.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The user who signs in unless [`FakeMicrosoft::set_user`](super::FakeMicrosoft::set_user) says otherwise.
pub const DEFAULT_USER: &str = "user@contoso.com";
/// The user code of every device code.
pub const USER_CODE: &str = "ABCD-EFGH";
/// The verification URI of every device code.
pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";
/// The tenant id in ID tokens issued through `common`, `organizations` or
/// a domain (a GUID tenant is echoed).
pub const FAKE_TENANT_ID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
/// Largest Graph request body: 4 MiB ("The maximum request length
/// supported is 4MB.").
pub const MAX_REQUEST_BYTES: usize = 4_194_304;
/// Largest upload-URL chunk: 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 4_194_304;
/// "3 MB": attachments from this size on must use an upload session, and
/// upload sessions for smaller ones are refused (unless allowed with
/// [`FakeMicrosoft::allow_small_upload_sessions`](super::FakeMicrosoft::allow_small_upload_sessions)).
pub const UPLOAD_SESSION_MIN_BYTES: u64 = 3_145_728;
/// Exchange Online's message rate limit: 30 messages a minute per mailbox.
pub const MESSAGES_PER_MINUTE: u64 = 30;
/// Exchange Online's recipient rate limit: 10,000 recipients a day per
/// mailbox.
pub const RECIPIENTS_PER_DAY: u64 = 10_000;
/// Largest attachment an upload session takes: 150 MiB.
pub const MAX_ATTACHMENT_BYTES: u64 = 157_286_400;

/// A failure to inject into upcoming Graph API requests (not identity
/// requests, not upload-URL requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `ApplicationThrottled`, "Application is over its
    /// MailboxConcurrency limit.", with `Retry-After` if given.
    Status429 {
        /// Seconds for the `Retry-After` header.
        retry_after_secs: Option<u64>,
    },
    /// 503 `ServiceNotAvailable`.
    Status503,
    /// 504 `GatewayTimeout`.
    Status504,
    /// Read the request, then close the connection without answering.
    DropConnection,
    /// Handle the request normally, then close the connection without
    /// answering: the request took effect, its answer is lost.
    LoseAnswer,
    /// Sleep this long (counted as in flight), then handle the request
    /// normally.
    Slow(Duration),
    /// Any Graph error: `{"error":{"code":code,"message":message,...}}`.
    Error {
        /// HTTP status.
        status: u16,
        /// Graph error code.
        code: String,
        /// Graph error message.
        message: String,
    },
}

/// What the user does with a device code, once the pending polls are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceOutcome {
    /// Signs in: the next poll gets tokens.
    #[default]
    Approve,
    /// Declines: polls get `authorization_declined`.
    Decline,
    /// Lets the code expire: polls get `expired_token`.
    Expire,
    /// Like `Approve`, but the very first poll gets `slow_down`.
    SlowDownOnce,
}

/// A file attachment of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The attachment id Graph returned.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `contentType` (`application/octet-stream` if none was given).
    pub content_type: String,
    /// `contentId`, if given.
    pub content_id: Option<String>,
    /// `isInline`.
    pub is_inline: bool,
    /// The decoded content.
    pub bytes: Vec<u8>,
    /// `"direct"` (`POST attachments`) or `"upload-session"`.
    pub via: String,
}

/// A message Graph accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sending mailbox's address (as registered).
    pub mailbox: String,
    /// `"sendMail-mime"`, `"sendMail-json"` or `"draft"`.
    pub via: String,
    /// The decoded MIME (sendMail or a MIME draft); empty for JSON.
    pub mime: Vec<u8>,
    /// The JSON body (sendMail) or message (JSON draft).
    pub json: Option<Value>,
    /// A sent draft's attachments, in the order they were added.
    pub attachments: Vec<Attachment>,
    /// The access token of the send request.
    pub access_token: String,
}

/// A draft that was neither sent nor deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Message id.
    pub id: String,
    /// The mailbox's address.
    pub mailbox: String,
    /// The decoded MIME; empty for a JSON draft.
    pub mime: Vec<u8>,
    /// The JSON message, for a JSON draft.
    pub json: Option<Value>,
    /// Attachments added so far.
    pub attachments: Vec<Attachment>,
}

/// One `PUT` to an upload URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The upload session's id (the last path segment of its URL).
    pub session: String,
    /// `Content-Range` start (0 if unparseable).
    pub start: u64,
    /// `Content-Range` end, inclusive (0 if unparseable).
    pub end: u64,
    /// `Content-Range` total (0 if unparseable).
    pub total: u64,
    /// Body length.
    pub len: usize,
    /// Whether it carried an `Authorization` header.
    pub had_authorization: bool,
    /// The status answered, 0 if the connection was dropped.
    pub status: u16,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) base: String,
    pub(super) clients: HashMap<String, Client>,
    pub(super) redirect_uris: HashMap<String, Vec<String>>,
    pub(super) user: String,
    pub(super) deny: bool,
    /// Lowercased address -> mailbox.
    pub(super) mailboxes: HashMap<String, Mailbox>,
    /// Lowercased addresses app-only tokens may use, once restricted.
    pub(super) app_allowed: Option<HashSet<String>>,
    pub(super) graph_resource: String,
    /// Base of upload URLs, when not `base`.
    pub(super) upload_base: Option<String>,
    pub(super) enforce_session_minimum: bool,
    pub(super) tenants: Vec<String>,
    pub(super) authorize_requests: Vec<HashMap<String, String>>,
    pub(super) codes: HashMap<String, Code>,
    pub(super) refresh_tokens: HashMap<String, RefreshGrant>,
    pub(super) access_tokens: HashMap<String, AccessGrant>,
    pub(super) token_forms: Vec<HashMap<String, String>>,
    pub(super) token_requests: HashMap<String, usize>,
    pub(super) total_token_requests: usize,
    pub(super) device_codes: HashMap<String, DeviceGrant>,
    pub(super) device_pending_polls: usize,
    pub(super) device_outcome: DeviceOutcome,
    pub(super) device_polls: usize,
    pub(super) device_code_requests: usize,
    pub(super) drafts: Vec<StoredDraft>,
    pub(super) deleted_drafts: usize,
    pub(super) sessions: HashMap<String, UploadSession>,
    pub(super) chunks: Vec<Chunk>,
    pub(super) chunk_puts: usize,
    pub(super) fail_chunk_at: Option<usize>,
    pub(super) lose_chunk_answer_at: Option<usize>,
    /// Lowercased delegated permissions left out of every grant.
    pub(super) withheld: HashSet<String>,
    /// AADSTS codes the next token requests answer with, in order.
    pub(super) token_errors: VecDeque<u32>,
    /// Sent Items: (mailbox, internetMessageId, id).
    pub(super) sent_items: Vec<(String, String, String)>,
    pub(super) uploads_with_authorization: usize,
    pub(super) delivered: Vec<Delivered>,
    pub(super) graph_requests: usize,
    pub(super) graph_log: Vec<(String, String, u16)>,
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
    pub(super) faults: VecDeque<Fault>,
    pub(super) forever: Option<Fault>,
    /// Per-mailbox sending quotas (off unless a test sets them).
    pub(super) quotas: Quotas,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Client {
    pub(super) public: bool,
    pub(super) secret: Option<String>,
    pub(super) certificate: Option<Certificate>,
    /// Set for apps registered with `add_app`: (tenant, roles).
    pub(super) app: Option<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
pub(super) struct Certificate {
    /// RSAPublicKey (PKCS#1) DER, which `ring` verifies with.
    pub(super) public_key: Vec<u8>,
    /// base64url SHA-1 of the certificate DER, unpadded.
    pub(super) x5t: String,
    /// base64url SHA-256 of the certificate DER, unpadded.
    pub(super) x5t_s256: String,
}

#[derive(Debug, Clone)]
pub(super) struct Mailbox {
    pub(super) address: String,
    pub(super) enabled: bool,
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Principal {
    /// A signed-in user (delegated).
    User(String),
    /// An application (app-only), by client id.
    App(String),
}

/// What a token or code stands for.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    pub(super) principal: Principal,
    pub(super) client_id: String,
    pub(super) tenant: String,
    /// The resource as requested, e.g. `https://graph.microsoft.com`.
    pub(super) resource: String,
    /// Short permission names: delegated scopes or app roles.
    pub(super) permissions: Vec<String>,
    pub(super) openid: bool,
    pub(super) offline: bool,
}

#[derive(Debug)]
pub(super) struct Code {
    pub(super) grant: Grant,
    pub(super) redirect_uri: String,
    pub(super) challenge: String,
    pub(super) used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefreshStatus {
    Active,
    Rotated,
    Revoked,
}

#[derive(Debug)]
pub(super) struct RefreshGrant {
    pub(super) grant: Grant,
    pub(super) status: RefreshStatus,
}

#[derive(Debug)]
pub(super) struct AccessGrant {
    pub(super) grant: Grant,
    pub(super) expired: bool,
}

#[derive(Debug)]
pub(super) struct DeviceGrant {
    pub(super) grant: Grant,
    pub(super) pending_polls: usize,
    pub(super) slowed: bool,
    pub(super) redeemed: bool,
}

#[derive(Debug, Clone)]
pub(super) struct StoredDraft {
    pub(super) id: String,
    pub(super) mailbox: String,
    pub(super) mime: Vec<u8>,
    pub(super) json: Option<Value>,
    pub(super) attachments: Vec<Attachment>,
    pub(super) subject: String,
    pub(super) created: String,
    pub(super) conversation_id: String,
    pub(super) internet_message_id: String,
}

#[derive(Debug)]
pub(super) struct UploadSession {
    pub(super) authtoken: String,
    pub(super) mailbox: String,
    pub(super) draft_id: String,
    pub(super) name: String,
    pub(super) content_type: String,
    pub(super) content_id: Option<String>,
    pub(super) is_inline: bool,
    pub(super) size: u64,
    pub(super) received: Vec<u8>,
    pub(super) expires: String,
}
