//! App-only tokens (OAuth client credentials) for sending as any mailbox
//! the app's Mail.Send application permission reaches.

use std::fmt;

use apimail_core::oauth::{self, OAuthClient};
use apimail_core::{AccessToken, Secret, TokenError, TokenSource};
use tokio::sync::Mutex;
use url::Url;

use crate::assertion::{AssertionError, CertificateKey};
use crate::cloud::{Cloud, app_scope};

/// How an app proves its identity to the token endpoint, as configured.
/// `Debug` prints neither value.
#[derive(Debug, Clone)]
pub enum AppCredential {
    /// A client secret.
    Secret(Secret),
    /// A PEM file's text: the certificate and its unencrypted RSA private
    /// key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    Certificate(Secret),
}

/// The credential in the form requests use.
enum Credential {
    Secret(Secret),
    Certificate(Box<CertificateKey>),
}

/// Client-credentials tokens for Microsoft Graph, cached in memory until
/// they are about to expire.
///
/// With a certificate, each token request carries a freshly signed client
/// assertion; the private key is parsed once and kept only in memory, and
/// neither it nor the client secret is ever printed (`Debug` shows the
/// client id and token URL only).
pub struct AppOnlyTokens {
    client_id: String,
    token_url: Url,
    credential: Credential,
    scopes: Vec<String>,
    cached: Mutex<Option<AccessToken>>,
}

impl fmt::Debug for AppOnlyTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match self.credential {
            Credential::Secret(_) => "client secret",
            Credential::Certificate(_) => "certificate",
        };
        f.debug_struct("AppOnlyTokens")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url.as_str())
            .field("credential", &credential)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl AppOnlyTokens {
    /// Tokens for `client_id` from `token_url` (the tenant's token
    /// endpoint, see [`token_url`](crate::cloud::token_url)), for `cloud`'s
    /// `{graph}/.default` scope. A certificate is parsed here, so a bad
    /// file fails before any request.
    pub fn new(
        client_id: impl Into<String>,
        token_url: Url,
        cloud: Cloud,
        credential: AppCredential,
    ) -> Result<Self, AssertionError> {
        match credential {
            AppCredential::Secret(secret) => {
                Ok(Self::with_secret(client_id, secret, token_url, cloud))
            }
            AppCredential::Certificate(pem) => {
                Self::with_certificate(client_id, pem.expose().as_bytes(), token_url, cloud)
            }
        }
    }

    /// Authenticates with a client secret. `token_url` is the tenant's
    /// token endpoint (see [`token_url`](crate::cloud::token_url)); the
    /// scope is `cloud`'s `{graph}/.default`.
    pub fn with_secret(
        client_id: impl Into<String>,
        secret: Secret,
        token_url: Url,
        cloud: Cloud,
    ) -> Self {
        Self::build(
            client_id.into(),
            Credential::Secret(secret),
            token_url,
            cloud,
        )
    }

    /// Authenticates with a certificate: `pem` holds the certificate and
    /// its unencrypted RSA private key. The file is checked here, so a bad
    /// one fails before any request.
    pub fn with_certificate(
        client_id: impl Into<String>,
        pem: &[u8],
        token_url: Url,
        cloud: Cloud,
    ) -> Result<Self, AssertionError> {
        let key = CertificateKey::from_pem(pem)?;
        Ok(Self::build(
            client_id.into(),
            Credential::Certificate(Box::new(key)),
            token_url,
            cloud,
        ))
    }

    fn build(client_id: String, credential: Credential, token_url: Url, cloud: Cloud) -> Self {
        AppOnlyTokens {
            client_id,
            token_url,
            credential,
            scopes: vec![app_scope(cloud)],
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self, rejected: Option<&AccessToken>) -> Result<AccessToken, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && token.is_fresh()
            && Some(token) != rejected
        {
            return Ok(token.clone());
        }
        let (secret, assertion) = match &self.credential {
            Credential::Secret(secret) => (Some(secret.clone()), None),
            Credential::Certificate(key) => {
                let assertion = key
                    .assertion(&self.client_id, &self.token_url, apimail_core::now_unix())
                    .map_err(|e| TokenError::Other(e.to_string()))?;
                (None, Some(assertion))
            }
        };
        let client = OAuthClient {
            client_id: self.client_id.clone(),
            client_secret: secret,
            auth_url: None,
            token_url: self.token_url.clone(),
            device_auth_url: None,
        };
        let response = oauth::client_credentials(&client, &self.scopes, assertion.as_ref()).await?;
        *cached = Some(response.access_token.clone());
        Ok(response.access_token)
    }
}

impl TokenSource for AppOnlyTokens {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        self.fetch(None).await
    }

    /// A new token, unless another send already replaced the rejected one.
    async fn refresh_after_rejection(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.fetch(Some(rejected)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let url = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        let tokens =
            AppOnlyTokens::with_secret("app-id", Secret::new("s3cr3t"), url.clone(), Cloud::UsGov);
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("https://graph.microsoft.us/.default"),
            "{shown}"
        );

        let pem = include_bytes!("../tests/fixtures/test-app.pem");
        let credential =
            AppCredential::Certificate(Secret::new(String::from_utf8(pem.to_vec()).unwrap()));
        assert_eq!(format!("{credential:?}"), "Certificate([redacted])");
        let tokens = AppOnlyTokens::new("app-id", url.clone(), Cloud::Global, credential).unwrap();
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("certificate") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        let bad = AppCredential::Certificate(Secret::new("-----BEGIN CERTIFICATE-----\n"));
        assert!(AppOnlyTokens::new("app-id", url, Cloud::Global, bad).is_err());
    }
}
