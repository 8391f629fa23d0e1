//! Pebble, a real ACME server for tests (Debian package `pebble`).

use crate::certs::Ca;
use crate::{TempDir, free_port};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Pebble (ACME test server) plus pebble-challtestsrv as its DNS, resolving every
/// name to 127.0.0.1.
pub struct Pebble {
    children: Vec<Child>,
    pub directory: String,
    pub ca_pem_path: PathBuf,
    pub http_port: u16,
    pub tls_port: u16,
    _dir: TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pebble {
    pub async fn start() -> Pebble {
        let dir = TempDir::new("pebble");
        let ca = Ca::new("Pebble Listener Test CA");
        let (c, k) = ca.leaf(&["localhost", "127.0.0.1"]);
        let cert = dir.write("cert.pem", &c);
        let key = dir.write("key.pem", &k);
        let ca_pem_path = dir.write("ca.pem", &ca.pem());
        let (acme, mgmt, dns, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let (http_port, tls_port) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        }});
        let cfg = dir.write("pebble.json", &config.to_string());
        let chall = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &format!("127.0.0.1:{chall_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) must be installed");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                cfg.to_str().unwrap(),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble must be installed");
        let p = Pebble {
            children: vec![chall, pebble],
            directory: format!("https://127.0.0.1:{acme}/dir"),
            ca_pem_path,
            http_port,
            tls_port,
            _dir: dir,
        };
        let a: SocketAddr = format!("127.0.0.1:{acme}").parse().unwrap();
        crate::eventually("pebble to listen", || async {
            tokio::net::TcpStream::connect(a).await.ok().map(|_| ())
        })
        .await;
        p
    }
}
