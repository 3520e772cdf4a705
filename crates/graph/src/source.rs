//! Where the large route's bytes come from: the message (in memory, or
//! the outbox file) and, for an attachment, a byte range of it with the
//! transfer encoding undone as the bytes are read.
//!
//! The decoders repeat mail-parser's (the ones the classification in
//! [`crate::mime`] relies on) byte for byte, but work on pieces of any
//! size, so an attachment is never decoded whole into memory.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use apimail_core::StoredMessage;

/// Bytes read from the message at a time.
const READ_BYTES: usize = 64 * 1024;

/// The message the large route reads from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    Memory(&'a [u8]),
    File(&'a StoredMessage),
}

impl<'a> Origin<'a> {
    /// The bytes `start..end` as a reader.
    pub(crate) fn range(&self, start: u64, end: u64) -> io::Result<Box<dyn Read + Send + 'a>> {
        let len = end.saturating_sub(start);
        match *self {
            Origin::Memory(bytes) => {
                let from = usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let to = usize::try_from(end)
                    .unwrap_or(usize::MAX)
                    .clamp(from, bytes.len());
                Ok(Box::new(&bytes[from..to]))
            }
            Origin::File(message) => {
                // The message's own range of the outbox file, never past it.
                let mut file = message.open().map_err(io::Error::other)?;
                file.seek(SeekFrom::Start(start.min(message.len())))?;
                Ok(Box::new(BufReader::with_capacity(
                    READ_BYTES,
                    file.take(len),
                )))
            }
        }
    }

    /// The whole message as a reader.
    pub(crate) fn all(&self) -> io::Result<Box<dyn Read + Send + 'a>> {
        self.range(0, u64::MAX)
    }

    /// The header section (up to and including the blank line that ends
    /// it), read on its own: at most `limit` bytes.
    pub(crate) fn header_section(&self, limit: usize) -> io::Result<Vec<u8>> {
        let mut reader = BufReader::new(self.all()?.take(limit as u64));
        let mut head = Vec::new();
        loop {
            let start = head.len();
            if io::BufRead::read_until(&mut reader, b'\n', &mut head)? == 0 {
                return Ok(head);
            }
            if matches!(&head[start..], b"\n" | b"\r\n") {
                return Ok(head);
            }
        }
    }
}

/// How an attachment's bytes are decoded: mail-parser decodes a file part
/// leniently while parsing (`*Mime`) and a text part strictly from its raw
/// bytes ([`crate::mime`] does the same), so both kinds are here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoding {
    /// 7bit, 8bit, binary, or no transfer encoding: the bytes as they are.
    Copy,
    /// mail-parser's `decode_base64_mime`: a trailing incomplete group is
    /// dropped, `=` ends a group.
    Base64Mime,
    /// mail-parser's `base64_decode`: a trailing incomplete group counts.
    Base64Strict,
    /// mail-parser's `decode_quoted_printable_mime`: an invalid `=XX` is
    /// kept as it is.
    QpMime,
    /// mail-parser's `quoted_printable_decode`: an invalid `=XX` is an
    /// error.
    QpStrict,
}

/// The transfer encoding is broken where mail-parser's decoder would
/// give up.
#[derive(Debug)]
pub(crate) struct Invalid;

/// An attachment's body: a byte range of the message and how to decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Body {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) decoding: Decoding,
    /// The range stops at a line break (the one before a boundary): the
    /// quoted-printable line it ends drops its trailing white space, as
    /// mail-parser does.
    pub(crate) at_line_break: bool,
}

impl Body {
    /// The decoded size, by reading the range once (nothing is kept).
    pub(crate) fn decoded_len(&self, origin: &Origin<'_>) -> io::Result<usize> {
        let mut reader = BodyReader::new(origin, self)?;
        let mut scratch = Vec::with_capacity(READ_BYTES * 2);
        let mut total = 0;
        loop {
            scratch.clear();
            if reader.fill(&mut scratch, READ_BYTES)? == 0 {
                return Ok(total);
            }
            total += scratch.len();
        }
    }

