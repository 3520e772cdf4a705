//! The server side of a TLS handshake, with failures that name the cause.
//!
//! The client's hello is read first (rustls's `Acceptor`), so a failed
//! handshake can say what the client offered: only TLS 1.0/1.1, or only
//! ciphers the relay does not take (an old printer's `AES128-SHA`), with
//! the fix, a listener without TLS for that device's address.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::Acceptor;
use rustls::{CipherSuite, PeerIncompatible, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// Runs the handshake for the client at `ip`; a failure says why, and
/// what to do about it, in one line for the log.
pub(super) async fn accept<S>(
    config: Arc<ServerConfig>,
    stream: S,
    ip: IpAddr,
) -> Result<TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
        .await
        .map_err(|e| cause(&e, &[], ip))?;
    let suites: Vec<CipherSuite> = start.client_hello().cipher_suites().to_vec();
    start
        .into_stream(config)
        .await
        .map_err(|e| cause(&e, &suites, ip))
}

fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The cause of failed handshake `error`, given the client's cipher suites.
fn cause(error: &io::Error, suites: &[CipherSuite], ip: IpAddr) -> String {
    let fix = format!(
        "fix: update the device's firmware, or give it a listener without TLS \
         (tls = \"none\") with allowed_networks = [\"{ip}\"]"
    );
    let offered = || {
        let names: Vec<String> = suites
            .iter()
            .filter(|s| **s != CipherSuite::TLS_EMPTY_RENEGOTIATION_INFO_SCSV)
            .take(8)
            .map(|s| suite_name(*s))
            .collect();
        names.join(", ")
    };
    match rustls_error(error) {
        // TLS 1.0 and 1.1 hellos have no signature_algorithms extension.
        Some(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SignatureAlgorithmsExtensionRequired,
        )) => format!(
            "the client offers only TLS 1.0 or 1.1 (the relay takes TLS 1.2 and 1.3); {fix}"
        ),
        Some(rustls::Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon | PeerIncompatible::NoKxGroupsInCommon,
        )) => format!(
            "no cipher in common: the client offers only {} (the relay takes ECDHE with AES-GCM or ChaCha20); {fix}",
            offered()
        ),
        Some(rustls::Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon)) => {
            format!("no signature algorithm in common with the client; {fix}")
        }
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "the client sent no TLS hello ({error}): a plain-text client on a TLS port? \
             It should use the STARTTLS or plain listener"
        ),
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {error}"),
    }
}

/// A suite's OpenSSL name where rustls has none (the old ones devices
/// offer), else rustls's.
fn suite_name(suite: CipherSuite) -> String {
    let name = match u16::from(suite) {
        0x0004 => "RC4-MD5",
        0x0005 => "RC4-SHA",
        0x000a => "DES-CBC3-SHA",
        0x002f => "AES128-SHA",
        0x0035 => "AES256-SHA",
        0x003c => "AES128-SHA256",
        0x003d => "AES256-SHA256",
        0x009c => "AES128-GCM-SHA256",
        0x009d => "AES256-GCM-SHA384",
        0xc013 => "ECDHE-RSA-AES128-SHA",
        0xc014 => "ECDHE-RSA-AES256-SHA",
        _ => return format!("{suite:?}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A ClientHello record: `version`, the cipher suites, extensions.
    fn hello(version: [u8; 2], suites: &[u16], extensions: &[u8]) -> Vec<u8> {
        let mut body = version.to_vec();
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for suite in suites {
            body.extend_from_slice(&suite.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // null compression
        if !extensions.is_empty() {
            body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
            body.extend_from_slice(extensions);
        }
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    async fn refused(client_hello: Vec<u8>) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let config = super::super::tests::tls_config();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let handshake = tokio::spawn(async move { accept(config, server, ip).await.err() });
        client.write_all(&client_hello).await.unwrap();
        let mut alert = Vec::new();
        let _ = client.read_to_end(&mut alert).await;
        handshake.await.unwrap().expect("the handshake fails")
    }

    const AES128_SHA: u16 = 0x002f;
    /// signature_algorithms: rsa_pkcs1_sha256.
    const SIGNATURE_ALGORITHMS: [u8; 8] = [0, 13, 0, 4, 0, 2, 4, 1];

    #[tokio::test]
    async fn a_tls_1_0_client_is_named_with_the_fix() {
        let why = refused(hello([3, 1], &[AES128_SHA], &[])).await;
        assert!(why.contains("only TLS 1.0 or 1.1"), "{why}");
        assert!(why.contains("tls = \"none\""), "{why}");
        assert!(why.contains("allowed_networks = [\"192.0.2.7\"]"), "{why}");
    }

    #[tokio::test]
    async fn an_old_printers_only_cipher_is_named() {
        let why = refused(hello([3, 3], &[AES128_SHA], &SIGNATURE_ALGORITHMS)).await;
        assert!(why.starts_with("no cipher in common"), "{why}");
        assert!(why.contains("only AES128-SHA "), "{why}");
        assert!(why.contains("tls = \"none\""), "{why}");
    }

    #[tokio::test]
    async fn a_plain_text_client_on_the_tls_port_is_named() {
        let why = refused(b"EHLO printer\r\n".to_vec()).await;
        assert!(why.contains("plain-text client"), "{why}");
    }
}
