//! The audit trail: one log line (target `fulcrum::audit`) for every admin
//! request that could change something (any method but GET and HEAD), refused
//! ones included: who asked, what, and how it ended.

use super::AdminBody;
use http::{Method, Response};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;

/// Who made a request: the peer's address, and which token it presented (a
/// short fingerprint, never the token itself).
pub(crate) struct Who {
    pub peer: SocketAddr,
    pub token: Option<String>,
}

impl Who {
    pub fn new(peer: SocketAddr, authorization: Option<&str>) -> Who {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| fingerprint(t.trim()));
        Who { peer, token }
    }
}

/// `sha256:` and the first 12 hex digits of the token's SHA-256: enough to tell
/// tokens apart in a log, useless to an attacker who reads it.
fn fingerprint(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub(crate) fn is_write(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// Logs the audit line for a write and hands the response back unchanged. A
/// failed write's error message is read from its (small, in-memory) JSON body.
pub(crate) async fn record(
    who: &Who,
    method: &Method,
    target: &str,
    user_agent: Option<&str>,
    resp: Response<AdminBody>,
) -> Response<AdminBody> {
    let status = resp.status();
    let (resp, error) = if status.is_success() {
        (resp, None)
    } else {
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let error = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        let body = Full::new(bytes).boxed();
        (Response::from_parts(parts, body), Some(error))
    };
    let token = who.token.as_deref().unwrap_or("none");
    let result = if status.is_success() { "ok" } else { "refused" };
    let ua = user_agent.unwrap_or("");
    match &error {
        None => tracing::info!(
            target: "fulcrum::audit",
            peer = %who.peer, token, user_agent = ua, action = %format!("{method} {target}"),
            status = status.as_u16(), result, "admin write"
        ),
        Some(e) => tracing::warn!(
            target: "fulcrum::audit",
            peer = %who.peer, token, user_agent = ua, action = %format!("{method} {target}"),
            status = status.as_u16(), result, error = %e, "admin write"
        ),
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_do_not_reveal_the_token() {
        let w = Who::new("127.0.0.1:1".parse().unwrap(), Some("Bearer s3cret"));
        let f = w.token.unwrap();
        assert!(f.starts_with("sha256:") && f.len() == 7 + 12, "{f}");
        assert!(!f.contains("s3cret"));
        assert_eq!(Who::new("127.0.0.1:1".parse().unwrap(), None).token, None);
    }
}
