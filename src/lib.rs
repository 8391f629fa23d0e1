//! Fulcrum: a reverse proxy and load balancer built to keep an application up.
//!
//! Data flows one way: config layers (the file, admin changes, discovery) → a pure
//! compile → an immutable snapshot → the request path. Health checks, failover,
//! the admin API and discovery write state the request path only reads, through
//! narrow handles; only the supervisor knows every module. docs/architecture.md
//! tells the whole story.
//!
//! # Layers
//!
//! A module may import only modules on lines above its own (`.ci/check-layers`
//! enforces it); modules on one line do not import each other.
//!
//! ```text
//! layer 0: clock rand logging passthrough
//! layer 1: config
//! layer 2: command events
//! layer 3: tls telemetry otlp
//! layer 4: net upstream ratelimit cache
//! layer 5: snapshot
//! layer 6: health acme discovery
//! layer 7: failover
//! layer 8: proxy cluster
//! layer 9: listener
//! layer 10: admin
//! layer 11: supervisor
//! layer 12: cli
//! layer 13: fuzzing
//! ```

mod acme;
mod admin;
mod cache;
pub mod cli;
mod clock;
mod cluster;
mod command;
mod config;
mod discovery;
mod events;
mod failover;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod listener;
pub mod logging;
mod net;
mod otlp;
mod passthrough;
mod proxy;
mod rand;
mod ratelimit;
mod snapshot;
mod supervisor;
mod telemetry;
mod tls;
mod upstream;
