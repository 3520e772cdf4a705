//! [`Credentials`]: what a sender authenticates with, given as values (the
//! library's explicit credentials, or what the environment holds), and
//! who an outbox entry made with them is sent as.

use apimail_core::{Secret, SenderIdentity};

/// What a sender authenticates with. `Debug` prints no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// A Google service account's JSON key, acting as `user` of its
    /// Workspace domain (domain-wide delegation with the gmail.send scope).
    GmailServiceAccount {
        /// The key file's contents.
        key_json: Secret,
        /// The address it sends as.
        user: String,
    },
    /// A Google OAuth client and a refresh token granted gmail.send.
    GmailRefreshToken {
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: Secret,
        /// The refresh token.
        refresh_token: Secret,
    },
    /// A Microsoft Entra app with a client secret, sending as `mailbox`
    /// (application permission Mail.Send).
    GraphAppSecret {
        /// The tenant id or domain.
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// The client secret's value.
        secret: Secret,
        /// The mailbox it sends as.
        mailbox: String,
    },
    /// A delegated Microsoft refresh token (from an authorization-code or
    /// device-code login with `offline_access` and Mail.Send), sending as
    /// the signed-in user (`mailbox` `None`: `/me`) or as a mailbox that
    /// user may send as. It is refreshed in memory; a rotated refresh token
    /// is not kept (the one given stays valid until it expires).
    GraphRefreshToken {
        /// The tenant id or domain (`common`, `organizations` work too).
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// The client secret, for a confidential client; `None` for a
        /// public one.
        client_secret: Option<Secret>,
        /// The refresh token.
        refresh_token: Secret,
        /// The mailbox it sends as; `None` for the user's own (`/me`).
        mailbox: Option<String>,
    },
    /// A Microsoft Entra app with a certificate, sending as `mailbox`.
    GraphAppCertificate {
        /// The tenant id or domain.
        tenant: String,
        /// The app's client id.
        client_id: String,
        /// PEM text: the certificate and its unencrypted RSA private key.
        pem: Secret,
        /// The mailbox it sends as.
        mailbox: String,
    },
}

impl Credentials {
    /// Who these credentials send as, recorded with each outbox entry, so
    /// an entry queued by the library and one queued by the command line
    /// with the same credentials are the same sender's.
    pub fn identity(&self) -> SenderIdentity {
        self.identity_as(None)
    }

    /// [`identity`](Self::identity), for a Gmail refresh token whose
    /// address (`APIMAIL_GMAIL_USER`) is known.
    pub(crate) fn identity_as(&self, gmail_user: Option<&str>) -> SenderIdentity {
        let (provider, credential, principal) = match self {
            Credentials::GmailServiceAccount { key_json, user } => {
                return gmail_service_account_identity(key_json, user);
            }
            Credentials::GmailRefreshToken { client_id, .. } => (
                "gmail",
                "refresh_token",
                match gmail_user {
                    Some(user) => format!("client {client_id} as {user}"),
                    None => format!("client {client_id}"),
                },
            ),
            Credentials::GraphRefreshToken {
                tenant,
                client_id,
                mailbox,
                ..
            } => (
                "graph",
                "refresh_token",
                format!(
                    "client {client_id} of tenant {tenant} as {}",
                    mailbox.as_deref().unwrap_or("me")
                ),
            ),
            Credentials::GraphAppSecret {
                tenant,
                client_id,
                mailbox,
                ..
            }
            | Credentials::GraphAppCertificate {
                tenant,
                client_id,
                mailbox,
                ..
            } => return graph_app_only_identity(client_id, tenant, mailbox),
        };
        SenderIdentity::Environment {
            provider: provider.into(),
            credential: credential.into(),
            principal,
        }
    }
}

/// A Google service account (its key's `client_email`) acting as `user`:
/// the one spelling of this identity, for the library and the command line.
pub fn gmail_service_account_identity(key_json: &Secret, user: &str) -> SenderIdentity {
    let client_email = apimail_gmail::key_client_email(key_json.expose());
    SenderIdentity::Environment {
        provider: "gmail".into(),
        credential: "service_account".into(),
        principal: format!("{client_email} as {user}"),
    }
}

/// Whether `queued` is how the library spelled `current` before the
/// spelling became one: a service account named by its user alone
/// (`as <user>`), so that entries queued then still go out.
pub fn is_older_spelling(queued: &SenderIdentity, current: &SenderIdentity) -> bool {
    match (queued, current) {
        (
            SenderIdentity::Environment {
                provider: p1,
                credential: c1,
                principal: old,
            },
            SenderIdentity::Environment {
                provider: p2,
                credential: c2,
                principal: new,
            },
        ) => {
            p1 == "gmail"
                && p1 == p2
                && c1 == "service_account"
                && c1 == c2
                && old.starts_with("as ")
                && new.ends_with(&format!(" {old}"))
        }
        _ => false,
    }
}

/// A Graph app (app-only credentials, a secret or a certificate) sending as
/// `mailbox`.
pub fn graph_app_only_identity(client_id: &str, tenant: &str, mailbox: &str) -> SenderIdentity {
    SenderIdentity::Environment {
        provider: "graph".into(),
        credential: "app_only".into(),
        principal: format!("client {client_id} of tenant {tenant} as {mailbox}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_entry_queued_under_the_older_spelling_is_still_its_own() {
        let current = gmail_service_account_identity(
            &Secret::new(r#"{"client_email":"m@p.iam.gserviceaccount.com"}"#),
            "alice@example.com",
        );
        let older = |principal: &str| SenderIdentity::Environment {
            provider: "gmail".into(),
            credential: "service_account".into(),
            principal: principal.into(),
        };
        assert!(is_older_spelling(&older("as alice@example.com"), &current));
        assert!(!is_older_spelling(&older("as bob@example.com"), &current));
        assert!(!is_older_spelling(&current, &current));
    }

    #[test]
    fn graph_app_only_is_the_same_sender_with_a_secret_or_a_certificate() {
        let secret = Credentials::GraphAppSecret {
            tenant: "contoso".into(),
            client_id: "c1".into(),
            secret: Secret::new("s"),
            mailbox: "m@contoso.com".into(),
        };
        let certificate = Credentials::GraphAppCertificate {
            tenant: "contoso".into(),
            client_id: "c1".into(),
            pem: Secret::new("p"),
            mailbox: "m@contoso.com".into(),
        };
        assert_eq!(secret.identity(), certificate.identity());
        assert_eq!(
            secret.identity().to_string(),
            graph_app_only_identity("c1", "contoso", "m@contoso.com").to_string()
        );
    }
}
