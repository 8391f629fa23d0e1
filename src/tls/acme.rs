//! Automatic certificates over ACME (RFC 8555) with instant-acme.
//!
//! One manager per ACME storage directory. At start it loads the account and the
//! certificates already in `storage`, then orders what is missing or due for
//! renewal (30 days before expiry, or earlier if the CA's renewal information (ARI,
//! RFC 9773) says so). Challenges are answered by Fulcrum itself: http-01 on any
//! plain listener (and on `redirect_http_from`), tls-alpn-01 in the TLS handshake.
//! Everything runs in the background: a failure is logged with its reason and
//! retried with backoff, and the proxy keeps serving meanwhile.

use super::certs::{self, CertInfo, CertTable, Loaded};
use crate::admin::command::AdminCommand;
use crate::config::{AcmeChallenge, AcmeConfig};
use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Renew this long before expiry when the CA gives no renewal window.
const RENEW_BEFORE: i64 = 30 * 24 * 3600;
/// First retry after a failed order; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often certificates are re-examined when all is well.
const CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How often a cluster secondary looks at its role and its stored certificates.
const SECONDARY_CHECK: Duration = Duration::from_secs(2);

/// What the handshake and the request path need from ACME.
#[derive(Debug)]
pub struct AcmeState {
    pub config: AcmeConfig,
    pub domains: Vec<String>,
    pub certs: ArcSwap<CertTable>,
    http01: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Orders placed so far (for tests and the API).
    pub orders: std::sync::atomic::AtomicU64,
}

impl AcmeState {
    pub fn new(config: AcmeConfig, domains: Vec<String>) -> Self {
        AcmeState {
            config,
            domains,
            certs: ArcSwap::from_pointee(CertTable::default()),
            http01: Mutex::new(HashMap::new()),
            alpn: Mutex::new(HashMap::new()),
            orders: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The key authorization for an http-01 token, if an order is waiting on it.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        self.http01.lock().ok()?.get(token).cloned()
    }

    /// The tls-alpn-01 certificate for a name being validated.
    pub fn challenge_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .lock()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub fn infos(&self) -> Vec<CertInfo> {
        self.certs.load().infos.clone()
    }

    /// A challenge answer replicated from the primary (`None` removes it), so
    /// any node can answer the CA.
    pub fn set_challenge(&self, kind: &str, name: &str, value: Option<&str>) -> Result<(), String> {
        match kind {
            "http-01" => {
                if let Ok(mut m) = self.http01.lock() {
                    match value {
                        Some(v) => m.insert(name.to_string(), v.to_string()),
                        None => m.remove(name),
                    };
                }
            }
            "tls-alpn-01" => {
                let cert = match value {
                    Some(hex) => Some(alpn_challenge_cert(name, &from_hex(hex)?)?),
                    None => None,
                };
                if let Ok(mut m) = self.alpn.lock() {
                    match cert {
                        Some(c) => m.insert(name.to_ascii_lowercase(), c),
                        None => m.remove(&name.to_ascii_lowercase()),
                    };
                }
            }
            other => return Err(format!("unknown challenge type `{other}`")),
        }
        Ok(())
    }

    /// A certificate issued to the primary: stored here too and served at once.
    pub fn install(&self, domain: &str, chain_pem: &str, key_pem: &str) -> Result<(), String> {
        certs::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), "acme")?;
        std::fs::create_dir_all(&self.config.storage).map_err(|e| e.to_string())?;
        save(&self.config.storage, domain, key_pem, chain_pem)?;
        publish(self, &load_stored(self));
        Ok(())
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex `{s}`"))
        })
        .collect()
}

fn save(dir: &Path, domain: &str, key_pem: &str, chain_pem: &str) -> Result<(), String> {
    write_private(
        &storage_file(dir, &format!("{domain}.key.pem")),
        key_pem.as_bytes(),
    )
    .and_then(|_| {
        write_private(
            &storage_file(dir, &format!("{domain}.crt.pem")),
            chain_pem.as_bytes(),
        )
    })
    .map_err(|e| format!("saving the certificate: {e}"))
}

/// In a cluster, publishes a change to every node through Raft (and waits for
/// it to be committed); standalone, nothing to do.
async fn replicate(app: &Weak<crate::app::App>, cmd: AdminCommand) -> Result<(), String> {
    let Some(app) = app.upgrade() else {
        return Ok(());
    };
    let Some(cluster) = app.cluster() else {
        return Ok(());
    };
    let what = cmd.describe();
    let o = cluster.submit(cmd).await;
    if o.is_success() {
        Ok(())
    } else {
        Err(format!("replicating {what}: {}", o.body))
    }
}

