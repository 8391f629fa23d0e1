//! The dashboard: one self-contained page (no CDN, nothing fetched but the API),
//! embedded in the binary.

use super::{AdminBody, full};
use http::{Response, StatusCode};

const PAGE: &str = include_str!("dashboard.html");

pub fn page() -> Response<AdminBody> {
    full(StatusCode::OK, "text/html; charset=utf-8", PAGE)
}
