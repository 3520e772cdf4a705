//! The proxy rules from the environment, read once; a proxy's refusal.

use std::sync::OnceLock;

use url::Url;

/// The proxy rules from the environment, read once.
pub fn proxy_matcher() -> &'static hyper_util::client::proxy::matcher::Matcher {
    static MATCHER: OnceLock<hyper_util::client::proxy::matcher::Matcher> = OnceLock::new();
    MATCHER.get_or_init(hyper_util::client::proxy::matcher::Matcher::from_env)
}

/// The proxy a request to `url` goes through: only https destinations
/// that `NO_PROXY` does not exclude.
pub fn proxy_for(url: &Url) -> Option<hyper_util::client::proxy::matcher::Intercept> {
    if url.scheme() != "https" {
        return None;
    }
    let uri: http::Uri = url.as_str().parse().ok()?;
    proxy_matcher().intercept(&uri)
}

/// The proxy setting in effect, as the user wrote it (without any
/// password), for messages: `HTTPS_PROXY=http://proxy:3128`.
pub fn proxy_setting() -> Option<String> {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            let shown = match Url::parse(&value) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    let _ = url.set_username("");
                    url.as_str().trim_end_matches('/').to_owned()
                }
                Err(_) => value,
            };
            Some(format!("{name}={shown}"))
        })
}

/// [`proxy_for`] as a reqwest proxy (for clients built elsewhere, such as
/// graph-rs-sdk's).
pub fn reqwest_proxy() -> reqwest::Proxy {
    let proxy =
        reqwest::Proxy::custom(|url| proxy_for(url).map(|intercept| intercept.uri().to_string()));
    // HTTPS_PROXY names one proxy, so its credentials are the same for
    // every destination it serves.
    match proxy_matcher()
        .intercept(&http::Uri::from_static("https://apimail.invalid/"))
        .and_then(|i| i.basic_auth().cloned())
    {
        Some(auth) => proxy.custom_http_auth(auth),
        None => proxy,
    }
}

/// A proxy's refusal, raised by connectors that know the proxy was used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the proxy at {setting} refused the connection: {detail}")]
pub struct ProxyError {
    /// `HTTPS_PROXY=…`.
    pub setting: String,
    /// What happened.
    pub detail: String,
}
