//! What every request of the console shares: the data it shows (journal,
//! index, outbox, token store), the accounts, the sessions, the templates.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use apimail_core::journal::{Filter, Journal, Record};
use apimail_core::login_backoff::LoginBackoff;
use apimail_core::outbox::Outbox;
use apimail_core::token_store::TokenStore;
use apimail_store_postgres::Store;
use jiff::tz::TimeZone;
use minijinja::Environment;

use crate::alerts::{AlertConfig, Alerts};
use crate::checks::Checks;
use crate::events::Events;
use crate::index::{Index, IndexError};
use crate::sessions::{LoginLimits, SESSION_LIFETIME, Sessions};
use crate::signin::{Flows, SignIn};
use crate::tokens::TOKENS_FILE;
use crate::users::USERS_FILE;

/// The index's file name in the console's directory.
pub const INDEX_FILE: &str = "index.sqlite3";

/// The index's file name when it is built from the shared store's journal
/// (`with_store`): kept apart from the local journal's.
pub const STORE_INDEX_FILE: &str = "store-index.sqlite3";

/// How many records of the store's journal one read brings to the index.
const STORE_PAGE: usize = 1000;

/// An account, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Its name.
    pub name: String,
    /// `gmail` or `graph`.
    pub provider: String,
    /// The address it sends from, if known.
    pub address: Option<String>,
    /// Sends without stored tokens (Graph app-only).
    pub app_only: bool,
}

/// What the console is opened with.
#[derive(Debug)]
pub struct ConsoleConfig {
    /// The console's own directory (`<data dir>/admin`): users, tokens and
    /// the index.
    pub dir: PathBuf,
    /// The delivery journal.
    pub journal: Journal,
    /// The outbox.
    pub outbox: Outbox,
    /// The token store, for the accounts' authorization state.
    pub token_store: TokenStore,
    /// The configured accounts.
    pub accounts: Vec<AccountInfo>,
    /// The time zone times are shown in.
    pub zone: TimeZone,
    /// Served over TLS: cookies are `Secure`.
    pub tls: bool,
    /// The back-off on failed logins.
    pub login_limits: LoginLimits,
}

/// Why the console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The index could not be opened.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A built-in template does not parse (a bug).
    #[error("the console's template {name} is broken: {reason}")]
    Template {
        /// The template.
        name: &'static str,
        /// minijinja's reason.
        reason: String,
    },
}

/// The console, shared by every request.
#[derive(Debug)]
pub struct Console {
    pub(crate) dir: PathBuf,
    pub(crate) journal: Journal,
    pub(crate) outbox: Outbox,
    pub(crate) token_store: TokenStore,
    pub(crate) accounts: Vec<AccountInfo>,
    pub(crate) zone: TimeZone,
    pub(crate) tls: bool,
    pub(crate) sessions: Sessions,
    pub(crate) backoff: LoginBackoff,
    pub(crate) templates: Environment<'static>,
    pub(crate) events: Arc<Events>,
    /// The sign-ins started from the console.
    pub(crate) flows: Arc<Flows>,
    /// The login flows (`with_sign_in`).
    pub(crate) sign_in: Option<SignInHook>,
    /// The relay users file (`with_relay_users`).
    pub(crate) relay_users: Option<PathBuf>,
    /// Tells a relay in this process to read its users again.
    pub(crate) relay_reload: Option<Hook>,
    /// The alerts (`with_alerts`).
    pub(crate) alerts: Option<Arc<Alerts>>,
    /// The checks page's checks (`with_checks`).
    pub(crate) checks: Option<ChecksHook>,
    /// The shared PostgreSQL store (`with_store`): the log, the queue and
    /// its actions are the store's, not the data directory's.
    pub(crate) store: Option<Store>,
    index: Mutex<Index>,
    index_file: &'static str,
}

/// Something the process that runs the console does on its request.
#[derive(Clone)]
pub struct Hook(Arc<dyn Fn() + Send + Sync>);

impl Hook {
    /// A hook that runs `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Hook {
        Hook(Arc::new(f))
    }
}

impl std::ops::Deref for Hook {
    type Target = dyn Fn() + Send + Sync;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// The login flows, as the console keeps them.
#[derive(Clone)]
pub(crate) struct SignInHook(pub Arc<dyn SignIn>);

impl std::fmt::Debug for SignInHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn")
    }
}

/// The checks, as the console keeps them.
#[derive(Clone)]
pub(crate) struct ChecksHook(pub Arc<dyn Checks>);

impl std::fmt::Debug for ChecksHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checks")
    }
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// The templates, built in: (name, source). `.html` ones are autoescaped.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("log.html", include_str!("../templates/log.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("chart.html", include_str!("../templates/chart.html")),
    ("queue.html", include_str!("../templates/queue.html")),
    (
        "queue_confirm.html",
        include_str!("../templates/queue_confirm.html"),
    ),
    (
        "relay_users.html",
        include_str!("../templates/relay_users.html"),
    ),
    ("checks.html", include_str!("../templates/checks.html")),
    ("signin.html", include_str!("../templates/signin.html")),
    (
        "relay_user_remove.html",
        include_str!("../templates/relay_user_remove.html"),
    ),
];

