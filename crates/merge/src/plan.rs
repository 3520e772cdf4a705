//! Every row checked before anything is sent: fields, addresses,
//! attachments and the message itself (composed into a counter, which also
//! gives its size). Each good row becomes a [`Planned`] message with a
//! Message-ID derived from the merge's name and the row's key, so the same
//! row is the same message on every run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use apimail_core::{Attachment, Charset, ComposeError, Mailbox, MessageBuilder};
use sha2::{Digest, Sha256};

use crate::data::{Row, Table};
use crate::template::Template;

/// What a check needs besides the data and the template.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The merge's name (its batch).
    pub name: String,
    /// The column that keys each row; without one, a hash of the row.
    pub id_column: Option<String>,
    /// The sender when the template has no `from` (the account's address).
    pub default_from: Option<String>,
    /// The Date of every message (Unix seconds), for reproducible output.
    pub date: Option<i64>,
}

/// One row's message, checked.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The row number (the header is row 1).
    pub row: usize,
    /// The row's key.
    pub key: String,
    /// The Message-ID, `<…>`.
    pub message_id: String,
    /// The sender.
    pub from: Mailbox,
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Copies.
    pub cc: Vec<Mailbox>,
    /// Blind copies.
    pub bcc: Vec<Mailbox>,
    /// Reply-To.
    pub reply_to: Vec<Mailbox>,
    /// Subject.
    pub subject: String,
    /// Text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Attachment files.
    pub attach: Vec<PathBuf>,
    /// Further headers.
    pub headers: Vec<(String, String)>,
    /// The charset.
    pub charset: Charset,
    /// The Date, when pinned.
    pub date: Option<i64>,
    /// The size of the message in bytes, as composed at the check.
    pub size: u64,
}

/// A row that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row number.
    pub row: usize,
    /// Its key, when known.
    pub key: Option<String>,
    /// What is wrong, for people.
    pub message: String,
}

/// The outcome of checking every row.
#[derive(Debug)]
pub struct Plan {
    /// The rows that can be sent, in order.
    pub messages: Vec<Planned>,
    /// The rows that cannot, in order.
    pub errors: Vec<RowError>,
}

impl Plan {
    /// Rows in the data.
    pub fn rows(&self) -> usize {
        self.messages.len() + self.errors.len()
    }

    /// Recipients over all good rows (To, Cc and Bcc).
    pub fn recipients(&self) -> usize {
        self.messages.iter().map(Planned::recipients).sum()
    }

    /// Bytes over all good rows.
    pub fn total_size(&self) -> u64 {
        self.messages.iter().map(|m| m.size).sum()
    }
}

/// Why nothing can be checked: a problem of the whole data or template.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The template uses fields the data has no column for.
    #[error("the template uses {}, which the data's header does not name (its columns: {})", list(.missing), .columns.join(", "))]
    UnknownFields {
        /// The fields.
        missing: Vec<String>,
        /// The header.
        columns: Vec<String>,
    },
    /// `--id-column` names no column.
    #[error("the id column `{column}` is not in the data's header (its columns: {})", .columns.join(", "))]
    UnknownIdColumn {
        /// The column.
        column: String,
        /// The header.
        columns: Vec<String>,
    },
    /// No From anywhere.
    #[error("the template has no `from`, and the account's address is unknown")]
    NoFrom,
}

fn list(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    let noun = if fields.len() == 1 { "field" } else { "fields" };
    format!("{noun} {}", quoted.join(", "))
}

/// Checks every row of `table` against `template`.
pub fn check(table: &Table, template: &Template, options: &Options) -> Result<Plan, PlanError> {
    let used = template.fields();
    let missing: Vec<String> = used
        .iter()
        .filter(|f| !table.headers.contains(f))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(PlanError::UnknownFields {
            missing,
            columns: table.headers.clone(),
        });
    }
    if let Some(column) = &options.id_column
        && !table.headers.contains(column)
    {
        return Err(PlanError::UnknownIdColumn {
            column: column.clone(),
            columns: table.headers.clone(),
        });
    }
    if !template.has_from && options.default_from.is_none() {
        return Err(PlanError::NoFrom);
    }
    let batch = short_hash(options.name.as_bytes(), 12);
    let mut plan = Plan {
        messages: Vec::new(),
        errors: Vec::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in &table.rows {
        let key = row_key(table, row, options.id_column.as_deref());
        let error = |message: String| RowError {
            row: row.number,
            key: Some(key.clone()),
            message,
        };
        if key.is_empty() {
            plan.errors.push(error(format!(
                "its id (`{}`) is empty",
                options.id_column.as_deref().unwrap_or_default()
            )));
            continue;
        }
        if let Some(first) = seen.insert(key.clone(), row.number) {
            plan.errors.push(error(format!(
                "its id `{key}` is also row {first}'s; every row needs its own"
            )));
            continue;
        }
        match plan_row(table, row, template, options, &key, &batch, &used) {
            Ok(planned) => plan.messages.push(planned),
            Err(message) => plan.errors.push(error(message)),
        }
    }
    Ok(plan)
}

