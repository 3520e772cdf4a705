//! Entry ids, entries and their states.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::OutboxError;
use crate::identity::SenderIdentity;

/// How long an entry is retried before it is moved to `failed/`: five days.
pub const DEFAULT_MAX_AGE_SECS: i64 = 5 * 24 * 3600;

/// The retry schedule in minutes, by attempt; the last step repeats.
pub(super) const SCHEDULE_MINUTES: [i64; 7] = [1, 2, 4, 8, 15, 30, 60];

/// The delay before the next attempt after `attempts` failed ones: 1, 2,
/// 4, 8, 15, 30 and 60 minutes, then hourly. Attempts count from 1 (0 is
/// treated as 1).
pub fn next_delay_secs(attempts: u32) -> i64 {
    let step = (attempts.max(1) as usize - 1).min(SCHEDULE_MINUTES.len() - 1);
    SCHEDULE_MINUTES[step] * 60
}

/// An entry's name: the UTC time it was accepted and 12 random hex digits,
/// e.g. `20261121T101500-3f9a0c1b2d4e`. Ids sort by acceptance time (to
/// the second; within a second their order is arbitrary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryId(pub(super) String);

impl EntryId {
    /// Checks `id`'s format (the [`FromStr`] implementation does the same).
    pub fn parse(id: &str) -> Result<Self, OutboxError> {
        if is_valid_id(id) {
            Ok(EntryId(id.to_owned()))
        } else {
            Err(OutboxError::InvalidId { id: id.to_owned() })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new id for an entry accepted at `now` (Unix seconds).
    pub(super) fn generate(now: i64) -> Self {
        EntryId(format!("{}-{}", utc_stamp(now), random_hex(6)))
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EntryId {
    type Err = OutboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntryId::parse(s)
    }
}

impl TryFrom<String> for EntryId {
    type Error = OutboxError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        if is_valid_id(&id) {
            Ok(EntryId(id))
        } else {
            Err(OutboxError::InvalidId { id })
        }
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> Self {
        id.0
    }
}

impl AsRef<str> for EntryId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `YYYYMMDDTHHMMSS-` followed by 12 lowercase hex digits.
pub(super) fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 28
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
        && b[16..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `YYYYMMDDTHHMMSS` in UTC, for times from 1970 to 9999.
pub(super) fn utc_stamp(unix: i64) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let at = time::OffsetDateTime::from_unix_timestamp(unix.clamp(0, 253_402_300_799))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&format).unwrap_or_default()
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // Without the OS generator, time, process id and a counter still make
    // a collision unlikely; `commit` also checks that the id is free.
    if getrandom::fill(&mut buf).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mixed = (u64::from(nanos) << 20)
            ^ (u64::from(std::process::id()) << 40)
            ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (mixed >> ((i % 8) * 8)) as u8);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an entry is waiting to be sent or waiting for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting for its next attempt.
    Queued,
    /// Not sent until [`Outbox::release_held`](super::Outbox::release_held) (after a login) or
    /// [`Outbox::retry`](super::Outbox::retry): the provider refused the credentials, the
    /// sender cannot be resolved, or an unknown outcome waits for the user.
    /// Held entries do not expire.
    Held,
}

/// What a held entry waits for, and so who may release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// Its sender cannot be resolved now (an account removed, credentials
    /// gone from the environment): any flush or relay worker that can send
    /// as that identity again sends it.
    Identity,
    /// The provider refused the authorization: a new login
    /// ([`Outbox::release_held`](super::Outbox::release_held)) or `queue retry` releases it.
    Login,
    /// An earlier attempt may have gone through and the mailbox cannot be
    /// checked (`when_unknown = hold`): only a person, with `queue retry`.
    Uncertain,
}

impl HoldKind {
    /// `identity`, `login` or `uncertain`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Identity => "identity",
            HoldKind::Login => "login",
            HoldKind::Uncertain => "uncertain",
        }
    }
}

impl fmt::Display for HoldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller knows about a message it hands to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Who to send it as; a flush never sends it as anyone else.
    pub identity: Option<SenderIdentity>,
    /// The account to send with, if one was chosen.
    pub account: Option<String>,
    /// The provider (`gmail`, `graph`), if known.
    pub provider: Option<String>,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The message's `Message-ID`, kept across attempts.
    pub message_id: String,
    /// How long to keep retrying, in seconds (see [`DEFAULT_MAX_AGE_SECS`]).
    pub max_age_secs: i64,
    /// The authors' addresses before the sender policy rewrote From (see
    /// [`crate::intake`]), for the journal.
    pub original_from: Option<String>,
}

