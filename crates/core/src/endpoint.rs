//! Endpoint URLs given by configuration: https, or plain http only to a
//! loopback host (for local fakes and test gateways).

use url::{Host, Url};

use crate::http::NetFailure;

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint `{url}` {reason}")]
pub struct EndpointError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses `text` and checks it: `https://` anywhere, `http://` only for
/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn checked_url(text: &str) -> Result<Url, EndpointError> {
    let error = |reason| EndpointError {
        url: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|_| error("is not a valid URL"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(error(
            "uses plain http, which is allowed only for loopback hosts; use https",
        )),
        _ => Err(error("must start with https://")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// What [`probe`] found at an endpoint.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The HTTP status of the answer (any answer means the way is open).
    pub status: u16,
    /// The server's `Date` header, for clock checks.
    pub date: Option<String>,
    /// How long the answer took.
    pub elapsed: std::time::Duration,
}

/// Why an endpoint could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// A timeout, or a TLS or proxy problem ([`NetFailure`]).
    Net(NetFailure),
    /// The client could not be set up (no usable CA certificates).
    Setup,
    /// Nothing accepted the connection.
    Refused,
    /// Anything else.
    Other,
}

impl ProbeFailure {
    /// Reads a client's error for a probe of `url`: the failure and the
    /// error's text with its causes.
    pub fn read(error: &(dyn std::error::Error + 'static), url: &Url) -> (ProbeFailure, String) {
        let text = crate::transport::error_chain(error);
        let failure = match NetFailure::diagnose(error, url) {
            Some(failure) => ProbeFailure::Net(failure),
            None if text.to_lowercase().contains("refused") => ProbeFailure::Refused,
            None => ProbeFailure::Other,
        };
        (failure, text)
    }
}

/// The root of `url` (`https://host/`), where probes send a `HEAD`.
pub fn probe_url(url: &Url) -> Url {
    let mut root = url.clone();
    root.set_path("/");
    root.set_query(None);
    root.set_fragment(None);
    root
}

/// Sends a `HEAD` to `url`'s root through the process's shared reqwest
/// client ([`crate::http::shared_client`], the stack token requests use),
/// to check DNS, TCP, TLS and proxy in one go.
pub async fn probe(url: &Url) -> Result<Probe, (ProbeFailure, String)> {
    let client = crate::http::shared_client().map_err(|e| (ProbeFailure::Setup, e.to_string()))?;
    let root = probe_url(url);
    let started = std::time::Instant::now();
    match client.head(root).send().await {
        Ok(response) => Ok(Probe {
            status: response.status().as_u16(),
            date: response
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|d| d.to_str().ok())
                .map(str::to_owned),
            elapsed: started.elapsed(),
        }),
        Err(error) => Err(ProbeFailure::read(&error, url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(checked_url("https://gmail.googleapis.com/").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/").is_ok());
        assert!(checked_url("http://127.5.0.1/").is_ok());
        assert!(checked_url("http://localhost:1/token").is_ok());
        assert!(checked_url("http://[::1]:9/").is_ok());
        assert!(
            checked_url("http://example.com/")
                .unwrap_err()
                .reason
                .contains("loopback")
        );
        assert!(checked_url("http://10.0.0.1/").is_err());
        assert!(checked_url("http://127.0.0.1.evil.example/").is_err());
        assert!(checked_url("ftp://127.0.0.1/").is_err());
        assert!(checked_url("not a url").is_err());
    }
}
