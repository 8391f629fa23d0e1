//! HTTP/1.1 to plain `http://` backends without a connection task: the request's
//! own task writes the head and reads the answer's head, and whoever polls the
//! response body reads the body from the connection. Used for requests without
//! `Upgrade` that have no body or one already whole (read before sending, its
//! length known: written right after the head); everything else (a body still
//! streaming from the client) goes through hyper's client.
//!
//! - `response`: the answer's head parsed in place and its body framing (RFC 9112 6.3);
//! - `chunked`: the chunked transfer coding, decoded incrementally;
//! - `conn`: the connection, the exchange and the response body.

pub(crate) mod chunked;
pub(crate) mod conn;
pub(crate) mod response;

use std::fmt;
use std::io;

/// Why an exchange on a connection of our own failed.
#[derive(Debug)]
pub enum Error {
    /// Reading from or writing to the backend failed.
    Io(io::Error),
    /// The backend closed the connection before the answer was complete.
    Incomplete,
    /// What the backend sent is not a valid HTTP/1.1 answer.
    Parse(&'static str),
}

impl Error {
    /// The backend's answer was not HTTP (as opposed to a transport failure).
    pub fn is_parse(&self) -> bool {
        matches!(self, Error::Parse(_))
    }

    /// The connection was closed or reset: what a connection the backend had
    /// just timed out looks like.
    pub fn is_closed(&self) -> bool {
        match self {
            Error::Incomplete => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ),
            Error::Parse(_) => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Incomplete => f.write_str("connection closed before message completed"),
            Error::Parse(what) => write!(f, "invalid HTTP response: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}
