//! `apimail merge` end to end against the fake Gmail: CP932 and UTF-8
//! data, xlsx, ISO-2022-JP, checks that name the row, the dry run, and
//! runs cut short by a kill or a Ctrl-C, then run again.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use apimail_tests::fake_google::{FakeGoogle, Fault};
use apimail_tests::fake_microsoft::{FakeMicrosoft, Fault as GraphFault};
use apimail_tests::sandbox::Sandbox;
use apimail_tests::{Run, run};
use mail_parser::MimeHeaders;

fn logged_in() -> (FakeGoogle, Sandbox) {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    (fake, sandbox)
}

fn stdout(run: &Run) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A header's raw value in a message ("" when absent).
fn header(raw: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
        .unwrap_or_default()
}

/// How many copies of each row (by its `X-Row` header) the fake received.
fn copies_by_row(fake: &FakeGoogle) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for message in fake.messages() {
        *copies.entry(header(&message.raw, "X-Row")).or_insert(0) += 1;
    }
    copies
}

/// A PDF-like file of its own for each row: bytes that are not text.
fn pdf_bytes(row: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..3000u32).map(|i| ((i * 31 + row as u32 * 7) % 256) as u8));
    bytes
}

/// `rows` customers with Japanese names, their PDFs in `invoices/`, and
/// the CSV text.
fn customers(dir: &Path, rows: usize) -> String {
    std::fs::create_dir_all(dir.join("invoices")).unwrap();
    let mut csv = String::from("id,名前,email,amount,due\r\n");
    for i in 1..=rows {
        csv.push_str(&format!(
            "C{i:03},山田 太郎{i},c{i}@example.net,{},2026/12/{:02}\r\n",
            i * 1000 + 5,
            i % 28 + 1
        ));
        std::fs::write(dir.join(format!("invoices/C{i:03}.pdf")), pdf_bytes(i)).unwrap();
    }
    csv
}

const TEMPLATE_JA: &str = r#"
to = "{{ 名前 }} <{{ email }}>"
subject = "{{ 名前 }}様 ご請求書 {{ id }}"
text = """
{{ 名前 }}様

ご請求金額: {{ amount | number }}円
お支払期限: {{ due | date("[year]年[month]月[day]日") }}
"""
attach = ["invoices/{{ id }}.pdf"]
charset = "iso-2022-jp"

[headers]
X-Row = "{{ id }}"
"#;

fn merge_args<'a>(data: &'a str, template: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "merge",
        "--data",
        data,
        "--template",
        template,
        "--id-column",
        "id",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn cp932_data_and_an_iso_2022_jp_template_arrive_decodable_with_exact_attachments() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    let csv = customers(dir, 5);
    let (cp932, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&csv);
    assert!(!unmappable);
    std::fs::write(dir.join("顧客.csv"), &cp932).unwrap();
    std::fs::write(dir.join("請求書.toml"), TEMPLATE_JA).unwrap();

    let sent = run(sandbox.cmd().args(merge_args(
        "顧客.csv",
        "請求書.toml",
        &["--data-encoding", "cp932", "--send"],
    )));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        stdout(&sent).contains("sent 5, skipped (sent before) 0"),
        "{}",
        stdout(&sent)
    );

    let messages = fake.messages();
    assert_eq!(messages.len(), 5);
    for message in &messages {
        let raw = &message.raw;
        assert!(raw.is_ascii(), "ISO-2022-JP mail is 7-bit");
        let row = header(raw, "X-Row");
        let i: usize = row[1..].parse().unwrap();
        let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
        assert_eq!(
            parsed.subject(),
            Some(format!("山田 太郎{i}様 ご請求書 {row}").as_str())
        );
        let text = parsed.body_text(0).unwrap();
        assert!(
            text.contains(&format!("ご請求金額: {}円", group(i * 1000 + 5))),
            "{text}"
        );
        assert!(
            text.contains(&format!("お支払期限: 2026年12月{:02}日", i % 28 + 1)),
            "{text}"
        );
        let body_part = parsed.part(parsed.text_body[0]).unwrap();
        assert_eq!(
            body_part
                .content_type()
                .unwrap()
                .attribute("charset")
                .map(str::to_ascii_lowercase),
            Some("iso-2022-jp".to_owned())
        );
        let attachment = parsed.attachment(0).unwrap();
        assert_eq!(
            attachment.attachment_name(),
            Some(format!("{row}.pdf").as_str())
        );
        assert_eq!(
            attachment.contents(),
            pdf_bytes(i),
            "row {row}'s PDF, byte for byte"
        );
        assert!(header(raw, "Message-ID").starts_with("<merge."));
    }
}

fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_dry_run_sends_nothing_and_estimates_the_time_the_pace_allows() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    let csv = customers(dir, 200);
    std::fs::write(
        dir.join("customers.csv"),
        [b"\xEF\xBB\xBF".as_slice(), csv.as_bytes()].concat(),
    )
    .unwrap();
    std::fs::write(
        dir.join("invoice.toml"),
        TEMPLATE_JA.replace("iso-2022-jp", "utf-8"),
    )
    .unwrap();

    let dry = run(sandbox
        .cmd()
        .args(merge_args("customers.csv", "invoice.toml", &[])));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let summary = stdout(&dry);
    assert!(summary.contains("200 rows"), "{summary}");
    assert!(summary.contains("ready:       200"), "{summary}");
    assert!(summary.contains("recipients:  200"), "{summary}");
    // Gmail's stated pace: 150 a minute, so 199 intervals of 0.4 s.
    assert!(
        summary.contains("to send:     200, about 1 min 19 s at 150 a minute (gmail"),
        "{summary}"
    );
    assert!(
        dry.stderr
            .contains("wrote 3 preview(s) to customers-preview"),
        "{}",
        dry.stderr
    );
    let preview = std::fs::read(dir.join("customers-preview/row-2.eml")).unwrap();
    assert_eq!(header(&preview, "X-Row"), "C001");
    assert_eq!(fake.send_requests(), 0, "a dry run sends nothing");

    let daily = run(sandbox.cmd().args(merge_args(
        "customers.csv",
        "invoice.toml",
        &["--daily-limit", "50", "--preview", "0"],
    )));
    assert!(
        stdout(&daily)
            .contains("the daily limit of 50 lets 50 go now, the other 150 over 3 more day(s)"),
        "{}",
        stdout(&daily)
    );
}

#[test]
fn a_missing_field_or_file_names_its_row_and_nothing_is_sent() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    let mut csv = customers(dir, 4);
    csv.push_str("C005,短い行\r\n");
    std::fs::write(dir.join("c.csv"), csv).unwrap();
    std::fs::remove_file(dir.join("invoices/C002.pdf")).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();

    for extra in [&[][..], &["--send"][..]] {
        let refused = run(sandbox.cmd().args(merge_args("c.csv", "t.toml", extra)));
        assert_eq!(refused.code, 65, "{}", refused.stderr);
        assert!(
            refused
                .stderr
                .contains("row 3 (C002): attachment `./invoices/C002.pdf` does not exist"),
            "{}",
            refused.stderr
        );
        assert!(
            refused
                .stderr
                .contains("row 6 (C005): fields `amount`, `due`, `email` are missing"),
            "{}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("error: 2 of 5 rows cannot be sent"),
            "{}",
            refused.stderr
        );
        assert!(
            refused
                .stderr
                .contains("hint: fix those rows, or add --skip-invalid")
        );
    }
    assert_eq!(fake.send_requests(), 0);

    // A field no column names stops the whole merge.
    std::fs::write(
        dir.join("typo.toml"),
        TEMPLATE_JA.replace("{{ email }}", "{{ mail }}"),
    )
    .unwrap();
    let typo = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "typo.toml", &["--send"])));
    assert_eq!(typo.code, 65, "{}", typo.stderr);
    assert!(
        typo.stderr
            .contains("error: the template uses field `mail`"),
        "{}",
        typo.stderr
    );

    // With --skip-invalid the others go, and the report lists every row.
    let sent = run(sandbox.cmd().args(merge_args(
        "c.csv",
        "t.toml",
        &["--send", "--skip-invalid", "--report", "report.csv"],
    )));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(fake.messages().len(), 3);
    let report = std::fs::read_to_string(dir.join("report.csv")).unwrap();
    let lines: Vec<&str> = report.trim_start_matches('\u{feff}').lines().collect();
    assert!(lines[0].starts_with("merge_row,merge_status,merge_message_id,merge_error,id,"));
    assert!(lines[1].starts_with("2,sent,<merge."), "{report}");
    assert!(lines[2].starts_with("3,invalid,,attachment"), "{report}");
}

