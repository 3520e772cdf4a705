//! Compose, parse back with mail-parser, compare field by field.

use apimail_core::{Attachment, Charset, ComposeError, MessageBuilder, ReadyMessage};
use mail_parser::{MessageParser, MimeHeaders};

use crate::support::{assert_wire_clean, mailbox, pinned};

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<(Option<String>, String)> {
    list.map(|l| {
        l.iter()
            .map(|a| {
                (
                    a.name().map(str::to_owned),
                    a.address().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn full_message(charset: Charset) -> MessageBuilder {
    let long_line = "長".repeat(10) + &"x".repeat(2000);
    pinned()
        .charset(charset)
        .from(mailbox("山田 太郎 <taro@example.jp>"))
        .to(mailbox("佐藤 花子 <hanako@example.jp>"))
        .to(mailbox("\"Doe, Jane\" <jane@example.com>"))
        .cc(mailbox("cc@example.com"))
        .bcc(mailbox("secret@example.com"))
        .subject("月次報告書の送付について（第3四半期）")
        .text(format!("本文です。\n{long_line}\n"))
        .html(format!(
            "<p>本文です。</p><img src=\"cid:logo.png\"><p>{long_line}</p>\n"
        ))
        .inline(Attachment::new(
            "logo.png",
            vec![0x89, b'P', b'N', b'G', 0, 255],
        ))
        .attach(Attachment::new("報告書.pdf", b"%PDF-1.4\x00\xff".to_vec()))
        .attach(Attachment::new("data.csv", b"a,b\r\n1,2\r\n".to_vec()))
}

fn check_full(charset: Charset) {
    let message = full_message(charset).build().unwrap();
    assert_wire_clean(&message);
    let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();

    assert_eq!(
        addresses(parsed.from()),
        [(Some("山田 太郎".into()), "taro@example.jp".into())]
    );
    assert_eq!(
        addresses(parsed.to()),
        [
            (Some("佐藤 花子".into()), "hanako@example.jp".into()),
            (Some("Doe, Jane".into()), "jane@example.com".into())
        ]
    );
    assert_eq!(addresses(parsed.cc()), [(None, "cc@example.com".into())]);
    assert_eq!(
        addresses(parsed.bcc()),
        [(None, "secret@example.com".into())]
    );
    assert_eq!(
        parsed.subject(),
        Some("月次報告書の送付について（第3四半期）")
    );
    assert_eq!(parsed.message_id(), Some("pinned.1@example.com"));

    let long_line = "長".repeat(10) + &"x".repeat(2000);
    let text = parsed.body_text(0).unwrap();
    assert_eq!(
        text.replace("\r\n", "\n"),
        format!("本文です。\n{long_line}\n")
    );
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains(&long_line), "html body intact");

    let attachments: Vec<_> = parsed
        .attachments()
        .map(|a| {
            (
                a.attachment_name().map(str::to_owned),
                a.content_id().map(str::to_owned),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        attachments,
        [
            (
                Some("logo.png".into()),
                Some("logo.png".into()),
                vec![0x89, b'P', b'N', b'G', 0, 255]
            ),
            (
                Some("報告書.pdf".into()),
                None,
                b"%PDF-1.4\x00\xff".to_vec()
            ),
            (Some("data.csv".into()), None, b"a,b\r\n1,2\r\n".to_vec()),
        ]
    );
    let raw = String::from_utf8_lossy(message.as_bytes());
    assert!(
        raw.contains("multipart/related"),
        "inline image makes multipart/related"
    );
    assert!(raw.contains("multipart/alternative"));
    assert!(
        raw.contains("Content-Transfer-Encoding: quoted-printable")
            || raw.contains("Content-Transfer-Encoding: base64")
    );
}

#[test]
fn utf8_full_message_round_trips() {
    check_full(Charset::Utf8);
}

#[test]
fn iso_2022_jp_full_message_round_trips() {
    check_full(Charset::Iso2022Jp);
    let message = full_message(Charset::Iso2022Jp).build().unwrap();
    let raw = message.as_bytes();
    let non_ascii: Vec<_> = String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| !l.is_ascii())
        .map(str::to_owned)
        .collect();
    assert!(
        non_ascii.is_empty(),
        "ISO-2022-JP output is 7-bit: {non_ascii:?}"
    );
    let raw = String::from_utf8_lossy(raw);
    assert!(raw.contains("charset=\"iso-2022-jp\""), "{raw}");
    assert!(raw.contains("=?ISO-2022-JP?B?"), "{raw}");
}

#[test]
fn long_ascii_line_goes_quoted_printable() {
    let message = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .text(format!("{}\n", "word ".repeat(400)))
        .build()
        .unwrap();
    assert_wire_clean(&message);
    let raw = String::from_utf8_lossy(message.as_bytes());
    assert!(
        raw.contains("Content-Transfer-Encoding: quoted-printable"),
        "{raw}"
    );
    for line in raw.lines() {
        assert!(line.len() <= 78, "line over 78: {line}");
    }
    let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap().replace("\r\n", "\n"),
        format!("{}\n", "word ".repeat(400))
    );
}

/// The transfer encoding of the part carrying `marker`, from the raw bytes.
fn encoding_of_part_with(message: &apimail_core::Message, marker: &str) -> String {
    let raw = String::from_utf8_lossy(message.as_bytes());
    let part = raw
        .split("--BOUNDARY_")
        .find(|part| part.contains(marker))
        .unwrap_or_else(|| panic!("no part with {marker}:\n{raw}"));
    part.lines()
        .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
        .unwrap_or_else(|| panic!("no encoding in {part}"))
        .to_owned()
}

#[test]
fn text_attachment_with_nul_goes_base64_when_that_is_shorter() {
    let data: Vec<u8> = (0..300u32)
        .map(|i| [0, 0xff, b'\r', 0x80][i as usize % 4])
        .collect();
    let message = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .text("t")
        .attach(Attachment::new("dump.txt", data.clone()))
        .build()
        .unwrap();
    assert_wire_clean(&message);
    assert_eq!(
        encoding_of_part_with(&message, "filename=\"dump.txt\""),
        "base64"
    );
    let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
    let attachment = parsed.attachments().next().unwrap();
    let expected = String::from_utf8_lossy(&data);
    assert_eq!(attachment.contents(), expected.as_bytes());
}

#[test]
fn inline_text_part_keeps_its_lone_line_feeds() {
    let css = b"p { color: red }\nh1 { margin: 0 }\n";
    let message = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .html("<link rel=stylesheet href=\"cid:style.css\"><p>hi</p>")
        .inline(Attachment::new("style.css", css.to_vec()))
        .build()
        .unwrap();
    assert_wire_clean(&message);
    assert_eq!(
        encoding_of_part_with(&message, "filename=\"style.css\""),
        "quoted-printable"
    );
    let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
    let part = parsed
        .parts
        .iter()
        .find(|p| p.attachment_name() == Some("style.css"))
        .unwrap();
    assert_eq!(part.contents(), css);
}

#[test]
fn typed_text_with_nul_is_encoded_and_keeps_crlf() {
    let message = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .text("a\0b\nc\rd\r\n")
        .build()
        .unwrap();
    assert_wire_clean(&message);
    assert!(!message.as_bytes().contains(&0));
    let parsed = MessageParser::new().parse(message.as_bytes()).unwrap();
    assert_eq!(parsed.body_text(0).unwrap(), "a\0b\r\nc\r\nd\r\n");
}

#[test]
fn bcc_stays_in_the_bytes_and_the_envelope() {
    let message = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("to@example.com"))
        .bcc(mailbox("hidden@example.com"))
        .text("x")
        .build()
        .unwrap();
    let raw = String::from_utf8_lossy(message.as_bytes());
    assert!(raw.contains("\r\nBcc: <hidden@example.com>\r\n"), "{raw}");
    let emails: Vec<_> = message
        .envelope()
        .recipients()
        .iter()
        .map(|m| m.email())
        .collect();
    assert_eq!(emails, ["to@example.com", "hidden@example.com"]);
}

#[test]
fn header_injection_is_refused_and_named() {
    let base = || {
        pinned()
            .from(mailbox("a@example.com"))
            .to(mailbox("b@example.com"))
    };
    let err = base()
        .subject("hi\r\nBcc: evil@example.com")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, ComposeError::LineBreak { header } if header == "Subject"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the Subject header contains a line break (CR or LF)"
    );

    let err = base().header("X-Tag", "a\nb").build().unwrap_err();
    assert!(
        matches!(&err, ComposeError::LineBreak { header } if header == "X-Tag"),
        "{err}"
    );
    let err = base().header("X Bad", "v").build().unwrap_err();
    assert!(matches!(err, ComposeError::HeaderName { .. }));
    let err = base().header("bcc", "x@example.com").build().unwrap_err();
    assert!(matches!(err, ComposeError::ReservedHeader { .. }));
    let err = base()
        .header("Content-Type", "text/html")
        .build()
        .unwrap_err();
    assert!(matches!(err, ComposeError::ReservedHeader { .. }));
    let err = base().in_reply_to("<a b@c>").build().unwrap_err();
    assert!(matches!(err, ComposeError::MessageId { .. }));
}

#[test]
fn unrepresentable_character_is_named() {
    let err = pinned()
        .charset(Charset::Iso2022Jp)
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .subject("café")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the subject contains `é` (U+00E9), which iso-2022-jp cannot represent"
    );
    let err = pinned()
        .charset(Charset::Iso2022Jp)
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .text("emoji 😀")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the text body contains `😀` (U+1F600)"),
        "{err}"
    );
}

#[test]
fn missing_parts_are_errors() {
    assert!(matches!(
        MessageBuilder::new().to(mailbox("b@example.com")).build(),
        Err(ComposeError::MissingFrom)
    ));
    assert!(matches!(
        MessageBuilder::new().from(mailbox("a@example.com")).build(),
        Err(ComposeError::NoRecipients)
    ));
    let err = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .inline(Attachment::new("x.png", vec![1]))
        .build()
        .unwrap_err();
    assert!(matches!(err, ComposeError::InlineWithoutHtml { .. }));
}

#[test]
fn generated_ids_are_unique_and_use_the_from_domain() {
    let build = || {
        MessageBuilder::new()
            .from(mailbox("a@bücher.example"))
            .to(mailbox("b@example.com"))
            .text("x")
            .build()
            .unwrap()
    };
    let (one, two) = (build(), build());
    assert_ne!(one.message_id(), two.message_id());
    assert!(
        one.message_id().ends_with("@xn--bcher-kva.example>"),
        "{}",
        one.message_id()
    );
    assert!(one.message_id().starts_with('<'));
}

#[test]
fn composed_message_parses_as_ready_made() {
    let message = full_message(Charset::Utf8).build().unwrap();
    let ready = ReadyMessage::parse(message.as_bytes().to_vec()).unwrap();
    assert_eq!(ready.from().map(|m| m.email()), Some("taro@example.jp"));
    assert_eq!(ready.recipients(), message.envelope().recipients());
    assert_eq!(ready.message_id(), Some(message.message_id()));
    assert!(ready.has_date());
}

#[test]
fn content_type_is_guessed_and_can_be_overridden() {
    assert_eq!(
        Attachment::new("a.pdf", vec![]).mime_type(),
        "application/pdf"
    );
    assert_eq!(
        Attachment::new("noext", vec![]).mime_type(),
        "application/octet-stream"
    );
    let a = Attachment::new("a.bin", vec![])
        .content_type("Application/X-Custom")
        .unwrap();
    assert_eq!(a.mime_type(), "application/x-custom");
    assert!(matches!(
        Attachment::new("a", vec![]).content_type("not a type"),
        Err(ComposeError::ContentType { .. })
    ));
    let missing = Attachment::from_path("/nonexistent/file.pdf").unwrap_err();
    assert!(matches!(missing, ComposeError::Attachment { .. }));
}
