//! The credentials the environment holds, read here and nowhere else (the
//! provider crates take them as values): Gmail's (a service account key,
//! or a client with a refresh token) and Graph's app-only ones (the
//! azure-identity variables), and the Graph mailbox's size limit.
//!
//! Each reader takes the lookup (`env::var` in use, a map in tests).

use std::path::PathBuf;

use apimail_core::Secret;

use crate::credentials::Credentials;
use crate::env;
use crate::error::ResolveError;

/// How a variable is looked up: unset or empty is `None`.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Gmail credentials found in the environment, with the address they send
/// as when it is known (`APIMAIL_GMAIL_USER`).
#[derive(Debug)]
pub(crate) struct GmailEnv {
    /// A service account key (`GOOGLE_APPLICATION_CREDENTIALS` acting as
    /// `APIMAIL_GMAIL_USER`), or a client and refresh token
    /// (`APIMAIL_GOOGLE_CLIENT_ID`, `_CLIENT_SECRET`, `_REFRESH_TOKEN`).
    pub credentials: Credentials,
    /// `APIMAIL_GMAIL_USER`.
    pub user: Option<String>,
}

/// The Gmail credentials in the environment, if any are set: a service
/// account first, else a client with a refresh token.
pub(crate) fn gmail(var: Lookup) -> Result<Option<GmailEnv>, ResolveError> {
    let user = var(env::GMAIL_USER);
    if let Some(path) = var(env::GOOGLE_APPLICATION_CREDENTIALS) {
        let user = user.ok_or(ResolveError::GmailEnvNoUser)?;
        let path = PathBuf::from(path);
        let key = std::fs::read_to_string(&path)
            .map_err(|source| ResolveError::ServiceAccountKeyUnreadable { path, source })?;
        return Ok(Some(GmailEnv {
            credentials: Credentials::GmailServiceAccount {
                key_json: Secret::new(key),
                user: user.clone(),
            },
            user: Some(user),
        }));
    }
    let (Some(client_id), Some(client_secret), Some(refresh_token)) = (
        var(env::GOOGLE_CLIENT_ID),
        var(env::GOOGLE_CLIENT_SECRET),
        var(env::GOOGLE_REFRESH_TOKEN),
    ) else {
        return Ok(None);
    };
    Ok(Some(GmailEnv {
        credentials: Credentials::GmailRefreshToken {
            client_id,
            client_secret: Secret::new(client_secret),
            refresh_token: Secret::new(refresh_token),
        },
        user,
    }))
}

/// App-only Graph credentials named by the environment; the secret or
/// certificate is read when the sender is built ([`app_secret`],
/// [`certificate_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphEnv {
    /// `AZURE_TENANT_ID`.
    pub tenant: String,
    /// `AZURE_CLIENT_ID`.
    pub client_id: String,
    /// `APIMAIL_GRAPH_USER`: the mailbox to send as.
    pub user: String,
    /// `APIMAIL_GRAPH_CLOUD`, when set.
    pub cloud: Option<String>,
}

/// The app-only credentials in the environment, if a tenant and client id
/// are set.
pub(crate) fn graph(var: Lookup) -> Result<Option<GraphEnv>, ResolveError> {
    let (Some(tenant), Some(client_id)) = (var(env::AZURE_TENANT_ID), var(env::AZURE_CLIENT_ID))
    else {
        return Ok(None);
    };
    let user = var(env::GRAPH_USER).ok_or(ResolveError::GraphEnvNoUser)?;
    Ok(Some(GraphEnv {
        tenant,
        client_id,
        user,
        cloud: var(env::GRAPH_CLOUD),
    }))
}

/// `AZURE_CLIENT_SECRET`, when set.
pub(crate) fn app_secret() -> Option<Secret> {
    env::var(env::AZURE_CLIENT_SECRET).map(Secret::new)
}

/// `AZURE_CLIENT_CERTIFICATE_PATH`, when set.
pub(crate) fn certificate_path() -> Option<String> {
    env::var(env::AZURE_CLIENT_CERTIFICATE_PATH)
}

/// `APIMAIL_GRAPH_CLIENT_SECRET`: the secret of a confidential client used
/// for delegated logins, when set.
pub(crate) fn login_secret() -> Option<Secret> {
    env::var(env::GRAPH_CLIENT_SECRET).map(Secret::new)
}

/// The Graph mailbox's size limit: `$APIMAIL_GRAPH_MAX_MESSAGE_MB`, else
/// `configured` (an account's `max_message_mb`), else 35 MB.
pub(crate) fn graph_message_limit(
    var: Lookup,
    configured: Option<u32>,
) -> Result<usize, ResolveError> {
    let mb = match var(env::GRAPH_MAX_MESSAGE_MB) {
        Some(v) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| ResolveError::MaxMessageNotANumber(v))?,
        ),
        None => configured,
    };
    apimail_graph::message_limit(mb).map_err(ResolveError::MaxMessage)
}

