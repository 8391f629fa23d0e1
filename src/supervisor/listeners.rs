//! The listening sockets a config asks for: its listeners (with their TLS
//! configs) and the `redirect_http_from` ones.

use super::Supervisor;
use crate::config::{self, Config};
use crate::listener::{self, Kind, ListenerHandle, ListenerSpec};
use crate::tls::acme_state::AcmeStates;
use std::net::SocketAddr;

/// Every socket the config asks for. Builds the TLS configs, which reads the
/// certificate files: a missing or broken one is an error here, before any
/// change is made.
pub(super) fn specs(
    config: &Config,
    acme: &AcmeStates,
) -> Result<Vec<(SocketAddr, ListenerSpec)>, String> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let tls = match &l.tls {
            Some(t) => {
                let state = t
                    .acme
                    .as_ref()
                    .and_then(|a| acme.iter().find(|s| s.config.storage == a.storage).cloned());
                Some(
                    crate::tls::server_config(l, state)
                        .map_err(|e| format!("listener {}: {e}", l.address))?,
                )
            }
            None => None,
        };
        out.push((
            l.address,
            ListenerSpec {
                config: l.clone(),
                kind: Kind::Http,
                tls,
            },
        ));
        if let Some(r) = l.redirect_http_from {
            out.push((
                r,
                ListenerSpec {
                    config: config::ListenerConfig::plain(r),
                    kind: Kind::Redirect {
                        https_port: l.address.port(),
                    },
                    tls: None,
                },
            ));
        }
    }
    Ok(out)
}

impl Supervisor {
    pub(super) fn start_listener(
        &self,
        sockets: Vec<std::net::TcpListener>,
        spec: ListenerSpec,
        max_connections: usize,
    ) -> std::io::Result<ListenerHandle> {
        let shared = listener::Shared {
            proxy: self.proxy.clone(),
            connections: self.connections.clone(),
            cores: self.cores.clone(),
        };
        listener::start(
            &shared,
            sockets,
            spec,
            max_connections,
            self.shutdown.child_token(),
        )
    }
}
