//! Opening the transport to a backend.

use crate::config::BackendAddress;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How to speak TLS to a backend.
pub struct TlsClient {
    /// Offers http/1.1 only.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// Offers h2 and http/1.1 (None when the pool has `tls.http2: false`).
    pub config_h2: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// SNI and verified name; the backend's host when not set.
    pub server_name: Option<String>,
}

/// The byte stream to a backend.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects, and for `https://` backends completes the TLS handshake, all within
/// `timeout`.
pub async fn connect_tls(
    addr: &BackendAddress,
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> io::Result<UpstreamIo> {
    let work = async {
        let io = connect(addr, timeout).await?;
        let (UpstreamIo::Plain(tcp), Some(tls)) = (io, tls) else {
            return Err(io::Error::other("TLS is required for https:// backends"));
        };
        let name = tls.server_name.clone().unwrap_or_else(|| addr.host.clone());
        let name = rustls_pki_types::ServerName::try_from(name)
            .map_err(|e| io::Error::other(format!("bad TLS server name: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await?;
        Ok(UpstreamIo::Tls(Box::new(s)))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS connect timed out after {timeout:?}"),
        )),
    }
}

pub async fn connect(addr: &BackendAddress, timeout: Duration) -> io::Result<UpstreamIo> {
    let connecting = TcpStream::connect((addr.host.as_str(), addr.port));
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            ));
        }
    };
    stream.set_nodelay(true)?;
    Ok(UpstreamIo::Plain(stream))
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What an HTTP/1.1 connection's byte stream and its pooled sender share.
pub struct Tally {
    /// Bytes the backend has sent: a request whose connection ended with the
    /// count unchanged got nothing back.
    pub received: AtomicU64,
    /// The set of idle connections it belongs to (`ConnPool::here` where it was
    /// opened); here rather than in the sender, which the request path moves.
    pub home: usize,
}

/// An HTTP/1.1 connection's byte stream that counts the bytes the backend sent.
pub struct Tallied {
    io: UpstreamIo,
    tally: Arc<Tally>,
}

impl Tallied {
    pub fn new(io: UpstreamIo, tally: Arc<Tally>) -> Self {
        Tallied { io, tally }
    }
}

impl AsyncRead for Tallied {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        crate::passthrough::read_counting(&mut this.io, cx, buf, &this.tally.received)
    }
}

impl AsyncWrite for Tallied {
    crate::passthrough::write_through!(io);
}