fn plan_row(
    table: &Table,
    row: &Row,
    template: &Template,
    options: &Options,
    key: &str,
    batch: &str,
    used: &std::collections::BTreeSet<String>,
) -> Result<Planned, String> {
    let absent: Vec<String> = used
        .iter()
        .filter(|f| table.get(row, f).is_none())
        .cloned()
        .collect();
    if !absent.is_empty() {
        return Err(format!(
            "{} missing (the row has {} of the header's {} columns)",
            match absent.len() {
                1 => format!("field `{}` is", absent[0]),
                _ => format!("fields {} are", list(&absent).trim_start_matches("fields ")),
            },
            row.values.len(),
            table.headers.len()
        ));
    }
    let fields: BTreeMap<String, String> = table
        .headers
        .iter()
        .zip(&row.values)
        .map(|(h, v)| (h.clone(), v.clone()))
        .collect();
    let rendered = template
        .render(&fields)
        .map_err(|e| format!("`{}`: {}", e.key, e.message))?;
    let from_text = rendered
        .from
        .clone()
        .or_else(|| options.default_from.clone())
        .unwrap_or_default();
    let from = parse_one("from", &from_text)?;
    let addresses = |name: &str, items: &[String]| -> Result<Vec<Mailbox>, String> {
        let mut out = Vec::new();
        for item in items {
            for part in split_addresses(item) {
                out.push(parse_one(name, &part)?);
            }
        }
        Ok(out)
    };
    let to = addresses("to", &rendered.to)?;
    let cc = addresses("cc", &rendered.cc)?;
    let bcc = addresses("bcc", &rendered.bcc)?;
    let reply_to = addresses("reply_to", &rendered.reply_to)?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err("no recipient: `to`, `cc` and `bcc` are all empty".into());
    }
    for path in &rendered.attach {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("attachment `{}` is not a file", path.display())),
            Err(_) => {
                return Err(format!("attachment `{}` does not exist", path.display()));
            }
        }
    }
    let message_id = format!(
        "<merge.{batch}.{}@{}>",
        short_hash(key.as_bytes(), 24),
        from.domain()
    );
    let mut planned = Planned {
        row: row.number,
        key: key.to_owned(),
        message_id,
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        attach: rendered.attach,
        headers: rendered.headers,
        charset: template.charset,
        date: options.date,
        size: 0,
    };
    let mut counter = Counter(0);
    planned
        .builder()
        .and_then(|b| b.write_to(&mut counter))
        .map_err(|e| compose_words(&e))?;
    planned.size = counter.0;
    Ok(planned)
}

impl Planned {
    /// Recipients of this message.
    pub fn recipients(&self) -> usize {
        self.to.len() + self.cc.len() + self.bcc.len()
    }

    /// The message, ready to write (attachments are read as it is written).
    pub fn builder(&self) -> Result<MessageBuilder, ComposeError> {
        let mut builder = self.base()?.message_id(&self.message_id);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        for cc in &self.cc {
            builder = builder.cc(cc.clone());
        }
        for bcc in &self.bcc {
            builder = builder.bcc(bcc.clone());
        }
        Ok(builder)
    }

    /// The same message to `address` alone, with a Message-ID of its own
    /// (`--test-to`): the real one stays for the real send.
    pub fn test_builder(&self, address: &Mailbox) -> Result<MessageBuilder, ComposeError> {
        Ok(self.base()?.to(address.clone()))
    }

    fn base(&self) -> Result<MessageBuilder, ComposeError> {
        let mut builder = MessageBuilder::new()
            .charset(self.charset)
            .from(self.from.clone())
            .subject(&self.subject);
        for reply_to in &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(date) = self.date {
            builder = builder.date(date);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(text) = &self.text {
            builder = builder.text(text);
        }
        if let Some(html) = &self.html {
            builder = builder.html(html);
        }
        for path in &self.attach {
            builder = builder.attach(Attachment::from_path(path)?);
        }
        Ok(builder)
    }
}

/// A composer error as a row's reason.
fn compose_words(error: &ComposeError) -> String {
    match error {
        ComposeError::Unrepresentable { .. } => {
            format!("{error} (use charset = \"utf-8\", or replace that character)")
        }
        _ => error.to_string(),
    }
}

fn parse_one(field: &str, text: &str) -> Result<Mailbox, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    text.parse::<Mailbox>()
        .map_err(|e| format!("`{field}`: {e}"))
}

