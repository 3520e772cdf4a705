//! Explicit credentials and endpoints, and what the environment holds.

use std::path::PathBuf;
use std::time::Duration;

use apimail_core::endpoint::checked_url;
use apimail_core::oauth::OAuthClient;
use apimail_core::retry::RetryPolicy;
use apimail_core::{RefreshTokenSource, Secret, SenderIdentity};
use apimail_gmail::{GmailTokens, GmailTransport, ServiceAccountTokens, google_auth};
use apimail_graph::{AppCredential, AppOnlyTokens, Cloud, GraphTokens, GraphTransport};
use url::Url;

use crate::limited::Limited;
use crate::{Error, Mailer, Sender};

/// What a [`Mailer`] authenticates with. `Debug` prints no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// A Google service account's JSON key, acting as `user` of its
    /// Workspace domain (domain-wide delegation with the gmail.send scope).
    GmailServiceAccount {
        /// The key file's contents.
        key_json: Secret,
        /// The address it sends as.
        user: String,
    },
    /// A Google OAuth client and a refresh token granted gmail.send.
    GmailRefreshToken {
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: Secret,
        /// The refresh token.
        refresh_token: Secret,
    },
    /// A Microsoft Entra app with a client secret, sending as `mailbox`
    /// (application permission Mail.Send).
    GraphAppSecret {
        /// The tenant id or domain.
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// The client secret's value.
        secret: Secret,
        /// The mailbox it sends as.
        mailbox: String,
    },
    /// A delegated Microsoft refresh token (from an authorization-code or
    /// device-code login with `offline_access` and Mail.Send), sending as
    /// the signed-in user (`mailbox` `None`: `/me`) or as a mailbox that
    /// user may send as. It is refreshed in memory; a rotated refresh token
    /// is not kept (the one given stays valid until it expires).
    GraphRefreshToken {
        /// The tenant id or domain (`common`, `organizations` work too).
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// The client secret, for a confidential client; `None` for a
        /// public one.
        client_secret: Option<Secret>,
        /// The refresh token.
        refresh_token: Secret,
        /// The mailbox it sends as; `None` for the user's own (`/me`).
        mailbox: Option<String>,
    },
    /// A Microsoft Entra app with a certificate, sending as `mailbox`.
    GraphAppCertificate {
        /// The tenant id or domain.
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// PEM text: the certificate and its unencrypted RSA private key.
        pem: Secret,
        /// The mailbox it sends as.
        mailbox: String,
    },
}

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

    /// Builds the transport: the HTTPS client, and for a service account
    /// or a certificate, the parsed key; opens the outbox, if any. No
    /// request is made.
    pub async fn build(self) -> Result<Mailer, Error> {
        let sender = match self.credentials.clone() {
            Credentials::GmailServiceAccount { key_json, user } => {
                let token_url = url(self.google_token_url.as_deref(), None)?;
                let tokens = ServiceAccountTokens::new(
                    key_json.expose().as_bytes(),
                    &user,
                    token_url.as_ref(),
                )
                .await
                .map_err(|e| {
                    Error::config(format!("the service account key cannot be used: {e}"))
                })?;
                gmail(
                    self.gmail_api_url.as_deref(),
                    user,
                    GmailTokens::ServiceAccount(tokens),
                )?
            }
            Credentials::GmailRefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let client = OAuthClient {
                    client_id,
                    client_secret: Some(client_secret),
                    auth_url: None,
                    token_url: required_url(
                        self.google_token_url.as_deref(),
                        google_auth::TOKEN_URL,
                    )?,
                    device_auth_url: None,
                };
                let tokens = RefreshTokenSource::new(
                    client,
                    refresh_token,
                    vec![apimail_gmail::SEND_SCOPE.to_owned()],
                );
                gmail(
                    self.gmail_api_url.as_deref(),
                    "me".to_owned(),
                    GmailTokens::Environment(tokens),
                )?
            }
            Credentials::GraphAppSecret {
                tenant,
                client_id,
                secret,
                mailbox,
            } => graph_app(
                &self,
                &tenant,
                client_id,
                AppCredential::Secret(secret),
                mailbox,
            )?,
            Credentials::GraphRefreshToken {
                tenant,
                client_id,
                client_secret,
                refresh_token,
                mailbox,
            } => {
                let authority = required_url(
                    self.authority_url.as_deref(),
                    self.cloud.login_url().as_str(),
                )?;
                let client = OAuthClient {
                    client_id,
                    client_secret,
                    auth_url: None,
                    token_url: apimail_graph::token_url(&authority, &tenant),
                    device_auth_url: None,
                };
                let tokens = RefreshTokenSource::new(
                    client,
                    refresh_token,
                    apimail_graph::delegated_scopes(self.cloud, false),
                );
                Sender::Graph(graph(
                    self.graph_api_url.as_deref(),
                    self.cloud,
                    mailbox.map_or(apimail_graph::Mailbox::Me, apimail_graph::Mailbox::User),
                    GraphTokens::Refresh(tokens),
                    self.max_message_bytes,
                    false,
                )?)
            }
            Credentials::GraphAppCertificate {
                tenant,
                client_id,
                pem,
                mailbox,
            } => graph_app(
                &self,
                &tenant,
                client_id,
                AppCredential::Certificate(pem),
                mailbox,
            )?,
        };
        let queue = self.outbox.map(|dir| crate::queue::Settings {
            dir,
            identity: identity(&self.credentials),
        });
        Mailer::new(Limited::new(sender), self.retry, self.deadline, queue)
    }
}

