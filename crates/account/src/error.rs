//! [`ResolveError`]: why an account, a credential or a setting cannot be
//! used. Each variant carries what a caller needs to say what to do; the
//! command line maps them to its exit codes and hints in one place.

use std::path::PathBuf;

use apimail_core::SenderIdentity;
use apimail_core::endpoint::EndpointError;
use apimail_core::token_store::StoreError;

use crate::env;
use crate::provider::Provider;

/// A configuration, an account or the environment's credentials that
/// cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No `--config`, no `$APIMAIL_CONFIG` and no platform directory.
    #[error("cannot find a configuration directory")]
    NoConfigDir,
    /// The configuration file exists but cannot be read.
    #[error("cannot read the configuration {}", path.display())]
    ConfigUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has an unknown key.
    #[error("the configuration {} is not valid: {message}", path.display())]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        message: String,
    },
    /// The configuration file cannot be written.
    #[error("cannot write the configuration {}", path.display())]
    ConfigUnwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No account of that name.
    #[error("account `{name}` is not in {} ({})", path.display(), known_accounts(known))]
    UnknownAccount {
        /// The name asked for.
        name: String,
        /// The configuration file.
        path: PathBuf,
        /// The accounts it has.
        known: Vec<String>,
    },
    /// No account named, no default, no credentials in the environment.
    #[error("no account to send from: {} has none, and no credentials are in the environment", config_path.display())]
    NoAccount {
        /// The configuration file.
        config_path: PathBuf,
        /// The provider asked for (`--provider`).
        provider: Option<Provider>,
    },
    /// No data directory for tokens, outbox and journal.
    #[error(transparent)]
    DataDir(StoreError),
    /// `[http] KEY = 0`.
    #[error("[http] {key} = 0 is not a timeout")]
    ZeroTimeout {
        /// The key.
        key: &'static str,
    },
    /// A timeout variable that is not a number of seconds.
    #[error("{0}")]
    BadTimeout(String),
    /// A variable that should be a whole number.
    #[error("{name} `{value}` is not a whole number")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
    },
    /// `when_unknown` that is neither `resend` nor `hold`.
    #[error("{setting} `{value}` is neither `resend` nor `hold`")]
    BadWhenUnknown {
        /// Where it was set: the variable or the config key.
        setting: &'static str,
        /// What it holds.
        value: String,
    },
    /// A queued entry names a provider this build does not know.
    #[error("the message was accepted for an unknown provider `{0}`")]
    UnknownProvider(String),
    /// The environment now holds other credentials than an entry's.
    #[error("the message was accepted for {wanted}, but the environment now holds {found}")]
    IdentityChanged {
        /// The entry's identity.
        wanted: Box<SenderIdentity>,
        /// The environment's.
        found: Box<SenderIdentity>,
    },
    /// An entry's environment credentials are gone.
    #[error(
        "the message was accepted for {wanted}, and those credentials are no longer in the environment"
    )]
    IdentityGone {
        /// The entry's identity.
        wanted: Box<SenderIdentity>,
    },
    /// An endpoint that is not https (or http to loopback).
    #[error("{setting}: {source}")]
    BadEndpoint {
        /// Where it was set: the variable or ``account key `KEY` ``.
        setting: String,
        /// Why it cannot be used.
        source: EndpointError,
    },
    /// Gmail's HTTPS client cannot be built (no CA roots).
    #[error(transparent)]
    TlsRoots(apimail_core::TransportError),
    /// A service account key is set but not the user it acts as.
    #[error(
        "{} is set but {} is not",
        env::GOOGLE_APPLICATION_CREDENTIALS,
        env::GMAIL_USER
    )]
    GmailEnvNoUser,
    /// The service account key file cannot be read.
    #[error("cannot read {} `{}`", env::GOOGLE_APPLICATION_CREDENTIALS, path.display())]
    ServiceAccountKeyUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A service account key that cannot be used.
    #[error(transparent)]
    ServiceAccountKey(apimail_core::TokenError),
    /// A tenant and client are set in the environment but not the mailbox.
    #[error(
        "{} and {} are set but {} is not",
        env::AZURE_TENANT_ID,
        env::AZURE_CLIENT_ID,
        env::GRAPH_USER
    )]
    GraphEnvNoUser,
    /// `APIMAIL_GRAPH_MAX_MESSAGE_MB` is not a number.
    #[error("{name} `{0}` is not a whole number", name = env::GRAPH_MAX_MESSAGE_MB)]
    MaxMessageNotANumber(String),
    /// The mailbox size limit is out of range.
    #[error(transparent)]
    MaxMessage(apimail_graph::LimitOutOfRange),
    /// The transport cannot be built with these settings (a Graph root
    /// with a query, an empty mailbox).
    #[error(transparent)]
    Transport(apimail_core::TransportError),
    /// An app-only account without `user`.
    #[error("app-only account `{name}` has no `user` (the mailbox to send as)")]
    AppOnlyNoUser {
        /// The account.
        name: String,
        /// The configuration file.
        config_path: PathBuf,
    },
    /// App-only credentials without a client id or tenant.
    #[error("{label} needs a client id and a tenant id for app-only sending")]
    AppOnlyIds {
        /// The account or "the environment".
        label: String,
    },
    /// App-only credentials without a secret or certificate.
    #[error("{label} has no client secret or certificate")]
    NoAppCredential {
        /// The account or "the environment".
        label: String,
    },
    /// The client certificate file cannot be read.
    #[error("cannot read the client certificate `{path}`")]
    CertificateUnreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client certificate cannot be used (no RSA key, not PEM).
    #[error(transparent)]
    Certificate(apimail_graph::AssertionError),
    /// The client secret file cannot be read.
    #[error("cannot read the client secret file `{file}`")]
    SecretFileUnreadable {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client secret file is empty.
    #[error("the client secret file `{file}` is empty")]
    SecretFileEmpty {
        /// The file.
        file: String,
    },
    /// A Microsoft cloud that does not exist.
    #[error("unknown Microsoft cloud `{name}`")]
    UnknownCloud {
        /// What was asked for.
        name: String,
    },
    /// The shared store's settings cannot be used.
    #[error(transparent)]
    StoreSettings(StoreSettingsError),
    /// The key the store's tokens are sealed with cannot be read.
    #[error("{source} ({from})")]
    StoreKey {
        /// `APIMAIL_STORE_KEY_FILE` or `[store] key_file`.
        from: &'static str,
        /// Why.
        source: apimail_store_postgres::KeyError,
    },
    /// The shared store cannot be set up (its URL, TLS).
    #[error(transparent)]
    StoreOpen(apimail_store_postgres::StoreError),
}

