//! The console's settings: the `[admin]` table of the configuration file,
//! and where they lead (the listening address, TLS, the time zone).
//!
//! ```toml
//! [admin]
//! listen = "0.0.0.0:8025"
//! certificate = "/etc/apimail/console.pem"
//! private_key = "/etc/apimail/console.key"
//! time_zone = "Asia/Tokyo"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

/// The address the console listens on when neither `--listen` nor
/// `[admin] listen` names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8025";

/// `[admin]` of the configuration file (its schema lives in the account
/// layer, with the rest of the file).
pub use apimail_account::config::AdminSettings as Settings;

/// Why the settings cannot be used. Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The listening address does not parse.
    #[error("`{0}` is not an ADDR:PORT to listen on")]
    BadListen(String),
    /// Off loopback without a certificate.
    #[error(
        "the admin console would listen on {0}, which is not a loopback address, without TLS: passwords and session cookies would cross the network in the clear"
    )]
    NeedsTls(SocketAddr),
    /// Only one of `certificate` and `private_key` is set.
    #[error("[admin] sets only one of certificate and private_key")]
    HalfTls,
    /// The time zone is not known to the system's time zone database.
    #[error("[admin] time_zone `{0}` is not a known time zone")]
    BadTimeZone(String),
}

/// Where the `[admin]` settings lead.
pub trait SettingsExt {
    /// Where to listen: `flag` (`--listen`), else `listen`, else the default.
    fn listen_addr(&self, flag: Option<&str>) -> Result<SocketAddr, SettingsError>;
    /// The certificate and key to serve TLS with, if configured. Off
    /// loopback they are required.
    fn tls_files(&self, addr: SocketAddr) -> Result<Option<(PathBuf, PathBuf)>, SettingsError>;
    /// The time zone times are shown in: `time_zone`, else the system's
    /// (UTC if it cannot be found).
    fn zone(&self) -> Result<jiff::tz::TimeZone, SettingsError>;
}

impl SettingsExt for Settings {
    /// Where to listen: `flag` (`--listen`), else `listen`, else the default.
    fn listen_addr(&self, flag: Option<&str>) -> Result<SocketAddr, SettingsError> {
        let text = flag.or(self.listen.as_deref()).unwrap_or(DEFAULT_LISTEN);
        text.parse()
            .map_err(|_| SettingsError::BadListen(text.to_owned()))
    }

    /// The certificate and key to serve TLS with, if configured. Off
    /// loopback they are required.
    fn tls_files(&self, addr: SocketAddr) -> Result<Option<(PathBuf, PathBuf)>, SettingsError> {
        match (&self.certificate, &self.private_key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) if addr.ip().is_loopback() => Ok(None),
            (None, None) => Err(SettingsError::NeedsTls(addr)),
            _ => Err(SettingsError::HalfTls),
        }
    }

    /// The time zone times are shown in: `time_zone`, else the system's
    /// (UTC if it cannot be found).
    fn zone(&self) -> Result<jiff::tz::TimeZone, SettingsError> {
        match &self.time_zone {
            Some(name) => {
                jiff::tz::TimeZone::get(name).map_err(|_| SettingsError::BadTimeZone(name.clone()))
            }
            None => Ok(jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_tls() {
        let settings = Settings::default();
        let local = settings.listen_addr(None).unwrap();
        assert_eq!(local.to_string(), DEFAULT_LISTEN);
        assert!(settings.tls_files(local).unwrap().is_none());
        let lan = settings.listen_addr(Some("0.0.0.0:8025")).unwrap();
        let error = settings.tls_files(lan).unwrap_err();
        assert!(matches!(error, SettingsError::NeedsTls(_)));
        assert!(error.to_string().contains("without TLS"), "{error}");
        let v6 = settings.listen_addr(Some("[::1]:8025")).unwrap();
        assert!(settings.tls_files(v6).unwrap().is_none());

        let with_tls = Settings {
            certificate: Some("c.pem".into()),
            private_key: Some("k.pem".into()),
            ..Settings::default()
        };
        assert!(with_tls.tls_files(lan).unwrap().is_some());
        let half = Settings {
            certificate: Some("c.pem".into()),
            ..Settings::default()
        };
        assert!(matches!(
            half.tls_files(local).unwrap_err(),
            SettingsError::HalfTls
        ));
        assert!(matches!(
            settings.listen_addr(Some("localhost")).unwrap_err(),
            SettingsError::BadListen(_)
        ));
    }

    #[test]
    fn time_zones_are_checked() {
        let tokyo = Settings {
            time_zone: Some("Asia/Tokyo".into()),
            ..Settings::default()
        };
        assert_eq!(tokyo.zone().unwrap().iana_name(), Some("Asia/Tokyo"));
        let bad = Settings {
            time_zone: Some("Mars/Olympus".into()),
            ..Settings::default()
        };
        assert!(matches!(
            bad.zone().unwrap_err(),
            SettingsError::BadTimeZone(_)
        ));
    }
}
