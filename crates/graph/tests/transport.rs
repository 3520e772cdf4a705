//! The transport against a small loopback HTTP/1.1 fake of Graph: the wire
//! format of every request, the 413 fallback, the chunk loop and its
//! resume, draft clean-up, tokens, throttling answers and concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimail_core::{
    AccessToken, Attachment, Envelope, ErrorKind, MessageBuilder, Secret, TokenError, TokenSource,
    Transport,
};
use apimail_graph::{CHUNK_BYTES, DEFAULT_MAX_MESSAGE_BYTES, GraphTransport, Mailbox};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

mod common;

use common::{Fake, Reply, Request, RequestExt, Response, graph_error, reply};

// -------------------------------------------------------------- tokens --

/// `tok1`, then `tok2`, `tok3`... after each rejection.
#[derive(Default)]
struct Counting {
    refreshes: AtomicUsize,
}

impl TokenSource for Counting {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        Ok(named(self.refreshes.load(Ordering::SeqCst) + 1))
    }

    async fn refresh_after_rejection(&self, _: &AccessToken) -> Result<AccessToken, TokenError> {
        Ok(named(self.refreshes.fetch_add(1, Ordering::SeqCst) + 2))
    }
}

fn named(n: usize) -> AccessToken {
    AccessToken {
        secret: Secret::new(format!("tok{n}")),
        expires_at: None,
    }
}

fn transport(fake: &Fake, mailbox: Mailbox) -> GraphTransport<Counting> {
    GraphTransport::try_new(
        &fake.api(),
        mailbox,
        Counting::default(),
        DEFAULT_MAX_MESSAGE_BYTES,
        true,
    )
    .unwrap()
}

// ------------------------------------------------------------ messages --

fn envelope() -> Envelope {
    Envelope::new(
        "ann@example.com".parse().unwrap(),
        vec!["bob@example.com".parse().unwrap()],
    )
}

