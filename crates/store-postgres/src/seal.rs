//! [`StoreKey`]: the key the shared store's OAuth tokens are encrypted
//! under, and sealing with it: ChaCha20-Poly1305 (ring's AEAD), a random
//! 96-bit nonce per write, the account's name as associated data (a row
//! copied onto another account does not open).
//!
//! The key file holds the 32 key bytes in standard base64 (44 characters,
//! `openssl rand -base64 32` makes one too) on its first line. Sealed
//! values are `1 || nonce (12) || ciphertext || tag (16)`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The format byte every sealed value starts with.
const FORMAT: u8 = 1;

/// What the associated data starts with, before the account's name.
const AAD_LABEL: &[u8] = b"apimail store token v1\0";

/// The key's length in bytes.
pub const KEY_LEN: usize = 32;

/// The key tokens are sealed with. `Debug` shows its id only.
pub struct StoreKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey").field("id", &self.id).finish()
    }
}

/// Why a key cannot be had, or a sealed value not opened. Texts never
/// hold the key or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read the store's key file `{}`", .file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes in base64.
    #[error("the store's key file `{}` does not hold a key: {reason}", .file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong (never the content).
        reason: String,
    },
    /// No random bytes from the system.
    #[error("the system gave no random bytes")]
    Random,
    /// A new key file could not be written.
    #[error("cannot write the key file `{}`", .file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why a sealed token does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Sealed under another key (its id differs from this node's).
    #[error(
        "the store's tokens for account `{account}` were encrypted with another key \
         (key id {found}; this node's key file holds key id {ours})"
    )]
    WrongKey {
        /// The account.
        account: String,
        /// The id recorded with the row.
        found: String,
        /// This node's key's id.
        ours: String,
    },
    /// The right key, but the value was altered (or moved to another
    /// account's row).
    #[error(
        "the store's tokens for account `{account}` do not decrypt: they were altered or copied from another account"
    )]
    Tampered {
        /// The account.
        account: String,
    },
}

impl StoreKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> StoreKey {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32 bytes is the key length");
        StoreKey {
            key: LessSafeKey::new(unbound),
            id: key_id(bytes),
        }
    }

    /// A new random key, and its text for a key file.
    pub fn generate() -> Result<(StoreKey, apimail_core::Secret), KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|_| KeyError::Random)?;
        let text = apimail_core::Secret::new(format!("{}\n", STANDARD.encode(bytes)));
        Ok((StoreKey::from_bytes(&bytes), text))
    }

    /// The key in `file`: 32 bytes in base64 on the first line.
    pub fn from_file(file: &Path) -> Result<StoreKey, KeyError> {
        let text = std::fs::read_to_string(file).map_err(|source| KeyError::Unreadable {
            file: file.to_owned(),
            source,
        })?;
        StoreKey::from_text(&text).map_err(|reason| KeyError::Invalid {
            file: file.to_owned(),
            reason,
        })
    }

    /// The key in `text` (a key file's content).
    pub fn from_text(text: &str) -> Result<StoreKey, String> {
        let line = text.lines().next().unwrap_or_default().trim();
        if line.is_empty() {
            return Err("it is empty (make one with `apimail store key new --output FILE`)".into());
        }
        let bytes = STANDARD
            .decode(line)
            .map_err(|_| "its first line is not base64".to_owned())?;
        let bytes: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("it holds {} bytes, a key is {KEY_LEN}", bytes.len()))?;
        Ok(StoreKey::from_bytes(&bytes))
    }

    /// The key's id: 8 bytes of a SHA-256 of it, in hex. It names the key
    /// in messages and rows and reveals nothing of it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plaintext` sealed for `account`, with a fresh random nonce.
    pub fn seal(&self, account: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        sealed.push(FORMAT);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account)),
                &mut body,
            )
            .map_err(|_| KeyError::Random)?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// What `seal(account, …)` sealed; `key_id` is the id stored beside it.
    pub fn open(&self, account: &str, key_id: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if key_id != self.id {
            return Err(OpenError::WrongKey {
                account: account.to_owned(),
                found: key_id.to_owned(),
                ours: self.id.clone(),
            });
        }
        let tampered = || OpenError::Tampered {
            account: account.to_owned(),
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT {
            return Err(tampered());
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| tampered())?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account)),
                &mut body,
            )
            .map_err(|_| tampered())?;
        Ok(plain.to_vec())
    }
}

