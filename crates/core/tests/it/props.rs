//! Arbitrary Unicode in subjects, display names and file names survives the
//! trip through the composer and mail-parser, and never yields an
//! over-long line or a bare CR or LF.

use apimail_core::{Attachment, Charset, Mailbox, MessageBuilder};
use mail_parser::{MessageParser, MimeHeaders};
use proptest::prelude::*;

use crate::support::{assert_wire_clean, pinned};

/// Any Unicode text without line breaks, with no leading or trailing
/// whitespace (header unfolding trims those, as RFC 5322 allows).
fn header_text() -> impl Strategy<Value = String> {
    "\\PC{0,200}".prop_map(|s| s.replace(['\r', '\n'], " ").trim().to_owned())
}

fn display_name() -> impl Strategy<Value = String> {
    "\\PC{1,80}".prop_map(|s| s.replace(['\r', '\n'], " ").trim().to_owned())
}

fn file_name() -> impl Strategy<Value = String> {
    "[^/\\\\\\x00-\\x1f\\x7f]{1,120}"
        .prop_map(|s| s.trim().to_owned())
        .prop_filter("non-empty", |s| !s.is_empty())
}

/// Hiragana, katakana, common kanji (all in JIS X 0208), ASCII and punctuation.
const JAPANESE: &str = "あいうえおかきくけこさしすせそたちつてとなにぬねのんアイウエオカキクケコ\
    ーッ日本語月次報告書送付添付確認本文件名会議資料東京大阪山田花子太郎今年度予算、。「」（）\
    abcXYZ019 -_.!?";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn unicode_round_trips(subject in header_text(), name in display_name(), file in file_name()) {
        let from = Mailbox::new(Some(&name), "from@example.com").unwrap();
        let message = pinned()
            .from(from)
            .to("to@example.com".parse().unwrap())
            .subject(subject.clone())
            .text("body\n")
            .attach(Attachment::new(file.clone(), b"data".to_vec()))
            .build()
            .unwrap();
        assert_wire_clean(&message);

        let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
        prop_assert_eq!(parsed.subject().unwrap_or(""), subject.as_str());
        let from = parsed.from().and_then(|f| f.first()).unwrap();
        let expected_name = (!name.is_empty()).then_some(name.as_str());
        prop_assert_eq!(from.name(), expected_name);
        prop_assert_eq!(from.address(), Some("from@example.com"));
        let attachment = parsed.attachments().next().unwrap();
        prop_assert_eq!(attachment.attachment_name(), Some(file.as_str()));
        prop_assert_eq!(attachment.contents(), b"data");
    }

    #[test]
    fn iso_2022_jp_round_trips_japanese(chars in proptest::collection::vec(proptest::sample::select(JAPANESE.chars().collect::<Vec<_>>()), 0..120)) {
        let subject = chars.into_iter().collect::<String>().trim().to_owned();
        let message = pinned()
            .charset(Charset::Iso2022Jp)
            .from("山田 <a@example.jp>".parse().unwrap())
            .to("b@example.jp".parse().unwrap())
            .subject(subject.clone())
            .text(format!("{subject}\n"))
            .build()
            .unwrap();
        assert_wire_clean(&message);
        prop_assert!(message.as_bytes().is_ascii());
        let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
        prop_assert_eq!(parsed.subject().unwrap_or(""), subject.as_str());
        prop_assert_eq!(parsed.body_text(0).unwrap().replace("\r\n", "\n"), format!("{subject}\n"));
    }

    #[test]
    fn text_bodies_never_break_the_wire(body in "\\PC{0,3000}|[\\x00\\r\\n a-z]{0,3000}") {
        let message = pinned()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .text(body.clone())
            .build()
            .unwrap();
        assert_wire_clean(&message);
        prop_assert!(!message.as_bytes().contains(&0), "a NUL byte on the wire");
        let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
        let crlf = body.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n");
        prop_assert_eq!(decoded_body(message.as_bytes(), &parsed.parts[0]), crlf.into_bytes());
    }
}

#[test]
fn plain_builder_still_works_without_pins() {
    let message = MessageBuilder::new()
        .from("a@example.com".parse().unwrap())
        .to("b@example.com".parse().unwrap())
        .build()
        .unwrap();
    assert_wire_clean(&message);
}

mod envelope {
    use std::collections::BTreeSet;

