//! Automatic certificates over ACME (RFC 8555) with instant-acme.
//!
//! One manager per ACME storage directory. At start it loads the account and the
//! certificates already in `storage`, then orders what is missing or due for
//! renewal (30 days before expiry, or earlier if the CA's renewal information (ARI,
//! RFC 9773) says so). Challenges are answered by Fulcrum itself: http-01 on any
//! plain listener (and on `redirect_http_from`), tls-alpn-01 in the TLS handshake.
//! Everything runs in the background: a failure is logged with its reason and
//! retried with backoff, and the proxy keeps serving meanwhile.
//!
//! In a cluster only the primary orders (the supervisor says so through the
//! "may order" watch), and it publishes challenge answers and certificates as
//! replicated commands so that every node can answer the CA and serve them.

use crate::command::{ChallengeKind, Command, CommandSink};
use crate::config::AcmeChallenge;
use crate::events::{EventKind, Events};
use crate::tls::acme_state::{self, AcmeState};
use crate::tls::certs::{self, Loaded};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Renew this long before expiry when the CA gives no renewal window.
const RENEW_BEFORE: i64 = 30 * 24 * 3600;
/// First retry after a failed order; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often certificates are re-examined when all is well.
const CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How often a cluster secondary looks at its role and its stored certificates.
const SECONDARY_CHECK: Duration = Duration::from_secs(2);

/// What a manager needs from the rest of the process.
#[derive(Clone)]
pub(crate) struct Handles {
    /// True while this node may order certificates (standalone, or primary).
    pub(crate) may_order: watch::Receiver<bool>,
    /// Where challenge answers and certificates are replicated to every node of
    /// a cluster (standalone: nowhere).
    pub(crate) replicate: Arc<dyn CommandSink>,
    pub(crate) events: Arc<Events>,
}

pub(crate) fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// In a cluster, publishes a change to every node through Raft (and waits for
/// it to be committed); standalone, nothing to do.
async fn replicate(h: &Handles, cmd: Command) -> Result<(), String> {
    let what = cmd.to_string();
    h.replicate
        .submit(cmd)
        .await
        .map(|_| ())
        .map_err(|e| format!("replicating {what}: {e}"))
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
    acme_state::write_private(&path, &json)
        .map_err(|e| format!("saving {}: {e}", path.display()))?;
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
    h: &Handles,
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
                    (ChallengeKind::Http01, token, ka.as_str().to_string())
                }
                AcmeChallenge::TlsAlpn01 => (
                    ChallengeKind::TlsAlpn01,
                    domain.to_string(),
                    to_hex(ka.digest().as_ref()),
                ),
            };
            state.set_challenge(kind, &name, Some(&value))?;
            // Every node answers the CA, whichever one it reaches.
            replicate(
                h,
                Command::AcmeChallenge {
                    directory: state.config.directory.clone(),
                    kind,
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
        AcmeChallenge::Http01 => (ChallengeKind::Http01, tokens),
        AcmeChallenge::TlsAlpn01 => (ChallengeKind::TlsAlpn01, vec![domain.to_string()]),
    };
    for name in names {
        let _ = state.set_challenge(kind, &name, None);
        let cmd = Command::AcmeChallenge {
            directory: state.config.directory.clone(),
            kind,
            name,
            value: None,
        };
        if let Err(e) = replicate(h, cmd).await {
            tracing::debug!(error = %e, "challenge cleanup");
        }
    }
    let (key_pem, chain_pem) = result?;
    let loaded = certs::from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), "acme")?;
    acme_state::save(&state.config.storage, domain, &key_pem, &chain_pem)?;
    let cmd = Command::AcmeCertificate {
        directory: state.config.directory.clone(),
        domain: domain.to_string(),
        chain_pem,
        key_pem,
    };
    if let Err(e) = replicate(h, cmd).await {
        // Served here; the other nodes get it at the next renewal or hand-over.
        tracing::error!(%domain, error = %e, "the certificate could not be replicated");
    }
    Ok(loaded)
}

/// The manager task: keeps every domain's certificate present and fresh.
pub(crate) async fn run(
    state: Arc<AcmeState>,
    h: Handles,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(&state.config.storage) {
        tracing::error!(storage = %state.config.storage.display(), error = %e, "cannot create the ACME storage directory");
    }
    let mut may_order = h.may_order.clone();
    let mut loaded = acme_state::load_stored(&state);
    acme_state::publish(&state, &loaded);
    let mut backoff: HashMap<String, Duration> = HashMap::new();
    let mut acct: Option<Account> = None;
    loop {
        let mut next_check = CHECK_EVERY;
        if !*may_order.borrow_and_update() {
            // A secondary serves what the primary ordered (replicated into
            // `storage`) and checks again soon, in case it becomes primary.
            loaded = acme_state::load_stored(&state);
            acme_state::publish(&state, &loaded);
            tokio::select! {
                _ = tokio::time::sleep(SECONDARY_CHECK) => continue,
                Ok(()) = may_order.changed() => continue,
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
            match order(&state, account, &domain, &h).await {
                Ok(l) => {
                    tracing::info!(%domain, issuer = %l.info.issuer, not_after = l.info.not_after, "certificate issued");
                    h.events.record(
                        EventKind::CertificateIssued,
                        None,
                        None,
                        format!("{domain}: issued by {}", l.info.issuer),
                    );
                    if let Some(i) = current {
                        loaded.remove(i);
                    }
                    loaded.push(l);
                    acme_state::publish(&state, &loaded);
                    backoff.remove(&domain);
                }
                Err(e) => {
                    let wait = *backoff
                        .entry(domain.clone())
                        .and_modify(|b| *b = (*b * 2).min(MAX_BACKOFF))
                        .or_insert(FIRST_BACKOFF);
                    tracing::error!(%domain, error = %e, retry_in = ?wait, "certificate order failed; still serving, will retry");
                    h.events.record(
                        EventKind::CertificateFailed,
                        None,
                        None,
                        format!("{domain}: {e}"),
                    );
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
