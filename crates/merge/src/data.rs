//! The data of a merge: a CSV file (UTF-8 with or without a BOM, or
//! CP932) or the first sheet of an `.xlsx` workbook. The header row names
//! the fields; row numbers count as a spreadsheet does (the header is row
//! 1; in a CSV, the line a record starts on), so an error's row number is
//! the one the user sees.

use std::path::{Path, PathBuf};

use calamine::{Data, Reader};

/// How a CSV file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8, with or without a byte order mark (Excel writes one).
    #[default]
    Utf8,
    /// Shift_JIS as Windows extends it (CP932), as Excel in Japan saves CSV.
    Cp932,
}

/// One data row: its row number and its values, in the header's order. A
/// row shorter than the header lacks the last fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The row number (the header is row 1).
    pub number: usize,
    /// The values.
    pub values: Vec<String>,
}

/// The header and the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The field names.
    pub headers: Vec<String>,
    /// The data rows; entirely empty rows are left out.
    pub rows: Vec<Row>,
}

impl Table {
    /// The value of `field` in `row`, if the row has it.
    pub fn get<'a>(&self, row: &'a Row, field: &str) -> Option<&'a str> {
        let at = self.headers.iter().position(|h| h == field)?;
        row.values.get(at).map(String::as_str)
    }
}

/// Why the data cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not text in the encoding given.
    #[error("`{}` is not {encoding} text (first bad byte near row {row})", path.display())]
    Encoding {
        /// The file.
        path: PathBuf,
        /// The encoding's name.
        encoding: &'static str,
        /// The row of the first bad byte.
        row: usize,
    },
    /// The CSV is malformed.
    #[error("`{}` is not valid CSV", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: csv::Error,
    },
    /// The workbook cannot be read.
    #[error("`{}` is not a readable .xlsx workbook", path.display())]
    Workbook {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: calamine::Error,
    },
    /// No header row.
    #[error("`{}` has no header row", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A header cell is empty or repeats another.
    #[error("`{}`: the header's column {column} is {problem}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// The column, from 1.
        column: usize,
        /// "empty" or "`name` again".
        problem: String,
    },
}

/// Reads `path`: `.xlsx` (or `.xlsm`) by its extension, else CSV in
/// `encoding`.
pub fn load(path: &Path, encoding: Encoding) -> Result<Table, DataError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("xlsx" | "xlsm") => load_xlsx(path),
        _ => {
            let bytes = std::fs::read(path).map_err(|source| DataError::Read {
                path: path.to_owned(),
                source,
            })?;
            let text = decode(path, &bytes, encoding)?;
            parse_csv(path, &text)
        }
    }
}

fn decode(path: &Path, bytes: &[u8], encoding: Encoding) -> Result<String, DataError> {
    let (codec, name) = match encoding {
        Encoding::Utf8 => (encoding_rs::UTF_8, "UTF-8"),
        Encoding::Cp932 => (encoding_rs::SHIFT_JIS, "CP932 (Shift_JIS)"),
    };
    // BOM handling: a UTF-8 BOM is removed; decode never guesses another
    // encoding.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match codec.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok(text.into_owned()),
        None => {
            let (text, _) = codec.decode_without_bom_handling(bytes);
            let bad = text.find('\u{FFFD}').unwrap_or(0);
            let row = text[..bad].matches('\n').count() + 1;
            Err(DataError::Encoding {
                path: path.to_owned(),
                encoding: name,
                row,
            })
        }
    }
}

fn parse_csv(path: &Path, text: &str) -> Result<Table, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let csv_error = |source| DataError::Csv {
        path: path.to_owned(),
        source,
    };
    let header = match records.next() {
        Some(record) => record.map_err(csv_error)?,
        None => return Err(DataError::Empty { path: path.into() }),
    };
    let headers = headers(path, header.iter().map(str::to_owned).collect())?;
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(csv_error)?;
        // The line the record starts on: Excel's row number, blank lines
        // counted.
        let start = record.position().map_or(0, |p| p.byte() as usize);
        let number = line_at(text, start);
        let values: Vec<String> = record.iter().map(str::to_owned).collect();
        if values.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        rows.push(Row { number, values });
    }
    Ok(Table { headers, rows })
}

