//! `apimail relay --admin`: the admin console served from inside the relay
//! process; on loopback over plain HTTP, off loopback over TLS with the
//! relay's self-signed certificate when `[admin]` names none.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use apimail_tests::fake_google::FakeGoogle;
use apimail_tests::{Process, Sandbox, free_port, run};

/// `apimail relay ARGS` (with `--admin`), once its console is up.
fn start_relay(sandbox: &Sandbox, args: &[&str]) -> Process {
    Process::start(
        sandbox.cmd().arg("relay").args(args),
        "the admin console is at",
        Duration::from_secs(60),
    )
}

/// A plain HTTP/1.1 GET: the whole answer as text.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn the_relay_serves_the_console_on_loopback() {
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    let (smtp, admin) = (free_port(), free_port());
    let relay = start_relay(
        &sandbox,
        &[
            "--listen",
            &format!("127.0.0.1:{smtp}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
    );
    relay.wait_log(
        &format!("http://127.0.0.1:{admin}/"),
        Duration::from_secs(5),
    );
    let health = http_get(admin, "/healthz").unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let api = http_get(admin, "/api/v1/messages").unwrap();
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
    // The relay's SMTP listener is up in the same process.
    let mut stream = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220");
}

#[test]
#[allow(clippy::print_stderr)] // says why it is skipped
fn off_loopback_the_relays_console_speaks_tls_with_the_relays_certificate() {
    if run(Command::new("python3").arg("-c").arg("import ssl")).code != 0 {
        eprintln!("skipped: python3 with ssl is needed as the TLS client");
        return;
    }
    let fake = FakeGoogle::start();
    let sandbox = Sandbox::new(&fake);
    sandbox.login(&fake, &[]);
    let (smtp, admin) = (free_port(), free_port());
    let relay = start_relay(
        &sandbox,
        &[
            "--listen",
            &format!("127.0.0.1:{smtp}"),
            "--admin",
            &format!("0.0.0.0:{admin}"),
        ],
    );
    relay.wait_log(&format!("https://0.0.0.0:{admin}/"), Duration::from_secs(5));
    // Not plain HTTP.
    let plain = http_get(admin, "/healthz").unwrap_or_default();
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    // TLS, trusting the relay's own self-signed certificate.
    let cert = sandbox.path().join("data/relay/tls/cert.pem");
    assert!(cert.exists(), "the relay's self-signed certificate");
    let script = "import ssl,sys,urllib.request\n\
        ctx=ssl.create_default_context(cafile=sys.argv[1])\n\
        print(urllib.request.urlopen('https://localhost:'+sys.argv[2]+'/healthz',context=ctx,timeout=20).read().decode())";
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&cert)
        .arg(admin.to_string()));
    assert_eq!(out.code, 0, "python3: {}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
