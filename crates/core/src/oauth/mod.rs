//! The OAuth 2.0 flows both providers use, on top of the `oauth2` crate.
//!
//! Provider crates pass URLs, scopes and extra parameters; this module runs
//! the flows:
//!
//! - [`login_with_browser`]: authorization code with PKCE (S256) and a
//!   random `state`, the redirect received on a loopback listener (and,
//!   optionally, pasted into the terminal).
//! - [`login_with_device_code`]: the device authorization grant (RFC 8628).
//! - [`refresh`], [`client_credentials`]: token requests without a user.
//! - [`revoke`]: RFC 7009 token revocation.
//! - [`email_from_id_token`]: the account's address from an OpenID
//!   `id_token`.
//!
//! Every request goes through reqwest with redirects disabled (a token
//! endpoint that redirects would be an SSRF vector) and a 30 s timeout.
//! Endpoint URLs must be `https://`, or `http://` on a loopback host (see
//! [`checked_url`](crate::endpoint::checked_url)). Client secrets are sent
//! as form parameters (`client_id` and `client_secret` in the body), which
//! Google and Microsoft both accept; a public client sends only its id.
//!
//! Error messages never contain a token, code, verifier or secret.

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use oauth2::basic::BasicErrorResponseType;
use oauth2::{
    AuthUrl, AuthorizationCode, CsrfToken, DeviceAuthorizationResponse, DeviceAuthorizationUrl,
    DeviceCodeErrorResponseType, PkceCodeChallenge, RedirectUrl, RefreshToken, Scope,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use url::Url;

use crate::secret::Secret;
use crate::token::{TokenError, TokenResponse};

mod client;
mod loopback;
#[cfg(test)]
mod tests;

use client::{DeviceFields, Http, checked, classify, oauth2_client, refused, token_response};

/// An OAuth client as registered with the provider.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    /// The client (application) id.
    pub client_id: String,
    /// The client secret; `None` (or empty) for a public client.
    pub client_secret: Option<Secret>,
    /// The authorization endpoint, needed by [`login_with_browser`].
    pub auth_url: Option<Url>,
    /// The token endpoint.
    pub token_url: Url,
    /// The device authorization endpoint, needed by
    /// [`login_with_device_code`].
    pub device_auth_url: Option<Url>,
}

/// The host name in the loopback redirect URI. The listener always binds
/// `127.0.0.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectHost {
    /// `http://127.0.0.1:PORT/callback`, as Google recommends.
    #[default]
    Ip127,
    /// `http://localhost:PORT/callback`, as Microsoft registers it.
    Localhost,
}

impl RedirectHost {
    fn as_str(self) -> &'static str {
        match self {
            RedirectHost::Ip127 => "127.0.0.1",
            RedirectHost::Localhost => "localhost",
        }
    }
}

/// How the interactive login runs.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// The scopes to ask for.
    pub scopes: Vec<String>,
    /// Extra authorization-URL parameters (Google: `access_type=offline`,
    /// `prompt=consent`, `login_hint=...`).
    pub extra_params: Vec<(String, String)>,
    /// The host name in the redirect URI.
    pub redirect_host: RedirectHost,
    /// The port to listen on; 0 picks any free port.
    pub port: u16,
    /// How long to wait for the browser's redirect (default 5 minutes).
    /// The code exchange that follows has its own 30 s timeout.
    pub timeout: Duration,
    /// Also accept the redirect URL pasted into the terminal (one line on
    /// standard input), for a browser on another machine. Standard input
    /// is read on a detached thread that may keep one pending read after
    /// the login returns, so the process should not read standard input
    /// afterwards.
    pub accept_pasted_redirect: bool,
}

impl LoginOptions {
    /// The default wait for the browser.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

    /// Options for `scopes`: no extra parameters, `127.0.0.1`, any free
    /// port, a 5-minute wait, no pasting.
    pub fn new(scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        LoginOptions {
            scopes: scopes.into_iter().map(Into::into).collect(),
            extra_params: Vec::new(),
            redirect_host: RedirectHost::Ip127,
            port: 0,
            timeout: Self::DEFAULT_TIMEOUT,
            accept_pasted_redirect: false,
        }
    }
}

/// What the login shows the user; the CLI implements it (prints the URL,
/// opens a browser). Closures `FnMut(&Url, &str) + Send` implement it too.
pub trait LoginPrompt: Send {
    /// Called once with the URL to open and the redirect URI being
    /// listened on.
    fn authorize_url(&mut self, url: &Url, redirect_uri: &str);
}

impl<F> LoginPrompt for F
where
    F: FnMut(&Url, &str) + Send,
{
    fn authorize_url(&mut self, url: &Url, redirect_uri: &str) {
        self(url, redirect_uri);
    }
}

