//! The index fed from a shared store's journal (`Index::add_stored`): the
//! records after the last sequence number it holds, each message's latest
//! record, and an index of another store emptied (`bind_store`).

use apimail_console::Index;
use apimail_console::index::Query;
use apimail_core::journal::{Outcome, Record};
use apimail_core::outbox::Entry;

fn record(queue_id: &str, outcome: Outcome) -> Record {
    let entry: Entry = serde_json::from_value(serde_json::json!({
        "id": queue_id, "state": "queued", "from": "ops@example.com",
        "recipients": ["a@example.net"], "message_id": format!("<{queue_id}@example.com>"),
        "size": 10, "created_at": 1_780_000_000, "attempts": 1,
        "next_attempt_at": 0, "max_age_secs": 86400
    }))
    .unwrap();
    let mut record = Record::attempted(&entry, outcome);
    record.time = 1_780_000_000;
    record
}

fn outcomes(index: &Index) -> Vec<(String, Outcome)> {
    let page = index.page(&Query::default(), None, 10).unwrap();
    page.rows
        .into_iter()
        .map(|r| (r.record.queue_id.unwrap_or_default(), r.record.outcome))
        .collect()
}

#[test]
fn records_after_the_last_sequence_number_are_added_once() {
    let mut index = Index::open_in_memory().unwrap();
    assert!(
        !index
            .bind_store("postgres://db.example.com/apimail")
            .unwrap()
    );
    assert_eq!(index.store_seq().unwrap(), 0);
    let one = "20260528T000000-000000000001";
    let two = "20260528T000000-000000000002";
    let first = [
        (3, record(one, Outcome::Queued)),
        (7, record(two, Outcome::Sent)),
    ];
    assert_eq!(index.add_stored(&first, 0).unwrap(), 2);
    assert_eq!(index.store_seq().unwrap(), 7);
    // Read again (another console on the index went first): skipped.
    assert_eq!(index.add_stored(&first, 0).unwrap(), 0);
    assert_eq!(
        index
            .add_stored(&[(9, record(one, Outcome::Sent))], 0)
            .unwrap(),
        1
    );
    let mut shown = outcomes(&index);
    shown.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        shown,
        vec![
            (one.to_owned(), Outcome::Sent),
            (two.to_owned(), Outcome::Sent)
        ],
        "one row per message, its latest record"
    );

    // The same store again keeps the index; another one empties it.
    assert!(
        !index
            .bind_store("postgres://db.example.com/apimail")
            .unwrap()
    );
    assert_eq!(index.store_seq().unwrap(), 9);
    assert!(
        index
            .bind_store("postgres://other.example.com/apimail")
            .unwrap()
    );
    assert_eq!(index.store_seq().unwrap(), 0);
    assert!(outcomes(&index).is_empty());
}
