//! The delivery log's index: an SQLite database (`admin/index.sqlite3`)
//! built from the journal, which stays the record. One row per message
//! (its queue id, else its Message-ID), holding its latest record; every
//! record kept as an event of its message.
//!
//! The index remembers where it stopped: the digest of the first line of
//! the journal file it read last, and the offset after its last complete
//! line. [`Index::update`] finds that file again among the journal's files
//! (rotation renames it), reads on from the offset and then every newer
//! file. If the file is gone or shorter (rotated out, edited), the index
//! is rebuilt from the journal. Pagination is by keyset (time, id), so old
//! pages cost what new ones do.
//!
//! Free text is searched with SQLite's FTS5 (`search`, the trigram
//! tokenizer: any run of three or more characters of the Subject or an
//! address, in any script, ignoring case); shorter text is a scan. Text
//! most messages hold (a domain) is found fastest by scanning the log in
//! its order, and FTS5 would read every match before sorting: a page
//! scans for 20 ms first and then asks FTS5. Messages whose latest record aged out of the journal
//! (`keep_days`) leave the index at the next update.

use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use apimail_core::journal::{self, Journal, JournalError, Outcome, Record};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use sha2::{Digest, Sha256};

/// Bumped when the schema changes; an index of another version is rebuilt.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    account TEXT,
    sender TEXT NOT NULL,
    subject TEXT,
    client TEXT,
    smtp_user TEXT,
    addresses TEXT NOT NULL,
    subject_lc TEXT,
    record TEXT NOT NULL
);
CREATE INDEX messages_by_time ON messages (time, id);
CREATE INDEX messages_by_outcome ON messages (outcome, time, id);
CREATE INDEX messages_by_account ON messages (account, time, id);
CREATE TABLE recipients (
    address TEXT NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (address, message)
) WITHOUT ROWID;
CREATE INDEX recipients_by_message ON recipients (message);
CREATE TABLE events (id INTEGER PRIMARY KEY, message INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX events_by_message ON events (message, id);
CREATE VIRTUAL TABLE search USING fts5(subject, addresses, tokenize = 'trigram');
";

/// Empties every table (the schema stays).
const CLEAR: &str = "DELETE FROM messages; DELETE FROM recipients; DELETE FROM events; \
                     DELETE FROM search; DELETE FROM meta;";

/// The shortest text FTS5's trigram tokenizer finds.
const MIN_SEARCH_CHARS: usize = 3;

/// How long a page of a text search first scans the log in its order:
/// text most messages hold is found at once that way, while FTS5 would
/// read every match first. Rarer text then goes through FTS5.
const SCAN_FIRST: std::time::Duration = std::time::Duration::from_millis(20);

/// How free text is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    /// A LIKE on each row, in the log's order.
    Scan,
    /// The FTS5 table.
    Search,
}

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed.
    #[error("the console's index {path} cannot be used")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The shared store's journal could not be read.
    #[error("cannot read the shared store's delivery journal")]
    Store {
        /// Why.
        #[source]
        source: apimail_store_postgres::StoreError,
    },
    /// A journal file could not be read.
    #[error("cannot read the delivery journal {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Which messages a page holds. The default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Latest outcome is one of these; empty means any.
    pub outcomes: Vec<Outcome>,
    /// The account (name or label), exactly.
    pub account: Option<String>,
    /// The envelope sender, ignoring ASCII case.
    pub sender: Option<String>,
    /// One of the recipients, ignoring case.
    pub recipient: Option<String>,
    /// Latest record at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Latest record before this time (Unix seconds).
    pub until: Option<i64>,
    /// Text in the Subject or the addresses, ignoring case.
    pub text: Option<String>,
}

/// Where a page ends: the (time, id) of its last row. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    time: i64,
    id: i64,
}

