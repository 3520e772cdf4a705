//! One streaming pass over a message that finds its MIME structure
//! without holding the message: a *skeleton*, the message with long runs
//! of body lines each replaced by a short placeholder, small enough for
//! mail-parser to classify the parts, and a map from skeleton offsets back
//! to the message's.
//!
//! A run is replaced only where the placeholder cannot change what
//! mail-parser makes of the message:
//! - never in a header block (the message's, a part's, or a nested
//!   message's), nor in the body of a `message/*` part or of a part
//!   without a Content-Type (it may be a nested message);
//! - never across a line that holds `--` (mail-parser finds boundaries
//!   anywhere in a line); a line holding `--` and a declared boundary
//!   starts a header block;
//! - only lines that decode cleanly in the part's transfer encoding, each
//!   starting and ending in the decoder's plain state, so a broken
//!   encoding stays in the skeleton exactly as written.

use std::io::{self, BufRead, BufReader, Read};

use mail_parser::{MessageParser, MimeHeaders};

/// What a replaced run becomes: valid in every transfer encoding.
const PLACEHOLDER: &[u8] = b"AAAA";

/// Runs shorter than this stay as they are.
const MIN_RUN: usize = 256;

/// A replaced run: where its placeholder is in the skeleton, and the
/// bytes it stands for in the message.
#[derive(Debug, Clone, Copy)]
struct Span {
    skeleton: usize,
    message: u64,
    len: u64,
}

/// The message with long body runs left out.
#[derive(Debug, Default)]
pub(crate) struct Skeleton {
    pub(crate) bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl Skeleton {
    /// The message offset of skeleton offset `at`; `None` inside a
    /// placeholder (nothing mail-parser reports should point there).
    pub(crate) fn to_message(&self, at: usize) -> Option<u64> {
        let index = self
            .spans
            .partition_point(|span| span.skeleton + PLACEHOLDER.len() <= at);
        if let Some(span) = self.spans.get(index)
            && span.skeleton < at
        {
            return None;
        }
        Some(match index.checked_sub(1).map(|i| self.spans[i]) {
            None => at as u64,
            Some(span) => span.message + span.len + (at - span.skeleton - PLACEHOLDER.len()) as u64,
        })
    }
}

/// How a body's lines are checked before they may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Never replaced.
    Keep,
    /// No transfer encoding: any line.
    Any,
    Base64,
    /// Quoted-printable, with the decoder's state at the line start
    /// (true: plain).
    QuotedPrintable {
        plain: bool,
    },
}

enum State {
    Headers { block: Vec<u8> },
    Body(Check),
}

/// A run of replaceable lines being collected.
#[derive(Default)]
struct Run {
    start: u64,
    /// The run's bytes while it is short; `None` once it is long.
    bytes: Option<Vec<u8>>,
    len: u64,
    /// The last line's line break, which stays outside the placeholder.
    line_break: Vec<u8>,
    open: bool,
}

/// Reads `reader` (a whole message) once and returns its skeleton; with
/// `replace` false, the skeleton is the whole message.
pub(crate) fn skeleton(reader: impl Read, replace: bool) -> io::Result<Skeleton> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut out = Skeleton::default();
    let mut boundaries: Vec<Vec<u8>> = Vec::new();
    let mut state = State::Headers { block: Vec::new() };
    let mut run = Run::default();
    let mut line = Vec::new();
    let mut at = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let line_at = at;
        at += line.len() as u64;
        state = match state {
            State::Headers { mut block } => {
                out.bytes.extend_from_slice(&line);
                // After a closing delimiter, the next delimiter starts the
                // part's headers.
                if starts_with_delimiter(&line, &boundaries) {
                    block.clear();
                } else {
                    block.extend_from_slice(&line);
                }
                if matches!(line.as_slice(), b"\n" | b"\r\n") {
                    let (check, nested) = body_check(&block, &mut boundaries);
                    if nested {
                        State::Headers { block: Vec::new() }
                    } else {
                        State::Body(check)
                    }
                } else {
                    State::Headers { block }
                }
            }
            State::Body(check) => {
                if contains(&line, b"--") {
                    end_run(&mut run, &mut out);
                    out.bytes.extend_from_slice(&line);
                    if boundaries.iter().any(|b| contains(&line, &delimiter(b))) {
                        State::Headers { block: Vec::new() }
                    } else {
                        State::Body(after_line(check, &line).0)
                    }
                } else {
                    let (next, clean) = after_line(check, &line);
                    if clean && replace {
                        add_to_run(&mut run, line_at, &line);
                    } else {
                        end_run(&mut run, &mut out);
                        out.bytes.extend_from_slice(&line);
                    }
                    State::Body(next)
                }
            }
        };
    }
    end_run(&mut run, &mut out);
    Ok(out)
}