/// A minimal .xlsx: one sheet of inline strings.
fn write_xlsx(path: &Path, rows: &[Vec<String>]) {
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for (r, row) in rows.iter().enumerate() {
        sheet.push_str(&format!(r#"<row r="{}">"#, r + 1));
        for (c, value) in row.iter().enumerate() {
            let column = (b'A' + c as u8) as char;
            sheet.push_str(&format!(
                r#"<c r="{column}{}" t="inlineStr"><is><t>{value}</t></is></c>"#,
                r + 1
            ));
        }
        sheet.push_str("</row>");
    }
    sheet.push_str("</sheetData></worksheet>");
    let files = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_owned(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_owned(),
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Members" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_owned(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_owned(),
        ),
        ("xl/worksheets/sheet1.xml", sheet),
    ];
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, body) in files {
        zip.start_file(name, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn an_xlsx_sheet_is_merged_with_html_escaped_fields() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    let rows = vec![
        vec!["id".to_owned(), "name".to_owned(), "email".to_owned()],
        vec![
            "m1".to_owned(),
            "Ann &amp; Bob".to_owned(),
            "ann@example.net".to_owned(),
        ],
        vec![
            "m2".to_owned(),
            "&lt;Cy&gt;".to_owned(),
            "cy@example.net".to_owned(),
        ],
    ];
    write_xlsx(&dir.join("members.xlsx"), &rows);
    std::fs::write(
        dir.join("notice.toml"),
        r#"
to = "{{ email }}"
subject = "Notice for {{ name }}"
text = "Dear {{ name }}"
html = "<p>Dear {{ name }}</p>"
[headers]
X-Row = "{{ id }}"
"#,
    )
    .unwrap();
    let sent = run(sandbox
        .cmd()
        .args(merge_args("members.xlsx", "notice.toml", &["--send"])));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let messages = fake.messages();
    assert_eq!(messages.len(), 2);
    let ann = messages
        .iter()
        .find(|m| header(&m.raw, "X-Row") == "m1")
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&ann.raw)
        .unwrap();
    assert_eq!(parsed.subject(), Some("Notice for Ann & Bob"));
    assert_eq!(parsed.body_text(0).unwrap().trim(), "Dear Ann & Bob");
    assert_eq!(
        parsed.body_html(0).unwrap().trim(),
        "<p>Dear Ann &amp; Bob</p>"
    );
    let cy = messages
        .iter()
        .find(|m| header(&m.raw, "X-Row") == "m2")
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&cy.raw)
        .unwrap();
    assert_eq!(
        parsed.body_html(0).unwrap().trim(),
        "<p>Dear &lt;Cy&gt;</p>"
    );

    // The same command again sends nothing: both rows are in the record.
    let again = run(sandbox
        .cmd()
        .args(merge_args("members.xlsx", "notice.toml", &["--send"])));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        stdout(&again).contains("sent 0, skipped (sent before) 2"),
        "{}",
        stdout(&again)
    );
    assert_eq!(fake.messages().len(), 2);
}

