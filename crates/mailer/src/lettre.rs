//! A lettre transport over a [`Mailer`] (the `lettre` feature).
//!
//! lettre keeps Bcc recipients only in the envelope: its formatted message
//! has no Bcc header. Gmail and Graph deliver to the headers alone, so the
//! adapter puts every envelope recipient the headers do not name back as
//! Bcc, through [`apimail_core::recipients`], the same mapping sendmail
//! and the relay use. A message without a Message-ID gets one, so that
//! retries of one send carry the same id.

use apimail_core::Receipt;
use async_trait::async_trait;

use crate::{Error, Mailer};

/// A lettre [`AsyncTransport`](::lettre::AsyncTransport) (tokio1 flavour)
/// sending through a [`Mailer`]; from [`Mailer::lettre`].
#[derive(Debug, Clone)]
pub struct LettreTransport {
    mailer: Mailer,
}

/// A lettre [`Transport`](::lettre::Transport) for synchronous code, from
/// [`LettreTransport::blocking`]. It runs each send on the tokio runtime
/// whose handle it was given and builds no runtime of its own. Called from
/// inside a tokio runtime, where blocking would stall that runtime, it
/// fails with [`ErrorKind::Config`] instead: use the async transport there.
#[derive(Debug, Clone)]
pub struct BlockingLettreTransport {
    transport: LettreTransport,
    runtime: tokio::runtime::Handle,
}

impl Mailer {
    /// This mailer as a lettre transport: switch from SMTP by replacing the
    /// `AsyncSmtpTransport` with it, and keep building `lettre::Message`s.
    pub fn lettre(&self) -> LettreTransport {
        LettreTransport {
            mailer: self.clone(),
        }
    }
}

impl LettreTransport {
    /// A blocking transport running sends on `runtime` (for example a
    /// runtime the application keeps on a background thread).
    pub fn blocking(self, runtime: tokio::runtime::Handle) -> BlockingLettreTransport {
        BlockingLettreTransport {
            transport: self,
            runtime,
        }
    }

    async fn deliver(
        &self,
        envelope: &::lettre::address::Envelope,
        email: &[u8],
    ) -> Result<Receipt, Error> {
        let (recipients, from) = handover(envelope);
        self.mailer
            .send_handed(email, &recipients, from.as_deref())
            .await
    }
}

/// lettre's envelope as text: its recipients and sender.
fn handover(envelope: &::lettre::address::Envelope) -> (Vec<String>, Option<String>) {
    let recipients = envelope.to().iter().map(ToString::to_string).collect();
    (recipients, envelope.from().map(ToString::to_string))
}

#[async_trait]
impl ::lettre::AsyncTransport for LettreTransport {
    type Ok = Receipt;
    type Error = Error;

    async fn send_raw(
        &self,
        envelope: &::lettre::address::Envelope,
        email: &[u8],
    ) -> Result<Receipt, Error> {
        self.deliver(envelope, email).await
    }
}

impl ::lettre::Transport for BlockingLettreTransport {
    type Ok = Receipt;
    type Error = Error;

    fn send_raw(
        &self,
        envelope: &::lettre::address::Envelope,
        email: &[u8],
    ) -> Result<Receipt, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::config(
                "the blocking lettre transport was called inside a tokio runtime, which blocking \
                 would stall; use the AsyncTransport from Mailer::lettre() there",
            ));
        }
        self.runtime
            .block_on(self.transport.deliver(envelope, email))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_recipients_missing_from_the_headers_become_bcc() {
        let message = ::lettre::Message::builder()
            .from("Alerts <alerts@example.com>".parse().unwrap())
            .to("to@example.com".parse().unwrap())
            .cc("cc@example.com".parse().unwrap())
            .bcc("hidden@example.com".parse().unwrap())
            .subject("hi")
            .body("hello".to_owned())
            .unwrap();
        let formatted = message.formatted();
        assert!(!String::from_utf8_lossy(&formatted).contains("hidden@"));
        let (recipients, from) = handover(message.envelope());
        let prepared = crate::mailer::prepare(&formatted, &recipients, from.as_deref()).unwrap();
        let envelope = prepared.envelope();
        let text = String::from_utf8(prepared.bytes).unwrap();
        let header = text.split("\r\n\r\n").next().unwrap();
        assert!(header.contains("Bcc: <hidden@example.com>"), "{header}");
        assert!(header.contains("Message-ID: <"), "{header}");
        let to: Vec<&str> = envelope
            .recipients()
            .iter()
            .map(apimail_core::Mailbox::email)
            .collect();
        assert_eq!(
            to,
            ["to@example.com", "cc@example.com", "hidden@example.com"]
        );
        assert_eq!(envelope.from().email(), "alerts@example.com");
    }
}