fn aad(account: &str) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(account.as_bytes());
    aad
}

fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"apimail store key id\0");
    context.update(bytes);
    let digest = context.finish();
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a new random key to `file`, owner-only (0600) and atomically
/// (a private temporary file, synced, then linked into place, which fails
/// if `file` exists: an existing key is never replaced). Returns the key's
/// id.
pub fn write_new_key(file: &Path) -> Result<String, KeyError> {
    let failed = |source| KeyError::Write {
        file: file.to_owned(),
        source,
    };
    let (key, text) = StoreKey::generate()?;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .map_or("key".into(), |n| n.to_string_lossy());
    let mut temp = apimail_core::files::PrivateFile::new_in(dir, &name)
        .map_err(|e| failed(e.into_io_error()))?;
    use std::io::Write as _;
    temp.as_file_mut()
        .write_all(text.expose().as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(failed)?;
    match std::fs::hard_link(temp.path(), file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the file exists; a new key would make the tokens sealed with it unreadable",
            )));
        }
        Err(e) => return Err(failed(e)),
    }
    drop(temp); // removes the temporary name; the key stays at `file`
    let _ = apimail_core::files::sync_dir(dir);
    Ok(key.id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = br#"{"refresh_token":"SECRET-refresh"}"#;

    fn key(byte: u8) -> StoreKey {
        StoreKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn sealing_round_trips_and_hides_the_plaintext() {
        let key = key(7);
        let sealed = key.seal("work", TOKEN).unwrap();
        assert!(!sealed.windows(14).any(|w| w == b"SECRET-refresh"));
        assert_eq!(sealed.len(), 1 + NONCE_LEN + TOKEN.len() + 16);
        assert_eq!(key.open("work", key.id(), &sealed).unwrap(), TOKEN);
        // A fresh nonce each time.
        assert_ne!(key.seal("work", TOKEN).unwrap(), sealed);
    }

    #[test]
    fn another_key_is_named_as_such() {
        let sealed = key(7).seal("work", TOKEN).unwrap();
        let other = key(8);
        let error = other.open("work", key(7).id(), &sealed).unwrap_err();
        assert!(matches!(error, OpenError::WrongKey { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("were encrypted with another key"),
            "{error}"
        );
        // Even with a forged id, the other key does not open it.
        let error = other.open("work", other.id(), &sealed).unwrap_err();
        assert!(matches!(error, OpenError::Tampered { .. }), "{error}");
    }

    #[test]
    fn tampering_or_another_account_does_not_open() {
        let key = key(7);
        let sealed = key.seal("work", TOKEN).unwrap();
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(key.open("work", key.id(), &altered).is_err(), "byte {i}");
        }
        assert!(
            key.open("work", key.id(), &sealed[..sealed.len() - 1])
                .is_err()
        );
        assert!(key.open("work", key.id(), &[]).is_err());
        let error = key.open("home", key.id(), &sealed).unwrap_err();
        assert!(matches!(error, OpenError::Tampered { .. }), "{error}");
    }

    #[test]
    fn key_files_hold_base64_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.key");
        let id = write_new_key(&file).unwrap();
        let key = StoreKey::from_file(&file).unwrap();
        assert_eq!(key.id(), id);
        assert_eq!(id.len(), 16);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.trim().len(), 44);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_new_key(&file).is_err(), "an existing key is kept");
        assert_eq!(StoreKey::from_file(&file).unwrap().id(), id);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["store.key"], "no temporary file left");
        // Debug shows the id only.
        assert_eq!(format!("{key:?}"), format!("StoreKey {{ id: {id:?} }}"));

        for (content, why) in [
            ("", "empty"),
            ("not base64!\n", "not base64"),
            ("AAAA\n", "holds 3 bytes"),
        ] {
            std::fs::write(&file, content).unwrap();
            let error = StoreKey::from_file(&file).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        assert!(matches!(
            StoreKey::from_file(&dir.path().join("missing")),
            Err(KeyError::Unreadable { .. })
        ));
    }
}