#[test]
fn a_429_is_retried_after_its_retry_after_and_each_row_goes_once() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 3)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    fake.inject_n(
        Fault::Status429 {
            retry_after_secs: Some(1),
        },
        2,
    );
    let sent = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert_eq!(fake.send_requests(), 5, "two 429s, then three sends");
    let copies = copies_by_row(&fake);
    assert_eq!(copies.len(), 3);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_merge(sandbox: &Sandbox) -> Child {
    sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The Message-IDs the journal records as uncertain.
fn uncertain_ids(sandbox: &Sandbox) -> Vec<String> {
    let log = run(sandbox
        .cmd()
        .args(["log", "--json", "--status", "uncertain"]));
    stdout(&log)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|record| record["message_id"].as_str().unwrap().to_owned())
        .collect()
}

fn every_row_once_but_the_uncertain(fake: &FakeGoogle, sandbox: &Sandbox, rows: usize) {
    let copies = copies_by_row(fake);
    for i in 1..=rows {
        let row = format!("C{i:03}");
        let n = copies.get(&row).copied().unwrap_or(0);
        assert!(n >= 1, "{row} was never delivered");
        if n > 1 {
            let id = fake
                .messages()
                .iter()
                .find(|m| header(&m.raw, "X-Row") == row)
                .map(|m| header(&m.raw, "Message-ID"))
                .unwrap();
            assert!(
                uncertain_ids(sandbox).contains(&id),
                "{row} went out {n} times with no uncertain record"
            );
            assert!(
                fake.messages()
                    .iter()
                    .filter(|m| header(&m.raw, "X-Row") == row)
                    .all(|m| header(&m.raw, "Message-ID") == id),
                "every copy of {row} has the same Message-ID"
            );
        }
    }
    assert!(
        sandbox.outbox_entries("queue").is_empty(),
        "nothing left behind"
    );
}

#[test]
fn a_kill_9_mid_merge_then_the_same_command_sends_every_row_once() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 12)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    fake.fail_forever(Fault::Slow(Duration::from_millis(150)));

    let mut child = spawn_merge(&sandbox);
    wait_for("four deliveries", || fake.messages().len() >= 4);
    child.kill().unwrap();
    let _ = child.wait();
    let before = fake.messages().len();
    assert!(before < 12, "the kill came before the end ({before} sent)");

    fake.clear_faults();
    let again = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        stdout(&again).contains("skipped (sent before)"),
        "{}",
        stdout(&again)
    );
    every_row_once_but_the_uncertain(&fake, &sandbox, 12);

    let third = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert!(
        stdout(&third).contains("sent 0, skipped (sent before) 12"),
        "{}",
        stdout(&third)
    );

    let status = run(sandbox
        .cmd()
        .args(["merge", "status", "c", "--report", "status.csv"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        stdout(&status).contains("12 rows recorded"),
        "{}",
        stdout(&status)
    );
    assert!(
        stdout(&status).contains("  sent:     12"),
        "{}",
        stdout(&status)
    );
    let csv = std::fs::read_to_string(dir.join("status.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("2,C001,sent,<merge."),
        "{csv}"
    );

    let unknown = run(sandbox.cmd().args(["merge", "status", "nothing"]));
    assert_eq!(unknown.code, 66);
    assert!(
        unknown
            .stderr
            .contains("error: no merge `nothing` has run here")
    );
}

#[test]
fn a_ctrl_c_stops_the_merge_and_the_same_command_continues_it() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 10)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    fake.fail_forever(Fault::Slow(Duration::from_millis(150)));

    let child = spawn_merge(&sandbox);
    wait_for("three deliveries", || fake.messages().len() >= 3);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("error: the merge was interrupted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: run the same command again"),
        "{stderr}"
    );
    assert!(fake.messages().len() < 10);

    fake.clear_faults();
    let again = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(again.code, 0, "{}", again.stderr);
    every_row_once_but_the_uncertain(&fake, &sandbox, 10);
}

