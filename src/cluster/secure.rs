//! Encryption of every peer connection: TLS 1.3 (rustls), then the mutual proof
//! of the cluster secret of `auth`, bound to that TLS session.
//!
//! Each node makes a fresh self-signed certificate (ECDSA P-256) when it starts;
//! certificates are not what proves membership. Instead, both sides run the
//! challenge-response of `auth` inside the encrypted channel, and each proof also
//! covers a value exported from the TLS session (RFC 5705 keying material, as in
//! RFC 9266 channel binding). Someone who relays the connection has two TLS
//! sessions, one with each side, with different exported values: the proofs it
//! relays do not verify, so it can neither join nor read the cluster. A recorded
//! capture shows TLS records only.
//!
//! Without `cluster.secret` the link is still encrypted (a passive listener
//! learns nothing), but not authenticated, as before.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// The name a client asks for (no DNS is involved: peers are addresses).
const PEER_NAME: &str = "fulcrum-peer";
/// The label of the exported keying material the proofs are bound to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-fulcrum-cluster-peer";
/// Bytes of keying material the proofs cover.
pub const BINDING_LEN: usize = 32;

/// A peer connection after the TLS handshake.
pub type PeerStream = TlsStream<TcpStream>;

/// This node's TLS configs for both directions.
pub struct PeerTls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl PeerTls {
    /// A fresh key and certificate, TLS 1.3 only.
    pub fn new() -> Result<PeerTls, String> {
        let provider = crate::tls::provider();
        let key = rcgen::KeyPair::generate().map_err(|e| format!("peer TLS key: {e}"))?;
        let cert = rcgen::CertificateParams::new(vec![PEER_NAME.to_string()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| format!("peer TLS certificate: {e}"))?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(|e| format!("peer TLS config: {e}"))?;
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SessionOnly(provider)))
            .with_no_client_auth();
        Ok(PeerTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<PeerStream> {
        let name = ServerName::try_from(PEER_NAME).map_err(std::io::Error::other)?;
        Ok(TlsStream::Client(self.connector.connect(name, tcp).await?))
    }

    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<PeerStream> {
        Ok(TlsStream::Server(self.acceptor.accept(tcp).await?))
    }
}

/// The value both ends of one TLS session share and no relay can make equal on
/// its two sessions.
pub fn binding(s: &PeerStream) -> std::io::Result<[u8; BINDING_LEN]> {
    let out = [0u8; BINDING_LEN];
    let r = match s {
        TlsStream::Client(c) => c
            .get_ref()
            .1
            .export_keying_material(out, EXPORTER_LABEL, None),
        TlsStream::Server(c) => c
            .get_ref()
            .1
            .export_keying_material(out, EXPORTER_LABEL, None),
    };
    r.map_err(std::io::Error::other)
}

/// Accepts the peer's self-signed certificate (membership is proven by the
/// secret, bound to this session), but still checks the handshake signature
/// made with it.
#[derive(Debug)]
struct SessionOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SessionOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_ends_of_a_session_share_the_binding() {
        let (a, b) = (PeerTls::new().unwrap(), PeerTls::new().unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut s = b.accept(tcp).await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            (binding(&s).unwrap(), buf)
        });
        let mut c = a
            .connect(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let (theirs, got) = server.await.unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(binding(&c).unwrap(), theirs);
    }
}