/// What the user needs for the device-code flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    /// Where to go.
    pub verification_uri: String,
    /// The code to type there (not a secret: it is useless without the
    /// user's sign-in).
    pub user_code: String,
    /// A URI that carries the code already, when the server gave one.
    pub verification_uri_complete: Option<String>,
    /// How long the code stays valid.
    pub expires_in: Duration,
    /// The server's ready-made instruction (Microsoft), when given.
    pub message: Option<String>,
}

/// Why an interactive login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The user declined (`error=access_denied` in the redirect, or the
    /// device-code sign-in was declined).
    #[error("the authorization was denied{}", describe(.description))]
    Denied {
        /// The server's `error_description`.
        description: Option<String>,
    },
    /// The redirect's `state` is not this login's: a stale browser tab or
    /// a forged request.
    #[error(
        "the browser's answer does not belong to this login (state mismatch); \
         close old sign-in tabs and log in again"
    )]
    StateMismatch,
    /// No redirect came within [`LoginOptions::timeout`].
    #[error("no answer from the browser within {}", human(*.0))]
    TimedOut(Duration),
    /// The device code expired before the user finished signing in.
    #[error("the device code expired before the sign-in was completed")]
    Expired,
    /// The loopback listener could not be opened.
    #[error(
        "cannot listen on 127.0.0.1:{port} for the browser's answer; \
         choose another port, or port 0 for any free one"
    )]
    Listen {
        /// The port asked for.
        port: u16,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A pasted redirect carried no authorization code.
    #[error("{0}")]
    BadRedirect(String),
    /// The address pasted at the prompt is the provider's error page: the
    /// browser was never sent back (Google's `redirect_uri_mismatch`, for
    /// a client that does not allow this redirect URI, ends here).
    #[error("the browser stopped at an error page of {page}{}", describe(.code))]
    ErrorPage {
        /// Scheme, host and path of the page (never its query).
        page: String,
        /// The error named in the address, when apimail could read one.
        code: Option<String>,
    },
    /// The provider answered the authorization with an error other than
    /// `access_denied`.
    #[error("the provider refused the authorization ({code}){}", describe(.description))]
    Provider {
        /// The OAuth error code.
        code: String,
        /// The server's `error_description`.
        description: Option<String>,
    },
    /// The [`OAuthClient`] lacks what the flow needs.
    #[error("{0}")]
    Config(String),
    /// The code exchange or the device-code token request failed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

fn describe(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        format!("{} ms", duration.as_millis())
    } else if seconds.is_multiple_of(60) && seconds >= 60 {
        let minutes = seconds / 60;
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    } else {
        format!("{seconds} s")
    }
}

fn scopes_of(scopes: &[String]) -> impl Iterator<Item = Scope> + '_ {
    scopes
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| Scope::new(s.clone()))
}

/// Runs the authorization-code flow with PKCE (S256) and a random `state`.
///
/// Binds `127.0.0.1:{options.port}` (the actual port when 0), calls
/// `prompt` with the authorization URL and the redirect URI
/// (`http://127.0.0.1:PORT/callback` or `http://localhost:PORT/callback`),
/// waits up to `options.timeout` for the browser's redirect (or a pasted
/// one), then exchanges the code with the PKCE verifier and the same
/// redirect URI.
///
/// The wait ends at the first redirect that carries a code or an error:
/// a wrong `state` gives [`LoginError::StateMismatch`] rather than waiting
/// on, `error=access_denied` gives [`LoginError::Denied`] and another
/// error [`LoginError::Provider`]. Requests for other paths get a 404.
pub async fn login_with_browser(
    client: &OAuthClient,
    options: &LoginOptions,
    prompt: &mut dyn LoginPrompt,
) -> Result<TokenResponse, LoginError> {
    browser_flow(client, options, prompt, || {
        options.accept_pasted_redirect.then(loopback::stdin_lines)
    })
    .await
}

/// [`login_with_browser`] where the pasted redirect addresses come from
/// `pasted` (a web page's form, say) instead of standard input; the
/// loopback listener still takes a direct redirect. `options.
/// accept_pasted_redirect` is not looked at.
pub async fn login_with_pasted_redirect(
    client: &OAuthClient,
    options: &LoginOptions,
    prompt: &mut dyn LoginPrompt,
    pasted: mpsc::UnboundedReceiver<String>,
) -> Result<TokenResponse, LoginError> {
    browser_flow(client, options, prompt, || Some(pasted)).await
}

