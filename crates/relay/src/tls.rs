//! The relay's TLS: a rustls `ServerConfig` (ring, TLS 1.2 and 1.3) from a
//! certificate and key in PEM files, or from a self-signed certificate
//! that apimail generates once and keeps in the data directory (mode 0600).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use apimail_core::files;

/// The self-signed certificate's file name in its directory.
pub const SELF_SIGNED_CERT: &str = "cert.pem";
/// The self-signed certificate's key's file name in its directory.
pub const SELF_SIGNED_KEY: &str = "key.pem";

/// Why a TLS configuration could not be built. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// `the certificate` or `the private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file holds no PEM certificate, or no PEM private key.
    #[error("{path} holds no PEM {what}")]
    Empty {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (say, a key that does not match).
    #[error("the certificate {cert} and key {key} do not make a TLS configuration: {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    /// Writing the self-signed certificate failed.
    #[error("cannot keep the self-signed certificate in {dir}")]
    Write {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A server configuration from a PEM certificate chain and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
        what: "the certificate",
        path: cert.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
        what: "the private key",
        path: key.to_owned(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::Empty {
            what: "certificate",
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Empty {
        what: "private key",
        path: key.to_owned(),
    })?;
    build(chain, private_key).map_err(|reason| TlsError::Refused {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    })
}

/// The self-signed certificate in `dir` (`cert.pem`, `key.pem`), generated
/// for `hostname`, `localhost` and 127.0.0.1 the first time and reused
/// after, so a device that pinned it keeps working.
pub fn self_signed(dir: &Path, hostname: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = dir.join(SELF_SIGNED_CERT);
    let key = dir.join(SELF_SIGNED_KEY);
    if !cert.exists() || !key.exists() {
        generate(dir, hostname)?;
    }
    from_files(&cert, &key)
}

/// Writes a new self-signed certificate and key into `dir`, key first, both
/// mode 0600.
fn generate(dir: &Path, hostname: &str) -> Result<(), TlsError> {
    let mut names = vec![hostname.to_owned(), "localhost".to_owned()];
    names.dedup();
    names.push("127.0.0.1".to_owned());
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |name: &str, text: String| {
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                files::write_private(&dir.join(name), text.as_bytes())
                    .map_err(files::WriteError::into_io_error)
            })
            .map_err(|source| TlsError::Write {
                dir: dir.to_owned(),
                source,
            })
    };
    write(SELF_SIGNED_KEY, certified.signing_key.serialize_pem())?;
    write(SELF_SIGNED_CERT, certified.cert.pem())
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        self_signed(&tls, "relay.example").unwrap();
        let first = std::fs::read(tls.join(SELF_SIGNED_CERT)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls.join(SELF_SIGNED_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        self_signed(&tls, "relay.example").unwrap();
        assert_eq!(std::fs::read(tls.join(SELF_SIGNED_CERT)).unwrap(), first);
    }

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = from_files(&cert, &key).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");

        let missing = from_files(&dir.path().join("nope.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read the certificate"), "{missing}");
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        self_signed(&a, "a.example").unwrap();
        self_signed(&b, "b.example").unwrap();
        let error = from_files(&a.join(SELF_SIGNED_CERT), &b.join(SELF_SIGNED_KEY))
            .unwrap_err()
            .to_string();
        assert!(error.contains("do not make a TLS configuration"), "{error}");
    }
}
