//! The large route: a draft, its attachments, then `send`; and what a
//! later attempt does with a draft an earlier one left.
//!
//! The draft's id goes into the [`DeliveryNotes`] (the outbox entry) as
//! soon as Graph returns it, and [`NOTE_COMPLETE`] once every attachment
//! is in. The next attempt then
//!
//! - sends a complete draft again (`POST .../send` only, nothing uploaded
//!   twice), after looking in Sent Items when the previous `send`'s
//!   outcome was unknown;
//! - deletes an incomplete one and starts over.
//!
//! A failure that no retry can fix deletes the draft. Without durable
//! notes ([`Transport::send_raw`](apimail_core::Transport::send_raw)) every
//! failure deletes it, since nobody would come back for it.

use apimail_core::{DeliveryNotes, ErrorKind, Receipt, TokenSource, TransportError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use graph_rs_sdk::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use graph_rs_sdk::http::Body;
use serde_json::json;

use crate::errors::{Answer, Stage};
use crate::source::{Chunks, Origin};
use crate::transport::{
    GraphTransport, Session, UPLOAD_SESSION_THRESHOLD, json_string, read_failure,
};
use crate::upload::CHUNK_BYTES;
use crate::{mime, upload};

/// The note holding the id of the draft an attempt created.
pub const NOTE_DRAFT_ID: &str = "graph.draft_id";
/// Set (`"true"`) once every attachment of the recorded draft is in.
pub const NOTE_COMPLETE: &str = "graph.draft_complete";
/// Set (`"true"`) when a `send` of the recorded draft may have worked.
pub const NOTE_SEND_UNKNOWN: &str = "graph.send_outcome_unknown";

/// What went wrong after the draft was created.
pub(crate) struct AfterDraft {
    context: String,
    error: TransportError,
}

impl AfterDraft {
    fn new(context: impl Into<String>, error: TransportError) -> Self {
        AfterDraft {
            context: context.into(),
            error,
        }
    }
}

/// An attachment request that failed in a way the other way of adding
/// attachments (plain `POST` or upload session) may not.
enum Added {
    Done,
    TryOther(AfterDraft),
}

/// What a draft left by an earlier attempt came to.
pub(crate) enum Resumed {
    Sent(Receipt),
    StartOver,
}

fn receipt(id: Option<String>) -> Receipt {
    Receipt {
        provider: "graph",
        id,
        thread_id: None,
        possible_duplicate: false,
    }
}

fn noted(result: std::io::Result<()>) -> Result<(), TransportError> {
    result.map_err(|e| {
        TransportError::new(
            ErrorKind::Config,
            "cannot record the Graph draft in the outbox entry",
        )
        .with_source(e)
    })
}

async fn clear(notes: &dyn DeliveryNotes) -> Result<(), TransportError> {
    for key in [NOTE_SEND_UNKNOWN, NOTE_COMPLETE, NOTE_DRAFT_ID] {
        if notes.get(key).is_some() {
            noted(notes.set(key, None).await)?;
        }
    }
    Ok(())
}

/// After an attempt was cut short (a signal): whether the draft recorded
/// in `notes` must be deleted now. An incomplete one must; a complete one
/// is kept for the next attempt, marked as possibly sent (the `send` may
/// have been under way), so that attempt looks in Sent Items first.
pub async fn after_interruption(notes: &dyn DeliveryNotes) -> std::io::Result<bool> {
    if notes.get(NOTE_DRAFT_ID).is_none() {
        return Ok(false);
    }
    if notes.get(NOTE_COMPLETE).is_none() {
        return Ok(true);
    }
    notes.set(NOTE_SEND_UNKNOWN, Some("true")).await?;
    Ok(false)
}

/// The most of a message read for its Message-ID.
const HEADER_SECTION_LIMIT: usize = 1024 * 1024;

/// The Message-ID of `message` (its header section will do), angle
/// brackets included.
pub(crate) fn message_id(message: &[u8]) -> Option<String> {
    let headers = mail_parser::MessageParser::new().parse_headers(message)?;
    headers.message_id().map(|id| format!("<{}>", id.trim()))
}

impl<T: TokenSource> GraphTransport<T> {
    /// Creates the draft, adds the attachments and sends it. `durable`:
    /// the notes outlive this process, so a complete draft may be kept for
    /// the next attempt.
    pub(crate) async fn send_large(
        &self,
        session: &mut Session<'_, T>,
        origin: Origin<'_>,
        split: mime::Split,
        draft_base64: String,
        notes: &dyn DeliveryNotes,
        durable: bool,
    ) -> Result<Receipt, TransportError> {
        let answer = session
            .call(
                Stage::CreateDraft,
                "POST",
                self.url(&["messages"]),
                draft_base64.len(),
                |c| {
                    self.messages(c)
                        .create_messages(Body::from(draft_base64.clone()))
                        .header(CONTENT_TYPE, HeaderValue::from_static("text/plain"))
                },
            )
            .await?;
        if !answer.is_success() {
            return Err(self.classify(&answer, Stage::CreateDraft));
        }
        drop(draft_base64);
        let id = json_string(&answer.body, "id").ok_or_else(|| {
            TransportError::new(
                ErrorKind::Internal,
                format!(
                    "Microsoft Graph created the draft (HTTP {}) but returned no id",
                    answer.status
                ),
            )
        })?;
        if let Err(error) = noted(notes.set(NOTE_DRAFT_ID, Some(&id)).await) {
            self.delete_draft(session, &id).await;
            return Err(error);
        }
        tracing::debug!(
            "draft created; adding {} attachment(s)",
            split.attachments.len()
        );
        for attachment in &split.attachments {
            if let Err(failure) = self.add_attachment(session, &id, origin, attachment).await {
                return Err(self.abandon(session, &id, notes, failure).await);
            }
        }
        noted(notes.set(NOTE_COMPLETE, Some("true")).await)?;
        self.send_draft(session, &id, notes, durable).await
    }

    /// Picks up the draft an earlier attempt recorded in `notes`.
    pub(crate) async fn resume_draft(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        origin: Origin<'_>,
        notes: &dyn DeliveryNotes,
        durable: bool,
    ) -> Result<Resumed, TransportError> {
        if notes.get(NOTE_COMPLETE).is_none() {
            tracing::debug!("an earlier attempt left an incomplete draft: deleting it");
            if !self.delete_draft(session, id).await {
                return Err(TransportError::new(
                    ErrorKind::Temporary,
                    "an earlier attempt left an incomplete draft in the mailbox, and deleting it \
                     failed; the next attempt tries again",
                ));
            }
            clear(notes).await?;
            return Ok(Resumed::StartOver);
        }
        let unknown = notes.get(NOTE_SEND_UNKNOWN).is_some();
        let mut looked = None;
        // Only the header section is read.
        let headers = if unknown {
            origin
                .header_section(HEADER_SECTION_LIMIT)
                .map_err(read_failure)?
        } else {
            Vec::new()
        };
        if unknown && let Some(message_id) = message_id(&headers) {
            looked = self.find_sent(session, &message_id).await?;
            if looked == Some(true) {
                tracing::debug!("the earlier send of the draft did go out: it is in Sent Items");
                clear(notes).await?;
                return Ok(Resumed::Sent(receipt(None)));
            }
        }
        tracing::debug!("an earlier attempt left a complete draft: sending it");
        match self.send_draft(session, id, notes, durable).await {
            Err(error) if error.to_string().contains(DRAFT_GONE) => {
                clear(notes).await?;
                if unknown && looked.is_none() {
                    // It left Drafts after a send whose answer was lost, and
                    // Sent Items cannot be read: it was sent.
                    return Ok(Resumed::Sent(receipt(None)));
                }
                Ok(Resumed::StartOver)
            }
            Err(error) => Err(error),
            Ok(receipt) => Ok(Resumed::Sent(receipt)),
        }
    }

    /// `POST .../messages/{id}/send` of a complete draft. A failure that a
    /// later attempt may overcome keeps the draft (with durable notes).
    async fn send_draft(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        notes: &dyn DeliveryNotes,
        durable: bool,
    ) -> Result<Receipt, TransportError> {
        let result = session
            .call(
                Stage::SendDraft,
                "POST",
                self.url(&["messages", id, "send"]),
                0,
                |c| {
                    self.message(c, id)
                        .send()
                        .header(CONTENT_LENGTH, HeaderValue::from_static("0"))
                },
            )
            .await;
        let error = match result {
            Ok(answer) if answer.is_success() => {
                clear(notes).await?;
                return Ok(receipt(Some(id.to_owned())));
            }
            Ok(answer) if answer.status == 404 => {
                return Err(TransportError::new(
                    ErrorKind::Temporary,
                    format!("{DRAFT_GONE}; the next attempt builds it again"),
                ));
            }
            Ok(answer) => self.classify(&answer, Stage::SendDraft),
            Err(error) => error,
        };
        let keep =
            durable && matches!(error.kind(), ErrorKind::Temporary | ErrorKind::Unauthorized);
        if !keep {
            return Err(self
                .abandon(
                    session,
                    id,
                    notes,
                    AfterDraft::new("sending the draft failed", error),
                )
                .await);
        }
        if error.is_outcome_unknown() {
            noted(notes.set(NOTE_SEND_UNKNOWN, Some("true")).await)?;
        }
        Err(rewrap(
            error,
            "sending the draft failed; the draft, with every attachment, is kept and the next \
             attempt only sends it",
        ))
    }

    /// Deletes the draft after `failure`; the error says whether it is gone.
    async fn abandon(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        notes: &dyn DeliveryNotes,
        failure: AfterDraft,
    ) -> TransportError {
        let tail = if self.delete_draft(session, id).await {
            let _ = clear(notes).await;
            "the draft was deleted"
        } else {
            "deleting the draft failed too; the next attempt (or `apimail queue drop`) deletes it"
        };
        rewrap(failure.error, &format!("{}; {tail}", failure.context))
    }

    /// Deletes the draft; whether it is gone (404 counts as gone).
    pub(crate) async fn delete_draft(&self, session: &mut Session<'_, T>, id: &str) -> bool {
        let result = session
            .call(
                Stage::DeleteDraft,
                "DELETE",
                self.url(&["messages", id]),
                0,
                |c| self.message(c, id).delete_messages(),
            )
            .await;
        match result {
            Ok(answer) if answer.is_success() || answer.status == 404 => true,
            Ok(answer) => {
                tracing::debug!(
                    "deleting the draft failed: {}",
                    self.classify(&answer, Stage::DeleteDraft)
                );
                false
            }
            Err(error) => {
                tracing::debug!("deleting the draft failed: {error}");
                false
            }
        }
    }

    /// Deletes the draft recorded in `notes`, if any.
    pub(crate) async fn discard_draft(
        &self,
        notes: &dyn DeliveryNotes,
    ) -> Result<(), TransportError> {
        let Some(id) = notes.get(NOTE_DRAFT_ID) else {
            return Ok(());
        };
        let mut session = Session::start(self).await?;
        if !self.delete_draft(&mut session, &id).await {
            return Err(TransportError::new(
                ErrorKind::Temporary,
                "the message's draft could not be deleted from the mailbox",
            ));
        }
        clear(notes).await
    }

    /// Whether Sent Items holds a message with this Message-ID; `None`
    /// without the permission to look.
    pub(crate) async fn find_sent(
        &self,
        session: &mut Session<'_, T>,
        message_id: &str,
    ) -> Result<Option<bool>, TransportError> {
        let filter = format!("internetMessageId eq '{}'", message_id.replace('\'', "''"));
        let query = [("$filter", filter.as_str()), ("$select", "id")];
        let mut url = self.url(&["mailFolders", "sentitems", "messages"]);
        url.query_pairs_mut().extend_pairs(query);
        let answer = session
            .call(Stage::Lookup, "GET", url, 0, |c| {
                self.mail_folder_messages(c, "sentitems")
                    .list_messages()
                    .query(&query)
            })
            .await?;
        match answer.status {
            200..=299 => Ok(Some(has_values(&answer))),
            403 => Ok(None),
            _ => Err(self.classify(&answer, Stage::Lookup)),
        }
    }

    async fn add_attachment(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        origin: Origin<'_>,
        attachment: &mime::ExtractedAttachment,
    ) -> Result<(), AfterDraft> {
        // Microsoft documents upload sessions for 3 MB and over; each way
        // falls back to the other once when Graph says it is the wrong one.
        let by_session = attachment.size >= UPLOAD_SESSION_THRESHOLD;
        for (n, by_session) in [by_session, !by_session].into_iter().enumerate() {
            let added = if by_session {
                self.upload_attachment(session, id, origin, attachment)
                    .await?
            } else {
                self.post_attachment(session, id, origin, attachment)
                    .await?
            };
            match added {
                Added::Done => return Ok(()),
                Added::TryOther(failure) if n == 1 => return Err(failure),
                Added::TryOther(failure) => tracing::debug!(
                    "{}: trying the other way to add `{}`",
                    failure.error,
                    attachment.name
                ),
            }
        }
        Ok(())
    }

    async fn post_attachment(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        origin: Origin<'_>,
        attachment: &mime::ExtractedAttachment,
    ) -> Result<Added, AfterDraft> {
        let context = format!("adding attachment `{}` failed", attachment.name);
        // Small enough to be decoded into memory (one at a time).
        let data = attachment
            .body
            .decode(&origin)
            .map_err(|e| AfterDraft::new(&context, read_failure(e)))?;
        let mut body = json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": attachment.name,
            "contentType": attachment.content_type,
            "isInline": attachment.inline,
            "contentBytes": STANDARD.encode(&data),
        });
        if let Some(cid) = &attachment.content_id {
            body["contentId"] = json!(cid);
        }
        drop(data);
        let size = attachment.size.div_ceil(3) * 4;
        let answer = session
            .call(
                Stage::Attachment,
                "POST",
                self.url(&["messages", id, "attachments"]),
                size,
                |c| self.message(c, id).attachments().create_attachments(&body),
            )
            .await
            .map_err(|e| AfterDraft::new(&context, e))?;
        let error = match answer.status {
            _ if answer.is_success() => return Ok(Added::Done),
            413 => {
                return Ok(Added::TryOther(AfterDraft::new(
                    &context,
                    self.classify(&answer, Stage::Attachment),
                )));
            }
            _ => self.classify(&answer, Stage::Attachment),
        };
        Err(AfterDraft::new(context, error))
    }

    async fn upload_attachment(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        origin: Origin<'_>,
        attachment: &mime::ExtractedAttachment,
    ) -> Result<Added, AfterDraft> {
        // A session that vanishes gets one successor.
        for _ in 0..2 {
            let upload_url = match self.create_upload_session(session, id, attachment).await? {
                Ok(url) => url,
                Err(added) => return Ok(added),
            };
            let total = attachment.size;
            tracing::debug!(
                "uploading attachment `{}` ({total} bytes) to {} in chunks of {CHUNK_BYTES} bytes",
                attachment.name,
                upload_url.host_str().unwrap_or("?")
            );
            let Some(uploads) = self.clients.as_ref().map(|c| &c.uploads) else {
                return Err(AfterDraft::new(
                    "uploading failed",
                    TransportError::new(ErrorKind::Config, "the HTTPS client is not set up"),
                ));
            };
            let mut chunks = Chunks::new(origin, attachment.body, total);
            let failure =
                match upload::upload(uploads, &self.permits, &upload_url, &mut chunks).await {
                    Ok(()) => return Ok(Added::Done),
                    Err(failure) => failure,
                };
            // A timeout or proxy failure goes in the first line, host and all.
            let network =
                apimail_core::http::find::<apimail_core::http::NetFailure>(&failure.error)
                    .map(|net| format!(" ({net})"))
                    .unwrap_or_default();
            let context = format!(
                "uploading attachment `{}` failed at byte {} of {total}{network}",
                attachment.name, failure.at
            );
            if !failure.session_gone {
                return Err(AfterDraft::new(context, failure.error));
            }
            // The last chunk's answer may have been lost after the session
            // completed: then the attachment is on the draft already.
            if self
                .has_attachment(session, id, attachment)
                .await
                .map_err(|e| AfterDraft::new(&context, e))?
            {
                tracing::debug!("the upload session is gone, and the attachment is on the draft");
                return Ok(Added::Done);
            }
            tracing::debug!("the upload session is gone: starting a new one");
        }
        Err(AfterDraft::new(
            format!("uploading attachment `{}` failed", attachment.name),
            TransportError::new(
                ErrorKind::Temporary,
                "Microsoft Graph closed two upload sessions in a row",
            ),
        ))
    }

    /// `createUploadSession`: the upload URL, or `Err(TryOther)` when Graph
    /// wants the attachment in a plain `POST`.
    async fn create_upload_session(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        attachment: &mime::ExtractedAttachment,
    ) -> Result<Result<url::Url, Added>, AfterDraft> {
        let context = format!(
            "creating an upload session for attachment `{}` failed",
            attachment.name
        );
        let mut item = json!({
            "attachmentType": "file",
            "name": attachment.name,
            "size": attachment.size,
            "contentType": attachment.content_type,
            "isInline": attachment.inline,
        });
        if let Some(cid) = &attachment.content_id {
            item["contentId"] = json!(cid);
        }
        let body = json!({ "AttachmentItem": item });
        let answer = session
            .call(
                Stage::Attachment,
                "POST",
                self.url(&["messages", id, "attachments", "createUploadSession"]),
                body.to_string().len(),
                |c| {
                    self.message(c, id)
                        .attachments()
                        .create_upload_session(&body)
                },
            )
            .await
            .map_err(|e| AfterDraft::new(&context, e))?;
        if !answer.is_success() {
            let error = self.classify(&answer, Stage::Attachment);
            if answer.graph_error().0.as_deref()
                == Some("ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
            {
                return Ok(Err(Added::TryOther(AfterDraft::new(context, error))));
            }
            return Err(AfterDraft::new(context, error));
        }
        json_string(&answer.body, "uploadUrl")
            .and_then(|u| apimail_core::endpoint::checked_url(&u).ok())
            .map(Ok)
            .ok_or_else(|| {
                AfterDraft::new(
                    &context,
                    TransportError::new(
                        ErrorKind::Internal,
                        "Microsoft Graph returned no usable upload URL (it must be https)",
                    ),
                )
            })
    }

    /// Whether the draft has an attachment of this name and size.
    async fn has_attachment(
        &self,
        session: &mut Session<'_, T>,
        id: &str,
        attachment: &mime::ExtractedAttachment,
    ) -> Result<bool, TransportError> {
        let query = [("$select", "name,size")];
        let mut url = self.url(&["messages", id, "attachments"]);
        url.query_pairs_mut().extend_pairs(query);
        let answer = session
            .call(Stage::Lookup, "GET", url, 0, |c| {
                self.message(c, id)
                    .attachments()
                    .list_attachments()
                    .query(&query)
            })
            .await?;
        if !answer.is_success() {
            return Err(self.classify(&answer, Stage::Lookup));
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(value["value"].as_array().is_some_and(|items| {
            items.iter().any(|item| {
                item["name"].as_str() == Some(attachment.name.as_str())
                    && item["size"].as_u64() == Some(attachment.size as u64)
            })
        }))
    }
}

/// How the error of a `send` to a draft that no longer exists starts.
const DRAFT_GONE: &str = "the draft is no longer in the mailbox";

fn has_values(answer: &Answer) -> bool {
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["value"].as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// `error` with `context` in front, keeping its kind, delay and outcome.
fn rewrap(error: TransportError, context: &str) -> TransportError {
    // A token failure stays as it is: callers look for it one level down.
    if std::error::Error::source(&error).is_some_and(|s| s.is::<apimail_core::TokenError>()) {
        return error;
    }
    let mut outer = TransportError::new(error.kind(), context.to_owned());
    if let Some(delay) = error.retry_after() {
        outer = outer.with_retry_after(delay);
    }
    if error.is_outcome_unknown() {
        outer = outer.with_unknown_outcome();
    }
    outer.with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_keep_their_brackets() {
        assert_eq!(
            message_id(b"Subject: x\r\nMessage-ID: <a.1@example.com>\r\n\r\nbody").as_deref(),
            Some("<a.1@example.com>")
        );
        assert_eq!(message_id(b"Subject: x\r\n\r\nbody"), None);
    }
}
