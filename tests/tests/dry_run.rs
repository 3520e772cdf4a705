//! `apimail send --dry-run`, end to end: the real binary, its bytes checked
//! by Python's strict email parser and by mail-parser.

use std::path::Path;

use apimail_tests::{apimail, python_parse, run, shell_words};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::json;

/// The README's main command, taken from the README itself so the two
/// cannot drift apart.
fn readme_main_command() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("-- send --dry-run"))
        .expect("the README shows `cargo run ... -- send --dry-run ...`");
    let args = line.split_once(" -- ").unwrap().1;
    shell_words(args)
}

#[test]
fn readme_main_command_prints_a_valid_message() {
    let args = readme_main_command();
    let out = run(apimail().args(&args));
    assert_eq!(out.code, 0, "{}", out.stderr);

    let fields = python_parse(&out.stdout);
    assert_eq!(fields["from"], json!([["Ann Example", "ann@example.com"]]));
    assert_eq!(fields["to"], json!([[null, "bob@example.com"]]));
    assert_eq!(fields["subject"], "Hello from apimail");
    assert_eq!(fields["text"], "It works.");

    let parsed = MessageParser::new().parse(&out.stdout).unwrap();
    assert_eq!(parsed.subject(), Some("Hello from apimail"));
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Ann Example")
    );
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("bob@example.com")
    );
    assert_eq!(parsed.body_text(0).as_deref(), Some("It works."));
}

fn full_message(charset: &str) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0];
    std::fs::write(dir.path().join("logo.png"), png).unwrap();
    std::fs::write(
        dir.path().join("報告書.pdf"),
        b"%PDF-1.4\n\xe2\xe3\xcf\xd3 fake",
    )
    .unwrap();
    std::fs::write(dir.path().join("数値.csv"), "月,件数\n1,2\n").unwrap();
    std::fs::write(
        dir.path().join("body.html"),
        "<p>月次報告です。</p><img src=\"cid:logo.png\">\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("body.txt"),
        format!("月次報告です。\n{}\n", "x".repeat(2000)),
    )
    .unwrap();
    let out_path = dir.path().join("out.eml");
    let out = run(apimail()
        .current_dir(dir.path())
        .args(["send", "--dry-run", "--charset", charset])
        .args([
            "--from",
            "山田 太郎 <taro@example.jp>",
            "--to",
            "佐藤 花子 <hanako@example.jp>",
        ])
        .args(["--cc", "cc@example.com", "--bcc", "audit@example.com"])
        .args(["--subject", "月次報告書の送付について"])
        .args([
            "--text-file",
            "body.txt",
            "--html-file",
            "body.html",
            "--inline",
            "logo.png",
        ])
        .args([
            "--attach",
            "報告書.pdf",
            "--attach",
            "数値.csv;type=text/csv",
        ])
        .arg("--output")
        .arg(&out_path));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "--output keeps stdout clean");
    assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
    let bytes = std::fs::read(&out_path).unwrap();
    (dir, bytes)
}

fn check_full_message(charset: &str) {
    let (_dir, bytes) = full_message(charset);
    for line in bytes.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line over 998 octets");
    }

    let fields = python_parse(&bytes);
    assert_eq!(fields["from"], json!([["山田 太郎", "taro@example.jp"]]));
    assert_eq!(fields["to"], json!([["佐藤 花子", "hanako@example.jp"]]));
    assert_eq!(fields["cc"], json!([[null, "cc@example.com"]]));
    assert_eq!(
        fields["bcc"],
        json!([[null, "audit@example.com"]]),
        "Bcc stays for the provider"
    );
    assert_eq!(fields["subject"], "月次報告書の送付について");
    assert_eq!(
        fields["text"],
        format!("月次報告です。\n{}\n", "x".repeat(2000))
    );
    assert_eq!(
        fields["html"],
        "<p>月次報告です。</p><img src=\"cid:logo.png\">\n"
    );
    let attachments = fields["attachments"].as_array().unwrap();
    let summary: Vec<_> = attachments
        .iter()
        .map(|a| {
            (
                a["filename"].clone(),
                a["content_type"].clone(),
                a["content_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("logo.png"), json!("image/png"), json!("<logo.png>")),
            (json!("報告書.pdf"), json!("application/pdf"), json!(null)),
            (json!("数値.csv"), json!("text/csv"), json!(null)),
        ]
    );

    let parsed = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(parsed.subject(), Some("月次報告書の送付について"));
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("山田 太郎")
    );
    assert_eq!(
        parsed.bcc().unwrap().first().unwrap().address(),
        Some("audit@example.com")
    );
    assert_eq!(
        parsed.body_text(0).unwrap().replace("\r\n", "\n"),
        format!("月次報告です。\n{}\n", "x".repeat(2000))
    );
    let names: Vec<_> = parsed
        .attachments()
        .map(|a| a.attachment_name().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["logo.png", "報告書.pdf", "数値.csv"]);
    let pdf = parsed.attachments().nth(1).unwrap();
    assert_eq!(pdf.contents(), b"%PDF-1.4\n\xe2\xe3\xcf\xd3 fake");
}

#[test]
fn japanese_html_inline_attachments_utf8() {
    check_full_message("utf-8");
}

