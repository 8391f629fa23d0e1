//! A client connection that counts its bytes into its listener's counters, and
//! its own life in the listener's open-connection gauge: into the block of the
//! worker that accepted it, which is the one it runs on (see
//! [`ListenerStats`]).

use crate::telemetry::{ListenerStats, WorkerCounters};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) struct Counted<IO> {
    io: IO,
    /// Held, not only the block: a listener removed by a reload stays
    /// reported while its connections last.
    stats: Arc<ListenerStats>,
    /// The accepting worker's index, its block in `stats`.
    worker: usize,
}

impl<IO> Counted<IO> {
    /// A connection accepted by worker `worker` (its socket's index).
    pub(crate) fn new(io: IO, stats: Arc<ListenerStats>, worker: usize) -> Self {
        let c = stats.worker(worker);
        c.accepted.fetch_add(1, Relaxed);
        c.open.fetch_add(1, Relaxed);
        Counted { io, stats, worker }
    }

    fn counters(&self) -> &WorkerCounters {
        self.stats.worker(self.worker)
    }

    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        self.counters().open.fetch_sub(1, Relaxed);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let counters = this.stats.worker(this.worker);
        crate::passthrough::read_counting(&mut this.io, cx, buf, &counters.received_bytes)
    }
}

impl Counted<tokio::net::TcpStream> {
    /// `TcpStream::try_write_vectored`, counted.
    pub(crate) fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let r = self.io.try_write_vectored(bufs);
        if let Ok(n) = r
            && n > 0
        {
            self.counters().sent_bytes.fetch_add(n as u64, Relaxed);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> Counted<IO> {
    fn sent(&self, r: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r
            && *n > 0
        {
            self.counters().sent_bytes.fetch_add(*n as u64, Relaxed);
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.sent(&r);
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.sent(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
