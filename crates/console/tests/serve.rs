//! The console on a real listener: over TLS with a certificate from PEM
//! files, and plain on loopback.

use std::sync::Arc;

use apimail_console::{
    AccountInfo, Console, ConsoleConfig, DEFAULT_LOGIN_LIMITS, router, serve, tls,
};
use apimail_core::journal::Journal;
use apimail_core::outbox::Outbox;
use apimail_core::token_store::TokenStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn console(dir: &std::path::Path, tls: bool) -> Arc<Console> {
    let console = Console::open(ConsoleConfig {
        dir: dir.join("admin"),
        journal: Journal::open(dir.join("journal")).unwrap(),
        outbox: Outbox::open(dir.join("outbox")).unwrap(),
        token_store: TokenStore::new(dir),
        accounts: Vec::<AccountInfo>::new(),
        zone: jiff::tz::TimeZone::UTC,
        tls,
        login_limits: DEFAULT_LOGIN_LIMITS,
    })
    .unwrap();
    Arc::new(console)
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: console.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn serves_over_tls_from_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["console.test".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server_config = tls::from_files(&cert, &key).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        router(console(dir.path(), true)),
        Some(server_config),
        async {
            let _ = stopped.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("console.test").unwrap();
    let stream = connector
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let answer = exchange(stream, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    // Plain HTTP to the TLS port gets no answer.
    let answer = exchange(TcpStream::connect(addr).await.unwrap(), "/healthz").await;
    assert!(!answer.contains("200 OK"), "{answer}");

    stop.send(()).unwrap();
    server.await.unwrap();
}

#[test]
fn a_key_that_is_not_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["console.test".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let error = tls::from_files(&cert, &cert).unwrap_err().to_string();
    assert!(error.contains("holds no PEM private key"), "{error}");
    let error = tls::from_files(&dir.path().join("missing.pem"), &cert)
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot read the certificate"), "{error}");
}
