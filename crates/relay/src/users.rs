//! The relay's users: who may log in with SMTP AUTH, and as which account
//! they send. One JSON file (`relay/users.json` in the data directory),
//! owner-only, written atomically with [`files::write_private`]. Only an
//! argon2id hash of each password is stored, made with [`HASH_PARAMS`];
//! a hash made with other parameters (an older apimail's) keeps verifying,
//! since its PHC string carries them.
//!
//! ```json
//! {"users": [{"name": "scanner", "password_hash": "$argon2id$v=19$…",
//!             "account": "work", "allowed_from": ["*@scan.example.com"],
//!             "rewrite_from": false, "messages_per_minute": 10}]}
//! ```

use std::io;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

use apimail_core::Secret;
use apimail_core::files;

/// New hashes' argon2id cost: 7 MiB of memory, 5 passes, 1 lane, one of
/// OWASP's argon2id settings. The relay runs a few verifications at once
/// ([`Limits::max_auth_checks`](super::Limits::max_auth_checks)), so its
/// password checks need at most that many times 7 MiB.
pub const HASH_PARAMS: (u32, u32, u32) = (7 * 1024, 5, 1);

/// The argon2id hasher with [`HASH_PARAMS`].
fn argon2() -> Argon2<'static> {
    let (memory_kib, passes, lanes) = HASH_PARAMS;
    let params = Params::new(memory_kib, passes, lanes, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The users file's name in the relay's directory.
pub const USERS_FILE: &str = "users.json";

/// One relay user. Holds a hash, never a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayUser {
    /// The SMTP AUTH user name.
    pub name: String,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
    /// The apimail account the user's mail goes out through.
    pub account: String,
    /// Senders the user may use besides the account's own address
    /// (`*@example.com`, `scanner@*`, exact addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_from: Vec<String>,
    /// Mail from any other sender goes out from the account's address,
    /// keeping the device's name as the display name (default); `false`
    /// refuses it with 553.
    #[serde(default = "rewrite_by_default", skip_serializing_if = "is_true")]
    pub rewrite_from: bool,
    /// At most this many messages per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_minute: Option<u32>,
}

fn rewrite_by_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl std::fmt::Debug for RelayUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayUser")
            .field("name", &self.name)
            .field("password_hash", &"[redacted]")
            .field("account", &self.account)
            .field("allowed_from", &self.allowed_from)
            .field("rewrite_from", &self.rewrite_from)
            .field("messages_per_minute", &self.messages_per_minute)
            .finish()
    }
}

/// Why the users file could not be read or written, or a change refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading the file failed.
    #[error("cannot read the relay users file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a users file.
    #[error("the relay users file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the file failed.
    #[error("cannot write the relay users file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A user name SMTP AUTH cannot carry.
    #[error("`{0}` is not a usable relay user name (1 to 64 visible characters, no spaces)")]
    BadName(String),
    /// An empty password.
    #[error("the password is empty")]
    EmptyPassword,
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    users: Vec<RelayUser>,
}

/// The users file, loaded.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
    users: Vec<RelayUser>,
    /// A hash checked for unknown names, so a wrong name costs as long as
    /// a wrong password.
    decoy: String,
}