/// Whether this node may order: always standalone; only the primary in a cluster.
fn may_order(app: &Weak<crate::app::App>) -> bool {
    let Some(app) = app.upgrade() else {
        return false;
    };
    if app.runtime.load().config.cluster.is_none() {
        return true;
    }
    app.cluster()
        .is_some_and(|c| c.role() == crate::cluster::role::Role::Primary)
}

fn storage_file(dir: &Path, name: &str) -> PathBuf {
    // Names are DNS names; keep the file name safe anyway.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(safe)
}

/// Writes a file readable by the owner only, atomically.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Loads every stored certificate for the manager's domains.
fn load_stored(state: &AcmeState) -> Vec<Loaded> {
    let mut out = Vec::new();
    for d in &state.domains {
        let cert = storage_file(&state.config.storage, &format!("{d}.crt.pem"));
        let key = storage_file(&state.config.storage, &format!("{d}.key.pem"));
        if !cert.exists() {
            continue;
        }
        match std::fs::read(&cert)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                std::fs::read(&key)
                    .map_err(|e| e.to_string())
                    .map(|k| (c, k))
            })
            .and_then(|(c, k)| certs::from_pem(&c, &k, "acme"))
        {
            Ok(l) => out.push(l),
            Err(e) => {
                tracing::warn!(domain = %d, error = %e, "ignoring a stored certificate that cannot be loaded")
            }
        }
    }
    out
}

fn publish(state: &AcmeState, loaded: &[Loaded]) {
    let mut table = CertTable::default();
    for l in loaded {
        table.add(l);
    }
    state.certs.store(Arc::new(table));
}

async fn account(state: &AcmeState) -> Result<Account, String> {
    let builder = || match &state.config.ca_bundle {
        Some(ca) => Account::builder_with_root(ca)
            .map_err(|e| format!("ACME client with ca_bundle {}: {e}", ca.display())),
        None => Account::builder().map_err(|e| format!("ACME client: {e}")),
    };
    let path = state.config.storage.join("account.json");
    if let Ok(text) = std::fs::read(&path) {
        let creds: AccountCredentials =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return builder()?
            .from_credentials(creds)
            .await
            .map_err(|e| format!("restoring the ACME account: {e}"));
    }
    let contact = state.config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            state.config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| {
            format!(
                "creating the ACME account at {}: {e}",
                state.config.directory
            )
        })?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
    write_private(&path, &json).map_err(|e| format!("saving {}: {e}", path.display()))?;
    tracing::info!(directory = %state.config.directory, "ACME account created");
    Ok(account)
}

/// When a certificate should be renewed (Unix seconds): the CA's window if it
/// publishes one, else 30 days before expiry.
async fn renew_at(account: &Account, l: &Loaded) -> i64 {
    let fallback = l.info.not_after - RENEW_BEFORE;
    let Some(der) = l.key.cert.first() else {
        return fallback;
    };
    let Ok(id) = instant_acme::CertificateIdentifier::try_from(der) else {
        return fallback;
    };
    match account.renewal_info(&id).await {
        Ok((info, _)) => {
            let start = info.suggested_window.start.unix_timestamp();
            let end = info.suggested_window.end.unix_timestamp();
            // A random moment inside the window, as RFC 9773 recommends.
            start + (crate::rand::below((end - start).max(1) as u64) as i64)
        }
        Err(_) => fallback,
    }
}

