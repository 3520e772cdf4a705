//! The console's TLS: the relay's rustls `ServerConfig` from a PEM
//! certificate chain and private key (`apimail_relay::tls`), offering ALPN
//! `http/1.1`.

use std::path::Path;
use std::sync::Arc;

pub use apimail_relay::tls::TlsError;
use rustls::ServerConfig;

/// A server configuration from `cert` (PEM chain) and `key` (PKCS#8,
/// PKCS#1 or SEC1).
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(apimail_relay::tls::from_files(cert, key)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
