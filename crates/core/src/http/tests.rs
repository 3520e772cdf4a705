use super::*;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::chain::chain;
use super::exchange::exchange_within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_silent_peer_stalls_while_waiting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _server = keep.await.unwrap().unwrap();
    let mut io = Stall::new(stream, "example:1");
    io.limit = Duration::from_millis(200);
    io.moved();
    io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0; 16];
    let error = io.read(&mut buf).await.unwrap_err();
    let timeout = find::<HttpTimeout>(&error).expect("an HttpTimeout");
    assert_eq!(timeout.phase, Phase::Waiting);
    assert_eq!(timeout.host, "example:1");
}

#[tokio::test]
async fn a_peer_that_stops_reading_stalls_while_sending() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _server = keep.await.unwrap().unwrap();
    let mut io = Stall::new(stream, "example:1");
    io.limit = Duration::from_millis(300);
    io.moved();
    let chunk = vec![0u8; 1 << 20];
    let error = loop {
        if let Err(error) = io.write_all(&chunk).await {
            break error;
        }
    };
    let timeout = find::<HttpTimeout>(&error).expect("an HttpTimeout");
    assert_eq!(timeout.phase, Phase::Sending);
}

fn client() -> reqwest::Client {
    reqwest_builder().unwrap().build().unwrap()
}

const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    stall: Duration::from_secs(1),
};

/// A body that takes about 5 s through a 1 MB/s link, while the stall
/// limit is 3 s: it finishes, with a Content-Length. (The client's
/// kernel buffers take about 1.5 MB at once on loopback; draining them
/// must take less than the limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_upload_finishes() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = apimail_test_http::Server::start("slow", move |request| {
        record.lock().unwrap().push(request.clone());
        apimail_test_http::Response::json(202, &serde_json::json!({"ok": true})).into()
    })
    .unwrap();
    let link = apimail_test_http::stalling::SlowLink::start(server.addr(), 1_000_000).unwrap();
    let body = bytes::Bytes::from(vec![5u8; 5_000_000]);
    let limits = Timeouts {
        connect: Duration::from_secs(2),
        stall: Duration::from_secs(3),
    };
    let started = std::time::Instant::now();
    let request = client().put(format!("{}/upload", link.base_url()));
    let received = exchange_within(request, body, limits).await.unwrap();
    let took = started.elapsed();
    assert_eq!(received.status, 202);
    assert_eq!(received.body, br#"{"ok":true}"#);
    assert!(
        took > limits.stall * 3 / 2,
        "took {took:?}: not slow enough"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].body.len(), 5_000_000);
    assert_eq!(seen[0].header("content-length"), Some("5000000"));
    assert_eq!(seen[0].header("transfer-encoding"), None);
}

#[tokio::test]
async fn an_exchange_with_a_server_that_stops_reading_stalls_while_sending() {
    use apimail_test_http::stalling::{Behaviour, Stalling};
    let wedged = Stalling::start(Behaviour::StopsReadingAfter(64 * 1024)).unwrap();
    let started = std::time::Instant::now();
    let request = client().put(format!("{}/upload?secret=1", wedged.base_url()));
    let error = exchange_within(request, vec![1u8; 16 << 20].into(), QUICK)
        .await
        .unwrap_err();
    let timeout = find::<HttpTimeout>(error.as_ref()).expect("an HttpTimeout");
    assert_eq!(timeout.phase, Phase::Sending);
    assert_eq!(timeout.host, wedged.addr().to_string());
    assert_eq!(timeout.after, QUICK.stall);
    assert!(started.elapsed() < Duration::from_secs(4));
    let url = Url::parse(&wedged.base_url()).unwrap();
    let failure = NetFailure::diagnose(error.as_ref(), &url).unwrap();
    assert!(failure.is_temporary());
}

#[tokio::test]
async fn an_exchange_with_a_silent_server_stalls_while_waiting() {
    use apimail_test_http::stalling::{Behaviour, Stalling};
    let silent = Stalling::start(Behaviour::NeverAnswers).unwrap();
    for body in [bytes::Bytes::new(), bytes::Bytes::from_static(b"small")] {
        let started = std::time::Instant::now();
        let request = client().put(format!("{}/upload", silent.base_url()));
        let error = exchange_within(request, body.clone(), QUICK)
            .await
            .unwrap_err();
        let timeout = find::<HttpTimeout>(error.as_ref()).expect("an HttpTimeout");
        assert_eq!(timeout.phase, Phase::Waiting);
        let limit = QUICK.stall;
        assert_eq!(timeout.after, limit);
        let took = started.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_millis(500),
            "{took:?} for {} bytes",
            body.len()
        );
    }
}

#[tokio::test]
async fn exchange_errors_do_not_show_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let request = client().get(format!("http://127.0.0.1:{port}/upload?authtoken=SECRET"));
    let error = exchange_within(request, bytes::Bytes::new(), QUICK)
        .await
        .unwrap_err();
    let text = chain(error.as_ref())
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn timeout_messages_name_host_phase_and_time() {
    let stalled = HttpTimeout {
        host: "gmail.googleapis.com:443".into(),
        phase: Phase::Waiting,
        after: Duration::from_secs(2),
    };
    assert_eq!(
        stalled.to_string(),
        "gmail.googleapis.com:443 stalled: nothing moved for 2 s while waiting for the answer"
    );
    let connect = HttpTimeout {
        phase: Phase::Connect,
        ..stalled
    };
    assert!(connect.to_string().contains("(connecting)"));
}
