//! [`NetFailure`]: what went wrong on the way to a server, read out of any
//! client's error chain.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use url::Url;

use super::chain::chain;
use super::proxy::{ProxyError, proxy_for, proxy_setting};
use super::stall::{HttpTimeout, Phase};
use super::timeouts::timeouts;
use super::tls::root_source;

/// What went wrong on the way to a server, when it is one of the failures
/// apimail explains: a timeout (temporary), or a TLS or proxy problem that
/// only a configuration change fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFailure {
    /// Too slow to connect, or a stall.
    Timeout(HttpTimeout),
    /// The server's certificate does not chain to a trusted root.
    Untrusted {
        /// `host`.
        host: String,
        /// rustls's reason.
        detail: String,
    },
    /// The certificate is valid but for other names.
    WrongName {
        /// `host`.
        host: String,
        /// The names the certificate is for.
        presented: Vec<String>,
    },
    /// TLS was spoken to something that does not speak it (an `https://`
    /// URL on a plain-HTTP port).
    NotTls {
        /// `host:port`.
        address: String,
    },
    /// The proxy refused the connection or the tunnel.
    Proxy {
        /// `HTTPS_PROXY=…`.
        setting: String,
        /// What happened.
        detail: String,
    },
}

impl NetFailure {
    /// Reads `error` (from any client) for a request to `url`.
    pub fn diagnose(error: &(dyn StdError + 'static), url: &Url) -> Option<NetFailure> {
        let causes = chain(error);
        if let Some(timeout) = causes.iter().find_map(|e| e.downcast_ref::<HttpTimeout>()) {
            return Some(NetFailure::Timeout(timeout.clone()));
        }
        let host = url.host_str().unwrap_or("the server").to_owned();
        let address = format!("{host}:{}", url.port_or_known_default().unwrap_or(443));
        if let Some(proxy) = causes.iter().find_map(|e| e.downcast_ref::<ProxyError>()) {
            return Some(NetFailure::Proxy {
                setting: proxy.setting.clone(),
                detail: proxy.detail.clone(),
            });
        }
        for cause in &causes {
            if let Some(rustls_error) = cause.downcast_ref::<rustls::Error>() {
                return Some(match rustls_error {
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { presented, .. },
                    ) => NetFailure::WrongName {
                        host,
                        presented: presented.iter().map(|name| plain_name(name)).collect(),
                    },
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName,
                    ) => NetFailure::WrongName {
                        host,
                        presented: Vec::new(),
                    },
                    rustls::Error::InvalidCertificate(reason) => NetFailure::Untrusted {
                        host,
                        detail: format!("{reason:?}"),
                    },
                    rustls::Error::InvalidMessage(_)
                    | rustls::Error::InappropriateMessage { .. } => NetFailure::NotTls { address },
                    _ => continue,
                });
            }
        }
        // A reqwest timeout carries no phase; its timers are this policy's.
        if let Some(timed_out) = causes
            .iter()
            .find_map(|e| e.downcast_ref::<reqwest::Error>())
            && timed_out.is_timeout()
        {
            let timeouts = timeouts();
            let (phase, after) = if timed_out.is_connect() {
                (Phase::Connect, timeouts.connect)
            } else {
                (Phase::Waiting, timeouts.stall)
            };
            return Some(NetFailure::Timeout(HttpTimeout {
                host: address,
                phase,
                after,
            }));
        }
        let text = causes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        let proxied = proxy_for(url).is_some();
        if proxied && (text.contains("proxy") || text.contains("tunnel") || is_refused(&causes)) {
            return Some(NetFailure::Proxy {
                setting: proxy_setting().unwrap_or_else(|| "HTTPS_PROXY".to_owned()),
                detail: last_line(&text),
            });
        }
        None
    }

    /// The failure as a [`TransportError`](crate::TransportError): a timeout is temporary (its
    /// outcome unknown when `delivers` and the connection had opened), the
    /// rest are configuration problems. The failure stays reachable as the
    /// error's source, for [`NetFailure::hint`].
    pub fn transport_error(self, delivers: bool) -> crate::TransportError {
        use crate::ErrorKind;
        let (kind, unknown) = match &self {
            NetFailure::Timeout(t) => (ErrorKind::Temporary, delivers && t.phase != Phase::Connect),
            _ => (ErrorKind::Config, false),
        };
        let error = crate::TransportError::new(kind, self.to_string());
        let error = if unknown {
            error.with_unknown_outcome()
        } else {
            error
        };
        error.with_source(self)
    }

    /// Whether retrying could help: only for timeouts.
    pub fn is_temporary(&self) -> bool {
        matches!(self, NetFailure::Timeout(_))
    }

    /// The next step for the user.
    pub fn hint(&self) -> String {
        match self {
            NetFailure::Timeout(_) => "try again later (`apimail queue flush` sends what is queued); the limits are APIMAIL_CONNECT_TIMEOUT_SECONDS, APIMAIL_STALL_TIMEOUT_SECONDS or [http] in the config file"
                .to_owned(),
            NetFailure::Untrusted { .. } => "set SSL_CERT_FILE to your CA bundle; behind a TLS-inspecting proxy, add its CA".to_owned(),
            NetFailure::WrongName { .. } => "check the endpoint URL's host name; a proxy or DNS entry may send it to another server".to_owned(),
            NetFailure::NotTls { .. } => "the URL says https:// but the port speaks plain HTTP; check the port or the scheme".to_owned(),
            NetFailure::Proxy { .. } => "check HTTPS_PROXY (host, port, credentials) or exclude the host with NO_PROXY".to_owned(),
        }
    }
}

impl fmt::Display for NetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetFailure::Timeout(timeout) => timeout.fmt(f),
            NetFailure::Untrusted { host, detail } => write!(
                f,
                "this machine does not trust the certificate of {host}: {detail} (CA certificates from {})",
                root_source()
            ),
            NetFailure::WrongName { host, presented } if presented.is_empty() => {
                write!(f, "the certificate of {host} is for another name")
            }
            NetFailure::WrongName { host, presented } => write!(
                f,
                "the certificate of {host} is for {}",
                presented.join(", ")
            ),
            NetFailure::NotTls { address } => write!(f, "{address} does not speak TLS"),
            NetFailure::Proxy { setting, detail } => {
                write!(f, "the proxy at {setting} refused the connection: {detail}")
            }
        }
    }
}

impl StdError for NetFailure {}

fn is_refused(causes: &[&(dyn StdError + 'static)]) -> bool {
    causes.iter().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    })
}

/// `other.example` out of rustls's `DnsName("other.example")`.
fn plain_name(presented: &str) -> String {
    match presented.split_once('"') {
        Some((_, rest)) => rest.trim_end_matches([')', '"']).to_owned(),
        None => presented.to_owned(),
    }
}

fn last_line(text: &str) -> String {
    text.rsplit(": ").next().unwrap_or(text).to_owned()
}
