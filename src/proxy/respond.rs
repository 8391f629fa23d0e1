//! Responses Fulcrum writes itself: short plain-text errors carrying the request ID.

use super::body::ProxyBody;
use super::headers::X_REQUEST_ID;
use http::{HeaderValue, Response, StatusCode, header};

pub fn error(status: StatusCode, request_id: &HeaderValue, detail: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let id = request_id.to_str().unwrap_or("-");
    let text = if detail.is_empty() {
        format!("{} {reason}\nrequest-id: {id}\n", status.as_u16())
    } else {
        format!("{} {reason}: {detail}\nrequest-id: {id}\n", status.as_u16())
    };
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}