    /// The whole decoded body: for attachments small enough to post inline.
    pub(crate) fn decode(&self, origin: &Origin<'_>) -> io::Result<Vec<u8>> {
        let mut reader = BodyReader::new(origin, self)?;
        let mut out = Vec::new();
        while reader.fill(&mut out, READ_BYTES)? > 0 {}
        Ok(out)
    }
}

/// Decoded bytes of a [`Body`], read front to back.
pub(crate) struct BodyReader<'a> {
    input: Box<dyn Read + Send + 'a>,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Decoded but not yet handed out.
    pending: Vec<u8>,
    /// Decoded bytes handed out so far.
    position: usize,
    done: bool,
}

impl<'a> BodyReader<'a> {
    pub(crate) fn new(origin: &Origin<'a>, body: &Body) -> io::Result<Self> {
        Ok(BodyReader {
            input: origin.range(body.start, body.end)?,
            decoder: Decoder::new(body.decoding, body.at_line_break),
            buf: vec![0; READ_BYTES],
            pending: Vec::new(),
            position: 0,
            done: false,
        })
    }

    /// Decoded bytes handed out so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Appends up to `want` decoded bytes to `out`; how many (0 at the end).
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        while self.pending.len() < want && !self.done {
            let n = loop {
                match self.input.read(&mut self.buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            let result = if n == 0 {
                self.done = true;
                self.decoder.finish(&mut self.pending);
                Ok(())
            } else {
                self.decoder.feed(&self.buf[..n], &mut self.pending)
            };
            result.map_err(|Invalid| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an attachment's transfer encoding is broken",
                )
            })?;
        }
        let n = want.min(self.pending.len());
        out.extend_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        self.position += n;
        Ok(n)
    }

    /// Skips `n` decoded bytes.
    pub(crate) fn skip(&mut self, mut n: usize) -> io::Result<()> {
        let mut scratch = Vec::with_capacity(READ_BYTES.min(n));
        while n > 0 {
            scratch.clear();
            let got = self.fill(&mut scratch, n.min(READ_BYTES))?;
            if got == 0 {
                break;
            }
            n -= got;
        }
        Ok(())
    }
}

/// Upload-session chunks of one attachment, decoded as they are asked for.
/// Going on from where the last chunk ended continues the same pass; a
/// resume from an earlier offset (the server's `nextExpectedRanges`)
/// re-opens the range and decodes from the part's start, skipping.
pub(crate) struct Chunks<'a> {
    origin: Origin<'a>,
    body: Body,
    len: usize,
    reader: Option<BodyReader<'a>>,
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(origin: Origin<'a>, body: Body, len: usize) -> Self {
        Chunks {
            origin,
            body,
            len,
            reader: None,
        }
    }

    /// The decoded size.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Decoded bytes `start..end`.
    pub(crate) fn read(&mut self, start: usize, end: usize) -> io::Result<Vec<u8>> {
        let reader = match self.reader.take() {
            Some(reader) if reader.position() <= start => reader,
            _ => BodyReader::new(&self.origin, &self.body)?,
        };
        let reader = self.reader.insert(reader);
        reader.skip(start - reader.position())?;
        let want = end.saturating_sub(start);
        let mut chunk = Vec::with_capacity(want);
        while chunk.len() < want {
            let missing = want - chunk.len();
            if reader.fill(&mut chunk, missing)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the queued message changed while it was being sent",
                ));
            }
        }
        Ok(chunk)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Qp {
    Plain,
    Equals,
    Hex1(u8),
}

/// One attachment's decoder state, fed the raw bytes piece by piece.
struct Decoder {
    decoding: Decoding,
    at_line_break: bool,
    /// Base64: the bits so far and how many characters they hold.
    bits: u32,
    count: u8,
    /// Quoted-printable.
    qp: Qp,
    /// White space not yet written: dropped if the line ends.
    spaces: Vec<u8>,
    crlf: bool,
    last: u8,
}

