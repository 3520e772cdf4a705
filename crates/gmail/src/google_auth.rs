//! Google's side of OAuth: the console's client file, the endpoints, and
//! the credential files users already have (SMAIL's INI).

use apimail_core::Secret;

/// Google's authorization endpoint.
pub const AUTH_URL: &str = "https://accounts.google.com/o/oauth2/auth";
/// Google's token endpoint.
pub const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Google's revocation endpoint (RFC 7009).
pub const REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";

/// What a login asks Google for, beyond the scope: a refresh token
/// (`access_type=offline`) issued afresh (`prompt=consent`).
pub fn login_params(login_hint: Option<&str>) -> Vec<(String, String)> {
    let mut params = vec![
        ("access_type".to_owned(), "offline".to_owned()),
        ("prompt".to_owned(), "consent".to_owned()),
    ];
    if let Some(hint) = login_hint {
        params.push(("login_hint".to_owned(), hint.to_owned()));
    }
    params
}

/// Why a credentials file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

/// An OAuth client from the Google Cloud console's `client_secret_….json`.
#[derive(Debug, Clone)]
pub struct ClientSecretFile {
    /// `installed` (Desktop app) or `web` (Web application).
    pub kind: &'static str,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The authorization endpoint.
    pub auth_uri: String,
    /// The token endpoint.
    pub token_uri: String,
}

/// Parses the console's JSON, with `installed` or `web` at the top level.
pub fn parse_client_secret(json: &[u8]) -> Result<ClientSecretFile, CredentialsError> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|_| {
        CredentialsError("the client file is not JSON; download it again from the Google Cloud console (APIs & Services > Credentials)".into())
    })?;
    let (kind, client) = ["installed", "web"]
        .into_iter()
        .find_map(|kind| value.get(kind).map(|c| (kind, c)))
        .ok_or_else(|| {
            CredentialsError(
                "the client file has neither `installed` nor `web` at the top level; it must be an OAuth client ID file, not a service account key".into(),
            )
        })?;
    let field = |name: &str| {
        client
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| CredentialsError(format!("the client file has no `{kind}.{name}`")))
    };
    Ok(ClientSecretFile {
        kind,
        client_id: field("client_id")?,
        client_secret: Secret::new(field("client_secret")?),
        auth_uri: field("auth_uri").unwrap_or_else(|_| AUTH_URL.to_owned()),
        token_uri: field("token_uri").unwrap_or_else(|_| TOKEN_URL.to_owned()),
    })
}

/// Credentials from SMAIL's `smail_refreshtoken.ini` (`[OAUTH2]` section).
#[derive(Debug, Clone)]
pub struct SmailCredentials {
    /// `UserID`: the mailbox.
    pub user: String,
    /// `ClientID`.
    pub client_id: String,
    /// `ClientSecret`.
    pub client_secret: Secret,
    /// `RefreshToken`.
    pub refresh_token: Secret,
    /// `TokenURI`, defaulting to Google's.
    pub token_uri: String,
}

/// Parses the INI: keys are matched without regard to case, and values
/// may be quoted.
pub fn parse_smail_ini(text: &str) -> Result<SmailCredentials, CredentialsError> {
    let mut in_section = false;
    let mut found = std::collections::HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = section.trim().eq_ignore_ascii_case("OAUTH2");
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            found.insert(key.trim().to_ascii_lowercase(), value);
        }
    }
    let mut take = |key: &str, name: &str| {
        found
            .remove(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CredentialsError(format!("the [OAUTH2] section has no `{name}`")))
    };
    Ok(SmailCredentials {
        user: take("userid", "UserID")?,
        client_id: take("clientid", "ClientID")?,
        client_secret: Secret::new(take("clientsecret", "ClientSecret")?),
        refresh_token: Secret::new(take("refreshtoken", "RefreshToken")?),
        token_uri: take("tokenuri", "TokenURI").unwrap_or_else(|_| TOKEN_URL.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_installed_and_web_clients() {
        let installed = br#"{"installed":{"client_id":"id.apps.googleusercontent.com","project_id":"p","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"https://oauth2.googleapis.com/token","client_secret":"GOCSPX-x","redirect_uris":["http://localhost"]}}"#;
        let c = parse_client_secret(installed).unwrap();
        assert_eq!(
            (c.kind, c.client_id.as_str()),
            ("installed", "id.apps.googleusercontent.com")
        );
        assert_eq!(c.client_secret.expose(), "GOCSPX-x");
        let web = br#"{"web":{"client_id":"w","client_secret":"s","auth_uri":"http://127.0.0.1:1/auth","token_uri":"http://127.0.0.1:1/token"}}"#;
        let c = parse_client_secret(web).unwrap();
        assert_eq!(
            (c.kind, c.token_uri.as_str()),
            ("web", "http://127.0.0.1:1/token")
        );
    }

    #[test]
    fn explains_wrong_files_without_echoing_them() {
        let e =
            parse_client_secret(br#"{"type":"service_account","private_key":"KEY"}"#).unwrap_err();
        assert!(e.to_string().contains("service account"), "{e}");
        assert!(!e.to_string().contains("KEY"));
        assert!(parse_client_secret(b"not json").is_err());
        let e = parse_client_secret(br#"{"installed":{"client_id":"x"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the client file has no `installed.client_secret`"
        );
    }

    #[test]
    fn reads_smail_ini() {
        let ini = "; smail\n[OAUTH2]\nUserID=me@example.com\nClientID = cid\nClientSecret=\"sec\"\nRefreshToken=1//rt\nTokenURI=http://127.0.0.1:9/token\n[OTHER]\nUserID=nope\n";
        let c = parse_smail_ini(ini).unwrap();
        assert_eq!(c.user, "me@example.com");
        assert_eq!(c.client_secret.expose(), "sec");
        assert_eq!(c.refresh_token.expose(), "1//rt");
        assert_eq!(c.token_uri, "http://127.0.0.1:9/token");
        let e = parse_smail_ini("[OAUTH2]\nUserID=a\n").unwrap_err();
        assert_eq!(e.to_string(), "the [OAUTH2] section has no `ClientID`");
    }
}