impl Default for NewEntry {
    /// Empty fields and the default maximum age.
    fn default() -> Self {
        NewEntry {
            identity: None,
            account: None,
            provider: None,
            from: String::new(),
            recipients: Vec::new(),
            message_id: String::new(),
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            original_from: None,
        }
    }
}

/// An entry's metadata, stored as `<id>.json` next to `<id>.eml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's id, also its file name.
    pub id: EntryId,
    /// Queued or held.
    pub state: EntryState,
    /// The account to send with, if one was chosen.
    pub account: Option<String>,
    /// The provider, if known.
    pub provider: Option<String>,
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The message's `Message-ID`.
    pub message_id: String,
    /// The message's size in bytes.
    pub size: u64,
    /// When the outbox accepted it, in Unix seconds.
    pub created_at: i64,
    /// How many attempts failed.
    pub attempts: u32,
    /// When it is due next, in Unix seconds.
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// How long to keep retrying, in seconds from `created_at` (or from
    /// `retried_at`).
    pub max_age_secs: i64,
    /// When [`Outbox::retry`](super::Outbox::retry) last moved it back from `failed/`; the
    /// maximum age then counts from here.
    #[serde(default)]
    pub retried_at: Option<i64>,
    /// Why it was given up on: set for entries in `failed/` only.
    #[serde(default)]
    pub failed_reason: Option<String>,
    /// Who to send it as. `None` only for entries queued before apimail
    /// recorded it; those are sent with `account`.
    #[serde(default)]
    pub identity: Option<SenderIdentity>,
    /// When the attempt under way began (Unix seconds). Still set when a
    /// claim finds the entry, it means a process died mid-attempt.
    #[serde(default)]
    pub in_flight_since: Option<i64>,
    /// The provider may already have accepted it: an attempt's answer was
    /// lost. Cleared by [`Outbox::retry`](super::Outbox::retry) (the user chose to resend).
    #[serde(default)]
    pub outcome_unknown: bool,
    /// What a held entry waits for; see [`hold_kind`](Self::hold_kind),
    /// which also reads entries held before apimail recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldKind>,
    /// [`Outbox::retry`](super::Outbox::retry) sent it on although an earlier attempt's outcome
    /// was unknown: the next copy may be a second one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retried_unknown: bool,
    /// What the transport keeps across attempts (a Graph draft's id, say):
    /// see [`DeliveryNotes`](crate::transport::DeliveryNotes), which a [`Claim`](super::Claim) implements.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
    /// The authors' addresses before the sender policy rewrote From.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_from: Option<String>,
}

impl Entry {
    /// A new entry `id`, as accepted at `now`: queued, due now.
    pub(super) fn accepted(id: EntryId, meta: NewEntry, size: u64, now: i64) -> Entry {
        Entry {
            id,
            state: EntryState::Queued,
            identity: meta.identity,
            in_flight_since: None,
            outcome_unknown: false,
            hold: None,
            retried_unknown: false,
            account: meta.account,
            provider: meta.provider,
            from: meta.from,
            recipients: meta.recipients,
            message_id: meta.message_id,
            size,
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            max_age_secs: meta.max_age_secs,
            retried_at: None,
            failed_reason: None,
            notes: BTreeMap::new(),
            original_from: meta.original_from,
        }
    }

    /// Whether it should be attempted at `now`: queued, not failed, and
    /// `next_attempt_at <= now`.
    pub fn is_due(&self, now: i64) -> bool {
        self.state == EntryState::Queued
            && self.failed_reason.is_none()
            && self.next_attempt_at <= now
    }

    /// Whether it was given up on (it is in `failed/`).
    pub fn is_failed(&self) -> bool {
        self.failed_reason.is_some()
    }

    /// Whether an earlier attempt may have been accepted by the provider:
    /// its answer was lost, or its process died mid-attempt.
    pub fn is_uncertain(&self) -> bool {
        self.outcome_unknown || self.in_flight_since.is_some()
    }