fn base64_value(ch: u8) -> Option<u32> {
    match ch {
        b'A'..=b'Z' => Some(u32::from(ch - b'A')),
        b'a'..=b'z' => Some(u32::from(ch - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(ch - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn hex_value(ch: u8) -> Option<u8> {
    (ch as char).to_digit(16).map(|d| d as u8)
}

impl Decoder {
    fn new(decoding: Decoding, at_line_break: bool) -> Self {
        Decoder {
            decoding,
            at_line_break,
            bits: 0,
            count: 0,
            qp: Qp::Plain,
            spaces: Vec::new(),
            crlf: false,
            last: 0,
        }
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
        match self.decoding {
            Decoding::Copy => {
                out.extend_from_slice(input);
                Ok(())
            }
            Decoding::Base64Mime | Decoding::Base64Strict => self.base64(input, out),
            Decoding::QpMime | Decoding::QpStrict => self.quoted_printable(input, out),
        }
    }

    /// Writes what the end of the range leaves.
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self.decoding {
            Decoding::Base64Strict => self.flush_base64(out),
            Decoding::QpMime if self.at_line_break => self.spaces.clear(),
            Decoding::QpMime | Decoding::QpStrict => out.append(&mut self.spaces),
            Decoding::Copy | Decoding::Base64Mime => {}
        }
    }

    fn flush_base64(&mut self, out: &mut Vec<u8>) {
        let bits = self.bits;
        match (self.decoding, self.count) {
            (Decoding::Base64Mime, 1) => out.push((bits << 2) as u8),
            (_, 2) => out.push((bits >> 4) as u8),
            (_, 3) => out.extend_from_slice(&[(bits >> 10) as u8, (bits >> 2) as u8]),
            _ => {}
        }
        self.bits = 0;
        self.count = 0;
    }

    fn base64(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
        let mime = self.decoding == Decoding::Base64Mime;
        for &ch in input {
            if let Some(value) = base64_value(ch) {
                self.bits = (self.bits << 6) | value;
                self.count = (self.count + 1) & 3;
                if self.count == 0 {
                    out.extend_from_slice(&self.bits.to_be_bytes()[1..]);
                    self.bits = 0;
                }
            } else {
                match ch {
                    b'=' => self.flush_base64(out),
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    // A single `-` is let through by the MIME decoder; two
                    // start a boundary, which a body's range never holds.
                    b'-' if mime && self.last != b'-' => {}
                    _ => return Err(Invalid),
                }
            }
            self.last = ch;
        }
        Ok(())
    }

    fn quoted_printable(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
        let lenient = self.decoding == Decoding::QpMime;
        for &ch in input {
            match ch {
                b'=' if self.qp == Qp::Plain => self.qp = Qp::Equals,
                b'=' => return Err(Invalid),
                b'\n' => {
                    if self.qp == Qp::Equals {
                        self.qp = Qp::Plain;
                        out.append(&mut self.spaces);
                    } else {
                        self.spaces.clear();
                        out.extend_from_slice(if self.crlf { b"\r\n" } else { b"\n" });
                    }
                }
                b'\r' => self.crlf = true,
                _ => match self.qp {
                    Qp::Plain if ch.is_ascii_whitespace() => self.spaces.push(ch),
                    Qp::Plain => {
                        out.append(&mut self.spaces);
                        out.push(ch);
                    }
                    Qp::Equals => match hex_value(ch) {
                        Some(high) => self.qp = Qp::Hex1(high),
                        None if ch.is_ascii_whitespace() => {}
                        None if lenient => {
                            self.qp = Qp::Plain;
                            out.append(&mut self.spaces);
                            out.extend_from_slice(&[b'=', ch]);
                        }
                        None => return Err(Invalid),
                    },
                    Qp::Hex1(high) => {
                        self.qp = Qp::Plain;
                        out.append(&mut self.spaces);
                        match hex_value(ch) {
                            Some(low) => out.push((high << 4) | low),
                            None if lenient => out.extend_from_slice(&[b'=', self.last, ch]),
                            None => return Err(Invalid),
                        }
                    }
                },
            }
            self.last = ch;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::decoders::base64::base64_decode;
    use mail_parser::decoders::quoted_printable::quoted_printable_decode;

    /// Decodes `raw` fed in pieces of `piece` bytes.
    fn decode(decoding: Decoding, raw: &[u8], piece: usize) -> Option<Vec<u8>> {
        let mut decoder = Decoder::new(decoding, false);
        let mut out = Vec::new();
        for part in raw.chunks(piece.max(1)) {
            decoder.feed(part, &mut out).ok()?;
        }
        decoder.finish(&mut out);
        Some(out)
    }

    #[test]
    fn strict_decoders_match_mail_parser_at_every_piece_size() {
        let samples: &[&[u8]] = &[
            b"SGVsbG8sIHdvcmxkIQ==",
            b"SGVs\r\nbG8s\r\nIHdv\r\ncmxk\r\nIQ",
            b"SGVsbG8\nsIHdvcmxkIQ=\n",
            b"QUJD REVG\tR0g=\r\n",
            b"AAEC=AwQF",
            b"A",
            b"",
            b"bad*char",
        ];
        for raw in samples {
            for piece in [1, 2, 3, 5, 7, 64] {
                assert_eq!(
                    decode(Decoding::Base64Strict, raw, piece),
                    base64_decode(raw),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        let samples: &[&[u8]] = &[
            b"caf=E9 cr=E8me=0D=0A",
            b"soft=\r\nbreak and trailing   \r\nnext\t \r\nend  ",
            b"lf only=\nbreak  \nx",
            b"= \r\nspace after equals",
            b"=4\r\n1 hex split by a line",
            b"a =20\r\n",
            b"bad =ZZ",
            b"bad ==",
            b"\x0c\x0b\r\n",
        ];
        for raw in samples {
            for piece in [1, 2, 3, 5, 64] {
                assert_eq!(
                    decode(Decoding::QpStrict, raw, piece),
                    quoted_printable_decode(raw),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
    }

    #[test]
    fn mime_decoders_give_the_same_bytes_at_every_piece_size() {
        let samples: &[(Decoding, &[u8])] = &[
            (Decoding::Base64Mime, b"SGVs\r\nbG8s\r\nIHdv\r\ncmxk\r\nIQ"),
            (Decoding::Base64Mime, b"QUJD-REVG\tR0g=\r\nA="),
            (
                Decoding::QpMime,
                b"soft=\r\nbreak  \r\nbad =ZZ =4\r\n1 =\tx\r\nend  ",
            ),
            (Decoding::QpMime, b"lf=\nonly =3D=\n\n"),
        ];
        for &(decoding, raw) in samples {
            let whole = decode(decoding, raw, raw.len()).unwrap();
            for piece in 1..8 {
                assert_eq!(decode(decoding, raw, piece).unwrap(), whole, "{decoding:?}");
            }
        }
        assert!(decode(Decoding::Base64Mime, b"AB--CD", 3).is_none());
        assert!(decode(Decoding::QpMime, b"a==", 1).is_none());
    }

    #[test]
    fn the_header_section_is_read_alone() {
        let message = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n\r\nmore";
        let origin = Origin::Memory(message);
        assert_eq!(
            origin.header_section(1 << 20).unwrap(),
            b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\n"
        );
        assert_eq!(origin.header_section(5).unwrap(), b"Subje");
    }

    #[test]
    fn chunks_resume_from_any_offset() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let mut encoded = Vec::new();
        for line in base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data)
            .as_bytes()
            .chunks(57)
        {
            encoded.extend_from_slice(line);
            encoded.extend_from_slice(b"\r\n");
        }
        let body = Body {
            start: 0,
            end: encoded.len() as u64,
            decoding: Decoding::Base64Mime,
            at_line_break: false,
        };
        let origin = Origin::Memory(&encoded);
        assert_eq!(body.decoded_len(&origin).unwrap(), data.len());
        assert_eq!(body.decode(&origin).unwrap(), data);
        let mut chunks = Chunks::new(origin, body, data.len());
        for (start, end) in [
            (0, 4096),
            (4096, 8192),
            (1000, 3000),
            (8192, 10_000),
            (0, 7),
        ] {
            assert_eq!(chunks.read(start, end).unwrap(), data[start..end]);
        }
        assert!(chunks.read(9_999, 10_001).is_err());
    }
}
