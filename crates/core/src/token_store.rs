//! The on-disk store of OAuth credentials, shared by every provider.
//!
//! Each account is one JSON file, `<dir>/tokens/<account>.json`, readable by
//! its owner only. Next to it, `<account>.lock` serializes refreshes across
//! processes: when a cached access token has gone stale, exactly one apimail
//! process refreshes it and the others pick up the result from disk. This
//! matters because Microsoft rotates the refresh token on every refresh, so
//! two processes refreshing at once would leave one of them with a token the
//! server has already retired.
//!
//! Secret values (refresh tokens, access tokens, client secrets) are held in
//! [`Secret`]s and never appear in an error, `Debug` or `Display` output.

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::files;
use crate::secret::Secret;
use crate::token::{AccessToken, TokenError, TokenResponse, now_unix};

/// How long to wait for another process to release an account's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait between attempts to take a lock.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// The longest account name accepted.
const MAX_ACCOUNT_LEN: usize = 64;

/// What is kept per account, in `<dir>/tokens/<account>.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredToken {
    /// The account name, also the file name.
    pub account: String,
    /// Which provider issued the tokens: `gmail` or `graph`.
    pub provider: String,
    /// The authorized mailbox, if known.
    pub address: Option<String>,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret, for clients that have one.
    pub client_secret: Option<Secret>,
    /// The token endpoint refreshes go to.
    pub token_url: String,
    /// The granted (or else requested) scopes.
    pub scopes: Vec<String>,
    /// The refresh token; without one, only a new login helps.
    pub refresh_token: Option<Secret>,
    /// The last access token issued.
    pub access_token: Option<Secret>,
    /// When `access_token` expires, in Unix seconds.
    pub expires_at: Option<i64>,
    /// When this was last saved, in Unix seconds; set by every save.
    pub updated_at: i64,
    /// When the user authorized (logged in or imported), in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<i64>,
    /// When the refresh token last worked, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<i64>,
    /// Why the provider last refused the refresh token (`invalid_grant`),
    /// until a refresh works again: only a new login helps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_refused: Option<String>,
}

impl StoredToken {
    /// The cached access token, if there is one and it is still fresh
    /// (see [`AccessToken::is_fresh`]).
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        let token = AccessToken {
            secret: self.access_token.clone()?,
            expires_at: self.expires_at,
        };
        token.is_fresh().then_some(token)
    }

    /// The cached access token if it is fresh and not `rejected` (one the
    /// API refused): what a refresh that waited for another one uses.
    pub fn usable(&self, rejected: Option<&AccessToken>) -> Option<AccessToken> {
        self.cached_access_token()
            .filter(|token| rejected.is_none_or(|r| r.secret != token.secret))
    }

    /// Takes in a successful refresh: the new access token and its expiry,
    /// the rotated refresh token and scopes when the server sent them; the
    /// refresh token works again (`refreshed_at` now, no refusal).
    pub fn refreshed(&mut self, response: &TokenResponse) {
        self.apply(response);
        self.refreshed_at = Some(now_unix());
        self.refresh_refused = None;
    }

    /// Records that the provider refused the refresh token
    /// (`invalid_grant`), for `auth status` and `doctor`.
    pub fn refused(&mut self, description: Option<&str>) {
        self.refresh_refused = Some(description.unwrap_or("invalid_grant").to_owned());
    }

    /// Takes in what a refresh returned: the new access token and its
    /// expiry, and the refresh token and scopes when the server sent them.
    fn apply(&mut self, response: &TokenResponse) {
        self.access_token = Some(response.access_token.secret.clone());
        self.expires_at = response.access_token.expires_at;
        if let Some(refresh_token) = &response.refresh_token {
            self.refresh_token = Some(refresh_token.clone());
        }
        if let Some(scopes) = &response.scopes {
            self.scopes = scopes.clone();
        }
    }
}