/// Who a mailer with these credentials sends as, for its outbox entries.
fn identity(credentials: &Credentials) -> SenderIdentity {
    let (provider, credential, principal) = match credentials {
        Credentials::GmailServiceAccount { user, .. } => {
            ("gmail", "service_account", format!("as {user}"))
        }
        Credentials::GmailRefreshToken { client_id, .. } => {
            ("gmail", "refresh_token", format!("client {client_id}"))
        }
        Credentials::GraphRefreshToken {
            tenant,
            client_id,
            mailbox,
            ..
        } => (
            "graph",
            "refresh_token",
            format!(
                "client {client_id} of tenant {tenant} as {}",
                mailbox.as_deref().unwrap_or("me")
            ),
        ),
        Credentials::GraphAppSecret {
            tenant,
            client_id,
            mailbox,
            ..
        }
        | Credentials::GraphAppCertificate {
            tenant,
            client_id,
            mailbox,
            ..
        } => (
            "graph",
            "app_only",
            format!("client {client_id} of tenant {tenant} as {mailbox}"),
        ),
    };
    SenderIdentity::Environment {
        provider: provider.into(),
        credential: credential.into(),
        principal,
    }
}

/// An endpoint given by the user: https, or http to loopback only.
pub(crate) fn checked(value: &str) -> Result<Url, Error> {
    checked_url(value)
        .map_err(|e| Error::config(format!("the endpoint `{value}` cannot be used: {e}")))
}

/// A checked endpoint, or `None` when neither given nor defaulted.
pub(crate) fn url(given: Option<&str>, default: Option<&str>) -> Result<Option<Url>, Error> {
    match given {
        Some(value) => checked(value).map(Some),
        None => Ok(default.map(|d| Url::parse(d).expect("defaults are valid URLs"))),
    }
}

pub(crate) fn required_url(given: Option<&str>, default: &str) -> Result<Url, Error> {
    Ok(url(given, Some(default))?.expect("a default was given"))
}

/// A Gmail transport with its own HTTPS client (one pool for every send).
pub(crate) fn gmail(
    api_url: Option<&str>,
    user: String,
    tokens: GmailTokens,
) -> Result<Sender, Error> {
    let api_url = required_url(api_url, apimail_gmail::DEFAULT_API_URL)?;
    let client = apimail_gmail::https_client()?;
    Ok(Sender::Gmail(GmailTransport::new(
        client, &api_url, user, tokens,
    )))
}

/// A Graph transport sending as `mailbox` with app-only credentials.
fn graph_app(
    settings: &MailerBuilder,
    tenant: &str,
    client_id: String,
    credential: AppCredential,
    mailbox: String,
) -> Result<Sender, Error> {
    let authority = required_url(
        settings.authority_url.as_deref(),
        settings.cloud.login_url().as_str(),
    )?;
    let tokens = AppOnlyTokens::new(
        client_id,
        apimail_graph::token_url(&authority, tenant),
        settings.cloud,
        credential,
    )
    .map_err(|e| Error::config(format!("the client certificate cannot be used: {e}")))?;
    graph(
        settings.graph_api_url.as_deref(),
        settings.cloud,
        apimail_graph::Mailbox::User(mailbox),
        GraphTokens::AppOnly(tokens),
        settings.max_message_bytes,
        true,
    )
    .map(|t| Sender::Graph(t.app_only()))
}