/// `a@x, "Doe, J" <j@y>` → its addresses: commas outside quotes and
/// angle brackets separate; empty items are dropped.
fn split_addresses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut angle) = (false, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' | ';' if !quoted && !angle => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The row's key: its id column, else a hash of its values.
pub fn row_key(table: &Table, row: &Row, id_column: Option<&str>) -> String {
    match id_column {
        Some(column) => table.get(row, column).unwrap_or("").trim().to_owned(),
        None => {
            let joined = row.values.join("\u{1f}");
            format!("row-{}", short_hash(joined.as_bytes(), 16))
        }
    }
}

fn short_hash(bytes: &[u8], hex_len: usize) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(hex_len);
    hex
}

/// Counts what the composer writes.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Encoding, load};

    fn setup(csv: &str, template: &str) -> (tempfile::TempDir, Table, Template) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), csv).unwrap();
        std::fs::write(dir.path().join("t.toml"), template).unwrap();
        std::fs::write(dir.path().join("a.pdf"), b"%PDF-1.4 a").unwrap();
        let table = load(&dir.path().join("d.csv"), Encoding::Utf8).unwrap();
        let template = Template::load(&dir.path().join("t.toml")).unwrap();
        (dir, table, template)
    }

    fn options() -> Options {
        Options {
            name: "m".into(),
            id_column: Some("id".into()),
            default_from: Some("me@example.com".into()),
            date: Some(1_700_000_000),
        }
    }

    const TEMPLATE: &str = r#"
to = "{{ name }} <{{ email }}>"
subject = "Invoice {{ id }}: {{ amount | number }} yen"
html = "<p>{{ name }}</p>"
attach = ["{{ id }}.pdf"]
"#;

    #[test]
    fn each_row_is_checked_and_named_by_its_number() {
        let (_dir, table, template) = setup(
            "id,name,email,amount\n\
             a,Ann & Co,ann@example.com,1234\n\
             b,Bob,not an address,5\n\
             c,Cy,cy@example.com,5\n\
             a,Again,x@example.com,1\n\
             d,Short\n",
            TEMPLATE,
        );
        let plan = check(&table, &template, &options()).unwrap();
        assert_eq!(plan.messages.len(), 1);
        let rows: Vec<(usize, &str)> = plan
            .errors
            .iter()
            .map(|e| (e.row, e.message.as_str()))
            .collect();
        assert_eq!(rows[0].0, 3);
        assert!(
            rows[0]
                .1
                .starts_with("`to`: invalid address `Bob <not an address>`"),
            "{}",
            rows[0].1
        );
        assert_eq!(rows[1].0, 4);
        assert!(
            rows[1].1.ends_with("c.pdf` does not exist"),
            "{}",
            rows[1].1
        );
        assert_eq!(rows[2].0, 5);
        assert!(rows[2].1.contains("also row 2's"));
        assert_eq!(rows[3].0, 6);
        assert!(
            rows[3]
                .1
                .starts_with("fields `amount`, `email` are missing"),
            "{}",
            rows[3].1
        );
        let ann = &plan.messages[0];
        assert_eq!(ann.subject, "Invoice a: 1,234 yen");
        assert_eq!(ann.html.as_deref(), Some("<p>Ann &amp; Co</p>"));
        assert!(ann.message_id.starts_with("<merge."));
        assert!(ann.size > 0);
    }

    #[test]
    fn a_field_no_column_names_stops_everything() {
        let (_dir, table, template) = setup("id,name,amount\na,A,1\n", TEMPLATE);
        let error = check(&table, &template, &options()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the template uses field `email`, which the data's header does not name (its columns: id, name, amount)"
        );
    }

    #[test]
    fn the_message_id_depends_on_the_merge_and_the_key_only() {
        let csv = "id,name,email,amount\na,A,a@example.com,1\n";
        let (_d1, table, template) = setup(csv, TEMPLATE);
        let first = check(&table, &template, &options()).unwrap();
        let (_d2, table2, template2) = setup(
            "id,name,email,amount\na,Changed,a@example.com,2\n",
            TEMPLATE,
        );
        let again = check(&table2, &template2, &options()).unwrap();
        assert_eq!(first.messages[0].message_id, again.messages[0].message_id);
        let other = Options {
            name: "other".into(),
            ..options()
        };
        let renamed = check(&table, &template, &other).unwrap();
        assert_ne!(first.messages[0].message_id, renamed.messages[0].message_id);
    }

    #[test]
    fn addresses_split_outside_quotes() {
        assert_eq!(
            split_addresses("a@x, \"Doe, J\" <j@y>; ,"),
            ["a@x", "\"Doe, J\" <j@y>"]
        );
    }
}