#[test]
fn a_daily_limit_sends_that_many_and_the_rest_wait_for_the_next_run() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 5)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    let args = merge_args("c.csv", "t.toml", &["--send", "--daily-limit", "2"]);

    let first = run(sandbox.cmd().args(&args));
    assert_eq!(first.code, 75, "{}", first.stderr);
    assert!(stdout(&first).contains("sent 2,"), "{}", stdout(&first));
    assert!(
        stdout(&first).contains("3 wait for the next daily window (after 20"),
        "{}",
        stdout(&first)
    );
    assert!(
        first
            .stderr
            .contains("error: the daily limit is reached; 3 row(s) wait")
    );
    assert_eq!(fake.messages().len(), 2);

    // Within the same 24 hours, nothing more goes.
    let again = run(sandbox.cmd().args(&args));
    assert_eq!(again.code, 75, "{}", again.stderr);
    assert_eq!(fake.messages().len(), 2);

    // A larger limit lets the rest go, and none twice.
    let rest = run(sandbox.cmd().args(merge_args(
        "c.csv",
        "t.toml",
        &["--send", "--daily-limit", "10"],
    )));
    assert_eq!(rest.code, 0, "{}", rest.stderr);
    let copies = copies_by_row(&fake);
    assert_eq!(copies.len(), 5);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
}

#[test]
fn graph_sends_the_merge_in_iso_2022_jp_and_retries_its_429() {
    const USER: &str = "user@contoso.com";
    let fake = FakeMicrosoft::start();
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--login-hint", USER]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 3)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();

    let dry = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--preview", "0"])));
    assert!(
        stdout(&dry).contains("to send:     3, about 4 s at 30 a minute (graph"),
        "{}",
        stdout(&dry)
    );

    fake.inject(GraphFault::Status429 {
        retry_after_secs: Some(1),
    });
    let sent = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 3);
    let log = stdout(&run(sandbox
        .cmd()
        .args(["log", "--json", "--status", "sent"])));
    let attempts: Vec<u64> = log
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["attempts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        attempts.iter().filter(|a| **a == 2).count(),
        1,
        "the throttled row took two attempts: {attempts:?}"
    );
    assert_eq!(attempts.len(), 3);
    for message in &delivered {
        let row = header(&message.mime, "X-Row");
        let i: usize = row[1..].parse().unwrap();
        let parsed = mail_parser::MessageParser::default()
            .parse(&message.mime)
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some(format!("山田 太郎{i}様 ご請求書 {row}").as_str())
        );
        assert_eq!(parsed.attachment(0).unwrap().contents(), pdf_bytes(i));
    }
}

#[test]
fn test_to_sends_the_first_rows_to_one_address_and_leaves_the_merge_unsent() {
    let (fake, sandbox) = logged_in();
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 4)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    let test = run(sandbox.cmd().args(merge_args(
        "c.csv",
        "t.toml",
        &["--test-to", "me@example.com", "--preview", "2"],
    )));
    assert_eq!(test.code, 0, "{}", test.stderr);
    let messages = fake.messages();
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(header(&message.raw, "To"), "me@example.com");
        assert!(!header(&message.raw, "Message-ID").starts_with("<merge."));
    }
    let sent = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        stdout(&sent).contains("sent 4, skipped (sent before) 0"),
        "{}",
        stdout(&sent)
    );
}

// ---- 200 rows against the fake's quota --------------------------------------

/// Gmail's per-user rate limit in sends a minute (15,000 quota units, 100 a
/// send): the fake enforces it at its real value.
const GMAIL_SENDS_PER_MINUTE: u64 = 150;

