//! Certificate credentials for app-only sign-in: a JWT client assertion
//! signed with the app's private key, in the format Microsoft documents
//! for the client credentials grant ("Microsoft identity platform
//! application authentication certificate credentials").
//!
//! The PEM is read with `rustls-pki-types` and the JWT signed with ring
//! (RS256, RSASSA-PKCS1-v1_5 with SHA-256), so no OpenSSL is linked.
//! Errors say what is missing or wrong and never contain key material.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use url::Url;

use apimail_core::Secret;

/// How long an assertion is valid (Microsoft accepts up to 10 minutes
/// of clock skew around `nbf`/`exp`; a new one is made for each token
/// request anyway).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;

/// Why no client assertion could be made from a certificate file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// The PEM text is malformed.
    #[error("the certificate file is not valid PEM ({0})")]
    Malformed(&'static str),
    /// No `CERTIFICATE` section.
    #[error(
        "the certificate file has no certificate (a -----BEGIN CERTIFICATE----- section); \
         put the certificate and its private key in one PEM file"
    )]
    NoCertificate,
    /// No private key section.
    #[error(
        "the certificate file has no private key (a -----BEGIN PRIVATE KEY----- or \
         -----BEGIN RSA PRIVATE KEY----- section); put the certificate and its private key \
         in one PEM file"
    )]
    NoPrivateKey,
    /// The key is password-protected.
    #[error(
        "the private key is encrypted; store it unencrypted \
         (`openssl pkey -in key.pem -out plain.pem`) and protect the file instead"
    )]
    EncryptedKey,
    /// An EC (or other non-RSA) key.
    #[error("the private key is not an RSA key; use an RSA certificate (2048 bits or more)")]
    NotRsa,
    /// ring refused the RSA key (too small, malformed, inconsistent).
    #[error("the RSA private key cannot be used: {0}")]
    KeyRejected(String),
    /// Certificates are present, but none is for this private key.
    #[error("no certificate in the file belongs to its private key")]
    CertificateMismatch,
    /// Signing or the random number generator failed.
    #[error("signing the client assertion failed")]
    Signing,
}

/// A parsed certificate credential: the RSA key and the certificate's
/// thumbprints. Parsed once, it signs a fresh assertion per token request.
pub(crate) struct CertificateKey {
    key: RsaKeyPair,
    x5t: String,
    x5t_s256: String,
}

impl fmt::Debug for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateKey")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl CertificateKey {
    /// Reads a PEM file holding the certificate (or a chain) and its
    /// private key, in any order.
    pub(crate) fn from_pem(pem_text: &[u8]) -> Result<Self, AssertionError> {
        let mut certificates = Vec::new();
        let mut key = None;
        let mut saw_ec_key = false;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem_text) {
            let (kind, der) = section.map_err(|e| AssertionError::Malformed(describe(&e)))?;
            match kind {
                SectionKind::Certificate => certificates.push(der),
                SectionKind::PrivateKey if key.is_none() => key = Some((kind, der)),
                SectionKind::RsaPrivateKey if key.is_none() => key = Some((kind, der)),
                SectionKind::EcPrivateKey => saw_ec_key = true,
                _ => {}
            }
        }
        let Some((kind, der)) = key else {
            return Err(
                if contains(pem_text, b"-----BEGIN ENCRYPTED PRIVATE KEY")
                    || contains(pem_text, b"Proc-Type: 4,ENCRYPTED")
                {
                    AssertionError::EncryptedKey
                } else if saw_ec_key {
                    AssertionError::NotRsa
                } else {
                    AssertionError::NoPrivateKey
                },
            );
        };
        let key = match kind {
            SectionKind::RsaPrivateKey => RsaKeyPair::from_der(&der),
            _ => RsaKeyPair::from_pkcs8(&der),
        }
        .map_err(|e| {
            // ring's Display is a fixed reason such as "InvalidEncoding",
            // never key material.
            match e.to_string().as_str() {
                "WrongAlgorithm" => AssertionError::NotRsa,
                reason => AssertionError::KeyRejected(reason.to_owned()),
            }
        })?;
        if certificates.is_empty() {
            return Err(AssertionError::NoCertificate);
        }
        // The certificate's SubjectPublicKeyInfo holds the RSAPublicKey DER
        // verbatim, so a byte search finds the key's own certificate in a
        // chain without an X.509 parser.
        let public = key.public().as_ref();
        let certificate = certificates
            .iter()
            .find(|der| contains(der, public))
            .ok_or(AssertionError::CertificateMismatch)?;
        Ok(CertificateKey {
            x5t: thumbprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate),
            x5t_s256: thumbprint(&ring::digest::SHA256, certificate),
            key,
        })
    }

    /// A signed assertion for `client_id` at `token_url`, valid from `now`
    /// (Unix seconds) for [`ASSERTION_LIFETIME_SECS`].
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        token_url: &Url,
        now: i64,
    ) -> Result<Secret, AssertionError> {
        let rng = SystemRandom::new();
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": token_url.as_str(),
            "iss": client_id,
            "sub": client_id,
            "jti": random_id(&rng)?,
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AssertionError::Signing)?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// Signs a client assertion (RS256 JWT) for the client credentials grant
/// from a PEM file holding the app's certificate and its private key
/// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`, unencrypted).
///
/// Header: `alg` `RS256`, `typ` `JWT`, `x5t` and `x5t#S256` (base64url
/// SHA-1 and SHA-256 of the certificate's DER). Claims: `aud` the token
/// URL, `iss` and `sub` the client id, a random `jti`, `nbf` and `iat`
/// now, `exp` 10 minutes later.
pub fn client_assertion(
    pem: &[u8],
    client_id: &str,
    token_url: &Url,
) -> Result<Secret, AssertionError> {
    CertificateKey::from_pem(pem)?.assertion(client_id, token_url, apimail_core::now_unix())
}

