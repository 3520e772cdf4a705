//! apimail-console: the admin console. A web page and a JSON API over the
//! same data as `apimail log`, `apimail queue` and `apimail auth status`:
//! the delivery journal (through an SQLite [`index`]), the outbox and the
//! token store; or, with [`Console::with_store`], the shared PostgreSQL
//! store's journal and queue. `apimail admin serve` runs it:
//!
//! ```no_run
//! # async fn demo(config: apimail_console::ConsoleConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let console = std::sync::Arc::new(apimail_console::Console::open(config)?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8025").await?;
//! apimail_console::serve(listener, apimail_console::router(console), None, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod alert_rounds;
pub mod alerts;
mod api;
mod chart;
pub mod checks;
mod checks_page;
mod events;
mod export;
pub mod filters;
mod guard;
pub mod i18n;
pub mod index;
mod live;
mod pages;
mod queue;
mod relay_users;
mod router;
mod serve;
mod sessions;
pub mod settings;
mod shared;
pub mod signin;
mod signin_page;
mod state;
mod store;
pub mod tls;
pub mod tokens;
pub mod users;

pub use alerts::{AlertConfig, AlertMail, Alerts};
pub use index::{Index, IndexError};
pub use router::router;
pub use serve::{MAX_CONNECTIONS, serve};
pub use sessions::{DEFAULT_LOGIN_LIMITS, LoginLimits, SESSION_LIFETIME};
pub use settings::{Settings, SettingsError, SettingsExt};
pub use state::{
    AccountInfo, Console, ConsoleConfig, ConsoleError, Hook, INDEX_FILE, STORE_INDEX_FILE,
};
pub use store::FileError;
pub use tokens::{ApiToken, ApiTokens, TokensError};
pub use users::{AdminUser, AdminUsers, UsersError};