    /// What a held entry waits for (`None` unless held). Entries held
    /// before the kind was recorded: an unknown outcome waits for a person,
    /// a hold without an attempt was for the sender, anything else for a
    /// login.
    pub fn hold_kind(&self) -> Option<HoldKind> {
        if self.state != EntryState::Held {
            return None;
        }
        Some(match self.hold {
            Some(kind) => kind,
            None if self.outcome_unknown => HoldKind::Uncertain,
            None if self.attempts == 0 => HoldKind::Identity,
            None => HoldKind::Login,
        })
    }

    /// Whether it is held only because its sender could not be resolved:
    /// whoever can resolve it now may send it.
    pub fn waits_for_identity(&self) -> bool {
        self.hold_kind() == Some(HoldKind::Identity)
    }

    /// When a temporary failure stops being retried, in Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.retried_at
            .unwrap_or(self.created_at)
            .saturating_add(self.max_age_secs)
    }
}

/// What [`Claim::retry_later`](super::Claim::retry_later) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still queued, due again at `next_attempt_at` (Unix seconds).
    Rescheduled {
        /// When it is due again.
        next_attempt_at: i64,
    },
    /// Too old to retry: moved to `failed/`.
    Expired,
    /// Held for the user.
    Held,
}

/// Counts for `status` and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Entries waiting for their next attempt.
    pub queued: usize,
    /// Entries waiting for a login.
    pub held: usize,
    /// Entries given up on.
    pub failed: usize,
    /// When the oldest queued or held entry was accepted (Unix seconds).
    pub oldest_created_at: Option<i64>,
    /// `.json` files in `queue/` or `failed/` that cannot be read or
    /// parsed; [`Outbox::get`](super::Outbox::get) on their id says why.
    pub unreadable: usize,
}

/// Whether `entry` is `account`'s (any account's for `None`).
pub(super) fn for_account(entry: &Entry, account: Option<&str>) -> bool {
    account.is_none_or(|a| entry.account.as_deref() == Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing::*;

    #[test]
    fn the_retry_schedule() {
        let minutes: Vec<i64> = (0..=9).map(|a| next_delay_secs(a) / 60).collect();
        assert_eq!(minutes, [1, 1, 2, 4, 8, 15, 30, 60, 60, 60]);
        assert_eq!(next_delay_secs(u32::MAX), 3600);
    }

    #[test]
    fn ids_are_valid_and_sort_by_creation_time() {
        let id = EntryId::generate(1_795_256_100);
        assert!(id.as_str().starts_with("20261121T101500-"), "{id}");
        assert_eq!(id.as_str().len(), 28);
        assert_eq!(id.to_string().parse::<EntryId>().unwrap(), id);
        assert!(
            EntryId::generate(0)
                .as_str()
                .starts_with("19700101T000000-")
        );
        assert!(
            EntryId::generate(951_868_799)
                .as_str()
                .starts_with("20000229T235959-")
        );
        assert!(
            EntryId::generate(-5)
                .as_str()
                .starts_with("19700101T000000-")
        );
        assert!(
            EntryId::generate(i64::MAX)
                .as_str()
                .starts_with("99991231T235959-")
        );
        assert_ne!(EntryId::generate(0), EntryId::generate(0), "random part");

        let times = [
            0,
            59,
            60,
            3600,
            86_399,
            86_400,
            951_868_799,
            951_868_800,
            1_795_256_100,
            4_102_444_799,
            4_102_444_800,
        ];
        let ids: Vec<EntryId> = times.iter().map(|&t| EntryId::generate(t)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);

        for bad in [
            "",
            "20261121T101500-3f9a0c1b2d4",
            "20261121T101500-3f9a0c1b2d4e0",
            "20261121T101500-3F9A0C1B2D4E",
            "20261121t101500-3f9a0c1b2d4e",
            "20261121T101500_3f9a0c1b2d4e",
            "2026112xT101500-3f9a0c1b2d4e",
            "../../../../etc/passwd-aaaaa",
            "20261121T101500-3f9a0c1b2d/e",
        ] {
            let error = bad.parse::<EntryId>().unwrap_err();
            assert!(matches!(error, OutboxError::InvalidId { .. }), "{bad:?}");
        }
        assert!("20261121T101500-3f9a0c1b2d4e".parse::<EntryId>().is_ok());
        assert!(serde_json::from_str::<EntryId>("\"../x\"").is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{id}\""),
            "serialized as a plain string"
        );
    }
}