impl Users {
    /// Reads `path`; a missing file has no users.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes).map_err(|e| UsersError::Invalid {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => File::default(),
            Err(source) => {
                return Err(UsersError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        for user in &file.users {
            if PasswordHash::new(&user.password_hash).is_err() {
                return Err(UsersError::Invalid {
                    path: path.to_owned(),
                    reason: format!("user `{}` has no valid password hash", user.name),
                });
            }
        }
        Ok(Users {
            path: path.to_owned(),
            users: file.users,
            decoy: hash(&Secret::new("apimail decoy password"))?,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users, in the order they were added.
    pub fn list(&self) -> &[RelayUser] {
        &self.users
    }

    /// The user `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&RelayUser> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds `user` with `password` hashed, or replaces the user of that
    /// name (a new password, a new account). Returns whether it replaced
    /// one. Call [`save`](Self::save) to keep it.
    pub fn add(&mut self, mut user: RelayUser, password: &Secret) -> Result<bool, UsersError> {
        check_name(&user.name)?;
        if password.expose().is_empty() {
            return Err(UsersError::EmptyPassword);
        }
        user.password_hash = hash(password)?;
        let replaced = self.remove(&user.name);
        self.users.push(user);
        Ok(replaced)
    }

    /// Removes the user `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        self.users.len() != before
    }

    /// Writes the file atomically, owner-only, creating its directory.
    pub fn save(&self) -> Result<(), UsersError> {
        let mut text = serde_json::to_string_pretty(&File {
            users: self.users.clone(),
        })
        .map_err(|e| UsersError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        let write = || -> io::Result<()> {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            files::write_private(&self.path, text.as_bytes())
                .map_err(files::WriteError::into_io_error)
        };
        write().map_err(|source| UsersError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// The user `name` if `password` is theirs. Slow on purpose (argon2):
    /// call it off the async runtime. Takes as long for an unknown name.
    pub fn verify(&self, name: &str, password: &str) -> Option<&RelayUser> {
        let user = self.get(name);
        let stored = user.map_or(self.decoy.as_str(), |u| u.password_hash.as_str());
        let matches =
            PasswordHash::new(stored).is_ok_and(|h| password_matches(&h, password.as_bytes()));
        user.filter(|_| matches)
    }
}

/// argon2's working memory, kept between checks: one buffer per check
/// running at once, reused, so the relay's checks hold at most
/// `max_auth_checks` of them however many clients try. (Allocated per
/// check, the allocator keeps a freed buffer for each thread that ever
/// ran one.)
static WORKING_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Whether `password` hashes to `hash`, with the parameters its PHC string
/// carries (an older apimail's too); the outputs compared in constant time.
fn password_matches(hash: &PasswordHash<'_>, password: &[u8]) -> bool {
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        Version::try_from(hash.version.unwrap_or(0x13)),
        Params::try_from(hash),
    ) else {
        return false;
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let pool = || WORKING_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let mut blocks = pool().pop().unwrap_or_default();
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut blocks[..needed],
    );
    pool().push(blocks);
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

fn check_name(name: &str) -> Result<(), UsersError> {
    let usable = (1..=64).contains(&name.chars().count())
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if usable {
        Ok(())
    } else {
        Err(UsersError::BadName(name.to_owned()))
    }
}

/// An argon2id PHC string of `password`, with a random salt.
fn hash(password: &Secret) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, account: &str) -> RelayUser {
        RelayUser {
            name: name.to_owned(),
            password_hash: String::new(),
            account: account.to_owned(),
            allowed_from: vec!["*@example.com".to_owned()],
            rewrite_from: true,
            messages_per_minute: Some(5),
        }
    }

    #[test]
    fn add_save_load_verify_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay").join(USERS_FILE);
        let mut users = Users::load(&path).unwrap();
        assert!(users.list().is_empty());
        assert!(
            !users
                .add(user("scanner", "work"), &Secret::new("s3cret pass"))
                .unwrap()
        );
        users.save().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("$argon2id$"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let users = Users::load(&path).unwrap();
        let found = users.verify("scanner", "s3cret pass").unwrap();
        assert_eq!(found.account, "work");
        assert!(found.rewrite_from);
        assert!(users.verify("scanner", "wrong").is_none());
        assert!(users.verify("nobody", "s3cret pass").is_none());
        assert!(!format!("{found:?}").contains("argon2"));

        let mut users = users;
        assert!(
            users
                .add(user("scanner", "home"), &Secret::new("new"))
                .unwrap()
        );
        assert_eq!(users.list().len(), 1);
        assert!(users.verify("scanner", "s3cret pass").is_none());
        assert!(users.remove("scanner"));
        assert!(!users.remove("scanner"));
    }

    #[test]
    fn new_hashes_use_the_small_cost_and_old_ones_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_FILE);
        let mut users = Users::load(&path).unwrap();
        users
            .add(user("new", "work"), &Secret::new("new pass"))
            .unwrap();
        let hash = &users.get("new").unwrap().password_hash;
        assert!(hash.contains("$m=7168,t=5,p=1$"), "{hash}");
        // A user added by an older apimail: argon2's defaults (19 MiB).
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(b"old pass", &salt)
            .unwrap()
            .to_string();
        assert!(old.contains("$m=19456,t=2,p=1$"), "{old}");
        let mut legacy = user("old", "work");
        legacy.password_hash = old;
        users.users.push(legacy);
        users.save().unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.verify("old", "old pass").is_some());
        assert!(users.verify("old", "new pass").is_none());
        assert!(users.verify("new", "new pass").is_some());
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = Users::load(&dir.path().join(USERS_FILE)).unwrap();
        let error = users
            .add(user("two words", "work"), &Secret::new("x"))
            .unwrap_err();
        assert!(matches!(error, UsersError::BadName(_)));
        let error = users.add(user("ok", "work"), &Secret::new("")).unwrap_err();
        assert!(matches!(error, UsersError::EmptyPassword));
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_FILE);
        std::fs::write(
            &path,
            r#"{"users":[{"name":"a","password_hash":"plain","account":"w"}]}"#,
        )
        .unwrap();
        let error = Users::load(&path).unwrap_err().to_string();
        assert!(error.contains("no valid password hash"), "{error}");
    }
}
