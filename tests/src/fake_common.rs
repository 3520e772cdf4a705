//! What the fake Google and fake Microsoft servers share: lenient base64,
//! message header reading, DER/PEM reading, random ids and clock helpers.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{self, GeneralPurpose, GeneralPurposeConfig};

/// Base64url that accepts input with or without `=` padding.
pub const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 that accepts input with or without `=` padding.
pub const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The DER of the first PEM block labelled `label` (e.g. `CERTIFICATE`).
pub fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    general_purpose::STANDARD.decode(body).ok()
}

/// Splits one DER element off `input`: (tag, contents, rest).
pub fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len_byte, mut rest) = rest.split_first()?;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        len_bytes
            .iter()
            .fold(0, |len, &b| (len << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The unfolded fields of a message's header section.
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let head_end = [text.find("\r\n\r\n"), text.find("\n\n")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(text.len());
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text[..head_end].lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.to_owned()));
        }
    }
    fields
}

/// The first `name` field of a message's header, trimmed.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    header_fields(raw)
        .into_iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// Whether the message's header section has a non-empty To, Cc or Bcc.
pub fn has_recipient(raw: &[u8]) -> bool {
    header_fields(raw).iter().any(|(name, value)| {
        matches!(name.as_str(), "to" | "cc" | "bcc") && !value.trim().is_empty()
    })
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0; len];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    buf
}

pub fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random version 4 UUID.
pub fn uuid() -> String {
    let mut bytes = random_bytes(16);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn utc(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-21T10:00:00Z`.
pub fn iso_time(secs: i64) -> String {
    let format = time::format_description::well_known::Rfc3339;
    utc(secs).format(&format).unwrap_or_default()
}

/// The copy `address` receives of a delivered message, as Gmail and
/// Exchange Online deliver: only if the To, Cc or Bcc field names it, and
/// never with the Bcc field (only the sender's Sent copy keeps it).
pub fn copy_for(raw: &[u8], address: &str) -> Option<Vec<u8>> {
    let address = address.to_ascii_lowercase();
    let named = header_fields(raw).iter().any(|(name, value)| {
        matches!(name.as_str(), "to" | "cc" | "bcc")
            && value
                .to_ascii_lowercase()
                .split([',', '<', '>', ' ', '\t', '"'])
                .any(|word| word == address)
    });
    if !named {
        return None;
    }
    let mut copy = Vec::with_capacity(raw.len());
    let mut in_head = true;
    let mut dropping = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if in_head && (line == b"\r\n" || line == b"\n") {
            in_head = false;
        }
        if in_head {
            let continued = line.starts_with(b" ") || line.starts_with(b"\t");
            if !continued {
                dropping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
            }
            if dropping {
                continue;
            }
        }
        copy.extend_from_slice(line);
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_795_255_200), "2026-11-21T10:00:00Z");
    }
}