/// 200 customers with Japanese names and a PDF each, where row 51 (C050)
/// has an address that is not one and row 121 (C120) lacks its PDF.
fn two_hundred_customers(dir: &Path) -> String {
    let csv = customers(dir, 200).replace("c50@example.net", "c50 at example.net");
    std::fs::remove_file(dir.join("invoices/C120.pdf")).unwrap();
    csv
}

/// The dry run of the 200 rows: nothing sent, the two bad rows named.
fn dry_run_names_the_two_bad_rows(
    fake: &FakeGoogle,
    sandbox: &Sandbox,
    data: &str,
    extra: &[&str],
) {
    let mut args = vec!["--preview", "1"];
    args.extend_from_slice(extra);
    let dry = run(sandbox.cmd().args(merge_args(data, "t.toml", &args)));
    assert_eq!(dry.code, 65, "{}", dry.stderr);
    let summary = stdout(&dry);
    assert!(summary.contains("200 rows"), "{summary}");
    assert!(summary.contains("ready:       198"), "{summary}");
    assert!(summary.contains("with errors: 2"), "{summary}");
    assert!(
        dry.stderr
            .contains("row 51 (C050): `to`: invalid address `山田 太郎50 <c50 at example.net>`"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr
            .contains("row 121 (C120): attachment `./invoices/C120.pdf` does not exist"),
        "{}",
        dry.stderr
    );
    assert!(dry.stderr.contains("error: 2 of 200 rows cannot be sent"));
    assert_eq!(fake.send_requests(), 0, "a dry run sends nothing");
}

/// `--send --skip-invalid` of the 200 rows: 198 delivered once each, every
/// PDF byte for byte, in `charset`, and the fake's quota never refused one.
fn sends_198_within_the_quota(
    fake: &FakeGoogle,
    sandbox: &Sandbox,
    data: &str,
    extra: &[&str],
    charset: &str,
) {
    let mut args = vec!["--send", "--skip-invalid", "--report", "report.csv"];
    args.extend_from_slice(extra);
    let sent = run(sandbox.cmd().args(merge_args(data, "t.toml", &args)));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        stdout(&sent).contains("sent 198, skipped (sent before) 0, queued 0, held 0, failed 0"),
        "{}",
        stdout(&sent)
    );
    assert_eq!(
        fake.throttled(),
        0,
        "pacing provoked no 429 from the per-minute limit"
    );
    assert_eq!(fake.over_daily_limit(), 0);

    let messages = fake.messages();
    assert_eq!(messages.len(), 198);
    let copies = copies_by_row(fake);
    assert_eq!(copies.len(), 198);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    assert!(!copies.contains_key("C050") && !copies.contains_key("C120"));
    for message in &messages {
        let raw = &message.raw;
        let row = header(raw, "X-Row");
        let i: usize = row[1..].parse().unwrap();
        let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
        assert_eq!(
            parsed.subject(),
            Some(format!("山田 太郎{i}様 ご請求書 {row}").as_str())
        );
        assert_eq!(
            parsed
                .to()
                .and_then(|to| to.first())
                .and_then(|a| a.address()),
            Some(format!("c{i}@example.net").as_str())
        );
        let body_part = parsed.part(parsed.text_body[0]).unwrap();
        assert_eq!(
            body_part
                .content_type()
                .unwrap()
                .attribute("charset")
                .map(str::to_ascii_lowercase),
            Some(charset.to_owned())
        );
        if charset == "iso-2022-jp" {
            assert!(raw.is_ascii(), "ISO-2022-JP mail is 7-bit");
        }
        let text = parsed.body_text(0).unwrap();
        assert!(text.contains(&format!("山田 太郎{i}様")), "{text}");
        let attachment = parsed.attachment(0).unwrap();
        assert_eq!(
            attachment.attachment_name(),
            Some(format!("{row}.pdf").as_str())
        );
        assert_eq!(
            attachment.contents(),
            pdf_bytes(i),
            "row {row}'s PDF, byte for byte"
        );
    }

    let report = std::fs::read_to_string(sandbox.path().join("report.csv")).unwrap();
    let lines: Vec<&str> = report.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 201, "a header and every row");
    assert!(
        lines[50].starts_with("51,invalid,,`to`: invalid address"),
        "{}",
        lines[50]
    );
    assert!(
        lines[120].starts_with("121,invalid,,attachment"),
        "{}",
        lines[120]
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(",sent,<merge.")).count(),
        198
    );
}