impl Cursor {
    /// The cursor as text for a URL.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time, self.id)
    }

    /// A cursor from [`encode`](Self::encode)'s text.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (time, id) = text.split_once('.')?;
        Some(Cursor {
            time: time.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// One message of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The index's id for it (stable until a rebuild).
    pub id: i64,
    /// Its latest record, with the Subject, client and SMTP user of an
    /// earlier record when the latest has none.
    pub record: Record,
}

/// A page of the log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The rows.
    pub rows: Vec<Row>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// How many messages ended how, from `start` on (one bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's start (Unix seconds).
    pub start: i64,
    /// Messages per outcome, in [`Outcome::ALL`]'s order.
    pub counts: [u64; Outcome::ALL.len()],
}

/// The index, open.
#[derive(Debug)]
pub struct Index {
    path: PathBuf,
    conn: Connection,
}

impl Index {
    /// Opens (or creates, mode 0600) the database at `path`; one of another
    /// schema version is emptied, to be rebuilt by the next update.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        create_private(path).map_err(|source| IndexError::Read {
            path: path.to_owned(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| IndexError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        let mut index = Index {
            path: path.to_owned(),
            conn,
        };
        index.prepare()?;
        Ok(index)
    }

    /// An index in memory (tests).
    pub fn open_in_memory() -> Result<Index, IndexError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| IndexError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut index = Index { path, conn };
        index.prepare()?;
        Ok(index)
    }

    fn sql(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn prepare(&mut self) -> Result<(), IndexError> {
        let result = (|| -> rusqlite::Result<()> {
            self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
            self.conn.pragma_update(None, "journal_mode", "WAL")?;
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            let version: i64 = self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                let tx = self.conn.transaction()?;
                for table in ["meta", "messages", "recipients", "events", "search"] {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS {table};"))?;
                }
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()?;
            }
            Ok(())
        })();
        result.map_err(|e| self.sql(e))
    }

    /// Reads what the journal gained since the last update (all of it the
    /// first time, or after a rotation lost the place); returns how many
    /// records were added.
    pub fn update(&mut self, journal: &Journal) -> Result<usize, IndexError> {
        let files = journal.files()?;
        let mut heads = Vec::with_capacity(files.len());
        for file in &files {
            heads.push(first_line_digest(file)?);
        }
        let path = self.path.clone();
        let sql = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        // IMMEDIATE: another console process updating the same index waits
        // here, then reads the place this one left.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let stored = position(&tx).map_err(sql)?;
        let (first, mut offset, clear) = match &stored {
            None => (0, 0, false),
            Some((head, offset)) => {
                let found = heads
                    .iter()
                    .position(|h| h.as_deref() == Some(head.as_str()));
                match found {
                    Some(n) if file_len(&files[n])? >= *offset => (n, *offset, false),
                    _ => (0, 0, true),
                }
            }
        };
        if clear {
            tx.execute_batch(CLEAR).map_err(sql)?;
        }
        let mut added = 0;
        let mut position = if clear { None } else { stored };
        let mut line = Vec::new();
        for (n, file) in files.iter().enumerate().skip(first) {
            let read = |source| IndexError::Read {
                path: file.path.clone(),
                source,
            };
            let mut reader = BufReader::new(&file.file);
            reader.seek(SeekFrom::Start(offset)).map_err(read)?;
            loop {
                line.clear();
                let len = reader.read_until(b'\n', &mut line).map_err(read)?;
                if len == 0 || !line.ends_with(b"\n") {
                    break; // the end, or a line still being written
                }
                offset += len as u64;
                if let Some(record) = journal::parse_line(&line) {
                    insert(&tx, &record, trim_newline(&line)).map_err(sql)?;
                    added += 1;
                }
            }
            if let Some(head) = &heads[n] {
                position = Some((head.clone(), offset));
            }
            offset = 0;
        }
        if let Some((head, offset)) = &position {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?1), ('offset', ?2)",
                params![head, offset.to_string()],
            )
            .map_err(sql)?;
        }
        age_out(&tx, journal.cutoff(apimail_core::now_unix())).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(added)
    }

    /// Ties the index to the shared store named `store` (its URL without
    /// a password): an index built from another store's journal is
    /// emptied, to be read again from this one (their sequence numbers
    /// have nothing in common). Returns whether it was emptied.
    pub fn bind_store(&mut self, store: &str) -> Result<bool, IndexError> {
        let path = self.path.clone();
        let sql = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let bound: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'store'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        let other = bound.as_deref().is_some_and(|b| b != store);
        if other {
            tx.execute_batch(CLEAR).map_err(sql)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('store', ?1)",
            params![store],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(other)
    }

    /// The sequence number of the last record read from the shared
    /// store's journal (0: none yet).
    pub fn store_seq(&self) -> Result<i64, IndexError> {
        let value: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'store_seq'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Adds records read from the shared store's journal, each with its
    /// sequence number (increasing), and remembers the last one; messages
    /// whose latest record is older than `cutoff` leave the index.
    pub fn add_stored(
        &mut self,
        records: &[(i64, Record)],
        cutoff: i64,
    ) -> Result<usize, IndexError> {
        let path = self.path.clone();
        let sql = |source| IndexError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let stored: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'store_seq'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(sql)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut added = 0;
        let mut last = stored;
        for (seq, record) in records {
            // Another console process on this index may have read it.
            if *seq <= last {
                continue;
            }
            let line = serde_json::to_vec(record).unwrap_or_default();
            insert(&tx, record, &line).map_err(sql)?;
            last = *seq;
            added += 1;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('store_seq', ?1)",
            params![last.to_string()],
        )
        .map_err(sql)?;
        age_out(&tx, cutoff).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(added)
    }

    /// Forgets everything and reads the whole journal again.
    pub fn rebuild(&mut self, journal: &Journal) -> Result<usize, IndexError> {
        self.conn.execute_batch(CLEAR).map_err(|e| self.sql(e))?;
        self.update(journal)
    }

    /// Up to `limit` messages matching `query`, newest first, after
    /// `after` (the previous page's [`Page::next`]).
    pub fn page(
        &self,
        query: &Query,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, IndexError> {
        let long_text = query
            .text
            .as_deref()
            .is_some_and(|t| t.trim().chars().count() >= MIN_SEARCH_CHARS);
        if !long_text {
            return self.page_by(query, after, limit, Text::Scan);
        }
        self.search_page(query, after, limit, SCAN_FIRST, 1000)
    }

    /// A text search's page: a scan for up to `budget` (checked every
    /// `every` SQLite steps), else FTS5. Both give the same rows.
    fn search_page(
        &self,
        query: &Query,
        after: Option<Cursor>,
        limit: usize,
        budget: std::time::Duration,
        every: i32,
    ) -> Result<Page, IndexError> {
        let deadline = std::time::Instant::now() + budget;
        self.conn
            .progress_handler(every, Some(move || std::time::Instant::now() >= deadline));
        let scanned = self.page_by(query, after, limit, Text::Scan);
        self.conn.progress_handler(0, None::<fn() -> bool>);
        match scanned {
            Err(IndexError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
                self.page_by(query, after, limit, Text::Search)
            }
            other => other,
        }
    }

    fn page_by(
        &self,
        query: &Query,
        after: Option<Cursor>,
        limit: usize,
        text: Text,
    ) -> Result<Page, IndexError> {
        let (mut conditions, mut values) = conditions(query, text);
        if let Some(cursor) = after {
            conditions.push("(time, id) < (?, ?)".to_owned());
            values.push(Value::Integer(cursor.time));
            values.push(Value::Integer(cursor.id));
        }
        let limit = limit.max(1);
        values.push(Value::Integer(limit as i64 + 1));
        let sql = format!(
            "SELECT id, time, subject, client, smtp_user, record FROM messages {} \
             ORDER BY time DESC, id DESC LIMIT ?",
            where_clause(&conditions)
        );
        let mut rows = self.select(&sql, values)?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|(row, time)| Cursor {
                time: *time,
                id: row.id,
            })
        } else {
            None
        };
        Ok(Page {
            rows: rows.into_iter().map(|(row, _)| row).collect(),
            next,
        })
    }

    /// The message with queue id `queue_id`, and all its records, oldest
    /// first.
    pub fn message(&self, queue_id: &str) -> Result<Option<(Row, Vec<Record>)>, IndexError> {
        let rows = self.select(
            "SELECT id, time, subject, client, smtp_user, record FROM messages WHERE key = ?",
            vec![Value::Text(queue_key(queue_id))],
        )?;
        let Some((row, _)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let result = (|| -> rusqlite::Result<Vec<Record>> {
            let mut statement = self
                .conn
                .prepare_cached("SELECT record FROM events WHERE message = ?1 ORDER BY id")?;
            let lines = statement.query_map([row.id], |r| r.get::<_, String>(0))?;
            let mut events = Vec::new();
            for line in lines {
                if let Some(record) = journal::parse_line(line?.as_bytes()) {
                    events.push(record);
                }
            }
            Ok(events)
        })();
        let events = result.map_err(|e| self.sql(e))?;
        Ok(Some((row, events)))
    }

    /// Messages by latest outcome in buckets of `bucket` seconds from
    /// `since` to `until`, buckets aligned to `offset` seconds east of UTC
    /// (a time zone's midnight). Every bucket is there, empty ones too.
    pub fn buckets(
        &self,
        since: i64,
        until: i64,
        bucket: i64,
        offset: i64,
    ) -> Result<Vec<Bucket>, IndexError> {
        let bucket = bucket.max(1);
        let align = |t: i64| (t + offset).div_euclid(bucket) * bucket - offset;
        let mut buckets: Vec<Bucket> = (0..)
            .map(|n| align(since) + n * bucket)
            .take_while(|start| *start < until)
            .map(|start| Bucket {
                start,
                counts: [0; Outcome::ALL.len()],
            })
            .collect();
        let Some(first) = buckets.first().map(|b| b.start) else {
            return Ok(buckets);
        };
        let result = (|| -> rusqlite::Result<()> {
            let mut statement = self.conn.prepare_cached(
                "SELECT (time - ?1) / ?2, outcome, count(*) FROM messages \
                 WHERE time >= ?1 AND time < ?3 GROUP BY 1, 2",
            )?;
            let counted = statement.query_map(params![first, bucket, until], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for item in counted {
                let (n, outcome, count) = item?;
                let slot = Outcome::ALL.iter().position(|o| o.as_str() == outcome);
                if let (Some(bucket), Some(slot)) = (buckets.get_mut(n as usize), slot) {
                    bucket.counts[slot] += count as u64;
                }
            }
            Ok(())
        })();
        result.map_err(|e| self.sql(e))?;
        Ok(buckets)
    }

    fn select(&self, sql: &str, values: Vec<Value>) -> Result<Vec<(Row, i64)>, IndexError> {
        let result = (|| -> rusqlite::Result<Vec<(Row, i64)>> {
            let mut statement = self.conn.prepare_cached(sql)?;
            let found = statement.query_map(params_from_iter(values), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut rows = Vec::new();
            for item in found {
                let (id, time, subject, client, smtp_user, line) = item?;
                // The index wrote the line from a record: it parses.
                let Some(mut record) = journal::parse_line(line.as_bytes()) else {
                    continue;
                };
                record.subject = record.subject.or(subject);
                record.client = record.client.or(client);
                record.smtp_user = record.smtp_user.or(smtp_user);
                rows.push((Row { id, record }, time));
            }
            Ok(rows)
        })();
        result.map_err(|e| self.sql(e))
    }
}

/// Where the last update stopped: the file's first-line digest and the
/// offset.
fn position(conn: &Connection) -> rusqlite::Result<Option<(String, u64)>> {
    let get = |key: &str| -> rusqlite::Result<Option<String>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    Ok(match (get("head")?, get("offset")?) {
        (Some(head), Some(offset)) => offset.parse().ok().map(|offset| (head, offset)),
        _ => None,
    })
}

fn queue_key(queue_id: &str) -> String {
    format!("queue:{queue_id}")
}

/// A message's key: its queue id, else its Message-ID (the library's
/// direct sends have no queue id).
fn key(record: &Record) -> String {
    match &record.queue_id {
        Some(id) => queue_key(id),
        None => format!("message-id:{}", record.message_id),
    }
}

fn insert(tx: &Transaction<'_>, record: &Record, line: &[u8]) -> rusqlite::Result<()> {
    let addresses = std::iter::once(record.from.as_str())
        .chain(record.recipients.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    let line = String::from_utf8_lossy(line);
    let (id, subject, addresses): (i64, Option<String>, String) = tx
        .prepare_cached(
            "INSERT INTO messages (key, time, outcome, account, sender, subject, client, \
             smtp_user, addresses, subject_lc, record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (key) DO UPDATE SET time = excluded.time, outcome = excluded.outcome, \
             account = coalesce(excluded.account, account), sender = excluded.sender, \
             subject = coalesce(excluded.subject, subject), \
             client = coalesce(excluded.client, client), \
             smtp_user = coalesce(excluded.smtp_user, smtp_user), \
             addresses = excluded.addresses, \
             subject_lc = coalesce(excluded.subject_lc, subject_lc), record = excluded.record \
             RETURNING id, subject, addresses",
        )?
        .query_row(
            params![
                key(record),
                record.time,
                record.outcome.as_str(),
                record.account,
                record.from,
                record.subject,
                record.client,
                record.smtp_user,
                addresses,
                record.subject.as_ref().map(|s| s.to_lowercase()),
                line,
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
    tx.prepare_cached("DELETE FROM search WHERE rowid = ?1")?
        .execute([id])?;
    tx.prepare_cached("INSERT INTO search (rowid, subject, addresses) VALUES (?1, ?2, ?3)")?
        .execute(params![id, subject, addresses])?;
    tx.prepare_cached("INSERT INTO events (message, record) VALUES (?1, ?2)")?
        .execute(params![id, line])?;
    let mut recipient =
        tx.prepare_cached("INSERT OR IGNORE INTO recipients (address, message) VALUES (?1, ?2)")?;
    for address in &record.recipients {
        recipient.execute(params![address.to_lowercase(), id])?;
    }
    Ok(())
}

fn conditions(query: &Query, by: Text) -> (Vec<String>, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if !query.outcomes.is_empty() {
        let marks = vec!["?"; query.outcomes.len()].join(", ");
        conditions.push(format!("outcome IN ({marks})"));
        values.extend(
            query
                .outcomes
                .iter()
                .map(|o| Value::Text(o.as_str().to_owned())),
        );
    }
    if let Some(account) = &query.account {
        conditions.push("account = ?".to_owned());
        values.push(Value::Text(account.clone()));
    }
    if let Some(sender) = &query.sender {
        conditions.push("sender = ? COLLATE NOCASE".to_owned());
        values.push(Value::Text(sender.clone()));
    }
    if let Some(recipient) = &query.recipient {
        conditions.push("id IN (SELECT message FROM recipients WHERE address = ?)".to_owned());
        values.push(Value::Text(recipient.to_lowercase()));
    }
    if let Some(since) = query.since {
        conditions.push("time >= ?".to_owned());
        values.push(Value::Integer(since));
    }
    if let Some(until) = query.until {
        conditions.push("time < ?".to_owned());
        values.push(Value::Integer(until));
    }
    let text = query.text.as_deref().map(str::trim).unwrap_or_default();
    if by == Text::Search && text.chars().count() >= MIN_SEARCH_CHARS {
        // One FTS5 phrase: the text as it is, quotes doubled.
        conditions.push("id IN (SELECT rowid FROM search WHERE search MATCH ?)".to_owned());
        values.push(Value::Text(format!("\"{}\"", text.replace('"', "\"\""))));
    } else if !text.is_empty() {
        let pattern = format!("%{}%", like_escape(&text.to_lowercase()));
        conditions
            .push("(addresses LIKE ? ESCAPE '\\' OR subject_lc LIKE ? ESCAPE '\\')".to_owned());
        values.push(Value::Text(pattern.clone()));
        values.push(Value::Text(pattern));
    }
    (conditions, values)
}

/// Removes the messages whose latest record is older than `cutoff`.
fn age_out(tx: &Transaction<'_>, cutoff: i64) -> rusqlite::Result<()> {
    let oldest: Option<i64> = tx.query_row("SELECT min(time) FROM messages", [], |r| r.get(0))?;
    if oldest.is_none_or(|oldest| oldest >= cutoff) {
        return Ok(());
    }
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS aged (id INTEGER PRIMARY KEY); DELETE FROM aged; \
         INSERT INTO aged SELECT id FROM messages WHERE time < {cutoff}; \
         DELETE FROM events WHERE message IN (SELECT id FROM aged); \
         DELETE FROM recipients WHERE message IN (SELECT id FROM aged); \
         DELETE FROM search WHERE rowid IN (SELECT id FROM aged); \
         DELETE FROM messages WHERE id IN (SELECT id FROM aged); DELETE FROM aged;"
    ))
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// `text` with LIKE's wildcards and the escape character escaped.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The digest of the file's first complete line, which names the file
/// across renames; `None` while it has none.
fn first_line_digest(file: &journal::JournalFile) -> Result<Option<String>, IndexError> {
    let read = |source| IndexError::Read {
        path: file.path.clone(),
        source,
    };
    let mut reader = BufReader::new(&file.file);
    reader.seek(SeekFrom::Start(0)).map_err(read)?;
    let mut line = Vec::new();
    // A record is far smaller than 1 MiB.
    io::Read::take(&mut reader, 1 << 20)
        .read_until(b'\n', &mut line)
        .map_err(read)?;
    Ok(line
        .ends_with(b"\n")
        .then(|| URL_SAFE_NO_PAD.encode(Sha256::digest(&line))))
}

fn file_len(file: &journal::JournalFile) -> Result<u64, IndexError> {
    file.file
        .metadata()
        .map(|m| m.len())
        .map_err(|source| IndexError::Read {
            path: file.path.clone(),
            source,
        })
}

/// Creates `path` empty and owner-only unless it exists, so SQLite's file
/// (and its `-wal` and `-shm`, which take its mode) are private.
fn create_private(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::store::create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, outcome: Outcome) -> Record {
        Record {
            time: 1_780_000_000 + i64::from(n) * 60,
            queue_id: Some(format!("20260528T000000-{:012x}", n)),
            message_id: format!("<{n}@example.com>"),
            account: Some(if n.is_multiple_of(2) { "work" } else { "home" }.to_owned()),
            client: None,
            smtp_user: None,
            provider: Some("gmail".to_owned()),
            from: "ops@example.com".to_owned(),
            recipients: vec![format!("user{n}@example.net")],
            subject: Some(format!("Invoice {n}")),
            size: 1000 + u64::from(n),
            attempts: 1,
            possible_duplicate: false,
            original_from: None,
            outcome,
            provider_id: None,
            error: None,
        }
    }

    fn keys(page: &Page) -> Vec<String> {
        page.rows
            .iter()
            .map(|r| r.record.message_id.clone())
            .collect()
    }

    #[test]
    fn one_row_per_message_newest_first_with_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        let mut index = Index::open(&dir.path().join("admin").join("index.sqlite3")).unwrap();
        journal.append(&record(1, Outcome::Queued)).unwrap();
        journal.append(&record(2, Outcome::Sent)).unwrap();
        let mut later = record(1, Outcome::Sent);
        later.time += 600;
        later.subject = None; // the Subject of the first record is kept
        later.attempts = 2;
        journal.append(&later).unwrap();
        assert_eq!(index.update(&journal).unwrap(), 3);
        assert_eq!(index.update(&journal).unwrap(), 0, "nothing new");

        let page = index.page(&Query::default(), None, 10).unwrap();
        assert_eq!(keys(&page), ["<1@example.com>", "<2@example.com>"]);
        assert_eq!(page.rows[0].record.outcome, Outcome::Sent);
        assert_eq!(page.rows[0].record.subject.as_deref(), Some("Invoice 1"));
        let (row, events) = index
            .message("20260528T000000-000000000001")
            .unwrap()
            .unwrap();
        assert_eq!(row.record.attempts, 2);
        let outcomes: Vec<_> = events.iter().map(|e| e.outcome).collect();
        assert_eq!(outcomes, [Outcome::Queued, Outcome::Sent]);
        assert!(
            index
                .message("20260528T000000-00000000dead")
                .unwrap()
                .is_none()
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("admin").join("index.sqlite3");
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn filters_and_keyset_pages() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        for n in 0..25u32 {
            let outcome = if n.is_multiple_of(5) {
                Outcome::Failed
            } else {
                Outcome::Sent
            };
            journal.append(&record(n, outcome)).unwrap();
        }
        let mut index = Index::open_in_memory().unwrap();
        index.update(&journal).unwrap();

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = index.page(&Query::default(), cursor, 10).unwrap();
            seen.extend(keys(&page));
            match page.next {
                Some(next) => cursor = Some(Cursor::parse(&next.encode()).unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25)
            .rev()
            .map(|n| format!("<{n}@example.com>"))
            .collect();
        assert_eq!(seen, expected);

        let failed = Query {
            outcomes: vec![Outcome::Failed],
            ..Query::default()
        };
        assert_eq!(index.page(&failed, None, 10).unwrap().rows.len(), 5);
        let text = Query {
            text: Some("INVOICE 1".to_owned()),
            ..Query::default()
        };
        // Invoice 1, 10..19
        assert_eq!(index.page(&text, None, 50).unwrap().rows.len(), 11);
        let percent = Query {
            text: Some("%".to_owned()),
            ..Query::default()
        };
        assert!(
            index.page(&percent, None, 50).unwrap().rows.is_empty(),
            "% is literal"
        );
        let recipient = Query {
            recipient: Some("USER7@example.net".to_owned()),
            ..Query::default()
        };
        assert_eq!(
            keys(&index.page(&recipient, None, 50).unwrap()),
            ["<7@example.com>"]
        );
        let range = Query {
            account: Some("work".to_owned()),
            since: Some(1_780_000_000 + 10 * 60),
            until: Some(1_780_000_000 + 20 * 60),
            sender: Some("OPS@example.com".to_owned()),
            ..Query::default()
        };
        assert_eq!(
            index.page(&range, None, 50).unwrap().rows.len(),
            5,
            "10, 12, .. 18"
        );

        let buckets = index
            .buckets(1_780_000_000, 1_780_000_000 + 25 * 60, 600, 0)
            .unwrap();
        let sent: u64 = buckets.iter().map(|b| b.counts[0]).sum();
        let failed: u64 = buckets.iter().map(|b| b.counts[3]).sum();
        assert_eq!((sent, failed), (20, 5));
    }

    #[test]
    fn two_handles_on_one_index_share_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        let path = dir.path().join("index.sqlite3");
        let mut first = Index::open(&path).unwrap();
        let mut second = Index::open(&path).unwrap();
        for n in 0..5 {
            journal.append(&record(n, Outcome::Sent)).unwrap();
        }
        assert_eq!(first.update(&journal).unwrap(), 5);
        assert_eq!(second.update(&journal).unwrap(), 0, "the place is shared");
        journal.append(&record(5, Outcome::Sent)).unwrap();
        assert_eq!(second.update(&journal).unwrap(), 1);
        assert_eq!(first.update(&journal).unwrap(), 0);
        let (_, events) = first
            .message("20260528T000000-000000000003")
            .unwrap()
            .unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn follows_rotation_and_rebuilds_when_lost() {
        let dir = tempfile::tempdir().unwrap();
        // A few records per file, so rotations happen.
        let journal = Journal::open(dir.path().join("journal"))
            .unwrap()
            .with_rotation(1200, 3);
        let mut index = Index::open_in_memory().unwrap();
        let mut total = 0;
        for n in 0..12 {
            journal.append(&record(n, Outcome::Sent)).unwrap();
            total += index.update(&journal).unwrap();
        }
        assert_eq!(total, 12, "each record indexed once across rotations");
        let page = index.page(&Query::default(), None, 100).unwrap();
        assert_eq!(page.rows.len(), 12);

        // Many rotations without an update: the place is lost; the index
        // is rebuilt from what the journal still holds.
        for n in 12..40 {
            journal.append(&record(n, Outcome::Sent)).unwrap();
        }
        index.update(&journal).unwrap();
        let held: usize = journal.read(&journal::Filter::default()).unwrap().count();
        let page = index.page(&Query::default(), None, 100).unwrap();
        assert_eq!(page.rows.len(), held);
        assert_eq!(page.rows[0].record.message_id, "<39@example.com>");
        assert!(held < 40, "the journal dropped its oldest files");
        assert_eq!(index.rebuild(&journal).unwrap(), held);
    }

    #[test]
    fn free_text_finds_any_part_of_a_subject_or_address_in_any_script() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        let subjects = [
            "11月分の請求書です",
            "Re: \"quoted\" report",
            "Scan 2026-12-04",
        ];
        for (n, subject) in subjects.iter().enumerate() {
            let mut r = record(n as u32, Outcome::Queued);
            r.subject = Some((*subject).to_owned());
            journal.append(&r).unwrap();
        }
        // A later record without a Subject keeps the message findable.
        let mut sent = record(0, Outcome::Sent);
        sent.subject = None;
        sent.time += 600;
        journal.append(&sent).unwrap();
        let mut index = Index::open_in_memory().unwrap();
        index.update(&journal).unwrap();
        let found = |text: &str| {
            let query = Query {
                text: Some(text.to_owned()),
                ..Query::default()
            };
            keys(&index.page(&query, None, 50).unwrap())
        };
        assert_eq!(found("請求書"), ["<0@example.com>"]);
        assert_eq!(found("\"QUOTED\""), ["<1@example.com>"]);
        assert_eq!(
            found("ser2@exam"),
            ["<2@example.com>"],
            "part of an address"
        );
        assert_eq!(found("月分"), ["<0@example.com>"], "two characters: a scan");
        assert!(found("nothing like it").is_empty());
        assert_eq!(found("example.net").len(), 3);

        // FTS5 alone, and a scan cut short at once, give the same rows.
        for text in [
            "請求書",
            "\"QUOTED\"",
            "ser2@exam",
            "example.net",
            "nothing like it",
        ] {
            let query = Query {
                text: Some(text.to_owned()),
                ..Query::default()
            };
            let searched = index.page_by(&query, None, 50, Text::Search).unwrap();
            assert_eq!(keys(&searched), found(text), "{text}");
            let cut = index
                .search_page(&query, None, 50, std::time::Duration::ZERO, 1)
                .unwrap();
            assert_eq!(keys(&cut), found(text), "{text}");
        }
    }

    #[test]
    fn messages_older_than_the_journal_keeps_leave_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path().join("journal")).unwrap();
        let now = apimail_core::now_unix();
        let mut old = record(1, Outcome::Sent);
        old.time = now - 40 * 86_400;
        let mut new = record(2, Outcome::Sent);
        new.time = now;
        journal.append(&old).unwrap();
        journal.append(&new).unwrap();
        let mut index = Index::open_in_memory().unwrap();
        index.update(&journal).unwrap();
        assert_eq!(
            index.page(&Query::default(), None, 10).unwrap().rows.len(),
            2
        );
        let shorter = journal.clone().with_keep_days(30);
        index.update(&shorter).unwrap();
        let page = index.page(&Query::default(), None, 10).unwrap();
        assert_eq!(keys(&page), ["<2@example.com>"]);
        assert!(
            index
                .message("20260528T000000-000000000001")
                .unwrap()
                .is_none()
        );
        let text = Query {
            text: Some("Invoice".to_owned()),
            ..Query::default()
        };
        assert_eq!(index.page(&text, None, 10).unwrap().rows.len(), 1);
    }
}
