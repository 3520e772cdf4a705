//! The console's administrators: `admin/users.json` in the data directory,
//! owner-only, written with `apimail_core::files::write_private`. Only an argon2id hash
//! of each password is kept.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use apimail_core::{Secret, now_unix};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::store::{FileError, read_json, write_json};

/// The users file's name in the console's directory.
pub const USERS_FILE: &str = "users.json";

/// One administrator. Holds a hash, never a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    /// The name they sign in with.
    pub name: String,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
    /// When the user was added or last given a password (Unix seconds).
    pub created_at: i64,
}

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser")
            .field("name", &self.name)
            .field("password_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Why the users file could not be read or written, or a change refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A user without a valid hash.
    #[error(
        "the console's users file {path} is not valid: user `{name}` has no valid password hash"
    )]
    BadHash {
        /// The file.
        path: PathBuf,
        /// The user.
        name: String,
    },
    /// A name that cannot be typed into the login form.
    #[error("`{0}` is not a usable user name (1 to 64 visible characters, no spaces)")]
    BadName(String),
    /// A password too short to be one.
    #[error("the password is shorter than 8 characters")]
    ShortPassword,
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    users: Vec<AdminUser>,
}

/// The users file, loaded.
#[derive(Debug, Clone)]
pub struct AdminUsers {
    path: PathBuf,
    users: Vec<AdminUser>,
}

impl AdminUsers {
    /// Reads `path`; a missing file has no users.
    pub fn load(path: &Path) -> Result<AdminUsers, UsersError> {
        let users = match read_json::<File>(path)? {
            Some(file) => file.users,
            None => Vec::new(),
        };
        if let Some(user) = users
            .iter()
            .find(|u| PasswordHash::new(&u.password_hash).is_err())
        {
            return Err(UsersError::BadHash {
                path: path.to_owned(),
                name: user.name.clone(),
            });
        }
        Ok(AdminUsers {
            path: path.to_owned(),
            users,
        })
    }

    /// The users, in the order they were added.
    pub fn list(&self) -> &[AdminUser] {
        &self.users
    }

    /// Adds `name` with `password` hashed, or gives that user a new
    /// password; whether it replaced one. [`save`](Self::save) keeps it.
    pub fn add(&mut self, name: &str, password: &Secret) -> Result<bool, UsersError> {
        check_name(name)?;
        if password.expose().chars().count() < 8 {
            return Err(UsersError::ShortPassword);
        }
        let user = AdminUser {
            name: name.to_owned(),
            password_hash: hash(password)?,
            created_at: now_unix(),
        };
        let replaced = self.remove(name);
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
        let file = File {
            users: self.users.clone(),
        };
        Ok(write_json(&self.path, &file)?)
    }

    /// Whether `password` is `name`'s. Slow on purpose (argon2): call it
    /// off the async runtime. Takes as long for an unknown name.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let user = self.users.iter().find(|u| u.name == name);
        let stored: &str = match user {
            Some(u) => &u.password_hash,
            None => decoy(),
        };
        let matches = PasswordHash::new(stored).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        user.is_some() && matches
    }
}

/// A hash checked for unknown names, so a wrong name costs as long as a
/// wrong password.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash(&Secret::new("apimail decoy password")).unwrap_or_default())
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
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_verify_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin").join(USERS_FILE);
        let mut users = AdminUsers::load(&path).unwrap();
        assert!(users.list().is_empty());
        assert!(!users.add("ann", &Secret::new("correct horse")).unwrap());
        users.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse"), "{text}");
        assert!(text.contains("$argon2id$"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut users = AdminUsers::load(&path).unwrap();
        assert!(users.verify("ann", "correct horse"));
        assert!(!users.verify("ann", "wrong horse"));
        assert!(!users.verify("bob", "correct horse"));
        assert!(!format!("{:?}", users.list()).contains("argon2"));
        assert!(users.remove("ann"));
        assert!(!users.remove("ann"));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = AdminUsers::load(&dir.path().join(USERS_FILE)).unwrap();
        assert!(matches!(
            users.add("two words", &Secret::new("long enough")),
            Err(UsersError::BadName(_))
        ));
        assert!(matches!(
            users.add("ann", &Secret::new("short")),
            Err(UsersError::ShortPassword)
        ));
    }
}
