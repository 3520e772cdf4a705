//! A TLS listener with a certificate from the test CA
//! (`tests/fixtures/tls-*.pem`), answering every request with 404: enough
//! for handshake tests (untrusted CA, wrong name) and for probes that only
//! need an answer.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS server on `127.0.0.1` with a free port.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
}

impl TlsServer {
    /// Serves with the key and certificate chain in `pem` (PKCS#8 key,
    /// then certificates).
    pub fn start(pem: &Path) -> io::Result<TlsServer> {
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem)
            .map_err(|e| invalid(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_file(pem).map_err(|e| invalid(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e))?;
        let config = Arc::new(config);
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, config);
                });
            }
        });
        Ok(TlsServer { addr })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    let connection = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut reader = BufReader::new(&mut tls);
    // The request head; a body, if any, is left unread (we close).
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    drop(reader);
    tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    tls.conn.send_close_notify();
    tls.flush()
}
