//! Keep-alive connections to one backend.
//!
//! HTTP/1.1: idle connections wait in lock-free bounded queues; a request takes one,
//! and the response body hands it back once it has been read to the end (a body
//! abandoned half-way closes the connection instead, as its framing is unknown).
//! Connections of our own (`h1`) and hyper's wait in two queues of their own.
//!
//! Each worker thread (`listener::cores`) has a set of idle queues of its own,
//! and the threads that are no worker (the control plane: health checks) share
//! one more. A connection's socket is registered with the reactor of the thread
//! that opened it: reused on another thread, every wake-up of its I/O would
//! cross threads, and its owner's runtime would have to run to drive it. So a
//! connection records the set of the thread that opened it, goes back to that
//! set and is taken again only by that thread. In practice it is also given
//! back there: a request, its retries and hedges, its answer's body and a cache
//! fill all run on the worker that accepted the client's connection, and a
//! health check opens, uses and gives back its connection in one task. With one
//! worker there is one set, which every thread shares (as `fulcrum demo`'s
//! work-stealing runtime does).
//!
//! HTTP/2: one shared connection multiplexes every request, from every thread;
//! it is replaced when it closes. Its task runs on the thread that opened it,
//! and requests from the other workers reach it through hyper's channel. One
//! connection per worker would keep those on one thread too, at the price of
//! as many connections (and settings and flow-control windows) per backend as
//! workers; it is not done yet.

use super::body::UpstreamBody;
use super::h1::conn::Conn as OwnConn;
use super::io::Tally;
use crate::clock::now_ms;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// Idle HTTP/1.1 connections of each kind kept per backend, split evenly among
/// the worker threads' sets; more are closed after use. Split rather than per
/// thread so that a backend sees about as many idle connections from us
/// whatever the worker count (the kernel spreads clients evenly over the
/// workers). The set of the threads that are no worker has one share too;
/// health checks hold one connection at a time in it.
const MAX_IDLE: usize = 512;

/// Worker threads of this process; 1 without `listener::cores`.
static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's worker index; `usize::MAX` on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sets the number of worker threads: pools built from then on have a set of
/// idle connections per worker. Called once at start, before any backend exists.
pub fn set_workers(n: usize) {
    WORKERS.store(n.max(1), Relaxed);
}

/// Marks the calling thread as worker `index`: it takes and gives back idle
/// connections in its own set.
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

pub type H2Sender = http2::SendRequest<UpstreamBody>;

/// An HTTP/1.1 connection's request side, with the count of bytes the backend
/// has sent on it and the set of idle connections it belongs to (see
/// `io::Tally`).
pub struct H1Sender {
    send: http1::SendRequest<UpstreamBody>,
    tally: Arc<Tally>,
}

impl H1Sender {
    pub fn new(send: http1::SendRequest<UpstreamBody>, tally: Arc<Tally>) -> Self {
        H1Sender { send, tally }
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
        self.tally.received.load(Relaxed)
    }
}

/// One thread's idle connections (or the set shared by every thread that is
/// no worker).
struct Idle {
    hyper: ArrayQueue<(H1Sender, u64)>,
    own: ArrayQueue<(Box<OwnConn>, u64)>,
}

impl Idle {
    fn new(capacity: usize) -> Self {
        Idle {
            hyper: ArrayQueue::new(capacity),
            own: ArrayQueue::new(capacity),
        }
    }
}

pub struct ConnPool {
    /// Set 0: worker 0's, or the only one.
    first: Idle,
    /// With several workers: the sets of workers 1.., then the one of the
    /// threads that are no worker. Each is made on first use (and boxed: a
    /// set's two queues take 768 bytes before their slots): a thread that
    /// never reaches this backend costs it a pointer.
    rest: Box<[OnceLock<Box<Idle>>]>,
    /// Bound of each set's queues.
    capacity: usize,
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
    /// A pool with a set of idle connections per worker thread of this process.
    pub fn new() -> Self {
        Self::with_workers(WORKERS.load(Relaxed), MAX_IDLE)
    }

