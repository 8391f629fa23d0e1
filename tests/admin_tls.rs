//! The admin API beyond loopback: over HTTPS only, with `fulcrum ctl --ca`,
//! and a read-only token that can look but not change anything.

use testkit::backend::TestBackend;
use testkit::{Fulcrum, ctl};

/// A CA and a certificate it signed for localhost and 127.0.0.1: (CA PEM,
/// cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "admin test CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("self-signed");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &issuer).expect("signed");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_beyond_loopback_is_https_with_a_read_only_token() {
    // Beyond loopback without TLS: refused, with the reason.
    let (code, _, err) = testkit::validate(
        "admin: { address: \"0.0.0.0:9000\", token: t }\nlisteners: [\"127.0.0.1:0\"]\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("set `admin.tls` (cert and key)"), "{err}");

    let backend = TestBackend::echo("a").await;
    let dir = testkit::TempDir::new("admin-tls");
    let (ca, cert, key) = certificates();
    let ca_path = dir.write("ca.pem", &ca);
    let cert_path = dir.write("admin.pem", &cert);
    let key_path = dir.write("admin.key", &key);
    let f = Fulcrum::start(&format!(
        "admin:\n  address: \"0.0.0.0:0\"\n  token: full-token\n  read_token: look-token\n  tls: {{ cert: \"{}\", key: \"{}\" }}\nlisteners: [\"127.0.0.1:0\"]\npools:\n  - name: web\n    backends: [\"{}\"]\nroutes:\n  - {{ pool: web }}\n",
        cert_path.display(),
        key_path.display(),
        backend.addr
    ));
    let url = format!("https://127.0.0.1:{}", f.admin().port());
    let ca = ca_path.to_str().expect("path");
    let b = backend.addr.to_string();

    let o = ctl(&[
        "--admin",
        &url,
        "--ca",
        ca,
        "--token",
        "full-token",
        "status",
    ]);
    assert!(o.ok, "{}", o.stderr);
    // The read-only token reads...
    let o = ctl(&[
        "--admin",
        &url,
        "--ca",
        ca,
        "--token",
        "look-token",
        "--json",
        "pools",
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains(&b), "{}", o.stdout);
    // ...but changes nothing.
    let o = ctl(&[
        "--admin",
        &url,
        "--ca",
        ca,
        "--token",
        "look-token",
        "drain",
        "web",
        &b,
    ]);
    assert!(!o.ok && o.stderr.contains("403"), "{}", o.stderr);
    let o = ctl(&[
        "--admin",
        &url,
        "--ca",
        ca,
        "--token",
        "full-token",
        "drain",
        "web",
        &b,
    ]);
    assert!(o.ok, "{}", o.stderr);
    // An unknown certificate is refused unless asked not to check.
    let o = ctl(&["--admin", &url, "--token", "full-token", "status"]);
    assert!(!o.ok && o.stderr.contains("TLS"), "{}", o.stderr);
    let o = ctl(&[
        "--admin",
        &url,
        "--insecure",
        "--token",
        "full-token",
        "status",
    ]);
    assert!(o.ok, "{}", o.stderr);
    // Plain HTTP gets no API (and the token does not travel in clear).
    let plain = format!("http://127.0.0.1:{}", f.admin().port());
    let o = ctl(&["--admin", &plain, "--token", "full-token", "status"]);
    assert!(!o.ok, "{}", o.stdout);
}
