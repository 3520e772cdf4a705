//! [`ConfiguredSenders`]: how the delivery engine turns an outbox entry's
//! `SenderIdentity` into a transport, from the configuration and the
//! environment.

use apimail_core::delivery::Senders;
use apimail_core::outbox::Entry;
use apimail_core::{SenderIdentity, Transport};

use crate::credentials::is_older_spelling;
use crate::resolve::{Context, resolve_identity};
use crate::sender::Resolved;

/// Resolves an outbox entry's sender from the configuration and the
/// environment: the account it was accepted for, or the same environment
/// credentials, and no other.
#[derive(Debug)]
pub struct ConfiguredSenders<'a> {
    /// The configuration to resolve accounts in.
    pub ctx: &'a Context,
}

impl Senders for ConfiguredSenders<'_> {
    type Sender = Resolved;

    async fn resolve(&self, entry: &Entry) -> Result<Resolved, String> {
        resolve_identity(self.ctx, entry.identity.as_ref(), entry.account.as_deref())
            .await
            .map_err(|error| error.to_string())
    }

    fn login_can_fix(&self, sender: &Resolved) -> bool {
        sender.login_fixes_auth
    }
}

/// One sender and its identity: entries accepted for that identity resolve
/// to it; entries of any other sender in a shared outbox are left alone
/// (the library's `Mailer`, whose transport is built once).
#[derive(Debug)]
pub struct OneSender<T> {
    /// The transport.
    pub transport: T,
    /// Whom its entries are sent as.
    pub identity: SenderIdentity,
}

impl<T: Transport + Clone + Sync> Senders for OneSender<T> {
    type Sender = T;

    async fn resolve(&self, entry: &Entry) -> Result<T, String> {
        let own = entry.identity.as_ref().is_some_and(|queued| {
            *queued == self.identity || is_older_spelling(queued, &self.identity)
        });
        if own {
            Ok(self.transport.clone())
        } else {
            Err(format!(
                "it was accepted for another sender than {}",
                self.identity
            ))
        }
    }

    /// No login can be waited for: refused credentials are retried on the
    /// schedule until someone fixes them.
    fn login_can_fix(&self, _: &T) -> bool {
        false
    }
}
