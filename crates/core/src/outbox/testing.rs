//! What the outbox's tests share.
#![allow(unused_imports)]

pub(super) use std::collections::HashSet;
pub(super) use std::fs::{self, File};
pub(super) use std::io::Write;
pub(super) use std::path::{Path, PathBuf};
pub(super) use std::sync::{Arc, Barrier, Mutex};
pub(super) use std::time::{Duration, SystemTime};

pub(super) use super::claim::*;
pub(super) use super::entry::*;
pub(super) use super::error::*;
pub(super) use super::intake::*;
pub(super) use super::store::*;
pub(super) use crate::files::testing::*;
pub(super) use crate::identity::SenderIdentity;
pub(super) use crate::token::now_unix;
pub(super) use crate::transport::DeliveryNotes;

pub(super) const MESSAGE: &[u8] =
    b"From: ops@example.com\r\nTo: oncall@example.com\r\nSubject: disk\r\n\r\n/var is at 93%\r\n";

pub(super) fn meta(account: Option<&str>) -> NewEntry {
    NewEntry {
        identity: account.map(SenderIdentity::account),
        account: account.map(str::to_owned),
        provider: Some("some-provider".to_owned()),
        from: "ops@example.com".to_owned(),
        recipients: vec!["oncall@example.com".to_owned()],
        message_id: "<1.abc@example.com>".to_owned(),
        max_age_secs: DEFAULT_MAX_AGE_SECS,
        original_from: None,
    }
}

pub(super) fn open(dir: &tempfile::TempDir) -> Outbox {
    Outbox::open(dir.path().join("outbox")).unwrap()
}

/// A one-file entry's files once it changed since acceptance.
pub(super) fn entry_files(id: &EntryId) -> Vec<String> {
    vec![format!("{id}.msg"), format!("{id}.state")]
}

/// An entry's files in the format before one file per message.
pub(super) fn two_files(id: &EntryId) -> Vec<String> {
    vec![format!("{id}.eml"), format!("{id}.json")]
}

/// Queues `message` as the apimail before one file per message did:
/// `queue/<id>.eml` and `queue/<id>.json` (pretty JSON).
pub(super) fn accept_two_files(outbox: &Outbox, message: &[u8], meta: NewEntry) -> EntryId {
    let now = now_unix();
    let id = EntryId::generate(now);
    let entry = Entry::accepted(id.clone(), meta, message.len() as u64, now);
    fs::write(outbox.eml_path(Place::Queue, &id), message).unwrap();
    let mut json = serde_json::to_vec_pretty(&entry).unwrap();
    json.push(b'\n');
    fs::write(outbox.json_path(Place::Queue, &id), json).unwrap();
    id
}

pub(super) fn set_old(path: &Path) {
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
}