fn thumbprint(algorithm: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(algorithm, der))
}

/// A random UUID (version 4) for `jti`.
fn random_id(rng: &SystemRandom) -> Result<String, AssertionError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| AssertionError::Signing)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// What is wrong with the PEM, without echoing any of its content.
fn describe(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 is invalid",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const PEM: &[u8] = include_bytes!("../tests/fixtures/test-app.pem");
    const PEM_PKCS1: &[u8] = include_bytes!("../tests/fixtures/test-app-pkcs1.pem");
    const PEM_EC: &[u8] = include_bytes!("../tests/fixtures/test-app-ec.pem");
    const PUBLIC_KEY: &[u8] = include_bytes!("../tests/fixtures/test-app-rsapublickey.der");

    fn token_url() -> Url {
        Url::parse("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
            .unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn check(pem: &[u8]) {
        let client_id = "00000000-1111-2222-3333-444444444444";
        let before = apimail_core::now_unix();
        let jwt = client_assertion(pem, client_id, &token_url()).unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);

        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        // Thumbprints as `openssl x509 -fingerprint` computes them (fixtures/README.md).
        assert_eq!(header["x5t"], "MapDHquHf6BQuGeCULSvOVVYqIw");
        assert_eq!(
            header["x5t#S256"],
            "QXDl_0glfjH5g7hZPv4lt___TujiTFyykjC5UNw6byQ"
        );

        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], token_url().as_str());
        assert_eq!(claims["iss"], client_id);
        assert_eq!(claims["sub"], client_id);
        let iat = claims["iat"].as_i64().unwrap();
        assert!(iat >= before && iat <= apimail_core::now_unix());
        assert_eq!(claims["nbf"].as_i64(), Some(iat));
        assert_eq!(claims["exp"].as_i64(), Some(iat + 600));
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(jti.as_bytes()[14], b'4');

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let message = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, PUBLIC_KEY)
            .verify(message.as_bytes(), &signature)
            .expect("the signature verifies with the certificate's public key");

        let again = client_assertion(pem, client_id, &token_url()).unwrap();
        assert_ne!(
            decode(again.expose().split('.').nth(1).unwrap())["jti"],
            jti
        );
    }

    #[test]
    fn signs_with_a_pkcs8_key() {
        check(PEM);
    }

    #[test]
    fn signs_with_a_pkcs1_key_placed_first() {
        check(PEM_PKCS1);
    }

    fn text(pem: &[u8]) -> String {
        String::from_utf8(pem.to_vec()).unwrap()
    }

    fn sections(pem: &str) -> (String, String) {
        let split = pem.find("-----BEGIN PRIVATE KEY").unwrap();
        (pem[..split].to_owned(), pem[split..].to_owned())
    }

    #[test]
    fn errors_name_what_is_wrong_without_key_material() {
        let (certificate, key) = sections(&text(PEM));
        let fail = |pem: &str| client_assertion(pem.as_bytes(), "id", &token_url()).unwrap_err();

        assert_eq!(fail(&certificate), AssertionError::NoPrivateKey);
        assert_eq!(fail(&key), AssertionError::NoCertificate);
        assert_eq!(fail(""), AssertionError::NoPrivateKey);
        assert_eq!(
            client_assertion(PEM_EC, "id", &token_url()).unwrap_err(),
            AssertionError::NotRsa
        );
        let encrypted = format!(
            "{certificate}-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        );
        assert_eq!(fail(&encrypted), AssertionError::EncryptedKey);

        let (ec_certificate, _) = sections(&text(PEM_EC));
        let mismatch = fail(&format!("{ec_certificate}{key}"));
        assert_eq!(mismatch, AssertionError::CertificateMismatch);

        let truncated = &key[..key.len() / 2];
        let malformed = fail(&format!("{certificate}{truncated}"));
        assert!(
            matches!(malformed, AssertionError::Malformed(_)),
            "{malformed:?}"
        );

        let mut garbled = key.clone();
        garbled.replace_range(40..44, "@@@@");
        let error = fail(&format!("{certificate}{garbled}"));
        let body_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for e in [&error, &malformed, &mismatch] {
            let shown = format!("{e} {e:?}");
            assert!(
                body_lines.iter().all(|l| !shown.contains(&l[..16])),
                "key material leaked: {shown}"
            );
        }
    }

    #[test]
    fn chain_order_does_not_matter() {
        let (certificate, key) = sections(&text(PEM));
        let (ec_certificate, _) = sections(&text(PEM_EC));
        let chain = format!("{ec_certificate}{key}{certificate}");
        let parsed = CertificateKey::from_pem(chain.as_bytes()).unwrap();
        assert_eq!(parsed.x5t, "MapDHquHf6BQuGeCULSvOVVYqIw");
        assert!(!format!("{parsed:?}").contains("PRIVATE"));
    }
}