/// [`login_with_browser`] with the source of pasted lines injected.
async fn browser_flow(
    client: &OAuthClient,
    options: &LoginOptions,
    prompt: &mut dyn LoginPrompt,
    pasted: impl FnOnce() -> Option<mpsc::UnboundedReceiver<String>>,
) -> Result<TokenResponse, LoginError> {
    let auth_url = client.auth_url.as_ref().ok_or_else(|| {
        LoginError::Config("the oauth client has no authorization url".to_owned())
    })?;
    let auth_url = checked(auth_url).map_err(|e| LoginError::Config(e.to_string()))?;
    let oauth = oauth2_client(client, true)?;

    let listen = |source| LoginError::Listen {
        port: options.port,
        source,
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, options.port))
        .await
        .map_err(listen)?;
    let port = listener.local_addr().map_err(listen)?.port();
    let redirect_uri = format!(
        "http://{}:{port}{}",
        options.redirect_host.as_str(),
        loopback::CALLBACK_PATH
    );
    let redirect_url = RedirectUrl::new(redirect_uri.clone())
        .map_err(|e| LoginError::Config(format!("bad redirect uri: {e}")))?;
    let oauth = oauth
        .set_auth_uri(AuthUrl::from_url(auth_url))
        .set_redirect_uri(redirect_url);

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = oauth
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes_of(&options.scopes))
        .set_pkce_challenge(challenge);
    for (name, value) in &options.extra_params {
        request = request.add_extra_param(name.as_str(), value.as_str());
    }
    let (url, state) = request.url();

    prompt.authorize_url(&url, &redirect_uri);
    let pasted = pasted();
    let code = tokio::time::timeout(
        options.timeout,
        loopback::wait_for_code(&listener, state.secret(), pasted),
    )
    .await
    .map_err(|_| LoginError::TimedOut(options.timeout))??;
    drop(listener);

    let http = Http::new()?;
    let response = oauth
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .map_err(|e| client::token_error(e, &http))?;
    Ok(token_response(response))
}

/// The shortest wait between two device-code polls, whatever the server
/// says.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Extra time, past the device code's lifetime, before polling is cut off
/// regardless of the server.
const DEVICE_GRACE: Duration = Duration::from_secs(30);

/// Runs the device authorization grant (RFC 8628), as Microsoft offers it
/// for headless machines.
///
/// Requests a device code for `scopes`, hands the verification URI and
/// user code to `show`, then polls the token endpoint at the server's
/// interval (at least 1 s; 5 s when unspecified), waits on through
/// `authorization_pending`, adds 5 s on `slow_down`, and stops at the
/// code's `expires_in`. A declined sign-in (`access_denied`,
/// `authorization_declined`) gives [`LoginError::Denied`]; an expired code
/// [`LoginError::Expired`]; three polls failing in a row (no answer, a
/// stall, a 5xx) the last one's [`LoginError::Token`].
pub async fn login_with_device_code(
    client: &OAuthClient,
    scopes: &[String],
    show: &mut (dyn FnMut(&DeviceCode) + Send),
) -> Result<TokenResponse, LoginError> {
    device_flow(client, scopes, show, |interval| {
        tokio::time::sleep(interval.max(MIN_POLL_INTERVAL))
    })
    .await
}

/// [`login_with_device_code`] with the sleep between polls injected.
async fn device_flow<S, F>(
    client: &OAuthClient,
    scopes: &[String],
    show: &mut (dyn FnMut(&DeviceCode) + Send),
    sleep: S,
) -> Result<TokenResponse, LoginError>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let device_url = client.device_auth_url.as_ref().ok_or_else(|| {
        LoginError::Config("the oauth client has no device authorization url".to_owned())
    })?;
    let device_url = checked(device_url).map_err(|e| LoginError::Config(e.to_string()))?;
    let oauth = oauth2_client(client, true)?
        .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device_url));
    let http = Http::for_polling()?;

    let details: DeviceAuthorizationResponse<DeviceFields> = oauth
        .exchange_device_code()
        .add_scopes(scopes_of(scopes))
        .request_async(&http)
        .await
        .map_err(|e| client::token_error(e, &http))?;
    show(&DeviceCode {
        verification_uri: details.verification_uri().as_str().to_owned(),
        user_code: details.user_code().secret().clone(),
        verification_uri_complete: details
            .verification_uri_complete()
            .map(|uri| uri.secret().clone()),
        expires_in: details.expires_in(),
        message: details.extra_fields().message.clone(),
    });

    let polling = oauth
        .exchange_device_access_token(&details)
        .request_async(&http, sleep, None);
    // A token endpoint that keeps failing ends the login, rather than
    // being polled until the code expires.
    let polling = async {
        tokio::select! {
            result = polling => Ok(result),
            failed = http.failed_polls() => Err(LoginError::Token(failed)),
        }
    };
    let result = tokio::time::timeout(details.expires_in() + DEVICE_GRACE, polling)
        .await
        .map_err(|_| LoginError::Expired)??;
    match result {
        Ok(response) => Ok(token_response(response)),
        Err(error) => Err(match classify(error, &http) {
            Err(error) => LoginError::Token(error),
            Ok(response) => {
                let description = response.error_description().cloned();
                match response.error() {
                    DeviceCodeErrorResponseType::AccessDenied => LoginError::Denied { description },
                    DeviceCodeErrorResponseType::Basic(BasicErrorResponseType::Extension(code))
                        if code == "authorization_declined" =>
                    {
                        LoginError::Denied { description }
                    }
                    DeviceCodeErrorResponseType::ExpiredToken => LoginError::Expired,
                    other => LoginError::Token(refused(other.as_ref(), description.as_ref())),
                }
            }
        }),
    }
}

