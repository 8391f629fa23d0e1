//! Sending one request to one backend over a pooled connection.

use super::backend::Backend;
use super::body::UpstreamBody;
use super::connpool::{H1Sender, H2Sender};
use super::io::{UpstreamIo, connect, connect_tls};
use crate::config::{Scheme, Timeouts};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to a backend failed, in the terms retries care about.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent, any method may be retried.
    Connect(io::Error),
    /// The backend did not send response headers in time (the request was sent).
    Timeout,
    /// The exchange failed after the request was (possibly) sent.
    Exchange(hyper::Error),
}

impl SendError {
    pub fn nothing_sent(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Timeout => f.write_str("timed out waiting for response headers"),
            SendError::Exchange(e) => {
                write!(f, "{e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                Ok(())
            }
        }
    }
}

/// The connection a response came over; given back to the pool when its body ends.
pub enum Lease {
    H1(H1Sender),
    None,
}

/// The request comes back with the error when it was certainly not sent, so that a
/// retry can reuse it as is.
pub type Failed = (SendError, Option<Request<UpstreamBody>>);
pub type SendResult = Result<(Response<Incoming>, Lease), Failed>;

/// Sends `req` to `backend`. The URI must already be in the form the backend's
/// protocol needs (origin-form for HTTP/1.1, absolute for HTTP/2).
pub async fn send(
    backend: &Arc<Backend>,
    mut req: Request<UpstreamBody>,
    timeouts: &Timeouts,
) -> Result<(Response<Incoming>, Lease), Failed> {
    if backend.address.scheme == Scheme::H2c {
        let mut sender = match h2_sender(backend, timeouts).await {
            Ok(s) => s,
            Err(e) => return Err((e, Some(req))),
        };
        let fut = sender.send_request(req);
        return match tokio::time::timeout(timeouts.response_header, fut).await {
            Ok(Ok(resp)) => Ok((resp, Lease::None)),
            Ok(Err(e)) => {
                if e.is_canceled() || sender.is_closed() {
                    backend.conns.set_h2(None);
                }
                Err((SendError::Exchange(e), None))
            }
            Err(_) => Err((SendError::Timeout, None)),
        };
    }
    let max_idle_ms = timeouts.idle.as_millis() as u64;
    // A pooled connection may have been closed by the backend just now; hyper then
    // hands the request back unsent and we try a fresh connection.
    for _ in 0..3 {
        let (mut sender, reused) = match backend.conns.take_idle(max_idle_ms) {
            Some(s) => (s, true),
            None => match h1_connect(backend, timeouts.connect).await {
                Ok(s) => (s, false),
                Err(e) => return Err((e, Some(req))),
            },
        };
        if !sender.is_ready() {
            match tokio::time::timeout(timeouts.connect, sender.ready()).await {
                Ok(Ok(())) => {}
                _ if reused => continue,
                Ok(Err(e)) => return Err((SendError::Exchange(e), Some(req))),
                Err(_) => {
                    return Err((
                        SendError::Connect(io::ErrorKind::TimedOut.into()),
                        Some(req),
                    ));
                }
            }
        }
        let fut = sender.try_send_request(req);
        match tokio::time::timeout(timeouts.response_header, fut).await {
            Ok(Ok(resp)) => return Ok((resp, Lease::H1(sender))),
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if reused => {
                    req = unsent;
                    continue;
                }
                unsent => return Err((SendError::Exchange(e.into_error()), unsent)),
            },
            Err(_) => return Err((SendError::Timeout, None)),
        }
    }
    Err((
        SendError::Connect(io::Error::other("pooled connections kept closing")),
        Some(req),
    ))
}

async fn h1_connect(backend: &Arc<Backend>, timeout: Duration) -> Result<H1Sender, SendError> {
    let io = if backend.address.scheme == Scheme::Https {
        let tls = backend.tls.load_full();
        connect_tls(&backend.address, timeout, tls.as_deref()).await
    } else {
        connect(&backend.address, timeout).await
    }
    .map_err(SendError::Connect)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, UpstreamBody>(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(io::Error::other(e)))?;
    backend.conns.count_open();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn h2_sender(backend: &Arc<Backend>, timeouts: &Timeouts) -> Result<H2Sender, SendError> {
    if let Some(s) = backend.conns.shared_h2() {
        return Ok(s);
    }
    // One connect at a time; the others wait for it and share the result.
    let _guard = backend.conns.h2_connect.lock().await;
    if let Some(s) = backend.conns.shared_h2() {
        return Ok(s);
    }
    let io: UpstreamIo = connect(&backend.address, timeouts.connect)
        .await
        .map_err(SendError::Connect)?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake::<_, UpstreamBody>(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(io::Error::other(e)))?;
    backend.conns.count_open();
    let b = backend.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended with an error");
        }
        b.conns.set_h2(None);
    });
    backend.conns.set_h2(Some(sender.clone()));
    Ok(sender)
}