fn small_message() -> Vec<u8> {
    MessageBuilder::new()
        .from("ann@example.com".parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .subject("hello")
        .text("hi Bob\r\n")
        .build()
        .unwrap()
        .into_bytes()
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn message_with(attachments: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = MessageBuilder::new()
        .from("ann@example.com".parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .subject("files")
        .text("see attached\r\n")
        .html("<p>see attached <img src=\"cid:logo\"></p>")
        .inline(
            Attachment::new("logo.png", data(2000, 9))
                .content_id("logo")
                .content_type("image/png")
                .unwrap(),
        );
    for (name, bytes) in attachments {
        builder = builder.attach(Attachment::new(*name, bytes.clone()));
    }
    builder.build().unwrap().into_bytes()
}

// --------------------------------------------------------------- tests --

#[tokio::test]
async fn send_mail_wire_format() {
    let fake = Fake::start(Duration::ZERO, |_| reply(202, Value::Null)).await;
    let t = transport(
        &fake,
        Mailbox::User("guest_x.com#EXT#@contoso.onmicrosoft.com".into()),
    );
    let message = small_message();
    let receipt = t.send_raw(&envelope(), &message).await.unwrap();
    assert_eq!(receipt.provider, "graph");
    assert_eq!(receipt.id, None);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        r.line(),
        "POST /graph/v1.0/users/guest_x.com%23EXT%23@contoso.onmicrosoft.com/sendMail"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("authorization"), Some("Bearer tok1"));
    assert!(r.header("user-agent").unwrap().starts_with("apimail/"));
    // The bare base64 of the MIME, not a JSON string.
    assert_eq!(r.body, STANDARD.encode(&message).into_bytes());
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once() {
    let fake = Fake::start(Duration::ZERO, |r| {
        if r.header("authorization") == Some("Bearer tok2") {
            reply(202, Value::Null)
        } else {
            graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired.",
            )
        }
    })
    .await;
    let t = transport(&fake, Mailbox::Me);
    t.send_raw(&envelope(), &small_message()).await.unwrap();
    let auth: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(auth, ["Bearer tok1", "Bearer tok2"]);

    // Always 401: one refresh, then Unauthorized.
    let fake = Fake::start(Duration::ZERO, |_| {
        graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired.",
        )
    })
    .await;
    let t = transport(&fake, Mailbox::Me);
    let error = t.send_raw(&envelope(), &small_message()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(
        error.to_string().contains("InvalidAuthenticationToken"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn graph_errors_are_classified_and_posts_are_not_retried() {
    let fake = Fake::start(Duration::ZERO, |_| {
        graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    })
    .await;
    let error = transport(&fake, Mailbox::Me)
        .send_raw(&envelope(), &small_message())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(
        error.to_string().starts_with(
            "Microsoft Graph answered HTTP 403 ErrorAccessDenied: Access is denied. Check credentials and try again."
        ),
        "{error}"
    );

    let fake = Fake::start(Duration::ZERO, |_| {
        Response::new(429)
            .with_header("Retry-After", "7")
            .with_body(
                br#"{"error":{"code":"ApplicationThrottled","message":"MailboxConcurrency limit"}}"#
                    .to_vec(),
            )
            .into()
    })
    .await;
    let error = transport(&fake, Mailbox::Me)
        .send_raw(&envelope(), &small_message())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Temporary);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    for status in [500, 503, 504] {
        let fake = Fake::start(Duration::ZERO, move |_| graph_error(status, "x", "y")).await;
        let error = transport(&fake, Mailbox::Me)
            .send_raw(&envelope(), &small_message())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Temporary);
        assert_eq!(fake.requests().len(), 1, "HTTP {status}: sent once");
    }

    // Nothing listening: a network failure, temporary.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let t = GraphTransport::new(&url, Mailbox::Me, Counting::default(), 1 << 20, true);
    let error = t.send_raw(&envelope(), &small_message()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Temporary, "{error}");
    assert!(
        error.to_string().contains("cannot reach Microsoft Graph"),
        "{error}"
    );
}

/// A fake mailbox: 413 on sendMail, drafts, small attachments, upload
/// sessions (optionally failing), send and delete.
struct Mailbox413 {
    base: Arc<Mutex<String>>,
    uploaded: Arc<Mutex<Vec<u8>>>,
    /// PUT number (1-based) to drop without an answer, once each.
    drop_puts: Vec<usize>,
    /// Answer every PUT with 500.
    fail_uploads: bool,
    puts: AtomicUsize,
}

impl Mailbox413 {
    fn handle(&self, r: &Request) -> Reply {
        let path = r.path.as_str();
        match (r.method.as_str(), path) {
            ("POST", p) if p.ends_with("/sendMail") => graph_error(
                413,
                "RequestEntityTooLarge",
                "The maximum request length supported is 4MB.",
            ),
            ("POST", p) if p.ends_with("/messages") => reply(201, json!({"id": "DRAFT1="})),
            ("POST", p) if p.ends_with("/messages/DRAFT1=/attachments") => {
                reply(201, json!({"id": "ATT"}))
            }
            ("POST", p) if p.ends_with("/attachments/createUploadSession") => {
                let base = self.base.lock().unwrap().clone();
                reply(
                    201,
                    json!({
                        "uploadUrl": format!("{base}/upload/s1?authtoken=SECRET-IN-URL"),
                        "expirationDateTime": "2099-01-01T00:00:00Z",
                        "nextExpectedRanges": ["0-"],
                    }),
                )
            }
            ("PUT", "/upload/s1") => {
                let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
                if self.drop_puts.contains(&n) {
                    return Reply::Drop;
                }
                if self.fail_uploads {
                    return graph_error(500, "InternalServerError", "boom");
                }
                let range = r.header("content-range").unwrap();
                let (span, total) = range
                    .strip_prefix("bytes ")
                    .unwrap()
                    .split_once('/')
                    .unwrap();
                let (start, end) = span.split_once('-').unwrap();
                let (start, end, total): (usize, usize, usize) = (
                    start.parse().unwrap(),
                    end.parse().unwrap(),
                    total.parse().unwrap(),
                );
                let mut uploaded = self.uploaded.lock().unwrap();
                if start != uploaded.len() {
                    return reply(
                        416,
                        json!({"nextExpectedRanges": [format!("{}-", uploaded.len())]}),
                    );
                }
                assert_eq!(r.body.len(), end - start + 1);
                uploaded.extend_from_slice(&r.body);
                if uploaded.len() == total {
                    Response::new(201)
                        .with_header("Location", "https://x/attachments/ATT")
                        .into()
                } else {
                    reply(
                        200,
                        json!({"expirationDateTime": "2099-01-01T00:00:00Z",
                               "nextExpectedRanges": [format!("{}-", uploaded.len())]}),
                    )
                }
            }
            ("GET", "/upload/s1") => {
                let done = self.uploaded.lock().unwrap().len();
                reply(200, json!({"nextExpectedRanges": [format!("{done}-")]}))
            }
            ("POST", p) if p.ends_with("/messages/DRAFT1=/send") => reply(202, Value::Null),
            ("DELETE", p) if p.ends_with("/messages/DRAFT1=") => reply(204, Value::Null),
            _ => graph_error(404, "NotFound", "no such route in the fake"),
        }
    }
}

async fn fake_mailbox(drop_puts: Vec<usize>, fail_uploads: bool) -> (Fake, Arc<Mutex<Vec<u8>>>) {
    let base = Arc::new(Mutex::new(String::new()));
    let uploaded = Arc::new(Mutex::new(Vec::new()));
    let state = Mailbox413 {
        base: base.clone(),
        uploaded: uploaded.clone(),
        drop_puts,
        fail_uploads,
        puts: AtomicUsize::new(0),
    };
    let fake = Fake::start(Duration::ZERO, move |r| state.handle(r)).await;
    *base.lock().unwrap() = fake.base.clone();
    (fake, uploaded)
}

fn draft_of(request: &Request) -> Vec<u8> {
    STANDARD.decode(&request.body).unwrap()
}

#[tokio::test]
async fn a_413_takes_the_draft_route() {
    let (fake, _) = fake_mailbox(vec![], false).await;
    let t = transport(&fake, Mailbox::Me);
    let message = message_with(&[("notes.txt", b"some notes\r\n".to_vec())]);
    let receipt = t.send_raw(&envelope(), &message).await.unwrap();
    assert_eq!(receipt.id.as_deref(), Some("DRAFT1="));

    assert_eq!(
        fake.lines(),
        [
            "POST /graph/v1.0/me/sendMail",
            "POST /graph/v1.0/me/messages",
            "POST /graph/v1.0/me/messages/DRAFT1=/attachments",
            "POST /graph/v1.0/me/messages/DRAFT1=/attachments",
            "POST /graph/v1.0/me/messages/DRAFT1=/send",
        ]
    );
    let requests = fake.requests();
    let draft_request = &requests[1];
    assert_eq!(draft_request.header("content-type"), Some("text/plain"));
    let draft = draft_of(draft_request);
    let parsed = mail_parser::MessageParser::default().parse(&draft).unwrap();
    assert_eq!(parsed.subject(), Some("files"));
    assert_eq!(parsed.attachment_count(), 0);
    assert_eq!(parsed.body_text(0).as_deref(), Some("see attached\r\n"));
    assert!(
        draft.starts_with(&message[..message.windows(4).position(|w| w == b"\r\n\r\n").unwrap()])
    );

    let logo = requests[2].json();
    assert_eq!(requests[2].header("content-type"), Some("application/json"));
    assert_eq!(logo["@odata.type"], "#microsoft.graph.fileAttachment");
    assert_eq!(logo["name"], "logo.png");
    assert_eq!(logo["contentType"], "image/png");
    assert_eq!(logo["isInline"], true);
    assert_eq!(logo["contentId"], "logo");
    assert_eq!(
        STANDARD
            .decode(logo["contentBytes"].as_str().unwrap())
            .unwrap(),
        data(2000, 9)
    );
    let notes = requests[3].json();
    assert_eq!(notes["name"], "notes.txt");
    assert_eq!(notes["isInline"], false);
    assert!(notes.get("contentId").is_none());
    assert_eq!(
        STANDARD
            .decode(notes["contentBytes"].as_str().unwrap())
            .unwrap(),
        b"some notes\r\n"
    );
    let send = &requests[4];
    assert!(send.body.is_empty());
    assert_eq!(send.header_count("content-length"), 1);
    assert_eq!(send.header("content-length"), Some("0"));
}

/// Records tracing events, to check what is (not) logged.
mod capture {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Lines(pub Arc<Mutex<Vec<String>>>);

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{value:?} "));
        }
    }

    impl Subscriber for Lines {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = String::new();
            event.record(&mut Text(&mut line));
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn large_attachments_go_through_an_upload_session_that_resumes() {
    let lines = capture::Lines::default();
    let _guard = tracing::subscriber::set_default(lines.clone());

    // The second PUT is dropped without an answer: the loop asks the
    // session where to go on and resends only that chunk.
    let (fake, uploaded) = fake_mailbox(vec![2], false).await;
    let t = transport(&fake, Mailbox::User("ann@contoso.com".into()));
    let big = data(7_000_000, 1);
    let message = message_with(&[("big.bin", big.clone()), ("small.txt", b"x".to_vec())]);
    let receipt = t.send_raw(&envelope(), &message).await.unwrap();
    assert_eq!(receipt.id.as_deref(), Some("DRAFT1="));
    assert_eq!(*uploaded.lock().unwrap(), big);

    let user = "/graph/v1.0/users/ann@contoso.com";
    let lines_seen = fake.lines();
    assert_eq!(
        lines_seen,
        [
            format!("POST {user}/messages"),
            format!("POST {user}/messages/DRAFT1=/attachments"),
            format!("POST {user}/messages/DRAFT1=/attachments/createUploadSession"),
            "PUT /upload/s1?authtoken=SECRET-IN-URL".into(),
            "PUT /upload/s1?authtoken=SECRET-IN-URL".into(),
            "GET /upload/s1?authtoken=SECRET-IN-URL".into(),
            "PUT /upload/s1?authtoken=SECRET-IN-URL".into(),
            "PUT /upload/s1?authtoken=SECRET-IN-URL".into(),
            format!("POST {user}/messages/DRAFT1=/attachments"),
            format!("POST {user}/messages/DRAFT1=/send"),
        ],
        "no sendMail: the base64 is over 4 MB from the start"
    );
    let requests = fake.requests();
    let session = requests[2].json();
    assert_eq!(
        session,
        json!({"AttachmentItem": {
            "attachmentType": "file",
            "name": "big.bin",
            "size": 7_000_000,
            "contentType": "application/octet-stream",
            "isInline": false,
        }})
    );
    let puts: Vec<&Request> = requests.iter().filter(|r| r.method == "PUT").collect();
    let ranges: Vec<_> = puts
        .iter()
        .map(|r| r.header("content-range").unwrap())
        .collect();
    assert_eq!(
        ranges,
        [
            "bytes 0-3276799/7000000",
            "bytes 3276800-6553599/7000000",
            "bytes 3276800-6553599/7000000",
            "bytes 6553600-6999999/7000000",
        ]
    );
    for put in &puts {
        assert_eq!(
            put.header("authorization"),
            None,
            "upload URLs carry their own auth"
        );
        assert_eq!(put.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            put.header("content-length"),
            Some(put.body.len().to_string().as_str())
        );
        assert!(put.body.len() <= CHUNK_BYTES);
    }
    for r in requests.iter().filter(|r| !r.path.starts_with("/upload")) {
        assert_eq!(r.header("authorization"), Some("Bearer tok1"));
    }

    let logged = lines.0.lock().unwrap().join("\n");
    assert!(!logged.contains("SECRET-IN-URL"), "{logged}");
    assert!(!logged.contains("tok1"), "{logged}");
    assert!(
        logged.contains("over Graph's 4 MB request limit"),
        "{logged}"
    );
    assert!(
        logged.contains("PUT upload session on 127.0.0.1"),
        "{logged}"
    );
}

#[tokio::test]
async fn a_failed_upload_deletes_the_draft() {
    let (fake, _) = fake_mailbox(vec![], true).await;
    let t = transport(&fake, Mailbox::Me);
    let message = message_with(&[("big.pdf", data(5_000_000, 3))]);
    let error = t.send_raw(&envelope(), &message).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Temporary);
    assert_eq!(
        error.to_string(),
        "uploading attachment `big.pdf` failed at byte 0 of 5000000; the draft was deleted"
    );
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        source.contains("HTTP 500 InternalServerError: boom"),
        "{source}"
    );
    let lines = fake.lines();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("PUT")).count(),
        4,
        "the first try and 3 resumes"
    );
    assert_eq!(
        lines.last().unwrap(),
        "DELETE /graph/v1.0/me/messages/DRAFT1="
    );
    assert!(!lines.iter().any(|l| l.ends_with("/send")));
}

