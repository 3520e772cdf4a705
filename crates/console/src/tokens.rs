//! The API's bearer tokens: `admin/tokens.json` in the data directory,
//! owner-only. A token is 256 random bits, shown once when created; only
//! its SHA-256 is kept (a hash made for passwords adds nothing to a random
//! token of that size).

use std::path::{Path, PathBuf};

use apimail_core::{Secret, now_unix};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{FileError, read_json, write_json};

/// The tokens file's name in the console's directory.
pub const TOKENS_FILE: &str = "tokens.json";

/// What every token starts with, so a leaked one is recognizable.
const PREFIX: &str = "apimail_";

/// One API token, as stored: its name and hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The name given at creation (`monitoring`).
    pub name: String,
    /// The token's SHA-256, base64url.
    pub sha256: String,
    /// May only read: a write gets 403.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// When it was created (Unix seconds).
    pub created_at: i64,
}

/// Why a token could not be created, or the file used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A name that is not one.
    #[error("`{0}` is not a usable token name (1 to 64 letters, digits, `-`, `_` or `.`)")]
    BadName(String),
    /// The name is taken.
    #[error("there is already a token named `{0}`")]
    Exists(String),
    /// The system's random source failed.
    #[error("cannot draw random bytes for a token")]
    Random,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<ApiToken>,
}

/// The tokens file, loaded.
#[derive(Debug, Clone)]
pub struct ApiTokens {
    path: PathBuf,
    tokens: Vec<ApiToken>,
}

impl ApiTokens {
    /// Reads `path`; a missing file has no tokens.
    pub fn load(path: &Path) -> Result<ApiTokens, TokensError> {
        let tokens = read_json::<File>(path)?.unwrap_or_default().tokens;
        Ok(ApiTokens {
            path: path.to_owned(),
            tokens,
        })
    }

    /// The tokens, oldest first.
    pub fn list(&self) -> &[ApiToken] {
        &self.tokens
    }

    /// Makes a token named `name`; the token itself is returned once and
    /// never kept. [`save`](Self::save) keeps its hash.
    pub fn create(&mut self, name: &str, read_only: bool) -> Result<Secret, TokensError> {
        let usable = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !usable {
            return Err(TokensError::BadName(name.to_owned()));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(TokensError::Exists(name.to_owned()));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| TokensError::Random)?;
        let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        self.tokens.push(ApiToken {
            name: name.to_owned(),
            sha256: digest(&token),
            read_only,
            created_at: now_unix(),
        });
        Ok(Secret::new(token))
    }

    /// Removes the token `name`; whether there was one.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        self.tokens.len() != before
    }

    /// Writes the file atomically, owner-only.
    pub fn save(&self) -> Result<(), TokensError> {
        let file = File {
            tokens: self.tokens.clone(),
        };
        Ok(write_json(&self.path, &file)?)
    }

    /// The stored token `presented` is, if any. Compares every stored hash
    /// in constant time.
    pub fn check(&self, presented: &str) -> Option<&ApiToken> {
        let wanted = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.sha256.as_bytes().ct_eq(wanted.as_bytes())) {
                found = Some(token);
            }
        }
        found
    }
}

fn digest(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_revoke_and_only_hashes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let mut tokens = ApiTokens::load(&path).unwrap();
        let token = tokens.create("monitoring", true).unwrap();
        assert!(token.expose().starts_with(PREFIX));
        assert!(token.expose().len() > 40);
        assert!(matches!(
            tokens.create("monitoring", false),
            Err(TokensError::Exists(_))
        ));
        assert!(matches!(
            tokens.create("two words", false),
            Err(TokensError::BadName(_))
        ));
        tokens.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(token.expose()), "{text}");

        let mut tokens = ApiTokens::load(&path).unwrap();
        let found = tokens.check(token.expose()).unwrap();
        assert_eq!(found.name, "monitoring");
        assert!(found.read_only);
        assert!(tokens.check("apimail_wrong").is_none());
        assert!(tokens.revoke("monitoring"));
        assert!(tokens.check(token.expose()).is_none());
    }
}
