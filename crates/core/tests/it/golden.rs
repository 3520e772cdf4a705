use std::path::PathBuf;

use apimail_core::{Attachment, Charset, MessageBuilder};

use crate::support::{mailbox, pinned};

fn check(name: &str, builder: MessageBuilder) {
    let message = builder.build().unwrap();
    crate::support::assert_wire_clean(&message);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.eml"));
    if std::env::var_os("APIMAIL_BLESS").is_some() {
        std::fs::write(&path, message.as_bytes()).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with APIMAIL_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != message.as_bytes() {
        panic!(
            "{name}.eml differs from the composer's output\n--- expected\n{}\n--- actual\n{}\n(run with APIMAIL_BLESS=1 if the change is intended)",
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(message.as_bytes())
        );
    }
}

#[test]
fn plain_text() {
    check(
        "plain_text",
        pinned()
            .from(mailbox("Ann Example <ann@example.com>"))
            .to(mailbox("bob@example.com"))
            .subject("Status report")
            .text("All systems nominal.\n"),
    );
}

#[test]
fn every_header() {
    check(
        "every_header",
        pinned()
            .from(mailbox("\"Example, Ann\" <ann@example.com>"))
            .sender(mailbox("robot@example.com"))
            .to(mailbox("bob@example.com"))
            .to(mailbox("Carol <carol@example.org>"))
            .cc(mailbox("dave@example.net"))
            .bcc(mailbox("hidden@example.com"))
            .reply_to(mailbox("replies@example.com"))
            .subject("Re: plans")
            .in_reply_to("<orig.1@example.com>")
            .references("<root.1@example.com> <orig.1@example.com>")
            .header("X-Mailer", "apimail")
            .header("X-Priority", "1")
            .text("Agreed.\n"),
    );
}

#[test]
fn japanese_utf8_with_long_line_html_inline_and_attachments() {
    check(
        "japanese_utf8_full",
        pinned()
            .from(mailbox("山田 太郎 <taro@example.jp>"))
            .to(mailbox("佐藤 花子 <hanako@example.jp>"))
            .subject("月次報告書の送付について")
            .text(format!("添付をご確認ください。\n{}\n", "x".repeat(2000)))
            .html("<p>添付をご確認ください。</p><img src=\"cid:logo.png\">\n")
            .inline(Attachment::new(
                "logo.png",
                vec![0x89, b'P', b'N', b'G', 0, 1, 2],
            ))
            .attach(Attachment::new("報告書.pdf", b"%PDF-1.4 fake".to_vec()))
            .attach(Attachment::new("data.csv", b"a,b\n1,2\n".to_vec())),
    );
}

#[test]
fn iso_2022_jp() {
    check(
        "iso_2022_jp",
        pinned()
            .charset(Charset::Iso2022Jp)
            .from(mailbox("山田 太郎 <taro@example.jp>"))
            .to(mailbox("hanako@example.jp"))
            .subject("月次報告書の送付について")
            .text("添付をご確認ください。\nよろしくお願いします。\n")
            .attach(Attachment::new("報告書.txt", "本文".as_bytes().to_vec())),
    );
}

/// Issue 15: an old Mac text file (CR line ends) with a NUL went out as
/// 7bit with its bare CRs and NUL unencoded.
#[test]
fn old_mac_text_attachment() {
    let data = b"line one\rline two\0tail\r";
    let builder = pinned()
        .from(mailbox("a@example.com"))
        .to(mailbox("b@example.com"))
        .subject("s")
        .text("t")
        .attach(Attachment::new("oldmac.txt", data.to_vec()));
    check("oldmac", builder.clone());

    let message = builder.build().unwrap();
    let parsed = mail_parser::MessageParser::new()
        .parse(message.as_bytes())
        .unwrap();
    let attachment = parsed.attachments().next().unwrap();
    assert_eq!(attachment.contents(), data);
}

/// Files attached by path (read while the message is written, non-text
/// types streamed through the base64 encoder) give exactly the bytes of
/// the same files attached from memory, at sizes around the read chunk.
#[test]
fn files_attached_by_path_match_files_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    for len in [
        0,
        1,
        56,
        57,
        58,
        57 * 4096 - 1,
        57 * 4096,
        57 * 4096 + 1,
        700_001,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 253) as u8).collect();
        let bin = dir.path().join("data.bin");
        let text = dir.path().join("notes.txt");
        std::fs::write(&bin, &data).unwrap();
        std::fs::write(&text, b"line\nlone LF\r\n").unwrap();
        let message = |from_path: bool| {
            let attach = |path: &std::path::Path| {
                if from_path {
                    Attachment::from_path(path).unwrap()
                } else {
                    let name = path.file_name().unwrap().to_str().unwrap();
                    Attachment::new(name, std::fs::read(path).unwrap())
                }
            };
            pinned()
                .from(mailbox("ann@example.com"))
                .to(mailbox("bob@example.com"))
                .html("<img src=\"cid:data.bin\">")
                .inline(attach(&bin))
                .attach(attach(&bin))
                .attach(attach(&text))
                .build()
                .unwrap()
                .into_bytes()
        };
        assert!(message(true) == message(false), "{len} bytes");
    }
}

#[test]
fn a_file_that_goes_away_is_an_attachment_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.bin");
    std::fs::write(&path, b"soon gone").unwrap();
    let attachment = Attachment::from_path(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let error = pinned()
        .from(mailbox("ann@example.com"))
        .to(mailbox("bob@example.com"))
        .attach(attachment)
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, apimail_core::ComposeError::Attachment { path: p, .. } if *p == path),
        "{error:?}"
    );
}
