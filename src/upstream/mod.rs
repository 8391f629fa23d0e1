//! The upstream layer every listener kind sends through: live backend state,
//! pools and the rules that pick a member, failover levels as the request path
//! reads them, the queue at caps, keep-alive connections and the client that
//! sends one request to one backend.

pub(crate) mod backend;
pub(crate) mod balance;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod connpool;
pub(crate) mod h1;
pub(crate) mod in_flight;
pub(crate) mod io;
pub(crate) mod levels;
pub(crate) mod member;
pub(crate) mod pick;
pub(crate) mod pool;
pub(crate) mod queue;
