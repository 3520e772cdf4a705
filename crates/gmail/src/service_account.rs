//! Service accounts with domain-wide delegation: a JWT signed with the
//! account's key is exchanged for a token that acts as one user (`sub`).
//! yup-oauth2 does the signing and the exchange.

use std::sync::Arc;

use apimail_core::{AccessToken, Secret, TokenError, TokenSource};
use yup_oauth2::authenticator::Authenticator;

use crate::SEND_SCOPE;
use crate::client::{Connector, https_connector};

/// Tokens for a service account acting as one user of its domain.
/// Concurrent callers share one token request: yup-oauth2 caches tokens
/// but would fetch once per caller while none is cached.
#[derive(Clone)]
pub struct ServiceAccountTokens {
    auth: Authenticator<Connector>,
    subject: String,
    token_url: Option<url::Url>,
    one_fetch: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// From the JSON key file Google Cloud hands out, acting as `subject`.
    /// `token_url` overrides the key's `token_uri` (for gateways and tests).
    pub async fn new(
        key_json: &[u8],
        subject: &str,
        token_url: Option<&url::Url>,
    ) -> Result<Self, TokenError> {
        let mut key: yup_oauth2::ServiceAccountKey =
            serde_json::from_slice(key_json).map_err(|e| {
                TokenError::Other(format!(
                    "the service account key is not valid JSON in Google's format ({})",
                    e.classify_name()
                ))
            })?;
        if let Some(url) = token_url {
            key.token_uri = url.to_string();
        }
        let parsed_token_url = url::Url::parse(&key.token_uri).ok();
        // The same connector as the Gmail client: rustls, system roots, proxy.
        let connector = https_connector().map_err(|e| TokenError::Other(e.to_string()))?;
        let client = google_gmail1::hyper_util::client::legacy::Client::builder(
            google_gmail1::hyper_util::rt::TokioExecutor::new(),
        )
        .build::<_, String>(connector);
        let auth = yup_oauth2::ServiceAccountAuthenticator::with_client(
            key,
            yup_oauth2::CustomHyperClientBuilder::from(client),
        )
        .subject(subject)
        .build()
        .await
        .map_err(|e| TokenError::Other(format!("the service account key cannot be used: {e}")))?;
        Ok(ServiceAccountTokens {
            auth,
            subject: subject.to_owned(),
            token_url: parsed_token_url,
            one_fetch: Arc::default(),
        })
    }
}

/// The service account's own address (`client_email`) in its JSON key;
/// empty when the key has none or is not JSON.
pub fn key_client_email(key_json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(key_json)
        .ok()
        .and_then(|v| v.get("client_email")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "a required field is missing or wrong",
            serde_json::error::Category::Eof => "the file ends early",
        }
    }
}

impl TokenSource for ServiceAccountTokens {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        let _one = self.one_fetch.lock().await;
        let token = self
            .auth
            .token(&[SEND_SCOPE])
            .await
            .map_err(|e| self.map_error(e))?;
        convert(token)
    }

    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        let _one = self.one_fetch.lock().await;
        // Another caller may have replaced the rejected token meanwhile.
        let current = convert(self.auth.token(&[SEND_SCOPE]).await.map_err(map_error)?)?;
        if current.secret.expose() != rejected.secret.expose() {
            return Ok(current);
        }
        let token = self
            .auth
            .force_refreshed_token(&[SEND_SCOPE])
            .await
            .map_err(|e| self.map_error(e))?;
        convert(token)
    }
}

fn convert(token: yup_oauth2::AccessToken) -> Result<AccessToken, TokenError> {
    let secret = token
        .token()
        .ok_or_else(|| TokenError::Other("the token endpoint returned no access token".into()))?;
    Ok(AccessToken {
        secret: Secret::new(secret),
        expires_at: token.expiration_time().map(|t| t.unix_timestamp()),
    })
}

impl ServiceAccountTokens {
    fn map_error(&self, error: yup_oauth2::Error) -> TokenError {
        let network = |e: &(dyn std::error::Error + 'static)| {
            let url = self.token_url.as_ref()?;
            apimail_core::http::NetFailure::diagnose(e, url).map(TokenError::Network)
        };
        let diagnosed = match &error {
            yup_oauth2::Error::HttpError(e) => network(e),
            yup_oauth2::Error::HttpClientError(e) => network(e),
            _ => None,
        };
        diagnosed.unwrap_or_else(|| map_error(error))
    }
}

fn map_error(error: yup_oauth2::Error) -> TokenError {
    use yup_oauth2::error::AuthErrorCode;
    match error {
        yup_oauth2::Error::AuthError(auth) => {
            let description = auth.error_description.clone();
            match auth.error {
                AuthErrorCode::InvalidGrant => TokenError::InvalidGrant { description },
                code => TokenError::Refused {
                    code: code.as_str().to_owned(),
                    description,
                },
            }
        }
        yup_oauth2::Error::HttpError(e) => TokenError::Unreachable(Box::new(e)),
        yup_oauth2::Error::HttpClientError(e) => TokenError::Unreachable(Box::new(e)),
        other => TokenError::Other(format!("the service account token request failed: {other}")),
    }
}
