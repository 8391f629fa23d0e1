//! TLS termination: certificates by SNI, ALPN h2, old protocol versions refused,
//! HTTP to HTTPS redirects, HTTPS backends, and automatic certificates from a real
//! ACME server (Debian's Pebble) over http-01 and tls-alpn-01.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::backend::TestBackend;
use testkit::certs::Ca;
use testkit::pebble::Pebble;
use testkit::tls::AnyCert;
use testkit::{DEADLINE, Fulcrum, TempDir, client};

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    for c in rustls_pemfile_free(ca_pem) {
        store.add(c).unwrap();
    }
    store
}

fn rustls_pemfile_free(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(trust: Option<&str>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut c = match trust {
        Some(pem) => b.with_root_certificates(roots(pem)).with_no_client_auth(),
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Connects with TLS; returns the stream, the server's leaf certificate (subject
/// CN, issuer CN) and the negotiated ALPN.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        String,
        String,
        Option<Vec<u8>>,
    ),
    String,
> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (subject, issuer) = {
        let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = |n: &x509_parser::x509::X509Name| {
            n.iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (cn(c.subject()), cn(c.issuer()))
    };
    let alpn = s.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    Ok((s, subject, issuer, alpn))
}

/// An HTTP/1.1 client connection over TLS to `addr` with `sni`; returns its
/// sender and the server certificate's subject and issuer CNs.
async fn h1_over_tls(
    addr: SocketAddr,
    sni: &str,
    trust: Option<&str>,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    String,
    String,
) {
    let (s, subject, issuer, _) = tls_connect(addr, sni, client_config(trust, &[b"http/1.1"]))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    (sender, subject, issuer)
}

async fn https_get(
    addr: SocketAddr,
    sni: &str,
    trust: Option<&str>,
) -> (String, String, client::Resp) {
    let (mut sender, subject, issuer) = h1_over_tls(addr, sni, trust).await;
    let resp = sender
        .send_request(
            Request::get("/")
                .header("host", sni)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        subject,
        issuer,
        client::Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        },
    )
}

fn write_pair(dir: &TempDir, name: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
    (
        dir.write(&format!("{name}.crt"), &pair.0),
        dir.write(&format!("{name}.key"), &pair.1),
    )
}

/// A TLS listener with these certificate files, proxying everything to `backend`.
fn tls_proxy_config(pairs: &[(PathBuf, PathBuf)], backend: SocketAddr) -> String {
    let mut cfg =
        String::from("listeners:\n  - address: \"127.0.0.1:0\"\n    tls:\n      certificates:\n");
    for (crt, key) in pairs {
        cfg.push_str(&format!(
            "        - {{ cert: \"{}\", key: \"{}\" }}\n",
            crt.display(),
            key.display()
        ));
    }
    cfg.push_str(&format!(
        "pools:\n  - name: app\n    backends: [\"{backend}\"]\nroutes:\n  - {{ pool: app }}\n"
    ));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_certificates_by_sni_alpn_and_protocols() {
    let be = TestBackend::echo("be").await;
    let ca = Ca::new("Fulcrum Test CA");
    let dir = TempDir::new("tls");
    let a = write_pair(&dir, "a", &ca.leaf(&["a.test"]));
    let b = write_pair(&dir, "b", &ca.leaf(&["*.b.test"]));
    let cfg = tls_proxy_config(&[a, b], be.addr);
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    let (subject, issuer, r) = https_get(addr, "a.test", Some(&ca.pem())).await;
    assert_eq!(
        (subject.as_str(), issuer.as_str()),
        ("a.test", "Fulcrum Test CA")
    );
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
    let (subject, _, _) = https_get(addr, "x.b.test", Some(&ca.pem())).await;
    assert_eq!(subject, "*.b.test");

    // ALPN h2: an HTTP/2 client over TLS.
    let (s, _, _, alpn) = tls_connect(
        addr,
        "a.test",
        client_config(Some(&ca.pem()), &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("https://a.test/h2")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    // The access log says how the client came: protocol, TLS version, SNI.
    let line = testkit::eventually("the access log line of /h2", || async {
        f.access_lines().into_iter().find(|l| l["path"] == "/h2")
    })
    .await;
    assert_eq!(line["protocol"], "HTTP/2.0", "{line}");
    assert_eq!(line["tls_version"], "TLSv1.3", "{line}");
    assert_eq!(line["sni"], "a.test", "{line}");

    // TLS 1.1 (and below) refused; TLS 1.2 and 1.3 accepted.
    let s_client = |args: &[&str]| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "a.test",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (_, out) = s_client(&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(
        out.contains("no peer certificate available") && !out.contains("TLSv1.1, Cipher is"),
        "TLS 1.1 was accepted:\n{out}"
    );
    let (ok, out) = s_client(&["-tls1_2"]);
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2 refused:\n{out}");
    let (ok, out) = s_client(&["-tls1_3"]);
    assert!(ok && out.contains("TLSv1.3"), "TLS 1.3 refused:\n{out}");

    let status = client::send(
        f.admin(),
        Request::get("/api/v1/status")
            .header("host", "a")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .json();
    let certs = status["certificates"].as_array().unwrap();
    assert!(
        certs
            .iter()
            .any(|c| c["names"][0] == "a.test" && c["issuer"] == "Fulcrum Test CA"),
        "{status}"
    );
    let metrics = client::send(
        f.admin(),
        Request::get("/metrics")
            .header("host", "a")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .text();
    assert!(
        metrics.contains("fulcrum_certificate_expiry_timestamp_seconds{name=\"a.test\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_without_dropping_connections() {
    let be = TestBackend::echo("be").await;
    let ca = Ca::new("Reload CA");
    let dir = TempDir::new("tls-reload");
    let (crt, key) = write_pair(&dir, "s", &ca.leaf(&["old.test"]));
    let cfg = tls_proxy_config(&[(crt.clone(), key.clone())], be.addr);
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    // An open connection from before the reload...
    let (mut sender, subject, _) = h1_over_tls(addr, "old.test", Some(&ca.pem())).await;
    assert_eq!(subject, "old.test");
    // New files under the same names, then a reload.
    let (c2, k2) = ca.leaf(&["new.test"]);
    std::fs::write(&crt, c2).unwrap();
    std::fs::write(&key, k2).unwrap();
    f.signal(libc::SIGHUP);
    f.stderr.wait_for("reload", |l| {
        l.contains("configuration applied") && l.contains("\"generation\":2")
    });
    let (subject, _, _) = https_get(addr, "new.test", Some(&ca.pem())).await;
    assert_eq!(
        subject, "new.test",
        "the new certificate is served to new connections"
    );
    // ...still works.
    let r = sender
        .send_request(
            Request::get("/")
                .header("host", "old.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_to_https() {
    let be = TestBackend::echo("be").await;
    let ca = Ca::new("Redirect CA");
    let dir = TempDir::new("tls-redirect");
    let (crt, key) = write_pair(&dir, "r", &ca.leaf(&["r.test"]));
    let tls_port = testkit::free_addr();
    let plain = testkit::free_addr();
    let cfg = format!(
        "listeners:\n  - address: \"{tls_port}\"\n    redirect_http_from: \"{plain}\"\n    tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n",
        crt.display(),
        key.display(),
        be.addr
    );
    let _f = Fulcrum::start(&cfg);
    let r = client::get_host(plain, "r.test", "/path/x?y=1").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://r.test:{}/path/x?y=1", tls_port.port())
    );
    assert_eq!(be.hits(), 0);
}

/// A backend behind TLS (HTTP/1.1 only), with a certificate for `name` from `ca`.
async fn tls_backend(ca: &Ca, name: &str) -> SocketAddr {
    tls_backend_with(ca, name, &[]).await.0
}

/// A backend behind TLS that offers `alpn` (none: HTTP/1.1), answers "secure"
/// with the protocol the request came over (`x-version`), echoes WebSockets on
/// `/ws` (over HTTP/1.1), and counts its connections.
async fn tls_backend_with(
    ca: &Ca,
    name: &str,
    alpn: &[&[u8]],
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    let (c, k) = ca.leaf(&[name]);
    let certs = rustls_pemfile_free(&c);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/ws" {
                            return Ok::<_, std::convert::Infallible>(
                                testkit::ws::echo_upgrade(req).await,
                            );
                        }
                        Ok(http::Response::builder()
                            .header("x-version", format!("{:?}", req.version()))
                            .header(
                                "x-host",
                                format!(
                                    "{}{}",
                                    req.uri().authority().map(|a| a.as_str()).unwrap_or(""),
                                    req.headers()
                                        .get("host")
                                        .map(|h| h.to_str().unwrap_or(""))
                                        .unwrap_or("")
                                ),
                            )
                            .body(testkit::backend::full("secure"))
                            .unwrap())
                    });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_get_http2_when_they_choose_it_by_alpn() {
    let ca = Ca::new("Upstream CA");
    let dir = TempDir::new("tls-up-h2");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let (be, conns) = tls_backend_with(&ca, "backend.test", &[b"h2", b"http/1.1"]).await;
    let old = tls_backend(&ca, "backend.test").await;
    let cfg = format!(
        "listeners: [\"127.0.0.1:0\"]\npools:\n  - name: h2\n    backends: [\"https://{be}\"]\n    tls: {{ ca: \"{ca}\", server_name: backend.test }}\n  - name: h1only\n    backends: [\"https://{be}\"]\n    tls: {{ ca: \"{ca}\", server_name: backend.test, http2: false }}\n  - name: old\n    backends: [\"https://{old}\"]\n    tls: {{ ca: \"{ca}\", server_name: backend.test }}\nroutes:\n  - {{ host: h2.test, pool: h2 }}\n  - {{ host: h1only.test, pool: h1only }}\n  - {{ host: old.test, pool: old }}\n",
        ca = ca_path.display()
    );
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    // Offered h2, the backend takes it: every request shares one connection.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            client::get_host(addr, "h2.test", "/").await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "secure"));
        assert_eq!(r.header("x-version").as_deref(), Some("HTTP/2.0"));
        // The client's host travels as the HTTP/2 authority.
        assert_eq!(r.header("x-host").as_deref(), Some("h2.test"));
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A WebSocket to the same backend goes over HTTP/1.1 (its own connection).
    let mut ws = testkit::ws::WsClient::connect_host(addr, "h2.test", "/ws").await;
    assert_eq!(ws.echo("over h1").await, "over h1");
    // `http2: false` keeps HTTP/1.1; a backend that only speaks HTTP/1.1 gets it.
    let r = client::get_host(addr, "h1only.test", "/").await;
    assert_eq!(
        r.header("x-version").as_deref(),
        Some("HTTP/1.1"),
        "{}",
        r.text()
    );
    let r = client::get_host(addr, "old.test", "/").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "secure"));
    // The pool's TLS settings show in the running config.
    let config = client::get(f.admin(), "/api/v1/config").await.json();
    let pools = config["config"]["pools"].as_array().unwrap();
    assert_eq!(pools[1]["tls"]["http2"], false, "{config}");
    assert_eq!(pools[1]["tls"]["server_name"], "backend.test", "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified() {
    let ca = Ca::new("Upstream CA");
    let dir = TempDir::new("tls-up");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let be = tls_backend(&ca, "backend.test").await;
    let cfg = format!(
        "listeners: [\"127.0.0.1:0\"]\npools:\n  - name: good\n    backends: [\"https://{be}\"]\n    tls: {{ ca: \"{}\", server_name: backend.test }}\n  - name: untrusted\n    backends: [\"https://{be}\"]\n    retries: {{ try_duration: 0s }}\n  - name: insecure\n    backends: [\"https://{be}\"]\n    tls: {{ insecure_skip_verify: true }}\nroutes:\n  - {{ host: good.test, pool: good }}\n  - {{ host: untrusted.test, pool: untrusted }}\n  - {{ host: insecure.test, pool: insecure }}\n",
        ca_path.display()
    );
    let f = Fulcrum::start(&cfg);
    f.stderr.wait_for("the loud warning", |l| {
        l.contains("TLS VERIFICATION IS OFF")
    });
    let addr = f.listener(0);
    let r = client::get_host(addr, "good.test", "/").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "secure"));
    // The system roots do not know the test CA: the backend is refused.
    assert_eq!(
        client::get_host(addr, "untrusted.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        client::get_host(addr, "insecure.test", "/").await.status,
        StatusCode::OK
    );
}

struct PrintOnPanic(testkit::Lines);
impl Drop for PrintOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fulcrum log:\n{}", self.0.all().join("\n"));
        }
    }
}

/// Waits until `addr` serves a certificate for `name` issued by Pebble.
async fn wait_for_pebble_cert(addr: SocketAddr, name: &str) -> String {
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        if let Ok((_, subject, issuer, _)) =
            tls_connect(addr, name, client_config(None, &[b"http/1.1"])).await
            && issuer.contains("Pebble")
        {
            assert!(subject.is_empty() || subject == name, "{subject}");
            return issuer;
        }
        assert!(
            Instant::now() < deadline,
            "no Pebble certificate for {name}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificates_from_pebble_over_http01_and_tls_alpn01() {
    let pebble = Pebble::start().await;
    let be = TestBackend::echo("be").await;
    let storage = TempDir::new("acme-store");
    // http-01: a plain listener on the port Pebble validates, a TLS listener elsewhere.
    let cfg = format!(
        "listeners:\n  - address: \"127.0.0.1:{}\"\n  - address: \"127.0.0.1:0\"\n    tls:\n      acme:\n        directory: \"{}\"\n        email: ops@example.com\n        storage: \"{}\"\n        ca_bundle: \"{}\"\n        challenge: http-01\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ host: acme-http.test, pool: app }}\n",
        pebble.http_port,
        pebble.directory,
        storage.0.display(),
        pebble.ca_pem_path.display(),
        be.addr
    );
    let mut f = Fulcrum::start(&cfg);
    let tls_addr = f.listener(1);
    let issuer = wait_for_pebble_cert(tls_addr, "acme-http.test").await;
    assert!(issuer.contains("Pebble"));
    f.stderr
        .wait_for("issued", |l| l.contains("certificate issued"));
    assert!(storage.0.join("account.json").exists());
    assert!(storage.0.join("acme-http.test.crt.pem").exists());
    let (_, _, r) = https_get(tls_addr, "acme-http.test", None).await;
    assert_eq!(r.status, StatusCode::OK);

    // A restart reuses the stored certificate and account: no new order.
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait_exit(), 0);
    let f2 = Fulcrum::start(&cfg);
    wait_for_pebble_cert(f2.listener(1), "acme-http.test").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f2.stderr.count(|l| l.contains("ordering a certificate")),
        0,
        "a new order after restart"
    );
    drop(f2);

    // tls-alpn-01: the TLS listener itself on the port Pebble validates.
    let storage2 = TempDir::new("acme-store-alpn");
    let cfg = format!(
        "listeners:\n  - address: \"127.0.0.1:{}\"\n    tls:\n      acme:\n        directory: \"{}\"\n        storage: \"{}\"\n        ca_bundle: \"{}\"\n        challenge: tls-alpn-01\n        domains: [acme-alpn.test]\npools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: app }}\n",
        pebble.tls_port,
        pebble.directory,
        storage2.0.display(),
        pebble.ca_pem_path.display(),
        be.addr
    );
    let f3 = Fulcrum::start(&cfg);
    let addr = f3.listener(0);
    let logs = f3.stderr.clone();
    let guard = PrintOnPanic(logs);
    wait_for_pebble_cert(addr, "acme-alpn.test").await;
    std::mem::forget(guard);
    assert!(storage2.0.join("acme-alpn.test.crt.pem").exists());
}

/// In a cluster only the primary orders; the challenge answer and the
/// certificate replicate through Raft. Pebble validates on a port that only a
/// secondary listens on, so the order succeeds only if that secondary answers
/// with the primary's token; then every node serves the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_primary_orders_and_every_node_serves_the_certificate() {
    use testkit::cluster::{NodeSpec, agreed_primary, configure};
    use testkit::free_port as peer_port;
    let pebble = Pebble::start().await;
    let be = TestBackend::echo("be").await;
    let stores: Vec<TempDir> = (0..3).map(|_| TempDir::new("acme-node")).collect();
    let tls_listener = |store: &TempDir| {
        format!(
            "{{ address: \"127.0.0.1:0\", tls: {{ acme: {{ directory: \"{}\", storage: \"{}\", ca_bundle: \"{}\", challenge: http-01 }} }} }}",
            pebble.directory,
            store.0.display(),
            pebble.ca_pem_path.display()
        )
    };
    let specs: Vec<NodeSpec> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| NodeSpec {
            name: n.to_string(),
            port: peer_port(),
            witness: false,
            extra: String::new(),
            listeners: if *n == "c" {
                format!(
                    "[\"127.0.0.1:{}\", {}]",
                    pebble.http_port,
                    tls_listener(&stores[i])
                )
            } else {
                format!("[{}]", tls_listener(&stores[i]))
            },
        })
        .collect();
    let body = format!(
        "pools:\n  - name: app\n    backends: [\"{}\"]\nroutes:\n  - {{ host: acme-cluster.test, pool: app }}\n",
        be.addr
    );
    let mut nodes = configure(
        &specs,
        &body,
        "  heartbeat_interval: 100ms\n  election_timeout: 500ms\n",
    );
    nodes[0].start();
    nodes[1].start();
    let primary = testkit::eventually("a primary among a and b", || agreed_primary(&nodes)).await;
    nodes[2].start();
    let _logs: Vec<PrintOnPanic> = nodes
        .iter()
        .map(|n| PrintOnPanic(n.proc().stderr.clone()))
        .collect();
    for n in &nodes {
        // The TLS listener is the last one each node reports.
        let lines = n.proc().stderr.all();
        let count = lines
            .iter()
            .filter(|l| l.contains("\"message\":\"listening\""))
            .count();
        let addr = n.proc().listener(count - 1);
        let issuer = wait_for_pebble_cert(addr, "acme-cluster.test").await;
        assert!(issuer.contains("Pebble"), "{}: {issuer}", n.name);
    }
    // Only a node that held the primary role orders. On a loaded machine a
    // missed heartbeat can move the role during the test: the node that took
    // it over may order too, but a node that never held it must not.
    let mut ordered = 0;
    for (n, store) in nodes.iter().zip(&stores) {
        let orders = n
            .proc()
            .stderr
            .count(|l| l.contains("ordering a certificate"));
        ordered += orders;
        let held_primary = n.name == primary || n.roles_logged().iter().any(|r| r == "primary");
        if !held_primary {
            assert_eq!(orders, 0, "{} never was primary and must not order", n.name);
        }
        // Stored on every node, so it survives a restart of this node.
        assert!(store.0.join("acme-cluster.test.crt.pem").exists());
    }
    assert!(ordered >= 1, "the primary must have ordered");
}

