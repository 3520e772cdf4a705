//! What the command line makes of the account layer's answers: each
//! [`ResolveError`] and each failed send as an `error:` line, an exit code
//! and the next command to run, in one place.

use anyhow::anyhow;
use apimail_account::ResolveError;
use apimail_core::{ErrorKind, TokenError, TransportError};
use apimail_gmail::google_auth;

use crate::config::Provider;
use crate::exit::{Exit, Failure};

pub use apimail_account::{
    ConfiguredSenders, Context, Flags, Resolved, Sender, Stack, authority, cloud, endpoint,
    gmail_login_command, login_command,
};

/// The configuration (see [`Context::load`]).
pub fn load(flag: Option<&std::path::Path>) -> Result<Context, Failure> {
    Ok(Context::load(flag)?)
}

/// What to send with (see [`apimail_account::resolve`]).
pub async fn resolve(ctx: &Context, flags: &Flags) -> Result<Resolved, Failure> {
    Ok(apimail_account::resolve(ctx, flags).await?)
}

/// An entry's own sender (see [`apimail_account::resolve_identity`]).
pub async fn resolve_identity(
    ctx: &Context,
    identity: Option<&apimail_core::SenderIdentity>,
    account: Option<&str>,
) -> Result<Resolved, Failure> {
    Ok(apimail_account::resolve_identity(ctx, identity, account).await?)
}

impl From<ResolveError> for Failure {
    fn from(error: ResolveError) -> Failure {
        resolve_failure(error)
    }
}

