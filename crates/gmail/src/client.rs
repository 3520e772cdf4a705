//! The HTTPS client Gmail is sent with, from core's HTTP policy.

use apimail_core::{ErrorKind, TransportError};
use google_gmail1::{hyper_rustls, hyper_util};
use url::Url;

use crate::proxy::{self, ProxyConnector};

pub(crate) type Connector = proxy::Timed<hyper_rustls::HttpsConnector<ProxyConnector>>;

/// The HTTPS client the transport sends with (see [`https_client`]).
pub type HttpsClient = google_gmail1::common::Client<Connector>;
pub(crate) type Client = HttpsClient;

/// Builds the HTTPS client from apimail-core's HTTP policy
/// (`apimail_core::http`): its rustls configuration and roots, its proxy
/// rules, its connect timeout and stall limit. Plain http is allowed
/// because endpoint URLs are checked before they get here (http only for
/// loopback). Build it once and clone it: clones share the pool.
pub fn https_client() -> Result<Client, TransportError> {
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https_connector()?),
    )
}

pub(crate) fn https_connector() -> Result<Connector, TransportError> {
    let tls = apimail_core::http::tls_config()
        .map_err(|e| TransportError::new(ErrorKind::Config, e.to_string()))?;
    Ok(proxy::Timed(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(ProxyConnector::from_env()),
    ))
}

/// Sends a `HEAD` to `url`'s root through the client Gmail sends with
/// (hyper, see [`https_client`]), for `apimail doctor`.
pub async fn probe(
    url: &Url,
) -> Result<apimail_core::endpoint::Probe, (apimail_core::endpoint::ProbeFailure, String)> {
    use apimail_core::endpoint::{Probe, ProbeFailure, probe_url};
    let client = https_client().map_err(|e| (ProbeFailure::Setup, e.to_string()))?;
    let request = http::Request::head(probe_url(url).as_str())
        .header(http::header::USER_AGENT, apimail_core::http::USER_AGENT)
        .body(google_gmail1::common::to_body::<String>(None))
        .map_err(|e| (ProbeFailure::Other, e.to_string()))?;
    let started = std::time::Instant::now();
    match client.request(request).await {
        Ok(response) => Ok(Probe {
            status: response.status().as_u16(),
            date: response
                .headers()
                .get(http::header::DATE)
                .and_then(|d| d.to_str().ok())
                .map(str::to_owned),
            elapsed: started.elapsed(),
        }),
        Err(error) => Err(ProbeFailure::read(&error, url)),
    }
}
