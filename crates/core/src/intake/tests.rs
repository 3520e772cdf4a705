use super::*;

const OWN: &str = "me@example.com";

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The header field `name`'s value (first one), unfolded.
fn header(message: &[u8], name: &str) -> Option<String> {
    let text = text(message);
    let head = text.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ");
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn relay_policy(allowed_from: &[String], rewrite: bool) -> SenderPolicy<'_> {
    SenderPolicy::Checked {
        allowed_from,
        rewrite,
    }
}

fn take_with(message: &str, policy: SenderPolicy<'_>) -> Result<Prepared, IntakeError> {
    let rcpt = ["a@example.net".to_owned()];
    let handover = Handover {
        account_address: Some(OWN),
        policy,
        ..Handover::new(&rcpt)
    };
    take_bytes(message.as_bytes().to_vec(), &handover)
}

#[test]
fn message_ids_are_random_at_the_from_domain() {
    let ids: std::collections::HashSet<String> =
        (0..1000).map(|_| new_message_id("example.com")).collect();
    assert_eq!(ids.len(), 1000, "no two alike");
    for id in &ids {
        let hex = id
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix("@example.com>"))
            .unwrap_or_else(|| panic!("{id}"));
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    // 128 random bits: the ids share no long prefix (a time-based one would).
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let common = sorted
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap();
    assert!(common < 10, "ids too alike: {common} shared characters");
}

#[test]
fn dates() {
    assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_767_225_600),
        "Thu, 1 Jan 2026 00:00:00 +0000"
    );
    assert_eq!(
        rfc5322_date(1_798_761_599),
        "Thu, 31 Dec 2026 23:59:59 +0000"
    );
    assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
}

#[test]
fn a_missing_date_and_message_id_are_added() {
    let before = now_unix();
    let prepared = take_with(
        "From: Ann <ann@example.org>\r\nTo: a@example.net\r\nSubject: x\r\n\r\nbody\r\n",
        SenderPolicy::Any,
    )
    .unwrap();
    let date = header(&prepared.bytes, "Date").expect("a Date");
    let parsed =
        time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822).unwrap();
    assert!((parsed.unix_timestamp() - before).abs() <= 2, "{date}");
    let id = header(&prepared.bytes, "Message-ID").expect("a Message-ID");
    assert_eq!(id, prepared.message_id);
    assert!(id.ends_with("@example.org>"), "at the From domain: {id}");
    assert!(text(&prepared.bytes).ends_with("\r\n\r\nbody\r\n"));
}

#[test]
fn a_present_date_and_message_id_are_kept_byte_for_byte() {
    let raw = "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <k@example.org>\r\nFrom: ann@example.org\r\nTo: a@example.net\r\n\r\nx";
    let prepared = take_with(raw, SenderPolicy::Any).unwrap();
    assert_eq!(text(&prepared.bytes), raw);
    assert_eq!(prepared.message_id, "<k@example.org>");
    assert_eq!(prepared.original_from, None);
}

#[test]
fn any_sender_is_kept_without_a_policy() {
    let prepared = take_with(
        "From: scanner@printer.local, ceo@example.com\r\nSender: x@y.example\r\nTo: a@example.net\r\n\r\nx",
        SenderPolicy::Any,
    )
    .unwrap();
    assert_eq!(
        header(&prepared.bytes, "From").unwrap(),
        "scanner@printer.local, ceo@example.com"
    );
    assert_eq!(prepared.from.email(), "scanner@printer.local");
    assert!(header(&prepared.bytes, "Sender").is_some());
}

#[test]
fn a_foreign_sender_becomes_the_account_keeping_its_address_as_the_name() {
    let prepared = take_with(
        "From: scanner@printer.local\r\nTo: a@example.net\r\nSubject: scan\r\n\r\nx",
        relay_policy(&[], true),
    )
    .unwrap();
    assert_eq!(
        header(&prepared.bytes, "From").unwrap(),
        "\"scanner@printer.local\" <me@example.com>"
    );
    assert_eq!(prepared.from.email(), OWN);
    assert_eq!(
        prepared.original_from.as_deref(),
        Some("scanner@printer.local")
    );
    assert!(prepared.message_id.ends_with("@example.com>"));
    let entry = prepared.entry(&Owner::new(SenderIdentity::account("work")));
    assert_eq!(entry.from, OWN);
    assert_eq!(
        entry.original_from.as_deref(),
        Some("scanner@printer.local")
    );
}

