//! Who may do what: the session of a page (else a redirect to `/login`),
//! the bearer token of an API call (else 401), CSRF checks, the client's
//! address, the language, and the security headers on every answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::i18n::Lang;
use crate::state::Console;
use crate::tokens::ApiTokens;

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "apimail_session";
/// The login form's CSRF cookie (double submit: no session yet).
pub(crate) const LOGIN_COOKIE: &str = "apimail_login";
/// The language the switch chose.
pub(crate) const LANG_COOKIE: &str = "apimail_lang";

/// The value of cookie `name`, if the request has it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure under TLS.
pub(crate) fn set_cookie(
    console: &Console,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = if console.tls { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether two tokens are equal, in constant time.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in administrator (a page's extractor). Without a live session
/// the page redirects to `/login`.
#[derive(Clone)]
pub(crate) struct Admin {
    pub user: String,
    pub csrf: String,
    pub session: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("user", &self.user)
            .field("csrf", &"[redacted]")
            .field("session", &"[redacted]")
            .finish()
    }
}

impl Admin {
    /// Whether a form's `csrf` field is this session's token.
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        same_token(presented, &self.csrf)
    }
}

impl FromRequestParts<Arc<Console>> for Admin {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(Redirect::to("/login"))?;
        let session = console.sessions.get(id).ok_or(Redirect::to("/login"))?;
        Ok(Admin {
            user: session.user,
            csrf: session.csrf,
            session: id.to_owned(),
        })
    }
}

/// An API caller with a valid bearer token.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    pub read_only: bool,
}

/// An API error: `{"error": "..."}` with its status.
pub(crate) fn api_error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response =
        (status, Json(serde_json::json!({ "error": message.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"apimail\""),
        );
    }
    response
}

impl ApiClient {
    /// The 403 for a write with a read-only token.
    pub(crate) fn write_refusal(&self) -> Option<Response> {
        if self.read_only {
            Some(api_error(
                StatusCode::FORBIDDEN,
                "this token is read-only; create one without --read-only for queue actions",
            ))
        } else {
            None
        }
    }
}

impl FromRequestParts<Arc<Console>> for ApiClient {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            api_error(
                StatusCode::UNAUTHORIZED,
                "a valid API token is required: Authorization: Bearer TOKEN (apimail admin token create NAME)",
            )
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let tokens = ApiTokens::load(&console.tokens_path()).map_err(|error| {
            tracing::warn!("{error}");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the tokens file cannot be read",
            )
        })?;
        let token = tokens.check(presented).ok_or_else(unauthorized)?;
        Ok(ApiClient {
            read_only: token.read_only,
        })
    }
}

/// The client's address (from the connection; unspecified if unknown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(ClientIp(ip))
    }
}

/// The page's language: the switch's cookie, else `Accept-Language`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageLang(pub Lang);

impl<S: Send + Sync> FromRequestParts<S> for PageLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let chosen = cookie(&parts.headers, LANG_COOKIE).and_then(Lang::from_code);
        let lang = chosen.unwrap_or_else(|| {
            parts
                .headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .map_or(Lang::En, Lang::from_accept_language)
        });
        Ok(PageLang(lang))
    }
}

/// No inline script: the one script, styles, images and the live updates'
/// connection from the console itself only.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every answer, and `no-store` to all but
/// the stylesheet.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let cacheable = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !cacheable {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
