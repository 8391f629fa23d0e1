//! Keep-alive connections to one backend.
//!
//! HTTP/1.1: idle connections wait in a lock-free bounded queue; a request takes one,
//! and the response body hands it back once it has been read to the end (a body
//! abandoned half-way closes the connection instead, as its framing is unknown).
//! Connections of our own (`h1`) and hyper's wait in two queues of their own.
//! HTTP/2: one shared connection multiplexes every request; it is replaced when it
//! closes.

use super::body::UpstreamBody;
use super::h1::conn::Conn as OwnConn;
use crate::clock::now_ms;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

/// Idle HTTP/1.1 connections kept per backend; more are closed after use.
const MAX_IDLE: usize = 512;

pub type H2Sender = http2::SendRequest<UpstreamBody>;

/// An HTTP/1.1 connection's request side, with the count of bytes the backend
/// has sent on it (see `io::Tallied`).
pub struct H1Sender {
    send: http1::SendRequest<UpstreamBody>,
    received: Arc<AtomicU64>,
}

impl H1Sender {
    pub fn new(send: http1::SendRequest<UpstreamBody>, received: Arc<AtomicU64>) -> Self {
        H1Sender { send, received }
    }

    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    pub fn is_ready(&self) -> bool {
        self.send.is_ready()
    }

    pub async fn ready(&mut self) -> hyper::Result<()> {
        self.send.ready().await
    }

    pub fn try_send_request(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> impl std::future::Future<
        Output = Result<
            http::Response<hyper::body::Incoming>,
            hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
        >,
    > + use<> {
        self.send.try_send_request(req)
    }

    /// Bytes the backend has sent on this connection so far.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }
}

pub struct ConnPool {
    idle: ArrayQueue<(H1Sender, u64)>,
    own_idle: ArrayQueue<(Box<OwnConn>, u64)>,
    pub(super) h2: ArcSwapOption<H2Sender>,
    pub(super) h2_connect: tokio::sync::Mutex<()>,
    /// Connections opened so far (for metrics and tests of reuse).
    pub opened: AtomicU64,
    /// What an https:// backend chose by ALPN (an `Alpn` as u8).
    alpn: AtomicU8,
}

/// The protocol an https:// backend picked when offered h2 and http/1.1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alpn {
    Unknown = 0,
    Http1 = 1,
    H2 = 2,
}

impl Default for ConnPool {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnPool {
    pub fn new() -> Self {
        ConnPool {
            idle: ArrayQueue::new(MAX_IDLE),
            own_idle: ArrayQueue::new(MAX_IDLE),
            h2: ArcSwapOption::empty(),
            h2_connect: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
            alpn: AtomicU8::new(Alpn::Unknown as u8),
        }
    }

    /// An idle HTTP/1.1 connection that has not been idle longer than `max_idle_ms`.
    pub fn take_idle(&self, max_idle_ms: u64) -> Option<H1Sender> {
        let now = now_ms();
        while let Some((sender, since)) = self.idle.pop() {
            if sender.is_closed() || now.saturating_sub(since) > max_idle_ms {
                continue;
            }
            return Some(sender);
        }
        None
    }

    pub fn put_idle(&self, sender: H1Sender) {
        if !sender.is_closed() {
            // When full, the connection is dropped (and closed).
            let _ = self.idle.push((sender, now_ms()));
        }
    }

    /// An idle connection of our own that has not been idle longer than
    /// `max_idle_ms` and that the backend has not closed.
    pub fn take_idle_own(&self, max_idle_ms: u64) -> Option<Box<OwnConn>> {
        let now = now_ms();
        while let Some((mut conn, since)) = self.own_idle.pop() {
            if now.saturating_sub(since) <= max_idle_ms && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    pub fn put_idle_own(&self, conn: Box<OwnConn>) {
        // When full, the connection is dropped (and closed).
        let _ = self.own_idle.push((conn, now_ms()));
    }

    pub fn shared_h2(&self) -> Option<H2Sender> {
        let guard = self.h2.load();
        match guard.as_ref() {
            Some(s) if !s.is_closed() => Some((**s).clone()),
            _ => None,
        }
    }

    pub fn alpn(&self) -> Alpn {
        match self.alpn.load(Relaxed) {
            1 => Alpn::Http1,
            2 => Alpn::H2,
            _ => Alpn::Unknown,
        }
    }

    pub(super) fn set_alpn(&self, a: Alpn) {
        self.alpn.store(a as u8, Relaxed);
    }

    pub(super) fn set_h2(&self, sender: Option<H2Sender>) {
        self.h2.store(sender.map(Arc::new));
    }

    pub(super) fn count_open(&self) {
        self.opened.fetch_add(1, Relaxed);
    }
}