#[test]
fn japanese_html_inline_attachments_iso_2022_jp() {
    check_full_message("iso-2022-jp");
    let (_dir, bytes) = full_message("iso-2022-jp");
    assert!(bytes.is_ascii(), "ISO-2022-JP messages are 7-bit");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("charset=\"iso-2022-jp\""));
    assert!(text.contains("Subject: =?ISO-2022-JP?B?"));
}

/// Issue 15: an old Mac text file (lone CRs) with a NUL is attached as
/// text/plain and must arrive exactly as it is on disk.
#[test]
fn old_mac_text_attachment_arrives_byte_exact() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let data = b"line one\rline two\0tail\r";
    std::fs::write(dir.path().join("oldmac.txt"), data).unwrap();
    let out = run(apimail()
        .current_dir(dir.path())
        .args(["send", "--dry-run", "--from", "a@example.com"])
        .args(["--to", "b@example.com", "--subject", "s", "--text", "t"])
        .args(["--attach", "oldmac.txt"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bytes = &out.stdout;
    assert!(!bytes.contains(&0), "NUL on the wire");
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }

    let fields = python_parse(bytes);
    let attachment = &fields["attachments"][0];
    assert_eq!(attachment["filename"], "oldmac.txt");
    assert_eq!(attachment["content_type"], "text/plain");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(attachment["data_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, data, "Python's email package decodes other bytes");

    let parsed = MessageParser::new().parse(bytes).unwrap();
    assert_eq!(parsed.attachments().next().unwrap().contents(), data);
}

/// Each case: exactly one `error:` line and one `hint:` line.
fn assert_one_line_error(out: &apimail_tests::Run, code: i32, needle: &str) {
    assert_eq!(out.code, code, "{}", out.stderr);
    let lines: Vec<_> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{}",
        out.stderr
    );
    assert!(lines[1].starts_with("hint: "), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

fn base() -> std::process::Command {
    let mut command = apimail();
    command.args([
        "send",
        "--dry-run",
        "--from",
        "a@example.com",
        "--text",
        "x",
    ]);
    command
}

#[test]
fn subject_with_line_break_is_refused() {
    let out = run(base().args([
        "--to",
        "b@example.com",
        "--subject",
        "hi\r\nBcc: victim@example.com",
    ]));
    assert_one_line_error(&out, 65, "Subject");
}

#[test]
fn invalid_address_is_named() {
    let out = run(base().args(["--to", "bob(at)example.com"]));
    assert_one_line_error(&out, 65, "`bob(at)example.com`");
}

#[test]
fn missing_attachment_is_named() {
    let out = run(base().args(["--to", "b@example.com", "--attach", "no-such-file.pdf"]));
    assert_one_line_error(&out, 66, "no-such-file.pdf");
}

#[test]
fn unrepresentable_character_names_it() {
    let out = run(base().args([
        "--to",
        "b@example.com",
        "--charset",
        "iso-2022-jp",
        "--subject",
        "naïve",
    ]));
    assert_one_line_error(&out, 65, "U+00EF");
}

#[test]
fn usage_errors_exit_64() {
    let out = run(apimail().args(["send", "--dry-run", "--to", "b@example.com"]));
    assert_eq!(out.code, 64, "missing --from: {}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    let out = run(apimail().arg("no-such-command"));
    assert_eq!(out.code, 64);
    let out = run(&mut base());
    assert_eq!(out.code, 64, "no recipient: {}", out.stderr);
    let out = run(base().args(["--to", "b@example.com", "--header", "Subject: x"]));
    assert_eq!(out.code, 64, "reserved header: {}", out.stderr);
}

#[test]
fn sending_without_a_provider_says_so() {
    let out = run(apimail().args([
        "send",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--text",
        "x",
    ]));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing pretends to send");
}

#[test]
fn body_comes_from_stdin() {
    use std::io::Write;
    let mut child = apimail()
        .args([
            "send",
            "--dry-run",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--subject",
            "df",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("Filesystem  Use%\n/dev/sda1   93%\n".as_bytes())
        .unwrap();
    let out: apimail_tests::Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        python_parse(&out.stdout)["text"],
        "Filesystem  Use%\n/dev/sda1   93%\n"
    );
}

#[test]
fn pinned_date_and_message_id_reproduce_bytes() {
    let once = || {
        run(base()
            .env("SOURCE_DATE_EPOCH", "1767225600")
            .args([
                "--to",
                "b@example.com",
                "--message-id",
                "<fixed.1@example.com>",
            ])
            .args([
                "--attach",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dry_run.rs"),
            ]))
    };
    let (one, two) = (once(), once());
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(one.stdout, two.stdout);
    let text = String::from_utf8(one.stdout).unwrap();
    assert!(
        text.contains("Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <fixed.1@example.com>\r\n"),
        "{text}"
    );
}

#[test]
fn every_command_has_help_with_examples() {
    let out = run(apimail().arg("--help"));
    assert_eq!(out.code, 0);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Examples:"), "{help}");
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A wrapped description continues deeper indented.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"send"), "{commands:?}");
    for command in commands {
        let out = run(apimail().args([command, "--help"]));
        assert_eq!(out.code, 0);
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(
            help.contains("Examples:"),
            "`apimail {command} --help` has no examples"
        );
    }
}
