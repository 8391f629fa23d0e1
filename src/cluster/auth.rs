//! Mutual proof of the cluster secret at the start of every peer connection,
//! inside its TLS session (see `secure`).
//!
//! ```text
//! client -> server   MAGIC (8 bytes), client nonce (32)
//! server -> client   server nonce (32), HMAC-SHA256(secret, "server" | tls | cn | sn)
//! client -> server   HMAC-SHA256(secret, "client" | tls | sn | cn)
//! ```
//!
//! Each side proves that it knows the secret over a nonce the other side chose,
//! so a recorded handshake cannot be replayed, and the two proofs carry different
//! labels, so one cannot be reflected back as the other. `tls` is keying material
//! exported from the TLS session the handshake runs in: a proof made for one
//! session does not verify in another, so a relay in the middle cannot pass it
//! on. A client checks the server's proof before it sends its own. After the
//! handshake TLS protects every frame (confidentiality and integrity).

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{Error, ErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 8] = b"FULCRUM1";
const NONCE: usize = 32;
const TAG: usize = 32;
const SERVER: &[u8] = b"fulcrum cluster server";
const CLIENT: &[u8] = b"fulcrum cluster client";

/// The cluster secret, ready to sign with.
pub struct Secret(hmac::Key);

impl Secret {
    pub fn new(text: &str) -> Self {
        Secret(hmac::Key::new(hmac::HMAC_SHA256, text.as_bytes()))
    }

    fn message(label: &[u8], tls: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
        [label, tls, a, b].concat()
    }

    fn sign(&self, label: &[u8], tls: &[u8], a: &[u8], b: &[u8]) -> hmac::Tag {
        hmac::sign(&self.0, &Self::message(label, tls, a, b))
    }

    /// Constant-time check of a proof.
    fn verify(&self, label: &[u8], tls: &[u8], a: &[u8], b: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, &Self::message(label, tls, a, b), tag).is_ok()
    }
}

fn nonce() -> std::io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| Error::other("no randomness for the cluster handshake"))?;
    Ok(n)
}

/// The connecting side; `tls` is the session's channel binding.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &Secret,
    tls: &[u8],
) -> std::io::Result<()> {
    let mine = nonce()?;
    let mut hello = [0u8; MAGIC.len() + NONCE];
    hello[..MAGIC.len()].copy_from_slice(MAGIC);
    hello[MAGIC.len()..].copy_from_slice(&mine);
    s.write_all(&hello).await?;
    s.flush().await?;
    let mut answer = [0u8; NONCE + TAG];
    s.read_exact(&mut answer).await?;
    let (theirs, proof) = answer.split_at(NONCE);
    if !secret.verify(SERVER, tls, &mine, theirs, proof) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "the peer does not know the cluster secret",
        ));
    }
    s.write_all(secret.sign(CLIENT, tls, theirs, &mine).as_ref())
        .await?;
    s.flush().await
}

/// The accepting side; `tls` is the session's channel binding.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &Secret,
    tls: &[u8],
) -> std::io::Result<()> {
    let mut hello = [0u8; MAGIC.len() + NONCE];
    s.read_exact(&mut hello).await?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "no cluster handshake (is `cluster.secret` set on the other node?)",
        ));
    }
    let theirs = &hello[MAGIC.len()..];
    let mine = nonce()?;
    let mut answer = [0u8; NONCE + TAG];
    answer[..NONCE].copy_from_slice(&mine);
    answer[NONCE..].copy_from_slice(secret.sign(SERVER, tls, theirs, &mine).as_ref());
    s.write_all(&answer).await?;
    s.flush().await?;
    let mut proof = [0u8; TAG];
    s.read_exact(&mut proof).await?;
    if !secret.verify(CLIENT, tls, &mine, theirs, &proof) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "the peer does not know the cluster secret",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(a: &str, b: &str) -> (std::io::Result<()>, std::io::Result<()>) {
        bound(a, b, b"session", b"session").await
    }

    async fn bound(
        a: &str,
        b: &str,
        ta: &'static [u8],
        tb: &'static [u8],
    ) -> (std::io::Result<()>, std::io::Result<()>) {
        let (mut c, mut s) = tokio::io::duplex(1024);
        let (ca, sb) = (Secret::new(a), Secret::new(b));
        // Each side closes its end when it is done, as a dropped connection would.
        tokio::join!(async move { client(&mut c, &ca, ta).await }, async move {
            server(&mut s, &sb, tb).await
        })
    }

    #[tokio::test]
    async fn proofs_made_for_another_tls_session_fail() {
        // A relay runs two TLS sessions: the bindings differ.
        let (c, s) = bound(
            "0123456789abcdef",
            "0123456789abcdef",
            b"session one",
            b"session two",
        )
        .await;
        assert!(c.is_err() && s.is_err(), "{c:?} {s:?}");
    }

    #[tokio::test]
    async fn same_secret_passes_and_a_different_one_fails_on_both_sides() {
        let (c, s) = pair("0123456789abcdef", "0123456789abcdef").await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (c, s) = pair("0123456789abcdef", "0123456789abcdeX").await;
        assert!(
            c.is_err(),
            "the client accepted a server without the secret"
        );
        assert!(
            s.is_err(),
            "the server accepted a client without the secret"
        );
    }

    #[tokio::test]
    async fn a_peer_without_the_handshake_is_refused() {
        let (mut c, mut s) = tokio::io::duplex(1024);
        let secret = Secret::new("0123456789abcdef");
        c.write_all(&[0u8; 40]).await.unwrap();
        let e = server(&mut s, &secret, b"x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }
}