    use apimail_core::ReadyMessage;
    use apimail_core::aliases::Aliases;
    use apimail_core::recipients::{RecipientSource, plan_recipients};
    use mail_parser::{HeaderName, MessageParser};
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "root",
            "postmaster",
            "www-data",
            "default",
            "a@example.com",
            "B <b@example.com>",
            "c@example.net",
        ])
    }

    fn list() -> impl Strategy<Value = String> {
        prop::collection::vec(entry(), 0..4).prop_map(|l| l.join(", "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the aliases, headers and envelope, the edited To, Cc and
        /// Bcc (what the APIs read) name exactly the planned recipients, as
        /// full addresses, with at most one Bcc field.
        #[test]
        fn the_headers_name_exactly_the_recipients(
            aliases in prop::collection::btree_map(entry(), list().prop_filter("a target", |l| !l.is_empty()), 0..4),
            to in list(), cc in list(), bcc in list(), resent_to in prop::option::of(list()),
            envelope in prop::collection::vec(entry(), 0..3),
            with_headers in any::<bool>(),
        ) {
            let text: String = aliases
                .iter()
                .filter(|(name, _)| !name.contains('@'))
                .map(|(name, targets)| format!("{name}: {targets}\n"))
                .collect();
            // Mostly expandable: unknown names fall to `default:`.
            let text = if text.contains("default:") { text } else { text + "default: c@example.net\n" };
            let aliases = Aliases::parse(&text).unwrap();
            let mut raw = format!("To: {to}\nCc: {cc}\nBcc: {bcc}\nBcc: {bcc}\n");
            if let Some(resent) = resent_to {
                raw.push_str(&format!("Resent-To: {resent}\n"));
            }
            raw.push_str("Subject: s\n\nbody\n");
            let mut message = ReadyMessage::parse(raw.into_bytes()).unwrap();
            let source = if with_headers {
                RecipientSource::HeadersAndEnvelope
            } else {
                RecipientSource::Envelope
            };
            let Ok(plan) = plan_recipients(&message, &envelope, source, Some(&aliases)) else {
                return Ok(()); // a loop, or nobody
            };
            plan.apply(&mut message);
            let bytes = message.as_bytes();
            let parsed = MessageParser::new().parse_headers(bytes).unwrap();
            let mut in_headers = BTreeSet::new();
            for name in [HeaderName::To, HeaderName::Cc, HeaderName::Bcc] {
                for value in parsed.header_values(name) {
                    for addr in value.as_address().into_iter().flat_map(|a| a.iter()) {
                        let email = addr.address().unwrap_or_default();
                        prop_assert!(email.contains('@'), "{}", String::from_utf8_lossy(bytes));
                        in_headers.insert(email.to_owned());
                    }
                }
            }
            let planned: BTreeSet<String> =
                plan.recipients().iter().map(|m| m.email().to_owned()).collect();
            prop_assert_eq!(&in_headers, &planned, "{}", String::from_utf8_lossy(bytes));
            prop_assert!(parsed.header_values(HeaderName::Bcc).count() <= 1);
        }
    }
}

/// Bytes that test the transfer-encoding choice: any bytes, or text-like
/// bytes heavy in line breaks, NUL, `=`, white space and 8-bit bytes, or
/// one long line.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    let tricky = proptest::sample::select(b"ab =\t\r\n\x00\x1b\x7f\xff.-".to_vec());
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2000),
        proptest::collection::vec(tricky, 0..2000),
        "[a-z ]{900,1100}\\r?\\n?".prop_map(String::into_bytes),
    ]
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("text/plain".to_owned()),
        "text/[a-z0-9.+-]{1,20}",
        "(application|image|audio|video|font|model)/[a-z0-9.+-]{1,20}",
    ]
}

/// Any file name, control characters included.
fn any_file_name() -> impl Strategy<Value = String> {
    "(\\PC|[\\x00-\\x1f\\x7f]){1,80}"
}

#[derive(Debug, Clone)]
struct File {
    name: String,
    content_type: String,
    data: Vec<u8>,
    inline: bool,
}

fn file() -> impl Strategy<Value = File> {
    (any_file_name(), content_type(), file_bytes(), any::<bool>()).prop_map(
        |(name, content_type, data, inline)| File {
            name,
            content_type,
            data,
            inline,
        },
    )
}

/// A part's body as mail-parser's own decoders give it back, whatever the
/// part's type: mail-parser turns text parts into (lossy) UTF-8 strings,
/// so for them its `contents()` cannot show the bytes.
fn decoded_body(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use mail_parser::decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode};
    let body = &raw[part.raw_body_offset() as usize..part.raw_end_offset() as usize];
    match part.content_transfer_encoding() {
        Some(e) if e.eq_ignore_ascii_case("base64") => base64_decode(body).unwrap(),
        Some(e) if e.eq_ignore_ascii_case("quoted-printable") => {
            quoted_printable_decode(body).unwrap()
        }
        _ => body.to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Files arrive byte-exact and the message stays clean on the wire,
    /// whatever their bytes, types and names.
    #[test]
    fn files_arrive_byte_exact(files in proptest::collection::vec(file(), 1..4)) {
        let mut builder = pinned()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .text("see the files\n");
        if files.iter().any(|f| f.inline) {
            builder = builder.html("<p>see the files</p>\n");
        }
        for (i, f) in files.iter().enumerate() {
            let part = Attachment::new(f.name.clone(), f.data.clone())
                .content_type(&f.content_type)
                .unwrap();
            builder = if f.inline {
                builder.inline(part.content_id(format!("part{i}@example.com")))
            } else {
                builder.attach(part)
            };
        }
        let message = builder.build().unwrap();
        let bytes = message.as_bytes();
        assert_wire_clean(&message);
        prop_assert!(!bytes.contains(&0), "a NUL byte on the wire");

        let parsed = MessageParser::new().parse(bytes).unwrap();
        for (i, f) in files.iter().enumerate() {
            let id = format!("part{i}@example.com");
            let part = parsed
                .parts
                .iter()
                .filter(|p| p.attachment_name() == Some(f.name.as_str()))
                .find(|p| !f.inline || p.content_id() == Some(id.as_str()))
                .unwrap_or_else(|| panic!("no part named {:?}", f.name));
            let content_type = part.content_type().unwrap();
            prop_assert_eq!(
                format!("{}/{}", content_type.ctype(), content_type.subtype().unwrap_or("")),
                f.content_type.clone()
            );
            prop_assert_eq!(decoded_body(bytes, part), f.data.clone());
            if !f.content_type.starts_with("text/") || std::str::from_utf8(&f.data).is_ok() {
                prop_assert_eq!(part.contents(), f.data.as_slice());
            }
        }
    }
}