/// Why the token store could not be read or written.
///
/// Messages name the file concerned but never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Neither `APIMAIL_DATA_DIR` nor a platform data directory is known.
    #[error("no data directory: set APIMAIL_DATA_DIR")]
    NoDataDir,
    /// The account name cannot be used as a file name.
    #[error(
        "account name `{name}` is not allowed (use 1 to 64 letters, digits, `.`, `-`, `_`, `@`, `+`, not starting with `.`)"
    )]
    InvalidAccount {
        /// The name as given.
        name: String,
    },
    /// A token file exists but could not be read.
    #[error("cannot read token file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A token file is not valid JSON or lacks required fields.
    #[error(
        "token file {} is not valid JSON (line {line}, column {column}); delete it and log in again",
        .path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where parsing failed.
        line: usize,
        /// Where parsing failed.
        column: usize,
    },
    /// A token directory could not be listed.
    #[error("cannot list token directory {}", .path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be restricted to its owner.
    #[error("cannot make {} private to its owner (mode 0600/0700)", .path.display())]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A token file could not be written.
    #[error("cannot write token file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A token file could not be deleted.
    #[error("cannot delete token file {}", .path.display())]
    Delete {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process held the lock for too long.
    #[error(
        "another apimail process holds the lock {} (waited {}s); try again when it has finished",
        .path.display(),
        .waited.as_secs()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}

fn store_error(error: StoreError) -> TokenError {
    TokenError::Store(Box::new(error))
}

/// Checks that `name` is safe as a file name: 1 to 64 ASCII letters,
/// digits, `.`, `-`, `_`, `@` or `+`, not starting with `.`.
fn validate_account(name: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '+');
    if (1..=MAX_ACCOUNT_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name.chars().all(allowed)
    {
        Ok(())
    } else {
        Err(StoreError::InvalidAccount {
            name: name.to_owned(),
        })
    }
}

/// An exclusive lock on an account, held until dropped (closing the file
/// releases it, also when the process dies).
#[derive(Debug)]
struct AccountLock {
    _file: File,
}

/// The credential store: one JSON file per account under `<dir>/tokens`.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    lock_timeout: Duration,
}

