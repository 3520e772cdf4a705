//! Who a queued message is to be sent as.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The sender a message was accepted for, recorded with its outbox entry so
/// that a later flush sends it as exactly that sender, or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SenderIdentity {
    /// A configured account, by name.
    Account {
        /// The account's name in the configuration file.
        name: String,
    },
    /// Credentials read from the environment.
    Environment {
        /// `gmail` or `graph`.
        provider: String,
        /// Which kind of credential, e.g. `service_account`, `refresh_token`,
        /// `app_only`.
        credential: String,
        /// What tells these credentials apart, never a secret: a client id,
        /// a service account's address, the mailbox sent as.
        principal: String,
    },
}

impl SenderIdentity {
    /// A configured account.
    pub fn account(name: impl Into<String>) -> Self {
        SenderIdentity::Account { name: name.into() }
    }

    /// The account's name, for an account.
    pub fn account_name(&self) -> Option<&str> {
        match self {
            SenderIdentity::Account { name } => Some(name),
            SenderIdentity::Environment { .. } => None,
        }
    }
}

impl fmt::Display for SenderIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderIdentity::Account { name } => write!(f, "account `{name}`"),
            SenderIdentity::Environment {
                provider,
                credential,
                principal,
            } => write!(
                f,
                "{provider} {} from the environment ({principal})",
                credential.replace('_', " ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_tagged_json() {
        let identity = SenderIdentity::Environment {
            provider: "gmail".into(),
            credential: "service_account".into(),
            principal: "robot@project.iam.gserviceaccount.com as ops@example.com".into(),
        };
        let json = serde_json::to_string(&identity).unwrap();
        assert!(json.contains(r#""kind":"environment""#), "{json}");
        assert_eq!(
            serde_json::from_str::<SenderIdentity>(&json).unwrap(),
            identity
        );
        assert_eq!(
            identity.to_string(),
            "gmail service account from the environment (robot@project.iam.gserviceaccount.com as ops@example.com)"
        );
        assert_eq!(
            SenderIdentity::account("work").to_string(),
            "account `work`"
        );
    }
}