/// The line holding byte `at` of `text`, from 1, skipping the blank lines
/// a reader passes over before a record.
fn line_at(text: &str, at: usize) -> usize {
    let before = &text.as_bytes()[..at.min(text.len())];
    let mut line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let mut rest = &text.as_bytes()[at.min(text.len())..];
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        if rest[..end].iter().all(|b| *b == b'\r') {
            line += 1;
            rest = &rest[end + 1..];
        } else {
            break;
        }
    }
    line
}

fn load_xlsx(path: &Path) -> Result<Table, DataError> {
    let workbook_error = |source| DataError::Workbook {
        path: path.to_owned(),
        source,
    };
    let mut workbook = calamine::open_workbook_auto(path).map_err(workbook_error)?;
    let range = match workbook.worksheet_range_at(0) {
        Some(range) => range.map_err(workbook_error)?,
        None => return Err(DataError::Empty { path: path.into() }),
    };
    // Rows are counted from the sheet's first used row.
    let first = range.start().map_or(0, |(row, _)| row as usize);
    let mut rows_in = range.rows();
    let Some(header) = rows_in.next() else {
        return Err(DataError::Empty { path: path.into() });
    };
    let mut names: Vec<String> = header.iter().map(cell_text).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    let headers = headers(path, names)?;
    let mut rows = Vec::new();
    for (index, cells) in rows_in.enumerate() {
        let mut values: Vec<String> = cells.iter().map(cell_text).collect();
        values.truncate(headers.len());
        if values.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        rows.push(Row {
            number: first + index + 2,
            values,
        });
    }
    Ok(Table { headers, rows })
}

/// A cell as text: whole numbers without `.0`, dates as `YYYY-MM-DD`
/// (with the time when it has one).
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => excel_date(dt.as_f64()),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// An Excel serial date (days since 1899-12-30) as ISO 8601.
fn excel_date(serial: f64) -> String {
    let epoch = time::macros::datetime!(1899-12-30 0:00);
    let seconds = (serial * 86_400.0).round() as i64;
    let at = epoch + time::Duration::seconds(seconds);
    if seconds % 86_400 == 0 {
        at.date().to_string()
    } else {
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        at.format(&format).unwrap_or_else(|_| at.to_string())
    }
}

fn headers(path: &Path, names: Vec<String>) -> Result<Vec<String>, DataError> {
    let names: Vec<String> = names.into_iter().map(|n| n.trim().to_owned()).collect();
    if names.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    for (i, name) in names.iter().enumerate() {
        let problem = if name.is_empty() {
            Some("empty".to_owned())
        } else if names[..i].contains(name) {
            Some(format!("`{name}` again"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(DataError::Header {
                path: path.to_owned(),
                column: i + 1,
                problem,
            });
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn utf8_with_a_bom_and_cp932_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let text = "名前,email\r\n山田 太郎,taro@example.jp\r\n\r\n髙橋,t@example.jp\r\n";
        let bom = write(
            &dir,
            "bom.csv",
            &[b"\xEF\xBB\xBF", text.as_bytes()].concat(),
        );
        let (sjis, _, bad) = encoding_rs::SHIFT_JIS.encode(text);
        assert!(!bad);
        let cp932 = write(&dir, "cp932.csv", &sjis);
        let a = load(&bom, Encoding::Utf8).unwrap();
        let b = load(&cp932, Encoding::Cp932).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.headers, ["名前", "email"]);
        assert_eq!(a.rows.len(), 2);
        assert_eq!(a.rows[1].number, 4, "the blank line keeps its number");
        assert_eq!(a.get(&a.rows[1], "名前"), Some("髙橋"));
    }

    #[test]
    fn cp932_read_as_utf8_names_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("name\nabc\n山田\n");
        let path = write(&dir, "x.csv", &sjis);
        let error = load(&path, Encoding::Utf8).unwrap_err();
        assert!(
            matches!(error, DataError::Encoding { row: 3, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_repeated_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "x.csv", b"a,b,a\n1,2,3\n");
        let error = load(&path, Encoding::Utf8).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("`{}`: the header's column 3 is `a` again", path.display())
        );
    }

    #[test]
    fn excel_serials_become_iso_dates() {
        assert_eq!(excel_date(45292.0), "2024-01-01");
        assert_eq!(excel_date(45292.5), "2024-01-01 12:00:00");
    }
}