/// Why an account, a credential or a setting cannot be used, with the
/// exit code and the fix.
pub fn resolve_failure(error: ResolveError) -> Failure {
    use ResolveError as E;
    let (exit, hint): (Exit, Option<String>) = match &error {
        E::NoConfigDir => (
            Exit::Config,
            Some("set APIMAIL_CONFIG=/path/to/config.toml or pass --config".into()),
        ),
        E::ConfigUnreadable { .. } => (
            Exit::Config,
            Some("check the file's permissions, or point --config elsewhere".into()),
        ),
        E::ConfigInvalid { path, .. } => (
            Exit::Config,
            Some(format!(
                "fix or remove that key in {} (see `apimail auth status`)",
                path.display()
            )),
        ),
        E::ConfigUnwritable { .. } => (
            Exit::Config,
            Some("check that the directory exists and is writable".into()),
        ),
        E::UnknownAccount { name, .. } => (
            Exit::Config,
            Some(format!(
                "run `apimail auth login gmail --account {name} --client-secret FILE`, or pick one with --account"
            )),
        ),
        E::NoAccount { provider, .. } => {
            let login = match provider {
                Some(Provider::Graph) => "apimail auth login graph --client-id CLIENT_ID",
                _ => "apimail auth login gmail --client-secret client_secret.json",
            };
            return Failure::new(Exit::Config, error)
                .hint(format!("run `{login}`, or use --dry-run to only print the message"))
                .note("servers can use GOOGLE_APPLICATION_CREDENTIALS with APIMAIL_GMAIL_USER (service account), or APIMAIL_GOOGLE_CLIENT_ID, APIMAIL_GOOGLE_CLIENT_SECRET and APIMAIL_GOOGLE_REFRESH_TOKEN")
                .note("for Microsoft Graph: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) and APIMAIL_GRAPH_USER");
        }
        E::DataDir(_) => (
            Exit::Config,
            Some("set APIMAIL_DATA_DIR to a directory apimail may write".into()),
        ),
        E::ZeroTimeout { key } => (
            Exit::Config,
            Some(format!(
                "set [http] {key} to a number of seconds above 0, or remove it"
            )),
        ),
        E::BadTimeout(_) => (
            Exit::Config,
            Some("set it to a whole number of seconds, or unset it".into()),
        ),
        E::NotANumber { name, .. } => (
            Exit::Config,
            Some(format!("set {name} to a number, e.g. {name}=5, or unset it")),
        ),
        E::BadWhenUnknown { setting, .. } => (
            Exit::Config,
            Some(format!("set {setting} to resend (the default) or hold")),
        ),
        E::UnknownProvider(_) | E::IdentityChanged { .. } | E::IdentityGone { .. } => {
            (Exit::Config, None)
        }
        E::BadEndpoint { setting, .. } => (
            Exit::Config,
            Some(format!(
                "set {setting} to an https:// URL (plain http:// only for 127.0.0.1 or localhost)"
            )),
        ),
        E::TlsRoots(_) => (
            Exit::Config,
            Some("install the system CA certificates (Debian: apt-get install ca-certificates) or set SSL_CERT_FILE".into()),
        ),
        E::GmailEnvNoUser => (
            Exit::Config,
            Some("set APIMAIL_GMAIL_USER=sender@your-domain: a service account sends as a user of its domain (domain-wide delegation)".into()),
        ),
        E::ServiceAccountKeyUnreadable { .. } => (
            Exit::NoInput,
            Some("point GOOGLE_APPLICATION_CREDENTIALS at the service account's JSON key file".into()),
        ),
        E::ServiceAccountKey(_) => (
            Exit::Config,
            Some("download a new JSON key for the service account (IAM & Admin > Service Accounts > Keys)".into()),
        ),
        E::GraphEnvNoUser => (
            Exit::Config,
            Some("set APIMAIL_GRAPH_USER=sender@contoso.com: app-only credentials send as a mailbox of the tenant".into()),
        ),
        E::Transport(_) => (
            Exit::Config,
            Some("check the Graph root (APIMAIL_GRAPH_API_URL or graph_api_url: https://graph.microsoft.com/, no query) and the mailbox (APIMAIL_GRAPH_USER or user)".into()),
        ),
        E::MaxMessage(_) | E::MaxMessageNotANumber(_) => (
            Exit::Config,
            Some("set max_message_mb (or APIMAIL_GRAPH_MAX_MESSAGE_MB) to the mailbox's limit, between 1 and 150".into()),
        ),
        E::AppOnlyNoUser { name, config_path } => (
            Exit::Config,
            Some(format!(
                "add user = \"sender@contoso.com\" under [accounts.{name}] in {}",
                config_path.display()
            )),
        ),
        E::AppOnlyIds { .. } => (
            Exit::Config,
            Some("set client_id and tenant in the account, or AZURE_CLIENT_ID and AZURE_TENANT_ID".into()),
        ),
        E::NoAppCredential { .. } => (
            Exit::Config,
            Some("set AZURE_CLIENT_SECRET, or AZURE_CLIENT_CERTIFICATE_PATH to a PEM with the certificate and key".into()),
        ),
        E::CertificateUnreadable { .. } => (
            Exit::NoInput,
            Some("point AZURE_CLIENT_CERTIFICATE_PATH at a PEM file holding the certificate and its private key".into()),
        ),
        E::Certificate(_) => (
            Exit::Config,
            Some("check the certificate file: it needs the certificate and its RSA private key, in PEM".into()),
        ),
        E::SecretFileUnreadable { .. } => (
            Exit::NoInput,
            Some("point it at a file that holds only the secret value (mode 0600)".into()),
        ),
        E::SecretFileEmpty { .. } => (
            Exit::Config,
            Some("write the secret value (Certificates & secrets > Client secrets > Value) into it".into()),
        ),
        E::UnknownCloud { .. } => (
            Exit::Usage,
            Some("use global, usgov, usgov-dod or china".into()),
        ),
        E::StoreSettings(inner) => (Exit::Config, Some(store_settings_hint(inner))),
        E::StoreKey { from, .. } => (
            Exit::Config,
            Some(format!(
                "point {from} at the cluster's key file: 32 random bytes in base64 on one line (`apimail store key new --output FILE` makes one)"
            )),
        ),
        E::StoreOpen(_) => (
            Exit::Config,
            Some("fix the store's URL (APIMAIL_STORE_URL or [store] url): postgres://user@host:port/database?sslmode=require".into()),
        ),
        _ => (
            Exit::Config,
            Some("check the configuration (`apimail auth status`)".into()),
        ),
    };
    let failure = Failure::new(exit, error);
    match hint {
        Some(hint) => failure.hint(hint),
        None => failure,
    }
}