/// The check for the body after a header block, and whether that body is
/// a nested message's header block (`message/*` without an encoding).
/// Boundaries the block declares are added to `boundaries`.
fn body_check(block: &[u8], boundaries: &mut Vec<Vec<u8>>) -> (Check, bool) {
    let Some(headers) = MessageParser::new().parse_headers(block) else {
        return (Check::Keep, false);
    };
    let Some(content_type) = headers.content_type() else {
        return (Check::Keep, false);
    };
    if let Some(boundary) = content_type.attribute("boundary")
        && !boundary.is_empty()
        && !boundaries.iter().any(|b| b == boundary.as_bytes())
    {
        boundaries.push(boundary.as_bytes().to_vec());
    }
    let encoding = headers
        .header_raw("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase());
    if content_type.ctype().eq_ignore_ascii_case("message") {
        let nested = !matches!(encoding.as_deref(), Some("base64" | "quoted-printable"));
        return (Check::Keep, nested);
    }
    let check = match encoding.as_deref() {
        Some("base64") => Check::Base64,
        Some("quoted-printable") => Check::QuotedPrintable { plain: true },
        _ => Check::Any,
    };
    (check, false)
}

/// The check's state after `line`, and whether the line may be replaced.
fn after_line(check: Check, line: &[u8]) -> (Check, bool) {
    match check {
        Check::Keep => (Check::Keep, false),
        Check::Any => (Check::Any, true),
        Check::Base64 => (
            Check::Base64,
            line.iter().all(|&ch| {
                ch.is_ascii_alphanumeric()
                    || matches!(ch, b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b'\n')
            }),
        ),
        Check::QuotedPrintable { plain } => {
            let (end_plain, valid) = quoted_printable_line(line, plain);
            (
                Check::QuotedPrintable { plain: end_plain },
                plain && valid && end_plain,
            )
        }
    }
}

/// Runs mail-parser's strict quoted-printable rules over one line: whether
/// it ends in the plain state, and whether nothing in it was invalid.
fn quoted_printable_line(line: &[u8], plain: bool) -> (bool, bool) {
    #[derive(PartialEq)]
    enum S {
        Plain,
        Equals,
        Hex1,
    }
    let mut state = if plain { S::Plain } else { S::Hex1 };
    let mut valid = plain;
    for &ch in line {
        match ch {
            b'=' if state == S::Plain => state = S::Equals,
            b'=' => valid = false,
            b'\n' if state == S::Equals => state = S::Plain,
            b'\n' | b'\r' => {}
            _ => match state {
                S::Plain => {}
                S::Equals if ch.is_ascii_hexdigit() => state = S::Hex1,
                S::Equals if ch.is_ascii_whitespace() => {}
                S::Equals => {
                    valid = false;
                    state = S::Plain;
                }
                S::Hex1 => {
                    valid &= ch.is_ascii_hexdigit();
                    state = S::Plain;
                }
            },
        }
    }
    (state == S::Plain, valid)
}

fn add_to_run(run: &mut Run, at: u64, line: &[u8]) {
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    let line_break = &line[content.len()..];
    if !run.open {
        *run = Run {
            start: at,
            bytes: Some(Vec::new()),
            len: 0,
            line_break: Vec::new(),
            open: true,
        };
    }
    let previous_break = std::mem::replace(&mut run.line_break, line_break.to_vec());
    run.len += (previous_break.len() + content.len()) as u64;
    if let Some(bytes) = &mut run.bytes {
        bytes.extend_from_slice(&previous_break);
        bytes.extend_from_slice(content);
        if bytes.len() >= MIN_RUN {
            run.bytes = None;
        }
    }
}

fn end_run(run: &mut Run, out: &mut Skeleton) {
    if !run.open {
        return;
    }
    match run.bytes.take() {
        Some(bytes) => out.bytes.extend_from_slice(&bytes),
        None => {
            out.spans.push(Span {
                skeleton: out.bytes.len(),
                message: run.start,
                len: run.len,
            });
            out.bytes.extend_from_slice(PLACEHOLDER);
        }
    }
    out.bytes.extend_from_slice(&run.line_break);
    run.open = false;
}

fn delimiter(boundary: &[u8]) -> Vec<u8> {
    [b"--", boundary].concat()
}

fn starts_with_delimiter(line: &[u8], boundaries: &[Vec<u8>]) -> bool {
    boundaries.iter().any(|b| line.starts_with(&delimiter(b)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