/// The process's environment.
pub(crate) fn process(name: &str) -> Option<String> {
    env::var(name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).filter(|v| !v.is_empty()).cloned()
    }

    #[test]
    fn a_service_account_needs_its_user_and_a_readable_key() {
        let var = lookup(&[(env::GOOGLE_APPLICATION_CREDENTIALS, "/nonexistent/key.json")]);
        assert!(matches!(gmail(&var), Err(ResolveError::GmailEnvNoUser)));
        let var = lookup(&[
            (env::GOOGLE_APPLICATION_CREDENTIALS, "/nonexistent/key.json"),
            (env::GMAIL_USER, "a@example.com"),
        ]);
        let error = gmail(&var).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read GOOGLE_APPLICATION_CREDENTIALS `/nonexistent/key.json`"
        );
    }

    #[test]
    fn a_refresh_token_needs_all_three_variables() {
        let var = lookup(&[
            (env::GOOGLE_CLIENT_ID, "id"),
            (env::GOOGLE_CLIENT_SECRET, "secret"),
        ]);
        assert!(gmail(&var).unwrap().is_none());
        let var = lookup(&[
            (env::GOOGLE_CLIENT_ID, "id"),
            (env::GOOGLE_CLIENT_SECRET, "secret"),
            (env::GOOGLE_REFRESH_TOKEN, "token"),
            (env::GMAIL_USER, "a@example.com"),
        ]);
        let found = gmail(&var).unwrap().unwrap();
        assert_eq!(found.user.as_deref(), Some("a@example.com"));
        assert_eq!(
            found
                .credentials
                .identity_as(found.user.as_deref())
                .to_string(),
            Credentials::GmailRefreshToken {
                client_id: "id".into(),
                client_secret: Secret::new("x"),
                refresh_token: Secret::new("y"),
            }
            .identity_as(Some("a@example.com"))
            .to_string()
        );
    }

    #[test]
    fn graph_app_only_needs_its_mailbox() {
        let var = lookup(&[(env::AZURE_TENANT_ID, "t"), (env::AZURE_CLIENT_ID, "c")]);
        assert_eq!(
            graph(&var).unwrap_err().to_string(),
            "AZURE_TENANT_ID and AZURE_CLIENT_ID are set but APIMAIL_GRAPH_USER is not"
        );
        let var = lookup(&[(env::AZURE_TENANT_ID, "t")]);
        assert!(graph(&var).unwrap().is_none());
    }

    #[test]
    fn the_graph_limit_is_the_variable_else_the_account_else_35_mb() {
        let none = lookup(&[]);
        assert_eq!(graph_message_limit(&none, None).unwrap(), 35 * 1024 * 1024);
        assert_eq!(
            graph_message_limit(&none, Some(20)).unwrap(),
            20 * 1024 * 1024
        );
        let set = lookup(&[(env::GRAPH_MAX_MESSAGE_MB, " 150 ")]);
        assert_eq!(
            graph_message_limit(&set, Some(20)).unwrap(),
            150 * 1024 * 1024
        );
        let bad = lookup(&[(env::GRAPH_MAX_MESSAGE_MB, "lots")]);
        assert_eq!(
            graph_message_limit(&bad, None).unwrap_err().to_string(),
            "APIMAIL_GRAPH_MAX_MESSAGE_MB `lots` is not a whole number"
        );
        let high = lookup(&[(env::GRAPH_MAX_MESSAGE_MB, "151")]);
        assert_eq!(
            graph_message_limit(&high, None).unwrap_err().to_string(),
            "a mailbox limit of 151 MB is outside Exchange Online's 1 to 150 MB"
        );
    }

    #[test]
    fn a_service_account_is_the_same_sender_for_the_library_and_the_environment() {
        const KEY: &str = r#"{"type":"service_account","client_email":"mailer@project.iam.gserviceaccount.com","private_key":"unused"}"#;
        let library = Credentials::GmailServiceAccount {
            key_json: Secret::new(KEY),
            user: "alice@example.com".into(),
        }
        .identity();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.json");
        std::fs::write(&key_file, KEY).unwrap();
        let key_path = key_file.to_str().unwrap().to_owned();
        let var = move |name: &str| match name {
            env::GOOGLE_APPLICATION_CREDENTIALS => Some(key_path.clone()),
            env::GMAIL_USER => Some("alice@example.com".to_owned()),
            _ => None,
        };
        let found = gmail(&var).unwrap().unwrap();
        let environment = found.credentials.identity_as(found.user.as_deref());
        assert_eq!(library, environment);
        assert_eq!(
            library,
            apimail_core::SenderIdentity::Environment {
                provider: "gmail".into(),
                credential: "service_account".into(),
                principal: "mailer@project.iam.gserviceaccount.com as alice@example.com".into(),
            }
        );
    }
}
