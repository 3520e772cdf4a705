//! Every environment variable apimail reads, by name, and the one way
//! they are read: an unset or empty variable is not set. Only this crate
//! reads them (`cargo xtask ci`'s account-layer check): the provider
//! crates and core take the values as data.

/// The configuration file (else the platform's config directory).
pub const CONFIG: &str = "APIMAIL_CONFIG";
/// The data directory: tokens, outbox, journal.
pub const DATA_DIR: &str = "APIMAIL_DATA_DIR";
/// The account to send from when no `--account` is given.
pub const ACCOUNT: &str = "APIMAIL_ACCOUNT";
/// sendmail's aliases(5) file.
pub const ALIASES: &str = "APIMAIL_ALIASES";
/// sendmail: `1` means never queue; the caller retries.
pub const NO_QUEUE: &str = "APIMAIL_NO_QUEUE";
/// `resend` or `hold`: an unknown outcome that cannot be checked.
pub const WHEN_UNKNOWN: &str = "APIMAIL_WHEN_UNKNOWN";
/// Days a message may wait in the queue before it counts as failed.
pub const QUEUE_MAX_AGE_DAYS: &str = "APIMAIL_QUEUE_MAX_AGE_DAYS";
/// Attempts per send.
pub const RETRY_ATTEMPTS: &str = "APIMAIL_RETRY_ATTEMPTS";
/// Seconds one send may take, retries included.
pub const RETRY_MAX_SECONDS: &str = "APIMAIL_RETRY_MAX_SECONDS";
/// The shared PostgreSQL store's URL (over `[store] url`).
pub const STORE_URL: &str = "APIMAIL_STORE_URL";
/// A file holding the store's password (over `[store] password_file`).
pub const STORE_PASSWORD_FILE: &str = "APIMAIL_STORE_PASSWORD_FILE";
/// `local` or `store`: where accounts' OAuth tokens live (over
/// `[store] tokens`).
pub const STORE_TOKENS: &str = "APIMAIL_STORE_TOKENS";
/// A file holding the key the store's tokens are encrypted under (over
/// `[store] key_file`). The key itself is never taken from a variable or
/// a flag, where `ps` and crash reports can see it.
pub const STORE_KEY_FILE: &str = "APIMAIL_STORE_KEY_FILE";
/// libpq's password variable, used for the store when nothing else gives one.
pub const PGPASSWORD: &str = "PGPASSWORD";
/// The connect timeout, in seconds (core's HTTP policy takes the value).
pub const CONNECT_TIMEOUT_SECONDS: &str = "APIMAIL_CONNECT_TIMEOUT_SECONDS";
/// The stall timeout, in seconds (core's HTTP policy takes the value).
pub const STALL_TIMEOUT_SECONDS: &str = "APIMAIL_STALL_TIMEOUT_SECONDS";

/// The Gmail API root.
pub const GMAIL_API_URL: &str = "APIMAIL_GMAIL_API_URL";
/// Google's authorization endpoint.
pub const GOOGLE_AUTH_URL: &str = "APIMAIL_GOOGLE_AUTH_URL";
/// Google's token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "APIMAIL_GOOGLE_TOKEN_URL";
/// Google's revocation endpoint.
pub const GOOGLE_REVOKE_URL: &str = "APIMAIL_GOOGLE_REVOKE_URL";
/// A Google service account's key file.
pub const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// The address Gmail environment credentials send as.
pub const GMAIL_USER: &str = "APIMAIL_GMAIL_USER";
/// A Google OAuth client id.
pub const GOOGLE_CLIENT_ID: &str = "APIMAIL_GOOGLE_CLIENT_ID";
/// A Google OAuth client secret.
pub const GOOGLE_CLIENT_SECRET: &str = "APIMAIL_GOOGLE_CLIENT_SECRET";
/// A Google refresh token.
pub const GOOGLE_REFRESH_TOKEN: &str = "APIMAIL_GOOGLE_REFRESH_TOKEN";

/// The Graph root.
pub const GRAPH_API_URL: &str = "APIMAIL_GRAPH_API_URL";
/// The Microsoft login host.
pub const MS_AUTHORITY_URL: &str = "APIMAIL_MS_AUTHORITY_URL";
/// The Microsoft cloud of environment credentials.
pub const GRAPH_CLOUD: &str = "APIMAIL_GRAPH_CLOUD";
/// The mailbox's size limit in MB.
pub const GRAPH_MAX_MESSAGE_MB: &str = "APIMAIL_GRAPH_MAX_MESSAGE_MB";
/// The mailbox app-only credentials send as.
pub const GRAPH_USER: &str = "APIMAIL_GRAPH_USER";
/// A confidential client's secret for `auth login graph`.
pub const GRAPH_CLIENT_SECRET: &str = "APIMAIL_GRAPH_CLIENT_SECRET";
/// azure-identity's tenant.
pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
/// azure-identity's client id.
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// azure-identity's client secret.
pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// azure-identity's certificate file.
pub const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";

/// The variable's value; unset, empty or not UTF-8 is `None`.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `name` itself when the environment sets it: where a setting came from,
/// for messages that name it.
pub fn set_by(name: &'static str) -> Option<&'static str> {
    is_set(name).then_some(name)
}

/// Whether the variable is set to something.
pub fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// The variable as a path.
pub fn path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_timeout_hint_names_the_timeout_variables() {
        let timeout = apimail_core::http::HttpTimeout {
            host: "example.com:443".into(),
            phase: apimail_core::http::Phase::Waiting,
            after: std::time::Duration::from_secs(60),
        };
        let hint = apimail_core::http::NetFailure::Timeout(timeout).hint();
        for name in [CONNECT_TIMEOUT_SECONDS, STALL_TIMEOUT_SECONDS] {
            assert!(hint.contains(name), "{hint}");
        }
    }
}