/// What to do about store settings that cannot be used.
pub fn store_settings_hint(error: &apimail_account::StoreSettingsError) -> String {
    use apimail_account::StoreSettingsError as S;
    match error {
        S::PasswordFileUnreadable { .. } => {
            "check the file's path and that this user may read it".into()
        }
        S::PasswordFileEmpty { .. } => "put the password on the file's first line".into(),
        S::BadTokensIn { .. } => {
            "set APIMAIL_STORE_TOKENS to local (each machine its own tokens) or store".into()
        }
        S::TokensWithoutStore { .. } => {
            "set [store] url (or APIMAIL_STORE_URL), or tokens = \"local\"".into()
        }
        S::TokensWithoutKey { .. } => "make a key with `apimail store key new --output FILE`, give every node the file and set APIMAIL_STORE_KEY_FILE=FILE or [store] key_file".into(),
    }
}

/// The store's tokens do not open with this node's key, if that is why
/// `error` failed: what to do.
pub fn wrong_store_key(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use apimail_store_postgres::{OpenError, TokensError};
    match apimail_core::http::find::<TokensError>(error)? {
        TokensError::Open(OpenError::WrongKey { .. }) => Some(
            "give this node the key file the other nodes use (APIMAIL_STORE_KEY_FILE or [store] key_file), or push the tokens again with this key: `apimail store tokens push`",
        ),
        TokensError::Open(OpenError::Tampered { .. }) | TokensError::Corrupt { .. } => {
            Some("the row was altered: log in again and `apimail store tokens push` the account")
        }
        _ => None,
    }
}

/// A token URL that answered with no OAuth at all: names the URL (the
/// error carries it without its query) and the setting it came from.
pub fn wrong_token_url(error: &TokenError, setting: &str, provider: Provider) -> Failure {
    let right = match provider {
        Provider::Gmail => format!("Google's is {}", google_auth::TOKEN_URL),
        Provider::Graph => "Microsoft's is https://login.microsoftonline.com/TENANT/oauth2/v2.0/token; set the authority (https://login.microsoftonline.com), not the token URL".to_owned(),
    };
    Failure::new(
        Exit::Config,
        anyhow!("the token URL from {setting} is wrong: {error}"),
    )
    .hint(format!("correct {setting} ({right})"))
}

/// A message over the provider's limit: `size` is its size (`exact`), or
/// what it was known to reach when reading or writing stopped.
pub fn too_large(size: u64, exact: bool, limit: usize) -> Failure {
    let size = if exact {
        format!("{size} bytes")
    } else {
        format!("at least {size} bytes (apimail stopped there)")
    };
    Failure::new(
        Exit::DataErr,
        anyhow!("the message is {size}; the provider accepts at most {limit} bytes"),
    )
    .note("nothing was queued")
    .hint("send large files as links, or raise the mailbox limit (Graph: max_message_mb)")
}