    fn with_workers(workers: usize, max_idle: usize) -> Self {
        let capacity = max_idle.div_ceil(workers.max(1));
        // One worker: its thread and every other share one set.
        let rest = if workers > 1 { workers } else { 0 };
        ConnPool {
            first: Idle::new(capacity),
            rest: (0..rest).map(|_| OnceLock::new()).collect(),
            capacity,
            h2: ArcSwapOption::empty(),
            h2_connect: tokio::sync::Mutex::new(()),
            opened: AtomicU64::new(0),
            alpn: AtomicU8::new(Alpn::Unknown as u8),
        }
    }

    /// The set of idle connections of the calling thread: what a connection it
    /// opens records as its home.
    pub fn here(&self) -> usize {
        if self.rest.is_empty() {
            return 0;
        }
        // A worker index past the sets (never so in the process that made
        // them) shares the set of the threads that are no worker.
        WORKER.with(Cell::get).min(self.rest.len())
    }

    /// Set `home`, when it exists already.
    fn idle(&self, home: usize) -> Option<&Idle> {
        match home {
            0 => Some(&self.first),
            _ => self.rest.get(home - 1)?.get().map(|set| &**set),
        }
    }

    /// Set `home`, made if needed.
    fn idle_made(&self, home: usize) -> Option<&Idle> {
        match home {
            0 => Some(&self.first),
            _ => self.made(home),
        }
    }

    /// A set other than the first, made on its first connection: off the
    /// path of a single worker, which has no other.
    #[cold]
    fn made(&self, home: usize) -> Option<&Idle> {
        let set = self.rest.get(home - 1)?;
        Some(set.get_or_init(|| Box::new(Idle::new(self.capacity))))
    }

    /// An idle HTTP/1.1 connection of this thread's set that has not been idle
    /// longer than `max_idle_ms`.
    pub fn take_idle(&self, max_idle_ms: u64) -> Option<H1Sender> {
        let idle = self.idle(self.here())?;
        let now = now_ms();
        while let Some((sender, since)) = idle.hyper.pop() {
            if sender.is_closed() || now.saturating_sub(since) > max_idle_ms {
                continue;
            }
            return Some(sender);
        }
        None
    }

    /// Gives `sender` back to the set of the thread that opened it.
    // Inlined into `client::release`, as the plain queue push it replaces was.
    #[inline]
    pub fn put_idle(&self, sender: H1Sender) {
        if sender.is_closed() {
            return;
        }
        if let Some(idle) = self.idle_made(sender.tally.home) {
            // When full, the connection is dropped (and closed).
            let _ = idle.hyper.push((sender, now_ms()));
        }
    }

