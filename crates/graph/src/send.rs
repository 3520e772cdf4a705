//! How a [`GraphTransport`] sends: `sendMail`, or the draft route
//! (`draft.rs`) for what does not fit one request; `impl Transport`.

use std::borrow::Cow;

use apimail_core::{
    DeliveryNotes, Envelope, ErrorKind, MemoryNotes, Pace, Receipt, StoredMessage, TokenSource,
    Transport, TransportError,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::draft::{self, NOTE_DRAFT_ID};
use crate::errors::{self};
use crate::limit::PACE;
use crate::mime;
use crate::source::Origin;
use crate::transport::{
    GraphTransport, MAX_REQUEST_BYTES, Session, Small, megabytes, read_failure, read_whole,
};

impl<T: TokenSource> Transport for GraphTransport<T> {
    fn pace(&self) -> Pace {
        PACE
    }

    async fn send_raw(
        &self,
        _envelope: &Envelope,
        message: &[u8],
    ) -> Result<Receipt, TransportError> {
        self.deliver(
            Origin::Memory(message),
            message.len() as u64,
            &MemoryNotes::default(),
            false,
        )
        .await
    }

    async fn send_noted(
        &self,
        _envelope: &Envelope,
        message: &[u8],
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.deliver(Origin::Memory(message), message.len() as u64, notes, true)
            .await
    }

    /// Read whole only for `sendMail` (base64 up to [`MAX_REQUEST_BYTES`]);
    /// the draft route reads the file: once for the MIME structure, once
    /// per attachment for its size, then the draft's own bytes, and each
    /// upload chunk decoded as it is sent.
    async fn send_stored(
        &self,
        _envelope: &Envelope,
        message: &StoredMessage,
        notes: &dyn DeliveryNotes,
    ) -> Result<Receipt, TransportError> {
        self.deliver(Origin::File(message), message.len(), notes, true)
            .await
    }

    /// Looks in Sent Items (`internetMessageId`); `None` without
    /// Mail.Read or Mail.ReadWrite.
    async fn was_sent(&self, message_id: &str) -> Result<Option<bool>, TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        let mut session = Session::start(self).await?;
        self.find_sent(&mut session, message_id).await
    }

    /// Deletes the draft an earlier attempt recorded in `notes`.
    async fn discard(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        self.discard_draft(notes).await
    }

    /// Deletes an incomplete draft; a complete one is kept, marked as
    /// possibly sent (see [`after_interruption`](crate::after_interruption)).
    async fn interrupted(&self, notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
        match draft::after_interruption(notes).await {
            Ok(false) => Ok(()),
            Ok(true) | Err(_) => self.discard(notes).await,
        }
    }
}

impl<T: TokenSource> GraphTransport<T> {
    /// One attempt: first whatever an earlier attempt left (see
    /// the `draft` module), then `sendMail` or the draft route.
    async fn deliver(
        &self,
        origin: Origin<'_>,
        len: u64,
        notes: &dyn DeliveryNotes,
        durable: bool,
    ) -> Result<Receipt, TransportError> {
        if let Some(problem) = &self.broken {
            return Err(TransportError::new(ErrorKind::Config, problem.clone()));
        }
        if len > self.max_message_bytes as u64 {
            return Err(TransportError::new(
                ErrorKind::InvalidMessage,
                format!(
                    "the message is {len} bytes; this mailbox accepts at most {} bytes ({:.1} MiB, \
                     {}; Exchange Online allows up to 150 MB)",
                    self.max_message_bytes,
                    self.max_message_bytes as f64 / (1024.0 * 1024.0),
                    errors::TOO_LARGE_FOR_MAILBOX
                ),
            ));
        }
        let mut session = Session::start(self).await?;
        if let Some(id) = notes.get(NOTE_DRAFT_ID) {
            match self
                .resume_draft(&mut session, &id, origin, notes, durable)
                .await?
            {
                draft::Resumed::Sent(receipt) => return Ok(receipt),
                draft::Resumed::StartOver => {}
            }
        }
        // Measured before encoding: a large message is never base64'd whole.
        let base64_len = usize::try_from(len)
            .ok()
            .and_then(|len| base64::encoded_len(len, true))
            .unwrap_or(usize::MAX);
        let small = if base64_len <= MAX_REQUEST_BYTES {
            tracing::debug!(
                "base64 MIME is {} ({base64_len} bytes), within Graph's 4 MB request limit: sending with sendMail",
                megabytes(base64_len),
            );
            let message = match origin {
                Origin::Memory(bytes) => Cow::Borrowed(bytes),
                Origin::File(_) => Cow::Owned(read_whole(&origin)?),
            };
            let base64_mime = STANDARD.encode(&message);
            match self.send_small(&mut session, &base64_mime).await? {
                Small::Sent => {
                    return Ok(Receipt {
                        provider: "graph",
                        id: None,
                        thread_id: None,
                        possible_duplicate: false,
                    });
                }
                Small::TooLarge => tracing::debug!(
                    "Graph answered 413 to sendMail: taking the draft + upload session path"
                ),
            }
            Some(message)
        } else {
            tracing::debug!(
                "base64 MIME is {} ({base64_len} bytes), over Graph's 4 MB request limit: taking the draft + upload session path",
                megabytes(base64_len),
            );
            None
        };
        // A message read for sendMail is used from memory from here on.
        let origin = match &small {
            Some(message) => Origin::Memory(message),
            None => origin,
        };
        let (split, draft) = self.prepare_large(origin, len)?;
        self.send_large(&mut session, origin, split, draft, notes, durable)
            .await
    }

    /// Local checks and the MIME split of the large route, before any
    /// request: the permission hint, then the draft's size.
    fn prepare_large(
        &self,
        origin: Origin<'_>,
        len: u64,
    ) -> Result<(mime::Split, String), TransportError> {
        if !self.large_messages_allowed {
            return Err(TransportError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the message is too large for one Graph request (base64 over {MAX_REQUEST_BYTES} bytes), and {}",
                    "sending it as a draft needs the Mail.ReadWrite permission, which this \
                     authorization does not include; authorize again with Mail.ReadWrite"
                ),
            ));
        }
        let split = mime::split(origin, len).map_err(|e| match e {
            mime::SplitError::Unparsable => {
                TransportError::new(ErrorKind::InvalidMessage, e.to_string())
            }
            mime::SplitError::Read(e) => read_failure(e),
        })?;
        // Checked before the draft is read.
        let draft_len = usize::try_from(split.draft_len())
            .ok()
            .and_then(|len| base64::encoded_len(len, true))
            .unwrap_or(usize::MAX);
        if draft_len > MAX_REQUEST_BYTES {
            return Err(TransportError::new(
                ErrorKind::InvalidMessage,
                format!(
                    "the message body without attachments is over Graph's 4 MB request limit \
                     ({draft_len} bytes as base64, at most {MAX_REQUEST_BYTES}); move large content into attachments"
                ),
            ));
        }
        let draft = STANDARD.encode(split.draft(&origin).map_err(read_failure)?);
        tracing::debug!(
            "draft MIME without {} attachment(s) is {} bytes as base64; attachments: {}",
            split.attachments.len(),
            draft.len(),
            split
                .attachments
                .iter()
                .map(|a| format!("`{}` {} bytes", a.name, a.size))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok((split, draft))
    }
}