/// One certificate for one name.
async fn order(
    state: &AcmeState,
    account: &Account,
    domain: &str,
    app: &Weak<crate::app::App>,
) -> Result<Loaded, String> {
    state
        .orders
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut tokens = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut authz = a.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let kind = match state.config.challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut ch = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge for {domain}"))?;
            let ka = ch.key_authorization();
            let (kind, name, value) = match state.config.challenge {
                AcmeChallenge::Http01 => {
                    let token = ch.token.clone();
                    tokens.push(token.clone());
                    ("http-01", token, ka.as_str().to_string())
                }
                AcmeChallenge::TlsAlpn01 => (
                    "tls-alpn-01",
                    domain.to_string(),
                    to_hex(ka.digest().as_ref()),
                ),
            };
            state.set_challenge(kind, &name, Some(&value))?;
            // Every node answers the CA, whichever one it reaches.
            replicate(
                app,
                AdminCommand::AcmeChallenge {
                    directory: state.config.directory.clone(),
                    kind: kind.into(),
                    name,
                    value: Some(value),
                },
            )
            .await?;
            ch.set_ready()
                .await
                .map_err(|e| format!("challenge ready: {e}"))?;
        }
    }
    let result = async {
        let status = order
            .poll_ready(&RetryPolicy::default())
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            let detail = order
                .refresh()
                .await
                .ok()
                .and_then(|s| s.error.as_ref().map(|p| format!("{p:?}")))
                .unwrap_or_default();
            return Err(format!("order is {status:?} {detail}"));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok::<_, String>((key_pem, chain_pem))
    }
    .await;
    // The challenge answers are no longer needed, whatever happened.
    let (kind, names) = match state.config.challenge {
        AcmeChallenge::Http01 => ("http-01", tokens),
        AcmeChallenge::TlsAlpn01 => ("tls-alpn-01", vec![domain.to_string()]),
    };
    for name in names {
        let _ = state.set_challenge(kind, &name, None);
        let cmd = AdminCommand::AcmeChallenge {
            directory: state.config.directory.clone(),
            kind: kind.into(),
            name,
            value: None,
        };
        if let Err(e) = replicate(app, cmd).await {
            tracing::debug!(error = %e, "challenge cleanup");
        }
    }
    let (key_pem, chain_pem) = result?;
    let loaded = certs::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), "acme")?;
    save(&state.config.storage, domain, &key_pem, &chain_pem)?;
    let cmd = AdminCommand::AcmeCertificate {
        directory: state.config.directory.clone(),
        domain: domain.to_string(),
        chain_pem,
        key_pem,
    };
    if let Err(e) = replicate(app, cmd).await {
        // Served here; the other nodes get it at the next renewal or hand-over.
        tracing::error!(%domain, error = %e, "the certificate could not be replicated");
    }
    Ok(loaded)
}

/// A self-signed certificate carrying the acmeIdentifier extension (RFC 8737).
fn alpn_challenge_cert(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate and
    // rejects the (critical) acmeIdentifier extension this certificate exists for.
    let signing = super::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The manager task: keeps every domain's certificate present and fresh.
pub async fn run(
    state: Arc<AcmeState>,
    app: Weak<crate::app::App>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(&state.config.storage) {
        tracing::error!(storage = %state.config.storage.display(), error = %e, "cannot create the ACME storage directory");
    }
    let mut loaded = load_stored(&state);
    publish(&state, &loaded);
    let mut backoff: HashMap<String, Duration> = HashMap::new();
    let mut acct: Option<Account> = None;
    loop {
        let mut next_check = CHECK_EVERY;
        if !may_order(&app) {
            // A secondary serves what the primary ordered (replicated into
            // `storage`) and checks again soon, in case it becomes primary.
            loaded = load_stored(&state);
            publish(&state, &loaded);
            tokio::select! {
                _ = tokio::time::sleep(SECONDARY_CHECK) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        if acct.is_none() {
            match account(&state).await {
                Ok(a) => acct = Some(a),
                Err(e) => {
                    tracing::error!(error = %e, "ACME account unavailable; will retry");
                    let wait = *backoff
                        .entry(String::new())
                        .and_modify(|b| *b = (*b * 2).min(MAX_BACKOFF))
                        .or_insert(FIRST_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
        let Some(account) = acct.as_ref() else {
            continue;
        };
        let now = crate::clock::unix_secs_f64() as i64;
        for domain in state.domains.clone() {
            let current = loaded.iter().position(|l| l.info.names.contains(&domain));
            let due = match current {
                None => true,
                Some(i) => renew_at(account, &loaded[i]).await <= now,
            };
            if !due {
                continue;
            }
            tracing::info!(%domain, challenge = ?state.config.challenge, "ordering a certificate");
            match order(&state, account, &domain, &app).await {
                Ok(l) => {
                    tracing::info!(%domain, issuer = %l.info.issuer, not_after = l.info.not_after, "certificate issued");
                    if let Some(app) = app.upgrade() {
                        app.events.record(
                            "certificate.issued",
                            None,
                            None,
                            format!("{domain}: issued by {}", l.info.issuer),
                        );
                    }
                    if let Some(i) = current {
                        loaded.remove(i);
                    }
                    loaded.push(l);
                    publish(&state, &loaded);
                    backoff.remove(&domain);
                }
                Err(e) => {
                    let wait = *backoff
                        .entry(domain.clone())
                        .and_modify(|b| *b = (*b * 2).min(MAX_BACKOFF))
                        .or_insert(FIRST_BACKOFF);
                    tracing::error!(%domain, error = %e, retry_in = ?wait, "certificate order failed; still serving, will retry");
                    if let Some(app) = app.upgrade() {
                        app.events.record(
                            "certificate.failed",
                            None,
                            None,
                            format!("{domain}: {e}"),
                        );
                    }
                    next_check = next_check.min(wait);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(next_check) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