    /// An idle connection of our own, of this thread's set, that has not been
    /// idle longer than `max_idle_ms` and that the backend has not closed.
    pub fn take_idle_own(&self, max_idle_ms: u64) -> Option<Box<OwnConn>> {
        let idle = self.idle(self.here())?;
        let now = now_ms();
        while let Some((mut conn, since)) = idle.own.pop() {
            if now.saturating_sub(since) <= max_idle_ms && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Gives `conn` back to the set of the thread that opened it.
    // Inlined into `client::release`, as the plain queue push it replaces was.
    #[inline]
    pub fn put_idle_own(&self, conn: Box<OwnConn>) {
        if let Some(idle) = self.idle_made(conn.home) {
            // When full, the connection is dropped (and closed).
            let _ = idle.own.push((conn, now_ms()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Connections of our own to a local listener; the accepted ends are kept
    /// open in `peers` (a connection whose peer closed is not reused).
    struct Backend {
        listener: TcpListener,
        peers: Vec<TcpStream>,
        rt: tokio::runtime::Runtime,
    }

    impl Backend {
        fn new() -> Self {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("runtime");
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            Backend {
                listener,
                peers: Vec::new(),
                rt,
            }
        }

        fn conn(&mut self, home: usize) -> Box<OwnConn> {
            let s = TcpStream::connect(self.listener.local_addr().expect("addr")).expect("connect");
            self.peers.push(self.listener.accept().expect("accept").0);
            s.set_nonblocking(true).expect("nonblocking");
            let _rt = self.rt.enter();
            OwnConn::new(tokio::net::TcpStream::from_std(s).expect("register"), home)
        }
    }

    /// Runs `f` on a new thread marked as worker `index` (`None`: no worker).
    fn on_thread<T: Send>(index: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(i) = index {
                    enter_worker(i);
                }
                f()
            })
            .join()
            .expect("thread")
        })
    }

    const AGE: u64 = 60_000;

    #[test]
    fn a_connection_is_taken_again_on_the_thread_that_opened_it_only() {
        let mut b = Backend::new();
        let pool = ConnPool::with_workers(2, 8);
        for worker in [Some(0), Some(1), None] {
            let conn = b.conn(on_thread(worker, || pool.here()));
            on_thread(worker, || pool.put_idle_own(conn));
            for other in [Some(0), Some(1), None] {
                let taken = on_thread(other, || pool.take_idle_own(AGE));
                assert_eq!(taken.is_some(), other == worker, "{worker:?} {other:?}");
                // Given back from this thread: to its own set still.
                if let Some(conn) = taken {
                    pool.put_idle_own(conn);
                }
            }
            assert!(on_thread(worker, || pool.take_idle_own(AGE)).is_some());
        }
    }

    #[test]
    fn a_connection_given_back_on_another_thread_goes_to_its_own_set() {
        let mut b = Backend::new();
        let pool = ConnPool::with_workers(2, 8);
        let home = on_thread(Some(1), || pool.here());
        let conn = b.conn(home);
        // Given back by a thread that is no worker.
        on_thread(None, || pool.put_idle_own(conn));
        assert!(on_thread(None, || pool.take_idle_own(AGE)).is_none());
        assert!(on_thread(Some(0), || pool.take_idle_own(AGE)).is_none());
        assert!(on_thread(Some(1), || pool.take_idle_own(AGE)).is_some());
    }

    #[test]
    fn each_set_keeps_its_share_of_the_bound() {
        let mut b = Backend::new();
        // 5 idle connections over 2 workers: 3 a set.
        let pool = ConnPool::with_workers(2, 5);
        for home in [0, 1] {
            for _ in 0..4 {
                let conn = b.conn(home);
                pool.put_idle_own(conn);
            }
        }
        for worker in [0, 1] {
            let kept = on_thread(Some(worker), || {
                std::iter::from_fn(|| pool.take_idle_own(AGE)).count()
            });
            assert_eq!(kept, 3);
        }
    }

    #[test]
    fn with_one_worker_every_thread_shares_one_set() {
        let mut b = Backend::new();
        let pool = ConnPool::with_workers(1, 8);
        assert!(pool.rest.is_empty());
        let conn = b.conn(on_thread(Some(0), || pool.here()));
        on_thread(Some(0), || pool.put_idle_own(conn));
        assert!(on_thread(None, || pool.take_idle_own(AGE)).is_some());
        let conn = b.conn(on_thread(None, || pool.here()));
        pool.put_idle_own(conn);
        assert!(on_thread(Some(3), || pool.take_idle_own(AGE)).is_some());
    }

    #[test]
    fn a_set_is_made_when_first_used() {
        let mut b = Backend::new();
        let pool = ConnPool::with_workers(3, 9);
        assert!(pool.rest.iter().all(|s| s.get().is_none()));
        assert!(on_thread(Some(2), || pool.take_idle_own(AGE)).is_none());
        assert!(pool.rest.iter().all(|s| s.get().is_none()));
        let conn = b.conn(on_thread(Some(2), || pool.here()));
        pool.put_idle_own(conn);
        let made: Vec<bool> = pool.rest.iter().map(|s| s.get().is_some()).collect();
        assert_eq!(made, [false, true, false]);
    }
}
