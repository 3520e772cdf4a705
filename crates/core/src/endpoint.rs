//! Endpoint URLs given by configuration: https, or plain http only to a
//! loopback host (for local fakes and test gateways).

use url::{Host, Url};

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
