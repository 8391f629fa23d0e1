//! The request path: listeners, client connections, routing, forwarding, and the
//! header rules applied on the way.

pub mod access_log;
pub mod body;
pub mod completion;
pub mod counted;
pub mod guard;
pub mod handler;
pub mod headers;
pub mod listener;
pub mod respond;