impl TokenStore {
    /// A store rooted at `dir` (token files go into `dir/tokens`). Nothing
    /// is created until the first save.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TokenStore {
            dir: dir.into(),
            lock_timeout: LOCK_TIMEOUT,
        }
    }

    /// The store in the platform data directory (e.g.
    /// `~/.local/share/apimail`); the account layer reads
    /// `$APIMAIL_DATA_DIR` first.
    pub fn in_platform_dir() -> Result<Self, StoreError> {
        dirs::data_dir()
            .map(|dir| TokenStore::new(dir.join("apimail")))
            .ok_or(StoreError::NoDataDir)
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tokens_dir(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// The file `account` is stored in. The name is not checked here;
    /// [`load`](Self::load) and [`save`](Self::save) refuse unsafe names.
    pub fn path(&self, account: &str) -> PathBuf {
        self.tokens_dir().join(format!("{account}.json"))
    }

    fn lock_path(&self, account: &str) -> PathBuf {
        self.tokens_dir().join(format!("{account}.lock"))
    }

    /// What is stored for `account`, or `None` if nothing is. Takes no lock:
    /// files are replaced atomically, so a read sees either the old or the
    /// new content.
    pub fn load(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        validate_account(account)?;
        let path = self.path(account);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        // serde_json's messages may quote the offending value, which may be
        // a secret: keep only the position.
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Parse {
                path,
                line: e.line(),
                column: e.column(),
            })
    }

    /// Writes `token` to `<dir>/tokens/<token.account>.json`, atomically and
    /// readable by the owner only, with `updated_at` set to now. Takes the
    /// account's lock, waiting (blocking the thread) up to 30 seconds for
    /// another process to release it.
    pub fn save(&self, token: &StoredToken) -> Result<(), StoreError> {
        validate_account(&token.account)?;
        let _lock = self.lock_blocking(&token.account)?;
        self.write(token)
    }

    /// Removes what is stored for `account`; `false` if nothing was. Takes
    /// the account's lock like [`save`](Self::save).
    pub fn delete(&self, account: &str) -> Result<bool, StoreError> {
        validate_account(account)?;
        let path = self.path(account);
        if !path.exists() {
            return Ok(false);
        }
        let _lock = self.lock_blocking(account)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                // Best effort: the file is gone either way.
                let _ = files::sync_dir(&self.tokens_dir());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Delete { path, source }),
        }
    }

    /// Every stored account, sorted by account name.
    pub fn list(&self) -> Result<Vec<StoredToken>, StoreError> {
        let mut tokens = Vec::new();
        for account in self.account_names()? {
            if let Some(token) = self.load(&account)? {
                tokens.push(token);
            }
        }
        Ok(tokens)
    }

    /// The accounts with a token file, sorted, without reading the files
    /// (so one unreadable file does not hide the others).
    pub fn account_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.tokens_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::ReadDir { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(account) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if validate_account(account).is_err() {
                continue; // temporary files and strays
            }
            names.push(account.to_owned());
        }
        names.sort();
        Ok(names)
    }

    /// A usable access token for `account`: the cached one if it is fresh
    /// (no lock, no network), else a new one from `refresh`.
    ///
    /// Refreshes happen once across processes: under the account's lock
    /// the file is read again, and if another process refreshed meanwhile
    /// its token is used. Otherwise `refresh` is called with what is stored,
    /// and its answer (including a rotated refresh token) is on disk before
    /// this returns. If `refresh` fails, the file is left as it was.
    ///
    /// Fails with [`TokenError::NotLoggedIn`] if nothing is stored for
    /// `account` or it has no refresh token, and with [`TokenError::Store`]
    /// (holding a [`StoreError`]) if the store cannot be read or written or
    /// another process holds the lock for more than 30 seconds.
    pub async fn access_token<F, Fut>(
        &self,
        account: &str,
        refresh: F,
    ) -> Result<AccessToken, TokenError>
    where
        F: FnOnce(StoredToken) -> Fut,
        Fut: Future<Output = Result<TokenResponse, TokenError>>,
    {
        self.obtain(account, None, refresh).await
    }

    /// A replacement for `rejected`, which the API refused (HTTP 401): the
    /// stored token if another process already replaced `rejected` with a
    /// different fresh one, else a new one from `refresh`, as in
    /// [`access_token`](Self::access_token).
    pub async fn refresh_after_rejection<F, Fut>(
        &self,
        account: &str,
        rejected: &AccessToken,
        refresh: F,
    ) -> Result<AccessToken, TokenError>
    where
        F: FnOnce(StoredToken) -> Fut,
        Fut: Future<Output = Result<TokenResponse, TokenError>>,
    {
        self.obtain(account, Some(rejected), refresh).await
    }

    async fn obtain<F, Fut>(
        &self,
        account: &str,
        rejected: Option<&AccessToken>,
        refresh: F,
    ) -> Result<AccessToken, TokenError>
    where
        F: FnOnce(StoredToken) -> Fut,
        Fut: Future<Output = Result<TokenResponse, TokenError>>,
    {
        let usable = |stored: &StoredToken| stored.usable(rejected);
        let not_logged_in = || TokenError::NotLoggedIn {
            account: account.to_owned(),
        };

        let stored = self
            .load(account)
            .map_err(store_error)?
            .ok_or_else(not_logged_in)?;
        if let Some(token) = usable(&stored) {
            return Ok(token);
        }

        let _lock = self.lock_async(account).await.map_err(store_error)?;
        // Another process may have refreshed while we waited.
        let mut stored = self
            .load(account)
            .map_err(store_error)?
            .ok_or_else(not_logged_in)?;
        if let Some(token) = usable(&stored) {
            return Ok(token);
        }
        if stored.refresh_token.is_none() {
            return Err(not_logged_in());
        }
        let response = match refresh(stored.clone()).await {
            Ok(response) => response,
            Err(error) => {
                if let TokenError::InvalidGrant { description } = &error {
                    // Recorded for `auth status` and `doctor`; the refusal
                    // is what matters if this write fails.
                    stored.refused(description.as_deref());
                    let _ = self.write(&stored);
                }
                return Err(error);
            }
        };
        stored.refreshed(&response);
        // A rotated refresh token must be on disk before the new access
        // token is used: the old one may already be void.
        self.write(&stored).map_err(store_error)?;
        Ok(response.access_token)
    }

    /// Creates `<dir>` and `<dir>/tokens` (mode 0700) and makes sure the
    /// latter is private even if it already existed.
    fn ensure_dirs(&self) -> Result<PathBuf, StoreError> {
        let tokens = self.tokens_dir();
        files::create_private_dir(&tokens).map_err(|e| {
            let path = tokens.clone();
            match e {
                files::DirError::Create(source) => StoreError::CreateDir { path, source },
                files::DirError::Permissions(source) => StoreError::Permissions { path, source },
            }
        })?;
        Ok(tokens)
    }

    /// Writes `token` atomically; the caller holds the lock.
    fn write(&self, token: &StoredToken) -> Result<(), StoreError> {
        validate_account(&token.account)?;
        self.ensure_dirs()?;
        let path = self.path(&token.account);
        let mut token = token.clone();
        token.updated_at = now_unix();
        let mut json = serde_json::to_vec_pretty(&token).map_err(|_| StoreError::Write {
            path: path.clone(),
            source: io::Error::other("cannot serialize the token"),
        })?;
        json.push(b'\n');

        // The temporary file's leading dot keeps it out of `list`.
        files::write_private(&path, &json).map_err(|e| StoreError::Write {
            path: path.clone(),
            source: e.into_io_error(),
        })
    }

    /// Opens (creating if needed) the account's lock file.
    fn open_lock(&self, account: &str) -> Result<(File, PathBuf), StoreError> {
        self.ensure_dirs()?;
        let path = self.lock_path(account);
        let file = files::open_lock_file(&path).map_err(|source| StoreError::Lock {
            path: path.clone(),
            source,
        })?;
        Ok((file, path))
    }

    /// Takes the account's lock, sleeping the thread between attempts.
    fn lock_blocking(&self, account: &str) -> Result<AccountLock, StoreError> {
        let (file, path) = self.open_lock(account)?;
        let start = Instant::now();
        loop {
            if try_lock(&file, &path)? {
                return Ok(AccountLock { _file: file });
            }
            if start.elapsed() >= self.lock_timeout {
                return Err(StoreError::Locked {
                    path,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(LOCK_POLL);
        }
    }

    /// Takes the account's lock without blocking the runtime thread.
    async fn lock_async(&self, account: &str) -> Result<AccountLock, StoreError> {
        let (file, path) = self.open_lock(account)?;
        let start = Instant::now();
        loop {
            if try_lock(&file, &path)? {
                return Ok(AccountLock { _file: file });
            }
            if start.elapsed() >= self.lock_timeout {
                return Err(StoreError::Locked {
                    path,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// One attempt at an exclusive lock: `Ok(false)` if someone else holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool, StoreError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(source)) => Err(StoreError::Lock {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::testing::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRETS: [&str; 4] = [
        "SECRET-refresh-1",
        "SECRET-access-1",
        "SECRET-client-1",
        "SECRET-rotated-1",
    ];

    fn stored(account: &str, expires_in: i64) -> StoredToken {
        StoredToken {
            account: account.to_owned(),
            provider: "graph".to_owned(),
            address: Some("me@example.com".to_owned()),
            client_id: "client-id".to_owned(),
            client_secret: Some(Secret::new(SECRETS[2])),
            token_url: "https://login.example.com/token".to_owned(),
            scopes: vec!["Mail.Send".to_owned()],
            refresh_token: Some(Secret::new(SECRETS[0])),
            access_token: Some(Secret::new(SECRETS[1])),
            expires_at: Some(now_unix() + expires_in),
            updated_at: 0,
            authorized_at: None,
            refreshed_at: None,
            refresh_refused: None,
        }
    }

    fn response(access: &str, refresh: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: AccessToken {
                secret: Secret::new(access),
                expires_at: Some(now_unix() + 3600),
            },
            refresh_token: refresh.map(Secret::new),
            scopes: Some(vec!["Mail.Send".to_owned(), "offline_access".to_owned()]),
            id_token: None,
        }
    }

    /// Display, Debug and every source of `error`.
    fn everything_said(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = format!("{error:?}");
        let mut current = Some(error);
        while let Some(e) = current {
            text.push('\n');
            text.push_str(&e.to_string());
            current = e.source();
        }
        text
    }

    fn assert_no_secret(text: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }

    #[test]
    fn save_load_round_trip_is_private_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("data"));
        assert!(store.load("work").unwrap().is_none());
        assert!(store.list().unwrap().is_empty());

        let token = stored("work", 3600);
        store.save(&token).unwrap();
        store.save(&token).unwrap();
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(loaded.account, "work");
        assert_eq!(loaded.refresh_token, token.refresh_token);
        assert_eq!(loaded.access_token, token.access_token);
        assert_eq!(loaded.client_secret, token.client_secret);
        assert_eq!(loaded.expires_at, token.expires_at);
        assert_eq!(loaded.scopes, token.scopes);
        assert!(
            loaded.updated_at >= now_unix() - 5,
            "updated_at set on save"
        );

        assert_eq!(
            names(&store.dir().join("tokens")),
            ["work.json", "work.lock"]
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&store.path("work")), 0o600);
            assert_eq!(mode(&store.dir().join("tokens")), 0o700);
            assert_eq!(mode(store.dir()), 0o700);
            assert_eq!(mode(&store.lock_path("work")), 0o600);
        }

        store.save(&stored("alpha", 10)).unwrap();
        let accounts: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|t| t.account)
            .collect();
        assert_eq!(accounts, ["alpha", "work"]);

        assert!(store.delete("work").unwrap());
        assert!(!store.delete("work").unwrap());
        assert!(store.load("work").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn save_fixes_wrong_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let tokens = dir.path().join("tokens");
        fs::create_dir(&tokens).unwrap();
        fs::set_permissions(&tokens, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(store.path("work"), "{}").unwrap();
        fs::set_permissions(store.path("work"), fs::Permissions::from_mode(0o644)).unwrap();

        store.save(&stored("work", 3600)).unwrap();
        assert_eq!(mode(&store.path("work")), 0o600);
        assert_eq!(mode(&tokens), 0o700);
    }

    #[test]
    fn nothing_prints_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let token = stored("work", 3600);
        assert_no_secret(&format!("{token:?}"));
        assert_no_secret(&format!("{:?}", token.cached_access_token()));

        // A file whose type error would make serde_json quote a secret.
        store.save(&token).unwrap();
        let text = fs::read_to_string(store.path("work")).unwrap();
        assert!(text.contains(SECRETS[0]), "the file does hold the secret");
        let bad_type = text.replace(
            &format!("\"expires_at\": {}", token.expires_at.unwrap()),
            &format!("\"expires_at\": \"{}\"", SECRETS[3]),
        );
        assert_ne!(bad_type, text);
        fs::write(store.path("work"), bad_type).unwrap();
        let parse = store.load("work").unwrap_err();
        assert!(matches!(parse, StoreError::Parse { .. }), "{parse}");
        assert!(parse.to_string().contains("work.json"), "{parse}");
        // Truncated JSON, so the tail is a secret.
        fs::write(
            store.path("work"),
            &text[..text.find(SECRETS[0]).unwrap() + 5],
        )
        .unwrap();
        let truncated = store.load("work").unwrap_err();

        let io = || io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        let path = || store.path("work");
        let errors = [
            parse,
            truncated,
            StoreError::NoDataDir,
            StoreError::InvalidAccount {
                name: "../x".to_owned(),
            },
            StoreError::Read {
                path: path(),
                source: io(),
            },
            StoreError::ReadDir {
                path: path(),
                source: io(),
            },
            StoreError::CreateDir {
                path: path(),
                source: io(),
            },
            StoreError::Permissions {
                path: path(),
                source: io(),
            },
            StoreError::Write {
                path: path(),
                source: io(),
            },
            StoreError::Delete {
                path: path(),
                source: io(),
            },
            StoreError::Lock {
                path: path(),
                source: io(),
            },
            StoreError::Locked {
                path: path(),
                waited: LOCK_TIMEOUT,
            },
        ];
        for error in errors {
            assert_no_secret(&everything_said(&error));
            assert_no_secret(&everything_said(&store_error(error)));
        }
    }

    #[test]
    fn invalid_account_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let long = "a".repeat(65);
        for name in [
            "", ".hidden", "..", "../etc", "a/b", "a\\b", "a b", "ä", "a\0", "a:b", &long,
        ] {
            assert!(
                matches!(store.load(name), Err(StoreError::InvalidAccount { .. })),
                "{name:?}"
            );
            assert!(store.delete(name).is_err(), "{name:?}");
            assert!(store.save(&stored(name, 10)).is_err(), "{name:?}");
        }
        for name in ["work", "me@example.com", "a+b_c-d.e", &"a".repeat(64)] {
            assert!(store.load(name).is_ok(), "{name:?}");
        }
        let error = store.load("a/b").unwrap_err().to_string();
        assert!(error.contains("`a/b` is not allowed"), "{error}");
    }

    #[test]
    fn futures_are_send() {
        // TokenSource implementations need Send futures.
        fn assert_send<T: Send>(_: T) {}
        let store = TokenStore::new("unused");
        let rejected = AccessToken {
            secret: Secret::new("x"),
            expires_at: None,
        };
        assert_send(store.access_token("a", |_| async { Ok(response("x", None)) }));
        assert_send(
            store.refresh_after_rejection("a", &rejected, |_| async { Ok(response("x", None)) }),
        );
    }

    #[tokio::test]
    async fn a_fresh_token_is_used_without_refreshing() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", 3600)).unwrap();
        let token = store
            .access_token("work", |_| async {
                panic!("refresh must not be called");
            })
            .await
            .unwrap();
        assert_eq!(token.secret.expose(), SECRETS[1]);
    }

    #[tokio::test]
    async fn a_stale_token_is_refreshed_once_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", 30)).unwrap(); // within EXPIRY_MARGIN
        let calls = AtomicUsize::new(0);
        let token = store
            .access_token("work", |old| {
                calls.fetch_add(1, Ordering::SeqCst);
                assert_eq!(old.refresh_token.as_ref().unwrap().expose(), SECRETS[0]);
                async { Ok(response("new-access", Some(SECRETS[3]))) }
            })
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(token.secret.expose(), "new-access");

        let on_disk = fs::read_to_string(store.path("work")).unwrap();
        assert!(on_disk.contains("new-access"));
        assert!(on_disk.contains(SECRETS[3]), "rotated refresh token saved");
        assert!(!on_disk.contains(SECRETS[0]), "old refresh token gone");
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(loaded.expires_at, token.expires_at);
        assert_eq!(loaded.scopes, ["Mail.Send", "offline_access"]);

        // Now fresh: no second refresh.
        let again = store
            .access_token("work", |_| async { panic!("refreshed twice") })
            .await
            .unwrap();
        assert_eq!(again, token);
    }

    #[tokio::test]
    async fn a_refresh_without_rotation_keeps_the_refresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", -10)).unwrap();
        store
            .access_token("work", |_| async { Ok(response("new-access", None)) })
            .await
            .unwrap();
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(loaded.refresh_token.unwrap().expose(), SECRETS[0]);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_tokens_and_records_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", -10)).unwrap();
        let before = fs::read(store.path("work")).unwrap();
        let error = store
            .access_token("work", |_| async {
                Err(TokenError::Unreachable("down".into()))
            })
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::Unreachable(_)), "{error}");
        assert_eq!(fs::read(store.path("work")).unwrap(), before);

        let error = store
            .access_token("work", |_| async {
                Err(TokenError::InvalidGrant {
                    description: Some("Token has been expired or revoked.".into()),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::InvalidGrant { .. }), "{error}");
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(
            loaded.refresh_refused.as_deref(),
            Some("Token has been expired or revoked.")
        );
        assert!(loaded.refresh_token.is_some(), "kept: a login replaces it");

        store
            .access_token("work", |_| async { Ok(response("new", None)) })
            .await
            .unwrap();
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(loaded.refresh_refused, None);
        assert!(loaded.refreshed_at.is_some());
    }

    #[tokio::test]
    async fn missing_account_or_refresh_token_is_not_logged_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let error = store
            .access_token("nobody", |_| async { panic!("no refresh") })
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::NotLoggedIn { ref account } if account == "nobody"));

        let mut token = stored("work", -10);
        token.refresh_token = None;
        store.save(&token).unwrap();
        let error = store
            .access_token("work", |_| async { panic!("no refresh") })
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::NotLoggedIn { .. }), "{error}");

        let error = store
            .access_token("../x", |_| async { panic!("no refresh") })
            .await
            .unwrap_err();
        assert!(matches!(error, TokenError::Store(_)), "{error}");
    }

    #[tokio::test]
    async fn a_held_lock_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TokenStore::new(dir.path());
        store.lock_timeout = Duration::from_millis(200);
        store.save(&stored("work", -10)).unwrap();
        let held = store.lock_blocking("work").unwrap();
        let error = store
            .access_token("work", |_| async { panic!("no refresh") })
            .await
            .unwrap_err();
        let TokenError::Store(inner) = &error else {
            panic!("{error}")
        };
        assert!(
            inner
                .to_string()
                .contains("another apimail process holds the lock"),
            "{inner}"
        );
        assert!(store.save(&stored("work", 10)).is_err());
        drop(held);
        store.save(&stored("work", 10)).unwrap();
    }

    #[tokio::test]
    async fn refresh_after_rejection_uses_a_different_fresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", 3600)).unwrap();

        // Someone else already replaced the rejected token.
        let rejected = AccessToken {
            secret: Secret::new("older-access"),
            expires_at: Some(now_unix() + 3600),
        };
        let token = store
            .refresh_after_rejection("work", &rejected, |_| async { panic!("no refresh") })
            .await
            .unwrap();
        assert_eq!(token.secret.expose(), SECRETS[1]);

        // The stored token is the rejected one: refresh although it looks fresh.
        let rejected = token;
        let calls = AtomicUsize::new(0);
        let token = store
            .refresh_after_rejection("work", &rejected, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(response("replacement", None)) }
            })
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(token.secret.expose(), "replacement");
        assert_eq!(
            store
                .load("work")
                .unwrap()
                .unwrap()
                .access_token
                .unwrap()
                .expose(),
            "replacement"
        );
    }

    /// A refresh that takes 200 ms and numbers its tokens, so a second
    /// refresh would show.
    async fn slow_refresh(counter: Arc<AtomicUsize>) -> Result<TokenResponse, TokenError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(response(
            &format!("access-{n}"),
            Some(&format!("refresh-{n}")),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tasks_refresh_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        store.save(&stored("work", -10)).unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    store
                        .access_token("work", |_| slow_refresh(counter))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap());
        }
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|t| t.secret.expose() == "access-1"));
        let loaded = store.load("work").unwrap().unwrap();
        assert_eq!(loaded.refresh_token.unwrap().expose(), "refresh-1");
    }

    #[test]
    fn concurrent_processes_refresh_once() {
        // Each thread has its own runtime, store value and lock file handle:
        // as close to separate processes as a test gets.
        let dir = tempfile::tempdir().unwrap();
        TokenStore::new(dir.path())
            .save(&stored("work", -10))
            .unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(10));
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let path = dir.path().to_owned();
                let counter = counter.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    let store = TokenStore::new(path);
                    barrier.wait();
                    runtime
                        .block_on(store.access_token("work", |_| slow_refresh(counter)))
                        .unwrap()
                })
            })
            .collect();
        let tokens: Vec<AccessToken> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|t| t.secret.expose() == "access-1"));
        let loaded = TokenStore::new(dir.path()).load("work").unwrap().unwrap();
        assert_eq!(loaded.refresh_token.unwrap().expose(), "refresh-1");
        assert_eq!(
            names(&dir.path().join("tokens")),
            ["work.json", "work.lock"]
        );
    }
}
