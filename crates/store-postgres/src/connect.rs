//! [`StoreConfig`] and the connection pool: tokio-postgres over the
//! project's one rustls configuration (`apimail_core::http::tls_config`),
//! with timeouts on connecting, on waiting for a pooled connection and on
//! every statement.

use std::str::FromStr;
use std::time::Duration;

use apimail_core::Secret;
use apimail_core::http::tls_config;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// How a node reaches the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user@host:port/db?…` (libpq's URL or key=value form).
    /// A password in it wins over [`password`](Self::password), as in libpq.
    pub url: String,
    /// The password, when it is not in the URL (from a file or
    /// `PGPASSWORD`, never a flag).
    pub password: Option<Secret>,
    /// This node's name in leases; by default `<host>-<pid>-<random>`.
    pub node: Option<String>,
    /// Connections at most in this process's pool.
    pub max_connections: usize,
    /// Connecting, TLS included; also the wait for a pooled connection.
    pub connect_timeout: Duration,
    /// The longest a statement may run (the server's `statement_timeout`).
    pub statement_timeout: Duration,
    /// How long a claim or a pacing permit lasts without renewal.
    pub lease: Duration,
}

impl StoreConfig {
    /// The defaults for `url`: 16 connections, 10 s to connect, 60 s per
    /// statement, 60 s leases.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            password: None,
            node: None,
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            lease: Duration::from_secs(60),
        }
    }

    /// With `password`.
    pub fn password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// The URL as it may be shown: without its password.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form: drop a password=… pair.
        return url
            .split_whitespace()
            .map(|pair| {
                if pair.starts_with("password=") {
                    "password=***"
                } else {
                    pair
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.find("password=") {
        Some(i) => {
            let end = tail[i..].find('&').map_or(tail.len(), |e| i + e);
            format!("{}password=***{}", &tail[..i], &tail[end..])
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The pool for `config`.
pub(crate) fn pool(config: &StoreConfig) -> Result<Pool, StoreError> {
    let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| {
        StoreError::InvalidUrl {
            // tokio-postgres names the bad key, never its value.
            reason: e.to_string(),
        }
    })?;
    // As libpq: a password in the URL wins over one from elsewhere.
    if let Some(password) = config
        .password
        .as_ref()
        .filter(|_| pg.get_password().is_none())
    {
        pg.password(password.expose());
    }
    if pg.get_hosts().is_empty() {
        return Err(StoreError::InvalidUrl {
            reason: "it names no host".into(),
        });
    }
    // Off loopback, TLS is required unless the URL says otherwise.
    let says_sslmode = config.url.contains("sslmode");
    if !says_sslmode && !all_local(pg.get_hosts()) {
        pg.ssl_mode(SslMode::Require);
    }
    pg.connect_timeout(config.connect_timeout);
    pg.keepalives_idle(Duration::from_secs(30));
    pg.tcp_user_timeout(config.connect_timeout.max(Duration::from_secs(30)));
    if pg.get_options().is_none() {
        pg.options(format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("apimail");
    }
    let tls = MakeRustlsConnect::new((*tls_config()?).clone());
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        })
        .build()
        .map_err(|e| StoreError::InvalidUrl {
            reason: e.to_string(),
        })
}

/// Whether every host is a Unix socket or a loopback address.
fn all_local(hosts: &[Host]) -> bool {
    hosts.iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example.com:5432/mail?sslmode=require"),
            "postgres://app:***@db.example.com:5432/mail?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/mail?password=s3cret&sslmode=require"),
            "postgres://app@db/mail?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("host=db user=app password=s3cret"),
            "host=db user=app password=***"
        );
        assert_eq!(redact_url("postgres://db/mail"), "postgres://db/mail");
    }

    #[test]
    fn a_bad_url_names_no_password() {
        let config = StoreConfig::new("postgres://app:s3cret@db/mail?bogus_key=1");
        let error = pool(&config).unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
