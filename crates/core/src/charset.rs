//! Character sets for text parts and encoded-words.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encoding_rs::ISO_2022_JP;

/// The character set used for text bodies and RFC 2047 encoded-words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// UTF-8 (the default).
    #[default]
    Utf8,
    /// ISO-2022-JP, 7-bit, as Japanese legacy systems expect.
    Iso2022Jp,
}

impl Charset {
    /// The MIME name, as written in `charset=` and encoded-words.
    pub fn mime_name(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::Iso2022Jp => "iso-2022-jp",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime_name())
    }
}

impl FromStr for Charset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Charset::Utf8),
            "iso-2022-jp" | "iso2022jp" => Ok(Charset::Iso2022Jp),
            _ => Err(format!(
                "unsupported charset `{s}`; use `utf-8` or `iso-2022-jp`"
            )),
        }
    }
}

/// A character the chosen charset cannot represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unrepresentable(pub(crate) char);

/// Encodes `text` as ISO-2022-JP, refusing anything that would not decode
/// back to the same text (encoding_rs would silently turn half-width
/// katakana into full-width, for example).
pub(crate) fn encode_iso_2022_jp(text: &str) -> Result<Vec<u8>, Unrepresentable> {
    let (bytes, _, had_errors) = ISO_2022_JP.encode(text);
    let (decoded, _) = ISO_2022_JP.decode_without_bom_handling(&bytes);
    if !had_errors && decoded == text {
        return Ok(bytes.into_owned());
    }
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let one: &str = c.encode_utf8(&mut buf);
        let (bytes, _, had_errors) = ISO_2022_JP.encode(one);
        let (decoded, _) = ISO_2022_JP.decode_without_bom_handling(&bytes);
        if had_errors || decoded != one {
            return Err(Unrepresentable(c));
        }
    }
    // Every character round-trips alone; the whole must too.
    Ok(bytes.into_owned())
}

/// Header text for the ISO-2022-JP path: kept as it is when it is short,
/// printable ASCII, otherwise written as encoded-words.
pub(crate) fn iso_2022_jp_text(text: &str) -> Result<String, Unrepresentable> {
    let plain = text.chars().all(|c| (' '..='~').contains(&c))
        && !text.contains("=?")
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && text.split(' ').all(|word| word.len() <= 75);
    if plain {
        return Ok(text.to_owned());
    }
    iso_2022_jp_words(text)
}

/// Writes `text` as a run of `=?ISO-2022-JP?B?...?=` encoded-words, each at
/// most 75 characters and each a complete ISO-2022-JP sequence, separated by
/// spaces so the header folder can break between them.
pub(crate) fn iso_2022_jp_words(text: &str) -> Result<String, Unrepresentable> {
    // 75 - len("=?ISO-2022-JP?B??=") = 57 base64 chars = at most 42 bytes.
    const MAX_BYTES: usize = 42;
    let mut words: Vec<String> = Vec::new();
    let mut chunk = String::new();
    let mut chunk_bytes: Vec<u8> = Vec::new();
    for c in text.chars() {
        let mut candidate = chunk.clone();
        candidate.push(c);
        let bytes = encode_iso_2022_jp(&candidate)?;
        if bytes.len() > MAX_BYTES && !chunk.is_empty() {
            words.push(encoded_word(&chunk_bytes));
            chunk.clear();
            chunk.push(c);
            chunk_bytes = encode_iso_2022_jp(&chunk)?;
        } else {
            chunk = candidate;
            chunk_bytes = bytes;
        }
    }
    if !chunk.is_empty() {
        words.push(encoded_word(&chunk_bytes));
    }
    Ok(words.join(" "))
}

fn encoded_word(bytes: &[u8]) -> String {
    format!("=?ISO-2022-JP?B?{}?=", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_2022_jp_encodes_japanese_and_ends_in_ascii() {
        let bytes = encode_iso_2022_jp("日本語").unwrap();
        assert_eq!(bytes, b"\x1b$BF|K\\8l\x1b(B");
    }

    #[test]
    fn iso_2022_jp_refuses_what_it_cannot_hold() {
        assert_eq!(encode_iso_2022_jp("caf\u{e9}"), Err(Unrepresentable('é')));
        // Half-width katakana would silently become full-width.
        assert_eq!(
            encode_iso_2022_jp("\u{ff71}"),
            Err(Unrepresentable('\u{ff71}'))
        );
        assert_eq!(encode_iso_2022_jp("😀"), Err(Unrepresentable('😀')));
    }

    #[test]
    fn encoded_words_are_short_and_self_contained() {
        let text = "長い件名です。".repeat(10);
        let words = iso_2022_jp_words(&text).unwrap();
        let mut decoded = String::new();
        for word in words.split(' ') {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?ISO-2022-JP?B?")
                .unwrap()
                .strip_suffix("?=")
                .unwrap();
            let bytes = STANDARD.decode(b64).unwrap();
            assert!(bytes.ends_with(b"\x1b(B"), "each word returns to ASCII");
            decoded.push_str(&ISO_2022_JP.decode_without_bom_handling(&bytes).0);
        }
        assert_eq!(decoded, text);
        assert_eq!(iso_2022_jp_text("plain ascii").unwrap(), "plain ascii");
        assert!(
            iso_2022_jp_text(&"x".repeat(80))
                .unwrap()
                .starts_with("=?ISO-2022-JP?B?")
        );
    }
}
