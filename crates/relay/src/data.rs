//! The end of DATA and dot-unstuffing, with bare LFs.
//!
//! smtp-proto's `DataReceiver` ends DATA only at `<CRLF>.<CRLF>`, so a
//! device ending its message with `<LF>.<LF>` or `<LF>.<CRLF>` waits for
//! the DATA timeout. [`DotReader`] ends DATA at a line holding only `.`,
//! whether the lines end in CRLF or a bare LF, as Postfix does for the
//! clients in its `smtpd_forbid_bare_newline_exclusions` (by default
//! `$mynetworks`, the LAN devices a relay serves) and did for every client
//! before 3.9. Nothing here can smuggle a message: what follows the dot is
//! the same client's next command, and the message goes to an HTTPS API,
//! not to another SMTP server. The message's bytes, bare LFs and bare CRs
//! included, are kept as they came, except the leading dot of each line
//! (RFC 5321 §4.5.2).

/// Where the reader is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line (after LF, or the DATA command's own line).
    LineStart,
    /// Inside a line.
    Middle,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
}

/// Reads DATA content up to the final dot.
#[derive(Debug)]
pub(super) struct DotReader {
    at: At,
}

impl DotReader {
    pub(super) fn new() -> Self {
        DotReader { at: At::LineStart }
    }

    /// Moves the content in `bytes` into `sink`, un-stuffed, and stops
    /// right after the final dot's line (`true`), or at the end of `bytes`
    /// (`false`, more to come). The final line's ending stays in `sink`, so
    /// `a<CRLF>.<CRLF>` gives `a<CRLF>` and `a<LF>.<LF>` gives `a<LF>`.
    pub(super) fn ingest(
        &mut self,
        bytes: &mut std::slice::Iter<'_, u8>,
        sink: &mut Vec<u8>,
    ) -> bool {
        for &byte in bytes.by_ref() {
            self.at = match (self.at, byte) {
                (At::LineStart, b'.') => At::Dot,
                (At::Dot | At::DotCr, b'\n') => {
                    self.at = At::LineStart;
                    return true;
                }
                (At::Dot, b'\r') => At::DotCr,
                // `.` then more: the leading dot was stuffing.
                (At::DotCr, other) => {
                    sink.extend_from_slice(&[b'\r', other]);
                    At::Middle
                }
                (_, b'\n') => {
                    sink.push(b'\n');
                    At::LineStart
                }
                (_, other) => {
                    sink.push(other);
                    At::Middle
                }
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `input` in pieces of `sizes` (cycled); the content and what
    /// was left after the final dot, if it came.
    fn read(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut reader = DotReader::new();
        let mut sink = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            let end = (at + size.max(&1)).min(input.len());
            let mut piece = input[at..end].iter();
            if reader.ingest(&mut piece, &mut sink) {
                let used = end - piece.as_slice().len();
                return (sink, Some(input[used..].to_vec()));
            }
            at = end;
            if at == input.len() {
                break;
            }
        }
        (sink, None)
    }

    /// What an SMTP client sends for `body`: a dot doubled at each line
    /// start.
    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for &b in body {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        out
    }

    #[test]
    fn every_final_dot_ending_ends_data() {
        for end in [&b".\r\n"[..], b".\n"] {
            for body in [&b"a\r\nb\r\n"[..], b"a\nb\n", b"a\r\nb\n", b""] {
                let input = [body, end, b"QUIT\r\n"].concat();
                let (content, rest) = read(&input, &[input.len()]);
                assert_eq!(content, body, "{:?}", String::from_utf8_lossy(&input));
                assert_eq!(rest.as_deref(), Some(&b"QUIT\r\n"[..]));
            }
        }
    }

    #[test]
    fn stuffed_dots_and_lone_dots_inside_lines() {
        let (content, rest) = read(b"..leading\r\n...\r\nmid . dot\n.\rx\n.\r\n", &[1]);
        assert_eq!(content, b".leading\r\n..\r\nmid . dot\n\rx\n");
        assert_eq!(rest.as_deref(), Some(&b""[..]));
        // No final dot yet: all of it is content so far.
        let (content, rest) = read(b"a\r\n.", &[2]);
        assert_eq!(content, b"a\r\n");
        assert_eq!(rest, None);
    }

    proptest! {
        /// Any body, stuffed, ended by any final dot, split anywhere: the
        /// body exactly, and the next command untouched.
        #[test]
        fn any_body_split_anywhere_comes_back_exactly(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')],
                0..64,
            ),
            ending in prop_oneof![
                Just(&b"\r\n.\r\n"[..]),
                Just(&b"\n.\n"[..]),
                Just(&b"\n.\r\n"[..]),
                Just(&b"\r\n.\n"[..]),
            ],
            sizes in proptest::collection::vec(1usize..8, 1..6),
        ) {
            let mut input = stuffed(&body);
            input.extend_from_slice(ending);
            input.extend_from_slice(b"NOOP\r\n");
            let (content, rest) = read(&input, &sizes);
            let newline = &ending[..ending.len() - if ending.ends_with(b"\r\n") { 3 } else { 2 }];
            prop_assert_eq!(content, [&body[..], newline].concat());
            prop_assert_eq!(rest, Some(b"NOOP\r\n".to_vec()));
        }
    }
}