#[tokio::test]
async fn draft_route_refusals() {
    // 403 on the draft: Mail.ReadWrite is named; nothing else is tried.
    let fake = Fake::start(Duration::ZERO, |r| {
        if r.path.ends_with("/messages") {
            graph_error(403, "ErrorAccessDenied", "Access is denied.")
        } else {
            reply(202, Value::Null)
        }
    })
    .await;
    let t = transport(&fake, Mailbox::User("ann@contoso.com".into()));
    let message = message_with(&[("big.bin", data(3_500_000, 5))]);
    let error = t.send_raw(&envelope(), &message).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(error.to_string().contains("ErrorAccessDenied"), "{error}");
    assert!(error.to_string().contains("Mail.ReadWrite"), "{error}");
    assert_eq!(
        fake.lines(),
        ["POST /graph/v1.0/users/ann@contoso.com/messages"]
    );

    // Without Mail.ReadWrite in the grant: refused before any request.
    let fake = Fake::start(Duration::ZERO, |_| reply(202, Value::Null)).await;
    let t = GraphTransport::new(
        &fake.api(),
        Mailbox::Me,
        Counting::default(),
        DEFAULT_MAX_MESSAGE_BYTES,
        false,
    );
    let error = t.send_raw(&envelope(), &message).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert!(error.to_string().contains("Mail.ReadWrite"), "{error}");
    assert!(fake.requests().is_empty());

    // A body that is over the limit without its attachments.
    let huge_text = "x".repeat(3_100_000);
    let message = MessageBuilder::new()
        .from("ann@example.com".parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .text(huge_text)
        .attach(Attachment::new("a.bin", data(10, 1)))
        .build()
        .unwrap()
        .into_bytes();
    let t = transport(&fake, Mailbox::Me);
    let error = t.send_raw(&envelope(), &message).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidMessage);
    assert!(
        error
            .to_string()
            .contains("the message body without attachments is over Graph's 4 MB request limit"),
        "{error}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn at_most_four_requests_in_flight() {
    let fake = Fake::start(Duration::from_millis(150), |_| reply(202, Value::Null)).await;
    let t = transport(&fake, Mailbox::Me);
    let message = small_message();
    let sends: Vec<_> = (0..10)
        .map(|_| {
            let t = t.clone();
            let message = message.clone();
            tokio::spawn(async move { t.send_raw(&envelope(), &message).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(fake.requests().len(), 10);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 0);
}
