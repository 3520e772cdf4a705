//! Access tokens and the errors of getting one.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::secret::Secret;

/// How long before its expiry a token is treated as expired, so it does
/// not die in flight.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// A bearer token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer value.
    pub secret: Secret,
    /// Unix seconds; `None` when the server did not say.
    pub expires_at: Option<i64>,
}

impl AccessToken {
    /// Whether it is still usable for at least [`EXPIRY_MARGIN`].
    pub fn is_fresh(&self) -> bool {
        self.expires_at
            .is_some_and(|at| at > now_unix() + EXPIRY_MARGIN.as_secs() as i64)
    }
}

/// What a token endpoint returned for a code exchange or a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: AccessToken,
    /// A new refresh token, when the server issued or rotated one.
    pub refresh_token: Option<Secret>,
    /// Granted scopes, when the server listed them.
    pub scopes: Option<Vec<String>>,
    /// The OpenID `id_token`, when present (used to learn the address).
    pub id_token: Option<Secret>,
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The refresh token or grant is expired, revoked or unknown
    /// (`invalid_grant`): only a new login helps.
    #[error("the authorization has expired or was revoked (invalid_grant){}", describe(.description))]
    InvalidGrant {
        /// The server's `error_description`.
        description: Option<String>,
    },
    /// The server refused the client or the request (`invalid_client`,
    /// `unauthorized_client`, `invalid_scope`, ...).
    #[error("the token endpoint refused the request ({code}){}", describe(.description))]
    Refused {
        /// The OAuth error code.
        code: String,
        /// The server's `error_description`.
        description: Option<String>,
    },
    /// The token endpoint could not be reached or failed (5xx, timeout):
    /// worth retrying later.
    #[error("the token endpoint could not be reached")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The token URL answered with something that is not OAuth at all (a
    /// 404, a web page): the URL is wrong, not the credentials.
    #[error("{url} is not an OAuth token endpoint: it answered HTTP {status} with {what}")]
    NotTokenEndpoint {
        /// The URL, without its query.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What came back instead ("a web page", ...).
        what: String,
    },
    /// A timeout (temporary), or a TLS or proxy problem (configuration),
    /// on the way to the token endpoint.
    #[error("{0}")]
    Network(crate::http::NetFailure),
    /// Nothing is stored for this account, or it has no refresh token.
    #[error("no stored authorization for account `{account}`")]
    NotLoggedIn {
        /// The account name.
        account: String,
    },
    /// Reading or writing the token store failed.
    #[error("the token store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a malformed answer, a bug.
    #[error("{0}")]
    Other(String),
}

impl TokenError {
    /// `what` ("could not get an access token for …"), followed by the
    /// network failure when there is one, so that the first line of an
    /// error report names the host and what went wrong.
    pub fn headline(&self, what: &str) -> String {
        match self {
            TokenError::Network(failure) => format!("{what}: {failure}"),
            _ => what.to_owned(),
        }
    }
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// Where a transport gets its bearer tokens. Implementations cache, refresh
/// and persist as they see fit; a transport only asks for a token and, after
/// an HTTP 401, for a replacement.
pub trait TokenSource: Send + Sync {
    /// A token to use now.
    fn token(&self) -> impl Future<Output = Result<AccessToken, TokenError>> + Send;

    /// A new token after the API rejected `rejected`. Called at most once per
    /// send, so a bad token leads to one refresh, not a loop.
    fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> impl Future<Output = Result<AccessToken, TokenError>> + Send;
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