pub(crate) fn graph(
    api_url: Option<&str>,
    cloud: Cloud,
    mailbox: apimail_graph::Mailbox,
    tokens: GraphTokens,
    max_message_bytes: Option<usize>,
    large_messages_allowed: bool,
) -> Result<GraphTransport<GraphTokens>, Error> {
    let api = required_url(api_url, cloud.graph_url().as_str())?;
    Ok(GraphTransport::try_new(
        &api,
        mailbox,
        tokens,
        max_message_bytes.unwrap_or(apimail_graph::DEFAULT_MAX_MESSAGE_BYTES),
        large_messages_allowed,
    )?)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The builder for the environment's credentials (see [`Mailer::from_env`]).
pub(crate) async fn from_env() -> Result<MailerBuilder, Error> {
    let credentials =
        match apimail_gmail::credentials_from_env().map_err(|e| Error::config(e.to_string()))? {
            Some(apimail_gmail::EnvCredentials::ServiceAccount { key, user, .. }) => {
                Credentials::GmailServiceAccount {
                    key_json: key,
                    user,
                }
            }
            Some(apimail_gmail::EnvCredentials::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
                ..
            }) => Credentials::GmailRefreshToken {
                client_id,
                client_secret,
                refresh_token,
            },
            None => graph_from_env()?,
        };
    let mut builder = MailerBuilder::new(credentials);
    builder.gmail_api_url = var("APIMAIL_GMAIL_API_URL");
    builder.google_token_url = var("APIMAIL_GOOGLE_TOKEN_URL");
    builder.graph_api_url = var("APIMAIL_GRAPH_API_URL");
    builder.authority_url = var("APIMAIL_MS_AUTHORITY_URL");
    if let Some(name) = var("APIMAIL_GRAPH_CLOUD") {
        builder.cloud = cloud(&name)?;
    }
    builder.max_message_bytes =
        Some(apimail_graph::max_message_bytes(None).map_err(|e| Error::config(e.to_string()))?);
    builder.retry = retry_from_env(builder.retry, None, None)?;
    Ok(builder)
}

fn graph_from_env() -> Result<Credentials, Error> {
    let Some(found) =
        apimail_graph::credentials_from_env().map_err(|e| Error::config(e.to_string()))?
    else {
        return Err(Error::config(
            "no credentials in the environment: set GOOGLE_APPLICATION_CREDENTIALS and APIMAIL_GMAIL_USER, \
             or APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET and APIMAIL_GOOGLE_REFRESH_TOKEN, \
             or AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) and APIMAIL_GRAPH_USER",
        ));
    };
    app_credentials(found.tenant, found.client_id, found.user, None, None)
}

/// Graph app-only credentials: `$AZURE_CLIENT_SECRET`, else a secret file,
/// else `$AZURE_CLIENT_CERTIFICATE_PATH`, else a certificate file.
pub(crate) fn app_credentials(
    tenant: String,
    client_id: String,
    mailbox: String,
    secret_file: Option<&str>,
    certificate_file: Option<&str>,
) -> Result<Credentials, Error> {
    let read = |path: &str, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read the {what} `{path}`: {e}")))
    };
    let secret = match (apimail_graph::secret_from_env(), secret_file) {
        (Some(secret), _) => Some(secret),
        (None, Some(file)) => Some(Secret::new(read(file, "client secret file")?.trim())),
        (None, None) => None,
    };
    if let Some(secret) = secret {
        return Ok(Credentials::GraphAppSecret {
            tenant,
            client_id,
            secret,
            mailbox,
        });
    }
    let Some(path) =
        apimail_graph::certificate_path_from_env().or(certificate_file.map(str::to_owned))
    else {
        return Err(Error::config(
            "Graph app-only credentials need a client secret or a certificate: set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH",
        ));
    };
    Ok(Credentials::GraphAppCertificate {
        tenant,
        client_id,
        pem: Secret::new(read(&path, "client certificate")?),
        mailbox,
    })
}

pub(crate) fn cloud(name: &str) -> Result<Cloud, Error> {
    name.parse().map_err(|_| {
        Error::config(format!(
            "unknown Microsoft cloud `{name}`: use global, usgov, usgov-dod or china"
        ))
    })
}

/// The retry bound: `$APIMAIL_RETRY_ATTEMPTS` / `$APIMAIL_RETRY_MAX_SECONDS`,
/// else the configured values, else `policy`'s.
pub(crate) fn retry_from_env(
    mut policy: RetryPolicy,
    attempts: Option<u32>,
    max_seconds: Option<u64>,
) -> Result<RetryPolicy, Error> {
    let number = |name: &str| -> Result<Option<u64>, Error> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::config(format!("{name} `{v}` is not a whole number")))
            })
            .transpose()
    };
    if let Some(attempts) = number("APIMAIL_RETRY_ATTEMPTS")?.or(attempts.map(u64::from)) {
        policy.max_attempts = attempts.clamp(1, 100) as u32;
    }
    if let Some(seconds) = number("APIMAIL_RETRY_MAX_SECONDS")?.or(max_seconds) {
        policy.max_elapsed = Duration::from_secs(seconds);
    }
    Ok(policy)
}