#[test]
fn several_authors_become_one_the_account_keeping_the_names() {
    let prepared = take_with(
        "From: \"Scanner 2\" <scanner@printer.local>, ceo@example.com\r\nTo: a@example.net\r\n\r\nx",
        relay_policy(&[], true),
    )
    .unwrap();
    let from = header(&prepared.bytes, "From").unwrap();
    assert_eq!(from, "\"Scanner 2, ceo@example.com\" <me@example.com>");
    assert_eq!(
        prepared.original_from.as_deref(),
        Some("scanner@printer.local, ceo@example.com")
    );
    let parsed = ReadyMessage::parse(prepared.bytes.clone()).unwrap();
    assert_eq!(parsed.authors().len(), 1, "one author");
}

#[test]
fn every_author_is_checked_not_only_the_first() {
    let allowed = ["*@printer.local".to_owned()];
    let error = take_with(
        "From: scanner@printer.local, ceo@example.org\r\nTo: a@example.net\r\n\r\nx",
        relay_policy(&allowed, false),
    )
    .unwrap_err();
    assert_eq!(
        error,
        IntakeError::NotAllowed {
            address: "ceo@example.org".into()
        }
    );
}

#[test]
fn sender_is_checked_and_dropped_when_rewritten() {
    let allowed = ["*@printer.local".to_owned()];
    let raw =
        "From: scanner@printer.local\r\nSender: ceo@example.org\r\nTo: a@example.net\r\n\r\nx";
    let error = take_with(raw, relay_policy(&allowed, false)).unwrap_err();
    assert_eq!(
        error,
        IntakeError::NotAllowed {
            address: "ceo@example.org".into()
        }
    );
    let prepared = take_with(raw, relay_policy(&allowed, true)).unwrap();
    assert_eq!(
        header(&prepared.bytes, "From").unwrap(),
        "\"scanner@printer.local\" <me@example.com>"
    );
    assert_eq!(header(&prepared.bytes, "Sender"), None);
    assert_eq!(
        prepared.original_from.as_deref(),
        Some("scanner@printer.local, ceo@example.org")
    );
}

#[test]
fn allowed_authors_are_left_alone() {
    let allowed = ["*@printer.local".to_owned()];
    let raw = "From: Ann <ME@example.com>, scanner@printer.local\r\nSender: me@example.com\r\nTo: a@example.net\r\n\r\nx";
    for rewrite in [true, false] {
        let prepared = take_with(raw, relay_policy(&allowed, rewrite)).unwrap();
        assert!(text(&prepared.bytes).starts_with(
            "From: Ann <ME@example.com>, scanner@printer.local\r\nSender: me@example.com\r\n"
        ));
        assert_eq!(prepared.original_from, None);
    }
}

#[test]
fn a_message_without_from_gets_the_envelope_sender_or_the_account() {
    let rcpt = ["a@example.net".to_owned()];
    let raw = b"From: root (Cron Daemon)\nTo: a@example.net\n\nx\n".to_vec();
    let handover = Handover {
        account_address: Some(OWN),
        envelope_from: Some("root"),
        ..Handover::new(&rcpt)
    };
    let prepared = take_bytes(raw.clone(), &handover).unwrap();
    assert!(
        text(&prepared.bytes).starts_with("From: \"Cron Daemon\" <me@example.com>\n"),
        "{}",
        text(&prepared.bytes)
    );
    let handover = Handover {
        envelope_from: Some("cron@host.example"),
        full_name: Some("Nightly"),
        ..handover
    };
    let prepared = take_bytes(raw.clone(), &handover).unwrap();
    assert!(text(&prepared.bytes).starts_with("From: \"Nightly\" <cron@host.example>\n"));
    // A relay refusing foreign senders checks the From it writes too.
    let handover = Handover {
        policy: relay_policy(&[], false),
        ..handover
    };
    assert_eq!(
        take_bytes(raw.clone(), &handover).unwrap_err(),
        IntakeError::NotAllowed {
            address: "cron@host.example".into()
        }
    );
    let handover = Handover {
        account_address: None,
        envelope_from: None,
        policy: SenderPolicy::Any,
        ..handover
    };
    assert_eq!(
        take_bytes(raw, &handover).unwrap_err(),
        IntakeError::NoSender
    );
}

