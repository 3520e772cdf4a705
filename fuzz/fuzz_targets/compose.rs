//! Arbitrary builder input: composing never panics, and whatever it
//! accepts is clean on the wire and parses back.
#![no_main]

use apimail_core::{Attachment, Charset, Mailbox, MessageBuilder};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    from: String,
    to: Vec<String>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    headers: Vec<(String, String)>,
    attachments: Vec<(String, Vec<u8>)>,
    iso_2022_jp: bool,
}

fuzz_target!(|input: Input| {
    let Ok(from) = input.from.parse::<Mailbox>() else {
        return;
    };
    let mut builder = MessageBuilder::new()
        .from(from)
        .subject(input.subject.clone())
        .date(0)
        .charset(if input.iso_2022_jp {
            Charset::Iso2022Jp
        } else {
            Charset::Utf8
        });
    for to in &input.to {
        if let Ok(to) = to.parse::<Mailbox>() {
            builder = builder.to(to);
        }
    }
    if let Some(text) = input.text {
        builder = builder.text(text);
    }
    if let Some(html) = input.html {
        builder = builder.html(html);
    }
    for (name, value) in input.headers {
        builder = builder.header(name, value);
    }
    for (name, data) in input.attachments {
        builder = builder.attach(Attachment::new(name, data));
    }
    let Ok(message) = builder.build() else { return };
    let bytes = message.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF"),
            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR"),
            _ => {}
        }
    }
    assert!(
        bytes.split(|&b| b == b'\n').all(|line| line.len() <= 999),
        "line over 998"
    );
    assert!(!bytes.contains(&0), "NUL on the wire");
    assert!(mail_parser::MessageParser::new().parse(bytes).is_some());
});