#[test]
fn two_hundred_cp932_rows_go_in_iso_2022_jp_within_gmails_per_minute_quota() {
    let (fake, sandbox) = logged_in();
    fake.set_per_minute_limit(GMAIL_SENDS_PER_MINUTE);
    let dir = sandbox.path();
    let csv = two_hundred_customers(dir);
    let (cp932, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&csv);
    assert!(!unmappable);
    std::fs::write(dir.join("顧客.csv"), &cp932).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    let encoding = ["--data-encoding", "cp932"];

    dry_run_names_the_two_bad_rows(&fake, &sandbox, "顧客.csv", &encoding);
    sends_198_within_the_quota(&fake, &sandbox, "顧客.csv", &encoding, "iso-2022-jp");
}

#[test]
fn two_hundred_utf8_rows_with_a_bom_go_in_utf8_within_gmails_per_minute_quota() {
    let (fake, sandbox) = logged_in();
    fake.set_per_minute_limit(GMAIL_SENDS_PER_MINUTE);
    let dir = sandbox.path();
    let csv = two_hundred_customers(dir);
    std::fs::write(
        dir.join("customers.csv"),
        [b"\xEF\xBB\xBF".as_slice(), csv.as_bytes()].concat(),
    )
    .unwrap();
    std::fs::write(
        dir.join("t.toml"),
        TEMPLATE_JA.replace("iso-2022-jp", "utf-8"),
    )
    .unwrap();

    dry_run_names_the_two_bad_rows(&fake, &sandbox, "customers.csv", &[]);
    sends_198_within_the_quota(&fake, &sandbox, "customers.csv", &[], "utf-8");
}

// ---- a daily limit, and the next day ----------------------------------------

/// Set (by `cargo xtask ci`, which installs Debian's `faketime`) to make a
/// missing libfaketime fail the tests that move apimail's clock, rather than
/// skip them.
const FAKETIME_REQUIRED_VAR: &str = "APIMAIL_FAKETIME_REQUIRED";
/// Where libfaketime is, when not in Debian's places.
const FAKETIME_LIB_VAR: &str = "APIMAIL_FAKETIME_LIB";

/// libfaketime (`libfaketime.so.1`), which runs apimail a day ahead: the
/// merge counts its daily window from its own record, by the system clock.
/// `None` after saying loudly why the test is skipped; a panic instead when
/// [`FAKETIME_REQUIRED_VAR`] is set.
fn faketime_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let candidates: Vec<std::path::PathBuf> = match std::env::var_os(FAKETIME_LIB_VAR) {
        Some(path) if !path.is_empty() => vec![path.into()],
        _ => std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
            .chain([std::path::PathBuf::from(
                "/usr/lib/faketime/libfaketime.so.1",
            )])
            .collect(),
    };
    if let Some(lib) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(lib);
    }
    if std::env::var_os(FAKETIME_REQUIRED_VAR).is_some_and(|v| !v.is_empty()) {
        panic!("{test}: libfaketime is required ({FAKETIME_REQUIRED_VAR} is set) but not found");
    }
    // Loud on purpose: a skipped test must say so.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "SKIPPED {test}: libfaketime.so.1 was not found, so apimail's clock cannot move a day"
        );
        eprintln!(
            "hint: install Debian's `faketime` package (cargo xtask ci does, as root), or set \
             {FAKETIME_LIB_VAR} to libfaketime.so.1"
        );
    }
    None
}