#[test]
fn rewriting_needs_the_accounts_address() {
    let rcpt = ["a@example.net".to_owned()];
    let handover = Handover {
        policy: relay_policy(&[], true),
        ..Handover::new(&rcpt)
    };
    assert_eq!(
        take_bytes(b"From: x@y.example\r\n\r\nx".to_vec(), &handover).unwrap_err(),
        IntakeError::AccountAddressUnknown
    );
}

/// sendmail, the relay and the library each hand the intake the same
/// message in their own way; the headers come out the same.
#[test]
fn the_three_callers_get_the_same_headers() {
    let raw = "From: Ann <ann@example.com>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n";
    let rcpt = ["b@example.net".to_owned(), "hidden@example.net".to_owned()];
    // sendmail: the arguments, `-f`, no policy, the account's address.
    let sendmail = Handover {
        envelope_from: Some("ann@example.com"),
        account_address: Some("ann@example.com"),
        ..Handover::new(&rcpt)
    };
    // The relay: RCPT TO, MAIL FROM, the principal's policy.
    let allowed = ["*@example.com".to_owned()];
    let relay = Handover {
        envelope_from: Some("ann@example.com"),
        account_address: Some("me@example.com"),
        policy: relay_policy(&allowed, true),
        ..Handover::new(&rcpt)
    };
    // The library: the envelope's sender and recipients.
    let library = Handover {
        envelope_from: Some("ann@example.com"),
        ..Handover::new(&rcpt)
    };
    let normal = |bytes: &[u8]| {
        let mut text = text(bytes);
        for name in ["Date", "Message-ID"] {
            let value = header(bytes, name).unwrap();
            text = text.replace(&value, name);
        }
        text
    };
    let results: Vec<Prepared> = [sendmail, relay, library]
        .iter()
        .map(|h| take_bytes(raw.as_bytes().to_vec(), h).unwrap())
        .collect();
    let expected = "Bcc: <hidden@example.net>\r\nFrom: Ann <ann@example.com>\r\n\
                    To: b@example.net\r\nSubject: hi\r\nDate: Date\r\nMessage-ID: Message-ID\r\n\r\nbody\r\n";
    for prepared in &results {
        assert_eq!(normal(&prepared.bytes), expected);
        assert!(prepared.message_id.ends_with("@example.com>"));
        assert_eq!(prepared.envelope().recipients().len(), 2);
    }
}

#[test]
fn globs_match_whole_addresses_case_insensitively() {
    assert!(glob_match("*@example.com", "Scanner@EXAMPLE.com"));
    assert!(!glob_match("*@example.com", "x@example.com.evil"));
    assert!(glob_match("scanner@*", "scanner@local"));
    assert!(!glob_match("scanner@*", "scanner2@local"));
    assert!(glob_match("*", "anything@x"));
    assert!(glob_match("a*b*c", "abc"));
    assert!(!glob_match("a*b*c", "acb"));
    assert!(glob_match("ops@example.com", "OPS@example.com"));
    assert!(!glob_match("ops@example.com", "ops@example.co"));
    assert!(!glob_match("ab*ba", "aba"));
}

#[test]
fn the_accounts_address_is_always_allowed() {
    let none: [String; 0] = [];
    let p = relay_policy(&none, false);
    assert!(p.allows(Some("me@example.com"), "ME@example.com"));
    assert!(!p.allows(Some("me@example.com"), "you@example.com"));
    assert!(!p.allows(None, "me@example.com"));
    let patterns = ["*@example.com".to_owned()];
    let p = relay_policy(&patterns, false);
    assert!(p.allows(None, "you@example.com"));
    assert!(p.allows(Some("me@example.org"), "me@example.org"));
    assert!(!p.allows(None, "you@example.org"));
    assert!(SenderPolicy::Any.allows(None, "anyone@anywhere.example"));
}
