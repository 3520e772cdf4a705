//! Explicit credentials and endpoints, and what the environment holds.

use std::path::PathBuf;
use std::time::Duration;

use apimail_account::{Credentials, Endpoints, ResolveError};
use apimail_core::Secret;
use apimail_core::endpoint::checked_url;
use apimail_core::retry::RetryPolicy;
use apimail_graph::Cloud;
use url::Url;

use crate::limited::Limited;
use crate::mailer::OutboxAt;
use crate::{Error, Mailer};

/// Builds a [`Mailer`]: credentials, then optional endpoints and policy.
/// Endpoints are checked when it is built (https, or http to loopback).
#[derive(Debug, Clone)]
pub struct MailerBuilder {
    credentials: Credentials,
    gmail_api_url: Option<String>,
    google_token_url: Option<String>,
    graph_api_url: Option<String>,
    authority_url: Option<String>,
    cloud: Cloud,
    max_message_bytes: Option<usize>,
    retry: RetryPolicy,
    deadline: Option<Duration>,
    outbox: Option<PathBuf>,
    store: Option<(Secret, Option<Secret>)>,
}

impl MailerBuilder {
    /// A builder with the providers' own endpoints, the global Microsoft
    /// cloud, the standard retry policy (5 attempts within 2 minutes) and
    /// no deadline.
    pub fn new(credentials: Credentials) -> Self {
        MailerBuilder {
            credentials,
            gmail_api_url: None,
            google_token_url: None,
            graph_api_url: None,
            authority_url: None,
            cloud: Cloud::Global,
            max_message_bytes: None,
            retry: RetryPolicy::standard(),
            deadline: None,
            outbox: None,
            store: None,
        }
    }

    /// The Gmail API root (default `https://gmail.googleapis.com/`).
    pub fn gmail_api_url(mut self, url: impl Into<String>) -> Self {
        self.gmail_api_url = Some(url.into());
        self
    }

    /// Google's token endpoint (default: the key's `token_uri`, else
    /// `https://oauth2.googleapis.com/token`).
    pub fn google_token_url(mut self, url: impl Into<String>) -> Self {
        self.google_token_url = Some(url.into());
        self
    }

    /// The Graph root (default: the cloud's, `https://graph.microsoft.com/`).
    pub fn graph_api_url(mut self, url: impl Into<String>) -> Self {
        self.graph_api_url = Some(url.into());
        self
    }

    /// The Microsoft login host (default: the cloud's,
    /// `https://login.microsoftonline.com/`).
    pub fn authority_url(mut self, url: impl Into<String>) -> Self {
        self.authority_url = Some(url.into());
        self
    }

    /// The Microsoft cloud (national clouds have their own hosts).
    pub fn cloud(mut self, cloud: Cloud) -> Self {
        self.cloud = cloud;
        self
    }

    /// The Graph mailbox's message size limit (default 35 MB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// How temporary failures are retried within one send.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// One attempt per send: temporary failures are returned at once.
    pub fn no_retries(mut self) -> Self {
        self.retry.max_attempts = 1;
        self
    }

    /// A deadline for every send (see [`Mailer::with_deadline`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sends through a durable outbox in `dir` (created if missing; the
    /// command line's is `$APIMAIL_DATA_DIR/outbox`), for long-lived
    /// services. Each send is first written to the outbox and synced to
    /// disk, then delivered by the delivery engine with the in-process
    /// retries, so a crash between the two leaves it there for the next
    /// [`Mailer::flush`]. A send that does not go out now fails with the
    /// entry's id ([`Error::outbox_entry`]): still queued after a temporary
    /// failure, in `failed/` with the reason after a permanent one.
    /// Entries are tagged with this mailer's credentials; a flush sends
    /// only its own.
    pub fn outbox(mut self, dir: impl Into<PathBuf>) -> Self {
        self.outbox = Some(dir.into());
        self
    }

    /// Sends through the shared store on PostgreSQL at `url`
    /// (`postgres://user@host/db`), instead of a local outbox: what a
    /// cloud function needs, whose disk does not outlive the instance.
    /// Each send is committed to the database before it is tried, so a
    /// send that returned an entry id survives the process, and any worker
    /// on the same store ([`Mailer::flush`]) sends it later. The schema
    /// must be current (`apimail store migrate`). The password comes from
    /// the URL or [`store_password`](Self::store_password).
    pub fn store(mut self, url: impl Into<String>) -> Self {
        let password = self.store.take().and_then(|(_, password)| password);
        self.store = Some((Secret::new(url.into()), password));
        self
    }

    /// The shared store's password (for example read from a secret
    /// manager or a file); see [`store`](Self::store).
    pub fn store_password(mut self, password: Secret) -> Self {
        let url = self
            .store
            .take()
            .map(|(url, _)| url)
            .unwrap_or_else(|| Secret::new(""));
        self.store = Some((url, Some(password)));
        self
    }

