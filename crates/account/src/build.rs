//! The one place a provider's transport is built: from [`Credentials`]
//! and [`Endpoints`] (the library's explicit credentials, the
//! environment's, app-only accounts), or from an account's stored tokens.

use apimail_core::RefreshTokenSource;
use apimail_core::oauth::OAuthClient;
use apimail_gmail::{GmailTokens, GmailTransport, ServiceAccountTokens, google_auth};
use apimail_graph::{AppCredential, AppOnlyTokens, Cloud, GraphTokens, GraphTransport, Mailbox};
use url::Url;

use crate::credentials::Credentials;
use crate::error::ResolveError;
use crate::sender::Sender;

/// Where a sender's requests go, already checked (https, or http to
/// loopback), and the mailbox's size limit.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The Gmail API root.
    pub gmail_api: Url,
    /// Google's token endpoint; `None`: a service account key's own
    /// `token_uri`, else Google's.
    pub google_token: Option<Url>,
    /// The Graph root.
    pub graph_api: Url,
    /// The Microsoft login host.
    pub authority: Url,
    /// The Microsoft cloud (scopes and hosts).
    pub cloud: Cloud,
    /// The Graph mailbox's size limit, in bytes.
    pub graph_max_message_bytes: usize,
}

impl Endpoints {
    /// The providers' own endpoints, in `cloud`, with the default size
    /// limit.
    pub fn defaults(cloud: Cloud) -> Self {
        Endpoints {
            gmail_api: parse(apimail_gmail::DEFAULT_API_URL),
            google_token: None,
            graph_api: cloud.graph_url(),
            authority: cloud.login_url(),
            cloud,
            graph_max_message_bytes: apimail_graph::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

fn parse(default: &str) -> Url {
    Url::parse(default).expect("defaults are valid URLs")
}

/// The sender for `credentials`: its token source (a service account key
/// parsed, a certificate read) and its transport, with one HTTPS client.
/// No request is made.
pub async fn build(
    credentials: Credentials,
    endpoints: &Endpoints,
) -> Result<Sender, ResolveError> {
    match credentials {
        Credentials::GmailServiceAccount { key_json, user } => {
            let tokens = ServiceAccountTokens::new(
                key_json.expose().as_bytes(),
                &user,
                endpoints.google_token.as_ref(),
            )
            .await
            .map_err(ResolveError::ServiceAccountKey)?;
            gmail(
                &endpoints.gmail_api,
                user,
                GmailTokens::ServiceAccount(tokens),
            )
            .map(Sender::Gmail)
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
                token_url: endpoints
                    .google_token
                    .clone()
                    .unwrap_or_else(|| parse(google_auth::TOKEN_URL)),
                device_auth_url: None,
            };
            let tokens = RefreshTokenSource::new(
                client,
                refresh_token,
                vec![apimail_gmail::SEND_SCOPE.to_owned()],
            );
            gmail(&endpoints.gmail_api, "me", GmailTokens::Environment(tokens)).map(Sender::Gmail)
        }
        Credentials::GraphAppSecret {
            tenant,
            client_id,
            secret,
            mailbox,
        } => graph_app(
            endpoints,
            &tenant,
            client_id,
            AppCredential::Secret(secret),
            mailbox,
        ),
        Credentials::GraphAppCertificate {
            tenant,
            client_id,
            pem,
            mailbox,
        } => graph_app(
            endpoints,
            &tenant,
            client_id,
            AppCredential::Certificate(pem),
            mailbox,
        ),
        Credentials::GraphRefreshToken {
            tenant,
            client_id,
            client_secret,
            refresh_token,
            mailbox,
        } => {
            let client = OAuthClient {
                client_id,
                client_secret,
                auth_url: None,
                token_url: apimail_graph::token_url(&endpoints.authority, &tenant),
                device_auth_url: None,
            };
            let tokens = RefreshTokenSource::new(
                client,
                refresh_token,
                apimail_graph::delegated_scopes(endpoints.cloud, false),
            );
            let transport = GraphTransport::try_new(
                &endpoints.graph_api,
                mailbox.map_or(Mailbox::Me, Mailbox::User),
                GraphTokens::Refresh(tokens),
                endpoints.graph_max_message_bytes,
                false,
            )
            .map_err(ResolveError::Transport)?;
            Ok(Sender::Graph(transport))
        }
    }
}

/// A Graph transport sending as `mailbox` with app-only credentials.
fn graph_app(
    endpoints: &Endpoints,
    tenant: &str,
    client_id: String,
    credential: AppCredential,
    mailbox: String,
) -> Result<Sender, ResolveError> {
    let tokens = AppOnlyTokens::new(
        client_id,
        apimail_graph::token_url(&endpoints.authority, tenant),
        endpoints.cloud,
        credential,
    )
    .map_err(ResolveError::Certificate)?;
    let transport = GraphTransport::try_new(
        &endpoints.graph_api,
        Mailbox::User(mailbox),
        GraphTokens::AppOnly(tokens),
        endpoints.graph_max_message_bytes,
        true,
    )
    .map_err(ResolveError::Transport)?;
    Ok(Sender::Graph(transport.app_only()))
}

/// A Gmail transport with its own HTTPS client (one pool for every send).
pub(crate) fn gmail(
    api_url: &Url,
    user: impl Into<String>,
    tokens: GmailTokens,
) -> Result<GmailTransport<GmailTokens>, ResolveError> {
    let client = apimail_gmail::https_client().map_err(ResolveError::TlsRoots)?;
    Ok(GmailTransport::new(client, api_url, user, tokens))
}

/// A Graph transport for an account's stored (delegated) tokens; a
/// configuration it cannot use fails its first send.
pub(crate) fn graph_stored(
    api_url: &Url,
    tokens: GraphTokens,
    max_message_bytes: usize,
    large_messages_allowed: bool,
) -> GraphTransport<GraphTokens> {
    GraphTransport::new(
        api_url,
        Mailbox::Me,
        tokens,
        max_message_bytes,
        large_messages_allowed,
    )
}
