//! The glue between the `oauth2` crate and apimail: the typed oauth2 client,
//! the HTTP client it calls through, and the mapping of its answers and
//! errors to [`TokenResponse`] and [`TokenError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::http::{self, StatusCode};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ErrorResponse,
    ExtraDeviceAuthorizationFields, ExtraTokenFields, HttpRequest, HttpResponse, RequestTokenError,
    StandardRevocableToken, StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use url::Url;

use super::OAuthClient;
use crate::endpoint::checked_url;
use crate::secret::Secret;
use crate::token::{AccessToken, TokenError, TokenResponse, now_unix};

/// The token-response fields apimail reads beyond RFC 6749's.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub(super) struct ExtraFields {
    /// The OpenID Connect `id_token` (a JWT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) id_token: Option<Secret>,
}

impl ExtraTokenFields for ExtraFields {}

/// The device-authorization-response fields apimail reads beyond RFC 8628's.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub(super) struct DeviceFields {
    /// Microsoft's ready-made instruction for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for DeviceFields {}

/// A token response as the oauth2 crate parses it.
pub(super) type Oauth2TokenResponse = StandardTokenResponse<ExtraFields, BasicTokenType>;

/// The oauth2 client with a token URL set; the authorization and device
/// URLs are set per flow.
pub(super) type Oauth2Client<HasAuthUrl = EndpointNotSet, HasDeviceAuthUrl = EndpointNotSet> =
    oauth2::Client<
        BasicErrorResponse,
        Oauth2TokenResponse,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
        HasAuthUrl,
        HasDeviceAuthUrl,
        EndpointNotSet,
        EndpointNotSet,
        EndpointSet,
    >;

/// Checks a configured endpoint URL against the crate's policy (https, or
/// http on loopback only).
pub(super) fn checked(url: &Url) -> Result<Url, TokenError> {
    checked_url(url.as_str()).map_err(|e| TokenError::Other(e.to_string()))
}

/// Builds the oauth2 client: client id, the secret (when `with_secret` and
/// one is configured) as form parameters, and the token URL.
pub(super) fn oauth2_client(
    client: &OAuthClient,
    with_secret: bool,
) -> Result<Oauth2Client, TokenError> {
    let token_url = TokenUrl::from_url(checked(&client.token_url)?);
    let base = oauth2::Client::<
        BasicErrorResponse,
        Oauth2TokenResponse,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >::new(ClientId::new(client.client_id.clone()))
    .set_auth_type(AuthType::RequestBody)
    .set_token_uri(token_url);
    Ok(match &client.client_secret {
        Some(secret) if with_secret && !secret.expose().is_empty() => {
            base.set_client_secret(ClientSecret::new(secret.expose().to_owned()))
        }
        _ => base,
    })
}

/// Why an HTTP exchange with an OAuth endpoint failed before an OAuth
/// answer could be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpFailure {
    /// Connecting, sending or receiving failed, or timed out.
    #[error(transparent)]
    Transport(reqwest::Error),
    /// The server answered 5xx, 429 or 408: try again later.
    #[error("the server answered http {0}")]
    Status(u16),
    /// The response could not be handed over (a bug).
    #[error("{0}")]
    Internal(String),
}

/// The HTTP client the oauth2 crate calls through: the process's shared
/// client ([`crate::http::shared_client`]: no redirects, since an OAuth
/// endpoint that redirects is an SSRF risk; connect and stall timeouts).
/// It remembers the last status seen, for error messages.
#[derive(Debug)]
pub(super) struct Http {
    client: reqwest::Client,
    last_status: AtomicU16,
    /// The last URL asked, without its query (which may hold a secret).
    last_url: Mutex<String>,
    /// Set for device-code polling: failed requests are counted here
    /// (oauth2 would only back off and poll on until the code expires).
    polling: Option<FailedPolls>,
}

/// Requests that failed in a row while polling, the last failure, and the
/// signal that there were [`MAX_FAILED_POLLS`].
#[derive(Debug, Default)]
struct FailedPolls {
    failures: Mutex<(u32, Option<HttpFailure>)>,
    too_many: tokio::sync::Notify,
}