    /// Builds the transport (through the account layer, as the command
    /// line builds its own): the HTTPS client, and for a service account
    /// or a certificate, the parsed key; opens the outbox, if any. No
    /// request is made.
    pub async fn build(self) -> Result<Mailer, Error> {
        apimail_account::set_env_http_timeouts();
        let defaults = Endpoints::defaults(self.cloud);
        let endpoints = Endpoints {
            gmail_api: url(self.gmail_api_url.as_deref(), defaults.gmail_api.clone())?,
            google_token: self.google_token_url.as_deref().map(checked).transpose()?,
            graph_api: url(self.graph_api_url.as_deref(), defaults.graph_api.clone())?,
            authority: url(self.authority_url.as_deref(), defaults.authority.clone())?,
            graph_max_message_bytes: self
                .max_message_bytes
                .unwrap_or(defaults.graph_max_message_bytes),
            ..defaults
        };
        let identity = self.credentials.identity();
        let sender = apimail_account::build(self.credentials, &endpoints)
            .await
            .map_err(build_error)?;
        let queue = match (self.store, self.outbox) {
            (Some((url, password)), _) => Some(OutboxAt::Shared(
                open_store(&url, password).await?,
                identity,
            )),
            (None, Some(dir)) => Some(OutboxAt::Local(crate::queue::Settings { dir, identity })),
            (None, None) => None,
        };
        Mailer::new(Limited::new(sender), self.retry, self.deadline, queue)
    }
}

/// Opens the shared store at `url` through the account layer: the
/// database answers and its schema is current.
pub(crate) async fn open_store(
    url: &Secret,
    password: Option<Secret>,
) -> Result<apimail_store_postgres::Store, Error> {
    if url.expose().trim().is_empty() {
        return Err(Error::config(
            "MailerBuilder::store_password was given without MailerBuilder::store(url)",
        ));
    }
    let settings = apimail_account::StoreSettings {
        url: url.clone(),
        url_from: "MailerBuilder::store",
        password,
        migrate: false,
        token_key: None,
    };
    apimail_account::open_store(&settings).await.map_err(|e| {
        let kind = if e.is_temporary() {
            crate::ErrorKind::Temporary
        } else {
            crate::ErrorKind::Config
        };
        Error::new(
            kind,
            format!(
                "cannot use the store at {}: {}",
                apimail_store_postgres::redact_url(url.expose()),
                apimail_core::error_chain(&e)
            ),
        )
    })
}

/// What the library says when its credentials cannot be used.
fn build_error(error: ResolveError) -> Error {
    match error {
        ResolveError::ServiceAccountKey(e) => {
            Error::config(format!("the service account key cannot be used: {e}"))
        }
        ResolveError::Certificate(e) => {
            Error::config(format!("the client certificate cannot be used: {e}"))
        }
        ResolveError::TlsRoots(e) | ResolveError::Transport(e) => Error::from(e),
        other => Error::from(other),
    }
}

/// An endpoint given by the user: https, or http to loopback only.
fn checked(value: &str) -> Result<Url, Error> {
    checked_url(value)
        .map_err(|e| Error::config(format!("the endpoint `{value}` cannot be used: {e}")))
}

/// The endpoint given, checked, else `default`.
fn url(given: Option<&str>, default: Url) -> Result<Url, Error> {
    given.map_or(Ok(default), checked)
}

/// The mailer for the environment's credentials (see [`Mailer::from_env`]),
/// resolved by the account layer as the command line resolves them.
pub(crate) async fn from_env() -> Result<Mailer, Error> {
    apimail_account::set_env_http_timeouts();
    let Some(resolved) = apimail_account::from_env().await? else {
        return Err(Error::config(
            "no credentials in the environment: set GOOGLE_APPLICATION_CREDENTIALS and APIMAIL_GMAIL_USER, \
             or APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET and APIMAIL_GOOGLE_REFRESH_TOKEN, \
             or AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) and APIMAIL_GRAPH_USER",
        ));
    };
    let retry = apimail_account::retry_policy(
        &apimail_account::Config::default(),
        RetryPolicy::standard(),
    )?;
    let queue = match apimail_account::store_settings(&apimail_account::Config::default()) {
        Ok(Some(store)) => Some(OutboxAt::Shared(
            open_store(&store.url, store.password).await?,
            resolved.identity.clone(),
        )),
        Ok(None) => None,
        Err(e) => return Err(Error::config(apimail_core::error_chain(&e))),
    };
    Mailer::new(Limited::new(resolved.sender), retry, None, queue)
}

impl Mailer {
    /// A mailer from the environment's credentials, read as the command
    /// line reads them: a Gmail service account
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, `APIMAIL_GMAIL_USER`) or refresh
    /// token (`APIMAIL_GOOGLE_CLIENT_ID`, `_CLIENT_SECRET`,
    /// `_REFRESH_TOKEN`), else Graph app-only credentials
    /// (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` or
    /// `AZURE_CLIENT_CERTIFICATE_PATH`, `APIMAIL_GRAPH_USER`). Endpoint
    /// overrides (`APIMAIL_GMAIL_API_URL`, `APIMAIL_GOOGLE_TOKEN_URL`,
    /// `APIMAIL_GRAPH_API_URL`, `APIMAIL_MS_AUTHORITY_URL`,
    /// `APIMAIL_GRAPH_CLOUD`), `APIMAIL_GRAPH_MAX_MESSAGE_MB` and the retry
    /// bound (`APIMAIL_RETRY_ATTEMPTS`, `APIMAIL_RETRY_MAX_SECONDS`) apply
    /// too. With `APIMAIL_STORE_URL` (its password in the URL,
    /// `APIMAIL_STORE_PASSWORD_FILE` or `PGPASSWORD`) sends go through the
    /// shared store, as with [`MailerBuilder::store`].
    ///
    /// Fails with [`ErrorKind::Config`](crate::ErrorKind::Config) when no credentials are set.
    pub async fn from_env() -> Result<Mailer, Error> {
        from_env().await
    }

    /// A builder for explicit credentials; nothing is read from the
    /// environment or the disk.
    pub fn builder(credentials: Credentials) -> MailerBuilder {
        MailerBuilder::new(credentials)
    }
}
