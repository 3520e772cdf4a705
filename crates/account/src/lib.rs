//! apimail's one account layer, shared by the command line, the relay and
//! the library (`apimail-mailer`):
//!
//! - [`config`]: the configuration file's schema, loaded and saved;
//! - [`env`](mod@env): every environment variable's name;
//! - [`resolve()`]: what to send with, by the precedence of flags
//!   ([`Flags`]), environment, configuration and defaults, as a
//!   [`Resolved`] [`Sender`], or a [`ResolveError`] saying why not;
//! - [`build()`]: the one place a transport is built, from
//!   [`Credentials`] and [`Endpoints`] (the library's, the environment's)
//!   or an account's stored tokens;
//! - [`ConfiguredSenders`]: the delivery engine's way from an outbox
//!   entry's identity to its sender;
//! - [`engine`]: the outbox, the engine and the journal, built once, with
//!   the settings of [`Delivery`];
//! - [`store_settings`]: where the shared PostgreSQL store is, if any, and
//!   [`open_store`]: the one way to open it;
//! - [`token_vault`]: where accounts' OAuth tokens are kept (each node's
//!   files, or the shared store, encrypted).

mod build;
pub mod config;
mod credentials;
mod delivery;
pub mod env;
mod environment;
mod error;
pub mod lifetime;
mod provider;
mod resolve;
mod sender;
mod senders;
mod settings;
mod shared_store;
mod tokens;

pub use build::{Endpoints, build};
pub use config::{Account, Config, GmailAccount, GraphAccount, Provider};
pub use credentials::{Credentials, gmail_service_account_identity, graph_app_only_identity};
pub use delivery::{
    data_dir, engine, journal_dir, open_journal, outbox_dir, relay_dir, shared_engine,
};
pub use error::ResolveError;
pub use resolve::{
    Context, Flags, authority, client_secret_file, cloud, endpoint, endpoint_from,
    env_credentials_set, from_env, gmail_login_command, graph_api, graph_message_limit,
    login_client_secret, login_command, resolve, resolve_account, resolve_identity, store,
};
pub use sender::{Resolved, Sender, Stack};
pub use senders::{ConfiguredSenders, OneSender};
pub use settings::{
    Delivery, max_age_secs, no_queue, retry_policy, set_env_http_timeouts, set_http_timeouts,
};
pub use shared_store::{
    KeyFile, StoreSettings, StoreSettingsError, open_store, store_config, store_settings,
};
pub use tokens::{shared_tokens_for, token_vault};