/// How many device-code polls may fail in a row (no answer, a stall, a
/// 5xx) before the login gives up, with oauth2's backoff between them.
pub(super) const MAX_FAILED_POLLS: u32 = 3;

impl Http {
    /// Builds the client.
    pub(super) fn new() -> Result<Self, TokenError> {
        let client = crate::http::shared_client().map_err(|e| TokenError::Other(e.to_string()))?;
        Ok(Http {
            client,
            last_status: AtomicU16::new(0),
            last_url: Mutex::new(String::new()),
            polling: None,
        })
    }

    /// Builds the client for device-code polling: see [`Http::failed_polls`].
    pub(super) fn for_polling() -> Result<Self, TokenError> {
        Ok(Http {
            polling: Some(FailedPolls::default()),
            ..Http::new()?
        })
    }

    /// Returns, with the last failure, once [`MAX_FAILED_POLLS`] requests
    /// failed in a row (only on a client [`Http::for_polling`]).
    pub(super) async fn failed_polls(&self) -> TokenError {
        let Some(polls) = &self.polling else {
            return std::future::pending().await;
        };
        polls.too_many.notified().await;
        let last = polls
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .take();
        last.map_or_else(
            || TokenError::Other("polling failed".to_owned()),
            unreachable,
        )
    }

    /// [`Http::send`], counting failures while polling. oauth2 only backs
    /// off after a failed poll, so it gets a stand-in error and the real
    /// one is kept for [`Http::failed_polls`].
    async fn send_counted(&self, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        let result = self.send(request).await;
        let Some(polls) = &self.polling else {
            return result;
        };
        let mut failures = polls.failures.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(failure @ (HttpFailure::Transport(_) | HttpFailure::Status(_))) => {
                failures.0 += 1;
                failures.1 = Some(failure);
                if failures.0 >= MAX_FAILED_POLLS {
                    polls.too_many.notify_one();
                }
                Err(HttpFailure::Internal("a failed poll".to_owned()))
            }
            other => {
                *failures = (0, None);
                other
            }
        }
    }

    /// Sends one request. Retryable statuses (5xx, 429, 408) become
    /// [`HttpFailure::Status`]; every other answer is handed to oauth2,
    /// which reads OAuth errors out of 4xx bodies.
    pub(super) async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        let request = reqwest::Request::try_from(request).map_err(HttpFailure::Transport)?;
        // Method, URL (without query) and sizes only: bodies hold secrets.
        let method = request.method().clone();
        let mut url = request.url().clone();
        url.set_query(None);
        url.set_fragment(None);
        *self.last_url.lock().unwrap_or_else(|e| e.into_inner()) = url.to_string();
        let sent = request
            .body()
            .and_then(|b| b.as_bytes())
            .map_or(0, <[u8]>::len);
        let started = std::time::Instant::now();
        tracing::debug!("{method} {url} ({sent} bytes)");
        let response = self.client.execute(request).await.map_err(|e| {
            tracing::debug!(
                "{method} {url} failed after {} ms",
                started.elapsed().as_millis()
            );
            HttpFailure::Transport(e)
        })?;
        let status = response.status();
        tracing::debug!(
            "{method} {url} -> {} in {} ms",
            status.as_u16(),
            started.elapsed().as_millis()
        );
        self.last_status.store(status.as_u16(), Ordering::Relaxed);
        if is_retryable(status) {
            return Err(HttpFailure::Status(status.as_u16()));
        }
        let mut builder = http::Response::builder().status(status);
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = response.bytes().await.map_err(HttpFailure::Transport)?;
        builder
            .body(body.to_vec())
            .map_err(|e| HttpFailure::Internal(format!("cannot hand over the response: {e}")))
    }

    /// [`TokenError::NotTokenEndpoint`] for the last request.
    fn wrong_endpoint(&self, what: &str) -> TokenError {
        TokenError::NotTokenEndpoint {
            url: self
                .last_url
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            status: self.last_status.load(Ordering::Relaxed),
            what: what.to_owned(),
        }
    }

    /// Whether the last answer was 404 or 405: no endpoint at that URL.
    fn nothing_there(&self) -> bool {
        matches!(self.last_status.load(Ordering::Relaxed), 404 | 405)
    }

    /// `" (http 404)"`, or nothing when no response came back.
    fn status_note(&self) -> String {
        match self.last_status.load(Ordering::Relaxed) {
            0 => String::new(),
            status => format!(" (http {status})"),
        }
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpFailure;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpFailure>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send_counted(request))
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Splits an oauth2 failure into the server's OAuth error (`Ok`, for the
/// caller to interpret) and everything else, already mapped (`Err`).
///
/// Response bodies are never quoted: a body that failed to parse may be a
/// successful token response.
pub(super) fn classify<TE>(
    error: RequestTokenError<HttpFailure, TE>,
    http: &Http,
) -> Result<TE, TokenError>
where
    TE: ErrorResponse + 'static,
{
    match error {
        RequestTokenError::ServerResponse(response) => Ok(response),
        RequestTokenError::Request(HttpFailure::Internal(message)) => {
            Err(TokenError::Other(message))
        }
        RequestTokenError::Request(failure) => Err(unreachable(failure)),
        RequestTokenError::Parse(error, body) => {
            let json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
            if !json || http.nothing_there() {
                let what = if body.trim_ascii_start().starts_with(b"<") {
                    "a web page"
                } else if json {
                    "JSON that is no OAuth answer"
                } else {
                    "an answer that is not JSON"
                };
                return Err(http.wrong_endpoint(what));
            }
            let path = error.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(", at `{path}`")
            };
            Err(TokenError::Other(format!(
                "the token endpoint returned an answer apimail cannot read{}{at}",
                http.status_note(),
            )))
        }
        // oauth2's words for a 200 with a non-JSON Content-Type.
        RequestTokenError::Other(message) if message.contains("Content-Type") => {
            Err(http.wrong_endpoint("an answer that is not JSON"))
        }
        RequestTokenError::Other(_) if http.nothing_there() => {
            Err(http.wrong_endpoint("an empty answer"))
        }
        RequestTokenError::Other(message) => Err(TokenError::Other(format!(
            "the token endpoint returned an unexpected answer{}: {}",
            http.status_note(),
            message
        ))),
    }
}

