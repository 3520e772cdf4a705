//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

use apimail_core::{ErrorKind, TransportError};

/// Why a [`Mailer`](crate::Mailer) could not be built or a message not sent.
///
/// [`kind`](Error::kind) says what to do next, with the same kinds as
/// [`TransportError`]: retry later ([`ErrorKind::Temporary`], not before
/// [`retry_after`](Error::retry_after)), fix the credentials
/// ([`ErrorKind::Unauthorized`]), give up on this message
/// ([`ErrorKind::Rejected`], [`ErrorKind::InvalidMessage`]) or fix the setup
/// ([`ErrorKind::Config`]). The provider's own error code and message are
/// kept when its answer had them. No secret is ever part of an error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    deadline: Option<Duration>,
    entry: Option<String>,
    source: Option<Box<TransportError>>,
}

impl From<apimail_account::ResolveError> for Error {
    fn from(error: apimail_account::ResolveError) -> Self {
        Error::config(apimail_core::error_chain(&error))
    }
}

impl Error {
    /// A setup problem: missing or unusable credentials, a bad endpoint.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            deadline: None,
            entry: None,
            source: None,
        }
    }

    /// Not sent now, and kept in the outbox as entry `id`, at `place`.
    pub(crate) fn kept(mut self, id: &str, place: &str) -> Self {
        self.message = format!("{}; {place} as entry {id}", self.message);
        self.entry = Some(id.to_owned());
        self
    }

    /// The send did not finish within `deadline`.
    pub(crate) fn deadline(deadline: Duration) -> Self {
        Error {
            deadline: Some(deadline),
            ..Error::new(
                ErrorKind::Temporary,
                format!(
                    "the send did not finish within its deadline of {} ms; the message may or may not have been sent",
                    deadline.as_millis()
                ),
            )
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Temporary
    }

    /// How long the provider asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.source.as_ref().and_then(|e| e.retry_after())
    }

    /// The provider's own error code (Gmail's `reason`, Graph's
    /// `error.code`), when it gave one.
    pub fn provider_code(&self) -> Option<&str> {
        self.transport_chain()
            .find_map(TransportError::provider_code)
    }

    /// The provider's own error message, when it gave one.
    pub fn provider_message(&self) -> Option<&str> {
        self.transport_chain()
            .find_map(TransportError::provider_message)
    }

    /// Whether the provider may have accepted the message anyway: the
    /// request went out and no answer came back (or the deadline passed).
    pub fn is_outcome_unknown(&self) -> bool {
        self.deadline.is_some()
            || self
                .transport_chain()
                .any(TransportError::is_outcome_unknown)
    }

    /// With an outbox ([`MailerBuilder::outbox`](crate::MailerBuilder::outbox)):
    /// the id of the entry the message is kept as. After a temporary failure
    /// it stays queued and [`Mailer::flush`](crate::Mailer::flush) sends it
    /// later; after a permanent one it is in the outbox's `failed/`, with
    /// the reason.
    pub fn outbox_entry(&self) -> Option<&str> {
        self.entry.as_deref()
    }

    /// The deadline that passed, if that is what happened.
    pub fn deadline_elapsed(&self) -> Option<Duration> {
        self.deadline
    }

    /// The transport's error, and the ones it wraps (the retry policy's
    /// "gave up" wraps the last attempt's).
    fn transport_chain(&self) -> impl Iterator<Item = &TransportError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        std::iter::from_fn(move || {
            let current = next?;
            next = current.source();
            Some(current)
        })
        .filter_map(|e| e.downcast_ref::<TransportError>())
    }
}

impl From<TransportError> for Error {
    fn from(error: TransportError) -> Self {
        Error {
            kind: error.kind(),
            message: error.to_string(),
            deadline: None,
            entry: None,
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The transport error's message is this one's: start below it.
        self.source.as_ref().and_then(|e| e.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_provider_answer_through_the_retry_wrapper() {
        let last = TransportError::new(ErrorKind::Temporary, "HTTP 429")
            .with_retry_after(Duration::from_secs(7))
            .with_provider_error(Some("rateLimitExceeded".into()), Some("slow down".into()));
        let gave_up = TransportError::new(ErrorKind::Temporary, "gave up after 5 attempts")
            .with_retry_after(Duration::from_secs(7))
            .with_source(last);
        let error = Error::from(gave_up);
        assert_eq!(error.kind(), ErrorKind::Temporary);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(error.provider_code(), Some("rateLimitExceeded"));
        assert_eq!(error.provider_message(), Some("slow down"));
        assert!(!error.is_outcome_unknown());
    }

    #[test]
    fn a_passed_deadline_is_temporary_and_of_unknown_outcome() {
        let error = Error::deadline(Duration::from_millis(250));
        assert!(error.is_temporary());
        assert!(error.is_outcome_unknown());
        assert!(error.to_string().contains("250 ms"), "{error}");
    }
}
