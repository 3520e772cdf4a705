//! The rustls client configuration and its roots, loaded once.

use std::sync::{Arc, OnceLock};

/// Why no TLS configuration could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub(super) String);

/// The rustls client configuration, built once per process: the ring
/// provider, TLS 1.2 and 1.3, and the roots of [`root_source`].
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TlsSetupError>> = OnceLock::new();
    CONFIG.get_or_init(build_tls_config).clone()
}

/// Where the CA certificates come from, for messages: `SSL_CERT_FILE=…`,
/// the system's bundle, or (only when there is no bundle) `SSL_CERT_DIR=…`
/// or the system's certificate directory.
pub fn root_source() -> String {
    match roots_from() {
        Roots::ConfiguredFile(file) => format!("SSL_CERT_FILE={}", file.to_string_lossy()),
        Roots::Bundle(path) => format!("the system's CA bundle ({})", path.display()),
        Roots::Directory => match std::env::var_os("SSL_CERT_DIR") {
            Some(dir) => format!("SSL_CERT_DIR={}", dir.to_string_lossy()),
            None => "the system's certificate directory".to_owned(),
        },
    }
}

fn build_tls_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let found = system_certificates()?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let detail = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        return Err(TlsSetupError(format!(
            "no usable CA certificate in {}{detail}",
            root_source()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Which certificates [`system_certificates`] reads.
enum Roots {
    /// `SSL_CERT_FILE`, which is then all that is read.
    ConfiguredFile(std::ffi::OsString),
    /// The distribution's bundle (`/etc/ssl/certs/ca-certificates.crt` on
    /// Debian), found by openssl-probe.
    Bundle(std::path::PathBuf),
    /// No bundle: `SSL_CERT_DIR`, else the system's certificate directory.
    Directory,
}

fn roots_from() -> Roots {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return Roots::ConfiguredFile(file);
    }
    match openssl_probe::probe().cert_file {
        Some(bundle) => Roots::Bundle(bundle),
        None => Roots::Directory,
    }
}

/// The CA certificates: one bundle, read once, and no directory beside
/// it. A bundle (`SSL_CERT_FILE`, else the system's) holds the same
/// certificates as the hashed directory (`SSL_CERT_DIR`, `/etc/ssl/certs`),
/// which would cost a few hundred system calls to read again, so the
/// directory is read only when there is no bundle. A configured file that
/// holds no certificate is a mistake, not a reason to look elsewhere.
fn system_certificates() -> Result<rustls_native_certs::CertificateResult, TlsSetupError> {
    match roots_from() {
        Roots::ConfiguredFile(file) => {
            let found = rustls_native_certs::load_certs_from_paths(Some(file.as_ref()), None);
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                return Err(TlsSetupError(format!(
                    "SSL_CERT_FILE={} holds no CA certificate{why}",
                    file.to_string_lossy()
                )));
            }
            Ok(found)
        }
        Roots::Bundle(bundle) => Ok(rustls_native_certs::load_certs_from_paths(
            Some(&bundle),
            None,
        )),
        // SSL_CERT_FILE is unset and no bundle exists, so this reads the
        // directories alone: SSL_CERT_DIR's, else openssl-probe's.
        Roots::Directory => Ok(rustls_native_certs::load_native_certs()),
    }
}