impl Console {
    /// Opens the index (creating the console's directory) and loads the
    /// templates.
    pub fn open(config: ConsoleConfig) -> Result<Console, ConsoleError> {
        let index = Index::open(&config.dir.join(INDEX_FILE))?;
        let mut templates = Environment::new();
        for (name, source) in TEMPLATES {
            templates
                .add_template(name, source)
                .map_err(|e| ConsoleError::Template {
                    name,
                    reason: e.to_string(),
                })?;
        }
        Ok(Console {
            dir: config.dir,
            journal: config.journal,
            outbox: config.outbox,
            token_store: config.token_store,
            accounts: config.accounts,
            zone: config.zone,
            tls: config.tls,
            sessions: Sessions::new(SESSION_LIFETIME),
            backoff: LoginBackoff::new(config.login_limits),
            templates,
            events: Arc::new(Events::new()),
            flows: Arc::default(),
            sign_in: None,
            relay_users: None,
            relay_reload: None,
            alerts: None,
            checks: None,
            store: None,
            index: Mutex::new(index),
            index_file: INDEX_FILE,
        })
    }

    /// Shows and edits the relay users in `path` (`relay/users.json`);
    /// `reload`, if given, runs after each change (a relay in this process
    /// reads the file again).
    pub fn with_relay_users(mut self, path: PathBuf, reload: Option<Hook>) -> Console {
        self.relay_users = Some(path);
        self.relay_reload = reload;
        self
    }

    /// Reports conditions as `config` says (see [`Console::alert_round`]).
    pub fn with_alerts(mut self, config: AlertConfig) -> Console {
        self.alerts = Some(Arc::new(Alerts::new(config)));
        self
    }

    /// Shows the shared store's send log and queue instead of the data
    /// directory's: the log is indexed from the store's journal (in
    /// `store-index.sqlite3`), the queue page and the API's queue actions
    /// act on the store's entries. `name` tells stores apart (the URL
    /// without its password): an index read from another one is rebuilt.
    pub fn with_store(mut self, store: Store, name: &str) -> Result<Console, ConsoleError> {
        let mut index = Index::open(&self.dir.join(STORE_INDEX_FILE))?;
        if index.bind_store(name)? {
            tracing::info!("the console's index was of another store; rebuilding it");
        }
        self.index = Mutex::new(index);
        self.index_file = STORE_INDEX_FILE;
        self.store = Some(store);
        Ok(self)
    }

    /// Shows `checks` on the checks page.
    pub fn with_checks(mut self, checks: Arc<dyn Checks>) -> Console {
        self.checks = Some(ChecksHook(checks));
        self
    }

    /// Offers "Sign in again" for the accounts, through `sign_in`.
    pub fn with_sign_in(mut self, sign_in: Arc<dyn SignIn>) -> Console {
        self.sign_in = Some(SignInHook(sign_in));
        self
    }

    /// The alerts, if configured.
    pub fn alerts(&self) -> Option<&Alerts> {
        self.alerts.as_deref()
    }

    /// The administrators' file.
    pub fn users_path(&self) -> PathBuf {
        self.dir.join(USERS_FILE)
    }

    /// The API tokens' file.
    pub fn tokens_path(&self) -> PathBuf {
        self.dir.join(TOKENS_FILE)
    }

    /// The console's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the index up to date with the journal now (blocking: at
    /// start-up, so the first page does not wait for a first build);
    /// returns the records added.
    /// With a store, this must run off the async runtime's threads (it
    /// waits for the store on the current runtime).
    pub fn update_index(&self) -> Result<usize, IndexError> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        self.update(&mut index)
    }

    /// Brings `index` up to date with the journal, local or the store's.
    fn update(&self, index: &mut Index) -> Result<usize, IndexError> {
        let Some(store) = &self.store else {
            return index.update(&self.journal);
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| IndexError::Read {
            path: self.dir.join(self.index_file),
            source: std::io::Error::other(e),
        })?;
        let cutoff = self.journal.cutoff(apimail_core::now_unix());
        let mut added = 0;
        loop {
            let after = index.store_seq()?;
            let page = runtime
                .block_on(store.read_journal(&Filter::default(), after, STORE_PAGE))
                .map_err(|source| IndexError::Store { source })?;
            let records: Vec<(i64, Record)> = page.into_iter().map(|s| (s.seq, s.record)).collect();
            added += index.add_stored(&records, cutoff)?;
            if records.len() < STORE_PAGE {
                return Ok(added);
            }
        }
    }

    /// Runs `f` on the index off the async runtime, first bringing the
    /// index up to date with the journal when `update` is set.
    pub(crate) async fn with_index<T, F>(
        self: &Arc<Self>,
        update: bool,
        f: F,
    ) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    {
        let console = Arc::clone(self);
        let work = move || {
            let mut index = console.index.lock().unwrap_or_else(|e| e.into_inner());
            if update {
                console.update(&mut index)?;
            }
            f(&index)
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            // The closure panicked: a bug, already reported by the hook.
            Err(_) => Err(IndexError::Read {
                path: self.dir.join(self.index_file),
                source: std::io::Error::other("the index query stopped"),
            }),
        }
    }
}
