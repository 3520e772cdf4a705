//! The user agent, and reqwest clients under the policy.

use std::sync::OnceLock;

use super::proxy::reqwest_proxy;
use super::timeouts::timeouts;
use super::tls::{TlsSetupError, tls_config};

/// The user agent of every request.
pub const USER_AGENT: &str = concat!("apimail/", env!("CARGO_PKG_VERSION"));

/// A reqwest client builder under this policy: the shared TLS
/// configuration, the proxy rules, the user agent, no redirects and the
/// connect timeout. It sets no stall limit: requests go through
/// [`exchange`](super::exchange) (a true stall timer), or the client adds the stall limit
/// as reqwest's `read_timeout` ([`shared_client`], for small bodies).
pub fn reqwest_builder() -> Result<reqwest::ClientBuilder, TlsSetupError> {
    let tls = tls_config()?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .no_proxy()
        .proxy(reqwest_proxy())
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts().connect))
}

/// The process's shared reqwest client (token endpoints, probes), built
/// once from [`reqwest_builder`], with the stall limit as reqwest's
/// `read_timeout`: reqwest runs it from the start of a request to its
/// answer's headers, then per read, which for these small bodies is a
/// stall limit. It keeps no idle connections: a process makes few such
/// requests, and a pooled connection would outlive the tokio runtime that
/// opened it.
pub fn shared_client() -> Result<reqwest::Client, TlsSetupError> {
    static CLIENT: OnceLock<Result<reqwest::Client, TlsSetupError>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest_builder()?
                .read_timeout(timeouts().stall)
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| TlsSetupError(format!("cannot set up the HTTPS client: {e}")))
        })
        .clone()
}