/// A failed send, as the user should see it.
pub fn send_failure(error: TransportError, resolved: &Resolved) -> Failure {
    if let Some(failure) = network_failure(&error) {
        let exit = if failure.is_temporary() {
            Exit::TempFail
        } else {
            Exit::Config
        };
        return Failure::new(exit, error).hint(failure.hint());
    }
    let token_error =
        std::error::Error::source(&error).and_then(|s| s.downcast_ref::<TokenError>());
    if resolved.provider == Provider::Graph
        && let Some(
            TokenError::InvalidGrant { description } | TokenError::Refused { description, .. },
        ) = token_error
        && let Some(code) = description.as_deref().and_then(crate::aadsts::code)
        && let Some(advice) = crate::aadsts::advice(
            code,
            resolved.consent_url.as_ref(),
            "",
            &relogin_hint(resolved),
        )
    {
        return Failure::new(advice.exit, anyhow::Error::new(error).context(advice.cause))
            .hint(advice.fix);
    }
    match token_error {
        Some(TokenError::InvalidGrant { .. }) => {
            let (service, company, causes) = match resolved.provider {
                Provider::Gmail => ("Gmail", "Google", apimail_gmail::INVALID_GRANT_CAUSES),
                Provider::Graph => (
                    "Microsoft",
                    "Microsoft",
                    apimail_graph::INVALID_GRANT_CAUSES,
                ),
            };
            let mut failure = Failure::new(
                Exit::NoPerm,
                anyhow::Error::new(error).context(format!(
                    "the {service} authorization of {} is no longer valid",
                    resolved.label
                )),
            )
            .hint(relogin_hint(resolved));
            for cause in causes {
                failure = failure.note(format!("{company} ends authorizations when {cause}"));
            }
            return failure;
        }
        Some(TokenError::NotLoggedIn { .. } | TokenError::Refused { .. }) => {
            return Failure::new(Exit::NoPerm, error).hint(relogin_hint(resolved));
        }
        Some(wrong @ TokenError::NotTokenEndpoint { .. }) => {
            return wrong_token_url(wrong, &resolved.token_setting, resolved.provider);
        }
        Some(TokenError::Store(_)) if let Some(hint) = wrong_store_key(&error) => {
            return Failure::new(Exit::Config, error).hint(hint);
        }
        Some(TokenError::Unreachable(_)) => {
            return Failure::new(Exit::TempFail, error)
                .hint("check the network connection (and HTTPS_PROXY, if you use a proxy), then try again");
        }
        _ => {}
    }
    let graph_hint = match resolved.provider {
        Provider::Graph => apimail_graph::failure_hint(&error),
        Provider::Gmail => None,
    };
    let (exit, hint) = match error.kind() {
        ErrorKind::Temporary => (
            Exit::TempFail,
            "the provider is busy or unreachable; try again later".to_owned(),
        ),
        ErrorKind::Unauthorized => (Exit::NoPerm, unauthorized_hint(&error, resolved)),
        ErrorKind::InvalidMessage => (
            Exit::DataErr,
            "fix the message (see the provider's answer above) and send again".to_owned(),
        ),
        ErrorKind::Rejected => (
            Exit::Unavailable,
            "the provider refused this message for good; check the recipients and the account"
                .to_owned(),
        ),
        ErrorKind::Config => (
            Exit::Config,
            "check the configuration (`apimail auth status`)".to_owned(),
        ),
        _ => (
            Exit::Software,
            "this is a bug in apimail; please report it with the output of --debug".to_owned(),
        ),
    };
    Failure::new(exit, error).hint(graph_hint.map_or(hint, str::to_owned))
}

/// The timeout, TLS or proxy failure behind `error`, if that is what it is.
pub fn network_failure(
    error: &(dyn std::error::Error + 'static),
) -> Option<apimail_core::http::NetFailure> {
    apimail_core::http::find::<apimail_core::http::NetFailure>(error)
        .cloned()
        .or_else(|| match apimail_core::http::find::<TokenError>(error) {
            Some(TokenError::Network(failure)) => Some(failure.clone()),
            _ => None,
        })
}

/// `run \`apimail auth login …\`` when a login can fix it, else what can.
fn relogin_hint(resolved: &Resolved) -> String {
    if resolved.login_fixes_auth {
        format!("run `{}`", resolved.relogin)
    } else {
        resolved.relogin.clone()
    }
}

fn unauthorized_hint(error: &TransportError, resolved: &Resolved) -> String {
    match (&resolved.relogin_large, resolved.provider) {
        (Some(large), _) if error.to_string().contains("Mail.ReadWrite") => {
            format!("log in again with Mail.ReadWrite: `{large}`")
        }
        (_, Provider::Gmail) if !resolved.login_fixes_auth => resolved.relogin.clone(),
        (_, Provider::Gmail) => format!(
            "authorize again with the gmail.send scope: `{}`",
            resolved.relogin
        ),
        (_, Provider::Graph) if resolved.login_fixes_auth => format!(
            "grant the app the permission (or admin consent), or `{}`",
            resolved.relogin
        ),
        (_, Provider::Graph) => resolved.relogin.clone(),
    }
}
