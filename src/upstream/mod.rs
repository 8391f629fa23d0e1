//! Backends and pools: live backend state, balancing algorithms, keep-alive
//! connections and the client that sends requests to backends.

pub mod backend;
pub mod balance;
pub mod body;
pub mod client;
pub mod connpool;
pub mod ejections;
pub mod io;
pub mod pool;