/// A request that got no answer: [`TokenError::Network`] when the cause is
/// one apimail explains (a timeout, TLS, the proxy), else
/// [`TokenError::Unreachable`].
pub(super) fn unreachable(failure: HttpFailure) -> TokenError {
    if let HttpFailure::Transport(error) = &failure
        && let Some(url) = error.url()
        && let Some(diagnosed) = crate::http::NetFailure::diagnose(error, url)
    {
        return TokenError::Network(diagnosed);
    }
    TokenError::Unreachable(Box::new(failure))
}

/// Maps an OAuth error code from a token endpoint.
pub(super) fn refused(code: &str, description: Option<&String>) -> TokenError {
    let description = description.cloned();
    match code {
        "invalid_grant" => TokenError::InvalidGrant { description },
        _ => TokenError::Refused {
            code: code.to_owned(),
            description,
        },
    }
}

/// Maps any failure of a plain token request (code exchange, refresh,
/// client credentials).
pub(super) fn token_error(
    error: RequestTokenError<HttpFailure, BasicErrorResponse>,
    http: &Http,
) -> TokenError {
    match classify(error, http) {
        Ok(response) => refused(response.error().as_ref(), response.error_description()),
        Err(error) => error,
    }
}

/// Converts oauth2's token response to apimail's.
pub(super) fn token_response(response: Oauth2TokenResponse) -> TokenResponse {
    let expires_at = response.expires_in().map(|d| {
        let seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        now_unix().saturating_add(seconds)
    });
    let scopes = response.scopes().map(|scopes| {
        scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    TokenResponse {
        access_token: AccessToken {
            secret: Secret::new(response.access_token().secret().as_str()),
            expires_at,
        },
        refresh_token: response
            .refresh_token()
            .map(|t| Secret::new(t.secret().as_str())),
        scopes,
        id_token: response
            .extra_fields()
            .id_token
            .clone()
            .filter(|t| !t.expose().is_empty()),
    }
}