/// One kept-alive HTTP/1.1 connection over TLS: plain GETs, then a request with
/// a body (which moves the rest of the connection to the guarded path), then a
/// GET there. The client waits until its connection is ready before each
/// request: without that, hyper's client refuses a request sent before it has
/// taken in the end of the previous answer ("connection was not ready"), which
/// under load once looked like the proxy closing the connection. A connection
/// the proxy really closed fails the wait instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tls_connection_serves_gets_then_a_body_then_gets() {
    let be = TestBackend::echo("be").await;
    let ca = Ca::new("Fulcrum Test CA");
    let dir = TempDir::new("tls");
    let a = write_pair(&dir, "a", &ca.leaf(&["a.test"]));
    let cfg = tls_proxy_config(&[a], be.addr);
    let f = Fulcrum::start(&cfg);
    let addr = f.listener(0);
    let (mut sender, _, _) = h1_over_tls(addr, "a.test", Some(&ca.pem())).await;
    for (method, path, body) in [
        ("GET", "/k1", ""),
        ("GET", "/k2", ""),
        ("POST", "/k3", "hello"),
        ("GET", "/k4", ""),
    ] {
        sender.ready().await.unwrap_or_else(|e| {
            panic!("{method} {path}: the kept-alive connection was closed: {e:?}")
        });
        let resp = sender
            .send_request(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "a.test")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
        let seen: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(seen["uri"], path);
        assert_eq!(seen["body_len"], body.len());
    }
}
