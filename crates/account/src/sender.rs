//! [`Sender`]: the provider's transport an account or the environment's
//! credentials resolve to, and [`Resolved`]: that sender with what a caller
//! needs to explain its failures.

use apimail_core::{
    DeliveryNotes, Envelope, Pace, Receipt, SenderIdentity, StoredMessage, Transport,
    TransportError,
};
use apimail_gmail::{GmailTokens, GmailTransport};
use apimail_graph::{GraphTokens, GraphTransport};
use url::Url;

use crate::config::Provider;

/// The client stack a request goes through (see `apimail_core::http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The shared reqwest client of token requests.
    Tokens,
    /// Gmail's hyper client (google-gmail1, yup-oauth2).
    Gmail,
    /// graph-rs-sdk's client.
    Graph,
}

impl Stack {
    /// A `HEAD` to `url`'s root through this stack.
    pub async fn probe(
        self,
        url: &Url,
    ) -> Result<apimail_core::endpoint::Probe, (apimail_core::endpoint::ProbeFailure, String)> {
        match self {
            Stack::Tokens => apimail_core::endpoint::probe(url).await,
            Stack::Gmail => apimail_gmail::probe(url).await,
            Stack::Graph => apimail_graph::probe(url).await,
        }
    }
}

/// Where the messages of one send go.
#[derive(Debug)]
pub struct Resolved {
    /// The provider.
    pub provider: Provider,
    /// Who sends: recorded with queued messages.
    pub identity: SenderIdentity,
    /// The configured account's name; `None` for environment credentials.
    pub account: Option<String>,
    /// What the user knows this as: an account name, or the environment.
    pub label: String,
    /// The address to send as when --from is not given.
    pub address: Option<String>,
    /// The command that authorizes again.
    pub relogin: String,
    /// The command that authorizes again with Mail.ReadWrite (Graph).
    pub relogin_large: Option<String>,
    /// Whether `relogin` is a login that can fix a refused authorization;
    /// false for environment and app-only credentials, whose fixes are an
    /// administrator's.
    pub login_fixes_auth: bool,
    /// The token and API endpoints, each with the client stack that
    /// sends to it, for `apimail doctor`.
    pub endpoints: Vec<(Url, Stack)>,
    /// Where the token URL was set, for an error that says it is wrong.
    pub token_setting: String,
    /// Graph: the tenant's admin-consent page for the app, for AADSTS65001
    /// and 65004 (consent missing or declined).
    pub consent_url: Option<Url>,
    /// The provider's transport.
    pub sender: Sender,
}

/// The resolved transport: one provider's, with the tokens of one account
/// or credential.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per process")]
pub enum Sender {
    /// The Gmail API.
    Gmail(GmailTransport<GmailTokens>),
    /// Microsoft Graph.
    Graph(GraphTransport<GraphTokens>),
}

impl Sender {
    /// `gmail` or `graph`.
    pub fn provider(&self) -> Provider {
        match self {
            Sender::Gmail(_) => Provider::Gmail,
            Sender::Graph(_) => Provider::Graph,
        }
    }

    /// The largest message the provider takes, in bytes.
    pub fn message_limit(&self) -> usize {
        match self {
            Sender::Gmail(_) => apimail_gmail::MAX_MESSAGE_BYTES,
            Sender::Graph(t) => t.max_message_bytes(),
        }
    }
}

impl Transport for Sender {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_raw(envelope, message).await,
            Sender::Graph(t) => t.send_raw(envelope, message).await,
        }
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_noted(envelope, message, notes).await,
            Sender::Graph(t) => t.send_noted(envelope, message, notes).await,
        }
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        match self {
            Sender::Gmail(t) => t.send_stored(envelope, message, notes).await,
            Sender::Graph(t) => t.send_stored(envelope, message, notes).await,
        }
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        match self {
            Sender::Gmail(t) => t.was_sent(message_id).await,
            Sender::Graph(t) => t.was_sent(message_id).await,
        }
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match self {
            Sender::Gmail(t) => t.discard(notes).await,
            Sender::Graph(t) => t.discard(notes).await,
        }
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match self {
            Sender::Gmail(t) => t.interrupted(notes).await,
            Sender::Graph(t) => t.interrupted(notes).await,
        }
    }
    fn pace(&self) -> Pace {
        match self {
            Sender::Gmail(t) => t.pace(),
            Sender::Graph(t) => t.pace(),
        }
    }
}

impl Transport for Resolved {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.sender.send_raw(envelope, message).await
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.sender.send_noted(envelope, message, notes).await
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.sender.send_stored(envelope, message, notes).await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        self.sender.was_sent(message_id).await
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.sender.discard(notes).await
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.sender.interrupted(notes).await
    }
    fn pace(&self) -> Pace {
        self.sender.pace()
    }
}

impl Resolved {
    /// The largest message the provider takes, in bytes.
    pub fn message_limit(&self) -> usize {
        self.sender.message_limit()
    }
}