fn known_accounts(known: &[String]) -> String {
    if known.is_empty() {
        "there are no accounts yet".to_owned()
    } else {
        format!("known accounts: {}", known.join(", "))
    }
}

/// Why the store's settings cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreSettingsError {
    /// The password file cannot be read.
    #[error("cannot read the store's password file `{}` ({setting})", file.display())]
    PasswordFileUnreadable {
        /// The file.
        file: PathBuf,
        /// `APIMAIL_STORE_PASSWORD_FILE` or `[store] password_file`.
        setting: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The password file's first line is empty.
    #[error("the store's password file `{}` is empty ({setting})", file.display())]
    PasswordFileEmpty {
        /// The file.
        file: PathBuf,
        /// Where it was named.
        setting: &'static str,
    },
    /// `APIMAIL_STORE_TOKENS` is neither `local` nor `store`.
    #[error("{} `{value}` is neither `local` nor `store`", env::STORE_TOKENS)]
    BadTokensIn {
        /// What it holds.
        value: String,
    },
    /// Tokens in the store, but no store is configured.
    #[error("{setting} is `store`, but no store is configured")]
    TokensWithoutStore {
        /// `APIMAIL_STORE_TOKENS` or `[store] tokens`.
        setting: &'static str,
    },
    /// Tokens in the store, but no key to seal them with.
    #[error(
        "{setting} is `store`, but no key is given ({} or `[store] key_file`)",
        env::STORE_KEY_FILE
    )]
    TokensWithoutKey {
        /// `APIMAIL_STORE_TOKENS` or `[store] tokens`.
        setting: &'static str,
    },
}