#[test]
fn a_daily_limit_of_50_sends_50_today_and_the_rest_when_the_clocks_reach_the_next_window() {
    let test =
        "a_daily_limit_of_50_sends_50_today_and_the_rest_when_the_clocks_reach_the_next_window";
    let Some(faketime) = faketime_or_skip(test) else {
        return;
    };
    let (fake, sandbox) = logged_in();
    fake.set_per_minute_limit(GMAIL_SENDS_PER_MINUTE);
    fake.set_daily_limit(50);
    let dir = sandbox.path();
    std::fs::write(dir.join("c.csv"), customers(dir, 80)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();
    let args = merge_args("c.csv", "t.toml", &["--send", "--daily-limit", "50"]);

    let today = run(sandbox.cmd().args(&args));
    assert_eq!(today.code, 75, "{}", today.stderr);
    assert!(
        stdout(&today).contains("sent 50, skipped (sent before) 0"),
        "{}",
        stdout(&today)
    );
    assert!(
        stdout(&today).contains("30 wait for the next daily window (after 20"),
        "{}",
        stdout(&today)
    );
    assert_eq!(fake.messages().len(), 50);

    // The same command later today sends nothing: it does not try the
    // provider's daily limit (which would refuse and count).
    let again = run(sandbox.cmd().args(&args));
    assert_eq!(again.code, 75, "{}", again.stderr);
    assert!(
        stdout(&again).contains("sent 0, skipped (sent before) 50"),
        "{}",
        stdout(&again)
    );
    assert_eq!(fake.messages().len(), 50);
    assert_eq!(fake.over_daily_limit(), 0, "no send met the daily limit");

    // A day later for both: the fake's window and apimail's (run under
    // libfaketime, its monotonic clock left alone for its timers).
    fake.advance_clock(Duration::from_secs(86_400));
    let tomorrow = run(sandbox
        .cmd()
        .args(&args)
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME", "+1d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"));
    assert_eq!(tomorrow.code, 0, "{}", tomorrow.stderr);
    assert!(
        stdout(&tomorrow).contains("sent 30, skipped (sent before) 50"),
        "{}",
        stdout(&tomorrow)
    );
    let copies = copies_by_row(&fake);
    assert_eq!(copies.len(), 80);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    assert_eq!(fake.throttled(), 0, "pacing provoked no 429");
    assert_eq!(fake.over_daily_limit(), 0, "no send met the daily limit");
}

#[test]
fn graph_paces_a_merge_under_exchanges_30_messages_a_minute_with_none_refused() {
    use apimail_tests::fake_microsoft::{MESSAGES_PER_MINUTE, RECIPIENTS_PER_DAY};
    const USER: &str = "user@contoso.com";
    let fake = FakeMicrosoft::start();
    fake.set_per_minute_limit(MESSAGES_PER_MINUTE);
    fake.set_daily_recipient_limit(RECIPIENTS_PER_DAY);
    let sandbox = Sandbox::microsoft(&fake);
    let login = sandbox.login_graph(&fake, &["--login-hint", USER]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    let dir = sandbox.path();
    // 35 rows: the 31st starts as the first minute ends.
    std::fs::write(dir.join("c.csv"), customers(dir, 35)).unwrap();
    std::fs::write(dir.join("t.toml"), TEMPLATE_JA).unwrap();

    let sent = run(sandbox
        .cmd()
        .args(merge_args("c.csv", "t.toml", &["--send"])));
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        stdout(&sent).contains("sent 35, skipped (sent before) 0"),
        "{}",
        stdout(&sent)
    );
    assert_eq!(fake.throttled(), 0, "pacing provoked no 429");
    assert_eq!(fake.over_daily_limit(), 0);
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 35);
    let mut rows: Vec<String> = delivered.iter().map(|m| header(&m.mime, "X-Row")).collect();
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 35, "each row once");
}
