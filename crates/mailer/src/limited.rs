//! The provider's transport under the mailbox's concurrency limit, and the
//! Message-ID every attempt of a send carries.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use apimail_core::{
    DeliveryNotes, Envelope, ErrorKind, Mailbox, Receipt, StoredMessage, Transport, TransportError,
};
use tokio::sync::Semaphore;

use crate::Sender;

/// Requests a Gmail mailer has in flight at most. Google publishes a rate
/// per user (6,000 quota units a minute for new projects, 15,000 for older
/// ones: 60 or 150 sends at 100 units each), not a number of concurrent
/// requests, but answers "Too many concurrent requests for user" (429)
/// beyond one it does not name. At one send in flight every 0.4 to 1 s of
/// round trip, 4 at once reach the older projects' 150 a minute; more only
/// earn 429s. Graph's is `MAX_CONCURRENT_REQUESTS`, also 4.
pub const GMAIL_CONCURRENCY: usize = 4;

/// Requests a Graph mailer has in flight at most: Graph's own limit of 4
/// concurrent requests per mailbox (`MailboxConcurrency`).
pub const GRAPH_CONCURRENCY: usize = apimail_graph::MAX_CONCURRENT_REQUESTS;

/// A provider's transport that never has more requests in flight than the
/// mailbox's concurrency, so one mailer needs about that many connections.
#[derive(Debug)]
pub(crate) struct Limited {
    sender: Sender,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// How long a slot stays taken after its request: an HTTP/1 pool gets the
/// connection back from its connection task a moment after the answer was
/// read, and a request starting before that would open a new one.
const RETURN_GRACE: Duration = Duration::from_millis(1);

/// `$call` awaited on whichever transport `$sender` holds; boxed, as the
/// providers' futures are large.
macro_rules! each {
    ($sender:expr, $t:ident => $call:expr) => {
        Box::pin(async {
            match $sender {
                Sender::Gmail($t) => $call.await,
                Sender::Graph($t) => $call.await,
            }
        })
    };
}

impl Limited {
    pub(crate) fn new(sender: Sender) -> Self {
        let concurrency = match sender {
            Sender::Gmail(_) => GMAIL_CONCURRENCY,
            Sender::Graph(_) => GRAPH_CONCURRENCY,
        };
        Limited {
            sender,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    pub(crate) fn provider(&self) -> &'static str {
        match self.sender {
            Sender::Gmail(_) => "gmail",
            Sender::Graph(_) => "graph",
        }
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs `request` in a slot; the slot is given back
    /// [`RETURN_GRACE`] later, without keeping the caller waiting.
    async fn in_slot<T>(
        &self,
        request: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let slot =
            self.slots.clone().acquire_owned().await.map_err(|_| {
                TransportError::new(ErrorKind::Internal, "the mailer was shut down")
            })?;
        let result = request.await;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(RETURN_GRACE).await;
                drop(slot);
            });
        }
        result
    }
}

impl Transport for Limited {
    async fn send_raw(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_raw(envelope, message)))
            .await
    }

    async fn send_noted(
        &self,
        envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_noted(envelope, message, notes)))
            .await
    }

    async fn send_stored(
        &self,
        envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.in_slot(each!(&self.sender, t => t.send_stored(envelope, message, notes)))
            .await
    }

    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        self.in_slot(each!(&self.sender, t => t.was_sent(message_id)))
            .await
    }

    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.in_slot(each!(&self.sender, t => t.discard(notes)))
            .await
    }

    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        self.in_slot(each!(&self.sender, t => t.interrupted(notes)))
            .await
    }
}

/// `message` and its Message-ID (with angle brackets); one is added at the
/// top of the header when it has none.
pub(crate) fn with_message_id<'a>(message: &'a [u8], from: &Mailbox) -> (Cow<'a, [u8]>, String) {
    if let Some(id) = message_id_of(message) {
        return (Cow::Borrowed(message), id);
    }
    let id = new_message_id(from);
    let newline: &[u8] = match message.iter().position(|&b| b == b'\n') {
        Some(at) if at > 0 && message[at - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    };
    let mut bytes = format!("Message-ID: {id}").into_bytes();
    bytes.extend_from_slice(newline);
    bytes.extend_from_slice(message);
    (Cow::Owned(bytes), id)
}

/// The Message-ID header's value, unfolded and trimmed.
fn message_id_of(message: &[u8]) -> Option<String> {
    let mut lines = message
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"message-id")
        {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
        for folded in lines.by_ref() {
            if !folded.starts_with(b" ") && !folded.starts_with(b"\t") {
                break;
            }
            value.push_str(&String::from_utf8_lossy(folded));
        }
        let value = value.trim();
        return (!value.is_empty()).then(|| value.to_owned());
    }
    None
}

/// `<random@sender's domain>`.
pub(crate) fn new_message_id(from: &Mailbox) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let domain = from
        .email()
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d);
    format!("<{hex}@{domain}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> Mailbox {
        "ops@example.com".parse().unwrap()
    }

    #[test]
    fn reads_a_folded_message_id_and_keeps_the_bytes() {
        let raw = b"From: ops@example.com\r\nmessage-id:\r\n <a.1@example.com>\r\nSubject: x\r\n\r\nMessage-ID: <body@x>\r\n";
        let (bytes, id) = with_message_id(raw, &from());
        assert_eq!(id, "<a.1@example.com>");
        assert!(matches!(bytes, Cow::Borrowed(_)));
    }

    #[test]
    fn adds_a_message_id_where_the_header_has_none() {
        let raw = b"From: ops@example.com\nSubject: x\n\nMessage-ID: <in-the-body@x>\n";
        let (bytes, id) = with_message_id(raw, &from());
        assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
        let expected = [format!("Message-ID: {id}\n").as_bytes(), raw.as_slice()].concat();
        assert_eq!(bytes.as_ref(), expected);
    }
}
