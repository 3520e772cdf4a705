//! The one-file format of an entry, `<id>.msg` (format version 1):
//!
//! ```text
//! [message: exactly as it is sent]
//! [metadata: the entry at acceptance, JSON]
//! [footer, 60 bytes: "\napimail-queue v1 <message length> <metadata length>\n",
//!  each length 20 decimal digits]
//! ```
//!
//! The message comes first so that it is streamed into the file as it
//! arrives and never copied: the metadata and the footer are appended at
//! the commit. Transports read the message as the range `0..message
//! length`. The file never changes once renamed into place; the entry's
//! later states live in the sidecar `<id>.state` (the whole entry, JSON),
//! which overrides the metadata here.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// The format version this apimail writes and reads.
pub(super) const VERSION: u32 = 1;

/// The footer's length in bytes, the same for every version.
pub(super) const FOOTER_LEN: u64 = 60;

const MAGIC: &[u8] = b"\napimail-queue v";

/// The footer for a message of `message_len` bytes and metadata of
/// `meta_len` bytes.
pub(super) fn footer(message_len: u64, meta_len: u64) -> Vec<u8> {
    let footer = format!("\napimail-queue v{VERSION} {message_len:020} {meta_len:020}\n");
    debug_assert_eq!(footer.len() as u64, FOOTER_LEN);
    footer.into_bytes()
}

/// Where the parts of a `.msg` file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// The message: bytes `0..message_len`.
    pub message_len: u64,
    /// The metadata: the `meta_len` bytes after the message.
    pub meta_len: u64,
}

/// Why a file is not a `.msg` this version reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FormatError {
    /// No footer: cut short, or not an entry file.
    NoFooter,
    /// Written by a later apimail.
    Newer(u32),
    /// The lengths do not add up to the file's.
    Lengths,
}

impl FormatError {
    pub(super) fn reason(&self) -> String {
        match self {
            FormatError::NoFooter => "no apimail-queue footer".into(),
            FormatError::Newer(v) => {
                format!("format v{v}, written by a newer apimail; upgrade apimail to send it")
            }
            FormatError::Lengths => "its lengths do not match the file's size".into(),
        }
    }
}

/// Reads the layout of the `.msg` file `file` (its footer).
pub(super) fn layout(mut file: &File) -> io::Result<Result<Layout, FormatError>> {
    let len = file.metadata()?.len();
    if len < FOOTER_LEN {
        return Ok(Err(FormatError::NoFooter));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.seek(SeekFrom::Start(len - FOOTER_LEN))?;
    file.read_exact(&mut footer)?;
    Ok(parse_footer(&footer, len))
}

/// The layout a footer states, checked against the file's length.
pub(super) fn parse_footer(footer: &[u8], file_len: u64) -> Result<Layout, FormatError> {
    let rest = footer
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_suffix(b"\n"))
        .and_then(|r| std::str::from_utf8(r).ok())
        .ok_or(FormatError::NoFooter)?;
    let mut fields = rest.split(' ');
    let version: u32 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(FormatError::NoFooter)?;
    if version != VERSION {
        return Err(FormatError::Newer(version));
    }
    let mut number = || fields.next().and_then(|n| n.parse::<u64>().ok());
    let (Some(message_len), Some(meta_len)) = (number(), number()) else {
        return Err(FormatError::NoFooter);
    };
    let total = message_len
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(FOOTER_LEN));
    if total != Some(file_len) {
        return Err(FormatError::Lengths);
    }
    Ok(Layout {
        message_len,
        meta_len,
    })
}

/// The metadata bytes of `file`, laid out as `layout`.
pub(super) fn read_meta(mut file: &File, layout: Layout) -> io::Result<Vec<u8>> {
    let mut meta = vec![0u8; usize::try_from(layout.meta_len).map_err(io::Error::other)?];
    file.seek(SeekFrom::Start(layout.message_len))?;
    file.read_exact(&mut meta)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footer_round_trips_and_is_checked() {
        let footer = footer(1234, 56);
        assert_eq!(footer.len() as u64, FOOTER_LEN);
        let len = 1234 + 56 + FOOTER_LEN;
        assert_eq!(
            parse_footer(&footer, len),
            Ok(Layout {
                message_len: 1234,
                meta_len: 56
            })
        );
        assert_eq!(parse_footer(&footer, len + 1), Err(FormatError::Lengths));
        let newer = String::from_utf8(footer.clone())
            .unwrap()
            .replace("v1 ", "v2 ");
        assert_eq!(
            parse_footer(newer.as_bytes(), len),
            Err(FormatError::Newer(2))
        );
        assert_eq!(
            parse_footer(&[b'x'; FOOTER_LEN as usize], len),
            Err(FormatError::NoFooter)
        );
    }
}
