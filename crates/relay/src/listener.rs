//! A listening socket's rules and its TLS.

use std::sync::Arc;

use ipnet::IpNet;

/// One listening socket's rules.
#[derive(Debug, Clone)]
pub struct Listener {
    /// The listener's name in the configuration (logs, `for_client`).
    pub name: String,
    /// Plain (with optional STARTTLS) or implicit TLS.
    pub tls: ListenerTls,
    /// Every client must AUTH before MAIL, even from loopback or an
    /// allowed network.
    pub require_auth: bool,
    /// Networks whose clients may send without AUTH (as the principal
    /// [`Directory::for_client`](crate::Directory::for_client) maps them
    /// to). When empty, loopback clients may (unless `require_auth`); when
    /// set, only clients in these networks, loopback ones too.
    pub allowed_networks: Vec<IpNet>,
    /// Lets `allowed_networks` hold a network wider than
    /// [`Listener::is_wide`] allows (e.g. `0.0.0.0/0`); the server warns at
    /// start-up. Without it, such a listener is refused.
    pub allow_any_network: bool,
    /// AUTH over an unencrypted connection from a non-loopback address;
    /// otherwise refused with `538 5.7.11`. For old printers; loud.
    pub allow_plaintext_auth: bool,
}

impl Listener {
    /// A plain listener named `name`, without STARTTLS, AUTH optional, no
    /// allowed networks, plaintext AUTH refused (from non-loopback).
    pub fn plain(name: impl Into<String>) -> Self {
        Listener {
            name: name.into(),
            tls: ListenerTls::Plain { starttls: None },
            require_auth: false,
            allowed_networks: Vec::new(),
            allow_any_network: false,
            allow_plaintext_auth: false,
        }
    }

    /// Whether `net` is wider than an IPv4 /8 or an IPv6 /32: a network
    /// `allowed_networks` holds only with `allow_any_network`.
    pub fn is_wide(net: &IpNet) -> bool {
        match net {
            IpNet::V4(v4) => v4.prefix_len() < 8,
            IpNet::V6(v6) => v6.prefix_len() < 32,
        }
    }
}

/// A listener's TLS.
#[derive(Clone)]
pub enum ListenerTls {
    /// Plain text, upgraded by STARTTLS when a configuration is given.
    Plain {
        /// The STARTTLS configuration; `None` offers no STARTTLS.
        starttls: Option<Arc<rustls::ServerConfig>>,
    },
    /// TLS from the first byte (port 465 style, RFC 8314).
    Implicit(Arc<rustls::ServerConfig>),
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerTls::Plain { starttls } => f
                .debug_struct("Plain")
                .field("starttls", &starttls.is_some())
                .finish(),
            ListenerTls::Implicit(_) => f.write_str("Implicit"),
        }
    }
}