/// Exchanges a refresh token for a new access token (`grant_type=refresh_token`).
///
/// `scopes` may be empty (the grant's own scopes apply). A rotated refresh
/// token comes back in [`TokenResponse::refresh_token`]; when that is
/// `None`, keep the old one.
///
/// Errors: `invalid_grant` → [`TokenError::InvalidGrant`] (log in again);
/// other OAuth error codes → [`TokenError::Refused`]; network failures,
/// timeouts, 5xx, 429 → [`TokenError::Unreachable`]; anything else
/// (an unreadable answer) → [`TokenError::Other`].
pub async fn refresh(
    client: &OAuthClient,
    refresh_token: &Secret,
    scopes: &[String],
) -> Result<TokenResponse, TokenError> {
    let oauth = oauth2_client(client, true)?;
    let http = Http::new()?;
    let refresh_token = RefreshToken::new(refresh_token.expose().to_owned());
    let response = oauth
        .exchange_refresh_token(&refresh_token)
        .add_scopes(scopes_of(scopes))
        .request_async(&http)
        .await
        .map_err(|e| client::token_error(e, &http))?;
    Ok(token_response(response))
}

/// The `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Gets an app-only token (`grant_type=client_credentials`, Microsoft).
///
/// The client authenticates with its secret, or, when `assertion` is
/// given, with that signed JWT (`client_assertion` and
/// `client_assertion_type=`[`JWT_BEARER_ASSERTION`]); the secret is then
/// not sent. Errors as for [`refresh`].
pub async fn client_credentials(
    client: &OAuthClient,
    scopes: &[String],
    assertion: Option<&Secret>,
) -> Result<TokenResponse, TokenError> {
    let oauth = oauth2_client(client, assertion.is_none())?;
    let http = Http::new()?;
    let mut request = oauth
        .exchange_client_credentials()
        .add_scopes(scopes_of(scopes));
    if let Some(assertion) = assertion {
        request = request
            .add_extra_param("client_assertion_type", JWT_BEARER_ASSERTION)
            .add_extra_param("client_assertion", assertion.expose());
    }
    let response = request
        .request_async(&http)
        .await
        .map_err(|e| client::token_error(e, &http))?;
    Ok(token_response(response))
}

/// Revokes a token (RFC 7009): `POST revoke_url` with the form `token=...`,
/// as Google's `https://oauth2.googleapis.com/revoke` takes it.
///
/// Best effort: `Ok` only on HTTP 200. An OAuth error answer gives
/// [`TokenError::Refused`] (Google answers `invalid_token` for a token
/// that is already expired or revoked); network failures and 5xx give
/// [`TokenError::Unreachable`].
pub async fn revoke(revoke_url: &Url, token: &Secret) -> Result<(), TokenError> {
    use oauth2::http::{self, header};

    let url = checked(revoke_url)?;
    let http_client = Http::new()?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token.expose())
        .finish();
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.into_bytes())
        .map_err(|e| TokenError::Other(format!("cannot build the revocation request: {e}")))?;
    let response = http_client.send(request).await.map_err(|e| match e {
        client::HttpFailure::Internal(message) => TokenError::Other(message),
        failure => client::unreachable(failure),
    })?;
    if response.status() == http::StatusCode::OK {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(response.body()) {
        Ok(body) => Err(TokenError::Refused {
            code: body.error,
            description: body.error_description,
        }),
        Err(_) => Err(TokenError::Other(format!(
            "the revocation endpoint answered http {}",
            response.status().as_u16()
        ))),
    }
}

/// The account's address from an OpenID `id_token`: its `email`, else
/// `preferred_username`, else `upn` claim.
///
/// The signature is not checked: the token came straight from the token
/// endpoint over TLS. `None` when the token is not a JWT or has none of
/// these claims.
pub fn email_from_id_token(id_token: &Secret) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let payload = id_token.expose().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    ["email", "preferred_username", "upn"]
        .into_iter()
        .find_map(|claim| {
            claims
                .get(claim)?
                .as_str()
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        })
}

impl fmt::Display for RedirectHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
