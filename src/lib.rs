//! Fulcrum: a reverse proxy and load balancer built to keep an application up.
//!
//! Data flows one way: `config` (parse, validate) → `runtime` (an immutable
//! compiled snapshot) → `proxy` (the request path). Health checks and the admin API
//! write backend state through atomics that the request path only reads.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub(crate) mod config;
pub mod events;
pub mod failover;
pub mod health;
pub mod logging;
pub mod net;
pub mod otlp;
pub mod proxy;
pub mod rand;
pub mod runtime;
pub mod telemetry;
pub mod tls;
pub mod upstream;
