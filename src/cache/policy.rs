//! The rules of a shared HTTP cache, as pure functions: what may be stored
//! (RFC 9111 §3), for how long it is fresh (§4.2), its age (§4.2.3), which
//! stored variant a request may use (§4.1), when stale content may be served
//! (RFC 5861 and §4.2.4), conditional requests (RFC 9110 §13), the header update
//! of a 304 (§3.2), and the directives of `CDN-Cache-Control` (RFC 9213), which
//! a cache like this one obeys in place of `Cache-Control` when present.
//!
//! Nothing here touches the network or a clock: times come in as arguments.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use std::time::{Duration, SystemTime};

/// The largest delta-seconds value kept (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;
/// Heuristic freshness never exceeds this (a tenth of the time since
/// Last-Modified otherwise).
pub const HEURISTIC_MAX: u64 = 24 * 3600;
/// Stored variants of one URL (by `Vary` and the key's header/cookie parts).
pub const VARIANT_CAP: usize = 16;

pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Directives of `Cache-Control` (or `CDN-Cache-Control`), response and request
/// ones together. An invalid or repeated-and-conflicting delta-seconds value is
/// kept as 0, the most conservative reading (§4.2.1, §1.2.2).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Directives {
    pub no_store: bool,
    /// Unqualified `no-cache`: every reuse needs revalidation.
    pub no_cache: bool,
    /// `no-cache="F"`: those fields are not reused (this cache drops them).
    pub no_cache_fields: Vec<HeaderName>,
    pub private: bool,
    /// `private="F"`: those fields are not stored.
    pub private_fields: Vec<HeaderName>,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request: `max-stale` (no value: any staleness, u64::MAX).
    pub max_stale: Option<u64>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    /// At least one directive was read.
    pub any: bool,
}

impl Directives {
    /// All lines of header `name`, combined.
    pub fn parse(headers: &HeaderMap, name: &HeaderName) -> Directives {
        let mut d = Directives::default();
        for line in headers.get_all(name) {
            let Ok(text) = line.to_str() else {
                // Unreadable: treat as the most restrictive.
                d.no_store = true;
                d.any = true;
                continue;
            };
            for (k, v) in split_directives(text) {
                d.apply(&k, v);
            }
        }
        d
    }

    fn apply(&mut self, name: &str, value: Option<String>) {
        self.any = true;
        let secs = |v: &Option<String>| v.as_deref().map_or(0, parse_delta);
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => match value {
                Some(v) => self.no_cache_fields.extend(field_list(&v)),
                None => self.no_cache = true,
            },
            "private" => match value {
                Some(v) => self.private_fields.extend(field_list(&v)),
                None => self.private = true,
            },
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "only-if-cached" => self.only_if_cached = true,
            "max-age" => set_delta(&mut self.max_age, secs(&value)),
            "s-maxage" => set_delta(&mut self.s_maxage, secs(&value)),
            "stale-while-revalidate" => set_delta(&mut self.stale_while_revalidate, secs(&value)),
            "stale-if-error" => set_delta(&mut self.stale_if_error, secs(&value)),
            "min-fresh" => set_delta(&mut self.min_fresh, secs(&value)),
            "max-stale" => {
                let v = match &value {
                    None => u64::MAX,
                    Some(_) => secs(&value),
                };
                set_delta(&mut self.max_stale, v)
            }
            _ => {}
        }
    }

    /// Stale content is never served for this response (§4.2.4, §5.2.2).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache || self.s_maxage.is_some()
    }
}

/// A directive given twice with different values reads as 0 (stale).
fn set_delta(slot: &mut Option<u64>, v: u64) {
    *slot = match *slot {
        Some(old) if old != v => Some(0),
        _ => Some(v),
    };
}

/// delta-seconds: digits only; too large is capped; anything else is 0.
pub fn parse_delta(text: &str) -> u64 {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    t.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX)
}

/// `name[=value]` pairs of one header line; names lowercased, quoted values
/// unquoted; commas inside quotes do not split.
fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
                continue;
            } else if c == '"' {
                quoted = false;
            }
            cur.push(c);
        } else if c == '"' {
            quoted = true;
            cur.push(c);
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim(), Some(v.to_string()))
            }
            None => (p, None),
        };
        out.push((k.to_ascii_lowercase(), v));
    }
    out
}

fn field_list(v: &str) -> Vec<HeaderName> {
    v.split(',')
        .filter_map(|f| HeaderName::from_bytes(f.trim().as_bytes()).ok())
        .collect()
}

/// The directives this cache obeys for a response: `CDN-Cache-Control` when it
/// has any (RFC 9213: it then replaces `Cache-Control` for this cache), else
/// `Cache-Control`.
pub fn response_directives(headers: &HeaderMap) -> Directives {
    let cdn = Directives::parse(headers, &CDN_CACHE_CONTROL);
    if cdn.any {
        return cdn;
    }
    Directives::parse(headers, &header::CACHE_CONTROL)
}

/// A request's directives; `Pragma: no-cache` counts as `no-cache` when there is
/// no `Cache-Control` (RFC 9111 §5.4).
pub fn request_directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::parse(headers, &header::CACHE_CONTROL);
    if !headers.contains_key(header::CACHE_CONTROL)
        && headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache"))
        })
    {
        d.no_cache = true;
    }
    d
}

/// Statuses cacheable by default (RFC 9110 §15.1), which may get heuristic
/// freshness.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching rules this cache knows (for `must-understand`).
fn understood(status: StatusCode) -> bool {
    (heuristically_cacheable(status) && status != StatusCode::PARTIAL_CONTENT)
        || matches!(status.as_u16(), 302 | 303 | 307)
}

/// Why a response is not stored (`None`: it may be).
pub fn not_storable(
    method: &Method,
    status: StatusCode,
    req_headers: &HeaderMap,
    req: &Directives,
    resp_headers: &HeaderMap,
    d: &Directives,
    default_ttl: Duration,
) -> Option<&'static str> {
    if method != Method::GET {
        return Some("method");
    }
    // Ranges are not assembled: 206 is passed through.
    if status.is_informational()
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return Some("status");
    }
    if d.must_understand {
        if !understood(status) {
            return Some("must-understand");
        }
    } else if d.no_store {
        return Some("no-store");
    }
    if req.no_store {
        return Some("request no-store");
    }
    if d.private {
        return Some("private");
    }
    if req_headers.contains_key(header::AUTHORIZATION)
        && !(d.public || d.must_revalidate || d.s_maxage.is_some())
    {
        return Some("authorization");
    }
    if resp_headers.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if vary_names(resp_headers).is_none() {
        return Some("vary *");
    }
    let explicit = d.public
        || d.max_age.is_some()
        || d.s_maxage.is_some()
        || resp_headers.contains_key(header::EXPIRES);
    if !explicit && !heuristically_cacheable(status) {
        return Some("no freshness");
    }
    if !explicit && default_ttl.is_zero() && !has_validator(resp_headers) {
        // Nothing could make it fresh or revalidate it; stale serving alone
        // would still use it, so it is kept only with a Last-Modified or ETag.
        return Some("no freshness");
    }
    None
}

pub fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

fn date(h: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let v = h.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// Freshness lifetime in seconds for a shared cache (§4.2.1): `s-maxage`, else
/// `max-age`, else `Expires` − `Date`, else the route's `default_ttl`, else a
/// tenth of the time since `Last-Modified` (heuristic statuses only, capped).
pub fn freshness_lifetime(
    status: StatusCode,
    h: &HeaderMap,
    d: &Directives,
    response_time: SystemTime,
    default_ttl: Duration,
) -> u64 {
    if let Some(s) = d.s_maxage {
        return s;
    }
    if let Some(m) = d.max_age {
        return m;
    }
    let served = date(h, &header::DATE).unwrap_or(response_time);
    if h.contains_key(header::EXPIRES) {
        // Several Expires lines, or an invalid one: already expired.
        if h.get_all(header::EXPIRES).iter().count() > 1 {
            return 0;
        }
        return match date(h, &header::EXPIRES) {
            Some(exp) => exp
                .duration_since(served)
                .map_or(0, |d| d.as_secs().min(DELTA_MAX)),
            None => 0,
        };
    }
    if !default_ttl.is_zero() {
        return default_ttl.as_secs();
    }
    if heuristically_cacheable(status)
        && let Some(lm) = date(h, &header::LAST_MODIFIED)
    {
        return served
            .duration_since(lm)
            .map_or(0, |d| (d.as_secs() / 10).min(HEURISTIC_MAX));
    }
    0
}

/// `corrected_initial_age` of §4.2.3, in seconds; the current age is this plus
/// the time the response has been held. The `Date` header is read, never
/// rewritten.
pub fn initial_age(h: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> u64 {
    let age_value = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .map_or(0, parse_delta);
    let apparent = date(h, &header::DATE)
        .and_then(|d| response_time.duration_since(d).ok())
        .map_or(0, |d| d.as_secs());
    let delay = response_time
        .duration_since(request_time)
        .map_or(0, |d| d.as_secs());
    apparent.max(age_value.saturating_add(delay))
}

/// The request header names the response varies on (several `Vary` lines
/// combined, lowercase); `None` for `Vary: *`, which is never matched.
pub fn vary_names(h: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out: Vec<HeaderName> = Vec::new();
    for line in h.get_all(header::VARY) {
        let text = line.to_str().ok()?;
        for f in text.split(',') {
            let f = f.trim();
            if f == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(f.as_bytes())
                && !out.contains(&n)
            {
                out.push(n);
            }
        }
    }
    Some(out)
}

/// A request header as one value for variant matching: its lines joined with
/// ", " and whitespace around each trimmed (§4.1); absent is `None`.
pub fn vary_value(req: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in req.get_all(name) {
        let s = out.get_or_insert_with(Vec::new);
        if !s.is_empty() {
            s.extend_from_slice(b", ");
        }
        s.extend_from_slice(trim_bytes(v.as_bytes()));
    }
    out
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// What the cache may do with a stored response for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as is.
    Fresh,
    /// Serve it stale because the client allows it (`max-stale`).
    StaleAllowed,
    /// Serve it stale and refresh it in the background.
    StaleWhileRevalidate,
    /// Ask the backend (with the stored validators, when there are).
    Revalidate,
}

/// The stored response's freshness facts, as kept with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Freshness {
    pub lifetime: u64,
    /// The response's own `stale-while-revalidate` / `stale-if-error`.
    pub swr: u64,
    pub sie: u64,
    pub forbids_stale: bool,
    pub no_cache: bool,
}

impl Freshness {
    pub fn of(d: &Directives, lifetime: u64) -> Freshness {
        Freshness {
            lifetime,
            swr: d.stale_while_revalidate.unwrap_or(0),
            sie: d.stale_if_error.unwrap_or(0),
            forbids_stale: d.forbids_stale(),
            no_cache: d.no_cache,
        }
    }
}

/// §4.2 and RFC 5861: fresh, stale but usable, or to be revalidated, for a
/// stored response of `age` seconds. `max_stale_cap` bounds what a client's
/// `max-stale` may ask; `swr_floor` is the route's `stale_while_revalidate`.
pub fn reuse(
    age: u64,
    f: &Freshness,
    req: &Directives,
    swr_floor: u64,
    max_stale_cap: u64,
) -> Reuse {
    if f.no_cache || req.no_cache {
        return Reuse::Revalidate;
    }
    if req.max_age.is_some_and(|m| age > m) {
        return Reuse::Revalidate;
    }
    let left = f.lifetime.saturating_sub(age);
    if age < f.lifetime {
        if req.min_fresh.is_none_or(|m| left >= m) {
            return Reuse::Fresh;
        }
        return Reuse::Revalidate;
    }
    if f.forbids_stale {
        return Reuse::Revalidate;
    }
    let stale_by = age - f.lifetime;
    if let Some(ms) = req.max_stale
        && stale_by <= ms.min(max_stale_cap)
    {
        return Reuse::StaleAllowed;
    }
    if req.min_fresh.is_none() && stale_by < f.swr.max(swr_floor) {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate
}

/// RFC 5861 `stale-if-error`: whether a stored response of `age` seconds may
/// answer when the backends cannot (the route's setting is a floor).
pub fn usable_on_error(age: u64, f: &Freshness, sie_floor: u64) -> bool {
    if f.forbids_stale {
        return false;
    }
    age < f.lifetime || age - f.lifetime <= f.sie.max(sie_floor)
}

/// Whether a conditional request is answered 304 by the stored response's
/// validators (RFC 9110 §13.1.2, §13.1.3; `If-None-Match` takes precedence).
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = header_text(req, &header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let etag = weak_strip(etag.trim());
        return inm.trim() == "*" || inm.split(',').any(|t| weak_strip(t.trim()) == etag);
    }
    if let Some(ims) = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    {
        let last = date(stored, &header::LAST_MODIFIED).or_else(|| date(stored, &header::DATE));
        return last.is_some_and(|lm| lm <= ims);
    }
    false
}

fn header_text(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in h.get_all(name) {
        let s = out.get_or_insert_with(String::new);
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(v.to_str().ok()?);
    }
    out
}

fn weak_strip(t: &str) -> &str {
    t.strip_prefix("W/").unwrap_or(t)
}

/// A request is conditional on the cache's validators.
pub fn is_conditional(req: &HeaderMap) -> bool {
    req.contains_key(header::IF_NONE_MATCH) || req.contains_key(header::IF_MODIFIED_SINCE)
}

/// The headers of a 304 answered from the cache (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_KEEP: [HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

/// The validators to revalidate a stored response with.
pub fn validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(e) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, e.clone()));
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// §3.2: the stored headers updated from a 304: every field of the 304
/// replaces the stored one, except the framing ones.
pub fn update_headers(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let mut out = stored.clone();
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in fresh {
        if *name == header::CONTENT_LENGTH
            || *name == header::TRANSFER_ENCODING
            || *name == header::SET_COOKIE
        {
            continue;
        }
        if !replaced.contains(&name) {
            out.remove(name);
            replaced.push(name);
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The stored form of a response's headers: `private="F"` and `no-cache="F"`
/// fields dropped (this cache never revalidates single fields).
pub fn strip_for_storage(h: &mut HeaderMap, d: &Directives) {
    for f in d.private_fields.iter().chain(&d.no_cache_fields) {
        h.remove(f);
    }
    h.remove(header::SET_COOKIE);
}

/// Methods whose success invalidates stored responses (§4.4).
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && (status.is_success() || status.is_redirection())
}

/// The path (and query) of a `Location` or `Content-Location` of the same
/// origin; another host is never invalidated (§4.4).
pub fn same_origin_target(value: &HeaderValue, host: Option<&str>) -> Option<String> {
    let v = value.to_str().ok()?.trim();
    if v.starts_with('/') && !v.starts_with("//") {
        return Some(v.to_string());
    }
    let uri: http::Uri = v.parse().ok()?;
    let auth = uri.authority()?;
    let h = host?;
    if !auth.as_str().eq_ignore_ascii_case(h) && !auth.host().eq_ignore_ascii_case(h) {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// Tags a response declares for purging: `Cache-Tag` (comma separated) and
/// `Surrogate-Key` (space separated).
pub fn tags(h: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for v in h.get_all("cache-tag") {
        if let Ok(s) = v.to_str() {
            out.extend(
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            );
        }
    }
    for v in h.get_all("surrogate-key") {
        if let Ok(s) = v.to_str() {
            out.extend(s.split_ascii_whitespace().map(String::from));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn cc(v: &str) -> Directives {
        Directives::parse(&h(&[("cache-control", v)]), &header::CACHE_CONTROL)
    }

    fn storable_why(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Option<&'static str> {
        let (rq, rs) = (h(req), h(resp));
        not_storable(
            &Method::GET,
            StatusCode::from_u16(status).unwrap(),
            &rq,
            &request_directives(&rq),
            &rs,
            &response_directives(&rs),
            Duration::ZERO,
        )
    }

    const T0: u64 = 1_700_000_000;
    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }
    fn http_date(s: u64) -> String {
        httpdate::fmt_http_date(at(s))
    }

    #[test]
    fn parses_directives_across_lines_quotes_and_case() {
        let d = Directives::parse(
            &h(&[
                (
                    "cache-control",
                    "Max-Age=60, private=\"set-cookie, x-user\"",
                ),
                ("cache-control", "no-cache=\"x-a\", S-MAXAGE=\"30\""),
            ]),
            &header::CACHE_CONTROL,
        );
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(!d.private && !d.no_cache);
        assert_eq!(d.private_fields.len(), 2);
        assert_eq!(d.no_cache_fields, [HeaderName::from_static("x-a")]);
    }

    #[test]
    fn invalid_or_conflicting_delta_seconds_are_zero_and_huge_is_capped() {
        assert_eq!(cc("max-age=abc").max_age, Some(0));
        assert_eq!(cc("max-age=-5").max_age, Some(0));
        assert_eq!(cc("max-age=10, max-age=20").max_age, Some(0));
        assert_eq!(cc("max-age=10, max-age=10").max_age, Some(10));
        assert_eq!(cc("max-age=99999999999999999999").max_age, Some(DELTA_MAX));
        assert_eq!(cc("max-stale").max_stale, Some(u64::MAX));
    }

    #[test]
    fn storability() {
        assert_eq!(
            storable_why(&[], 200, &[("cache-control", "max-age=60")]),
            None
        );
        assert_eq!(
            storable_why(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Some("no-store")
        );
        assert_eq!(
            storable_why(&[], 200, &[("cache-control", "private, max-age=60")]),
            Some("private")
        );
        // private="F" stores without F.
        assert_eq!(
            storable_why(
                &[],
                200,
                &[("cache-control", "private=\"x-user\", max-age=60")]
            ),
            None
        );
        assert_eq!(
            storable_why(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Some("request no-store")
        );
        assert_eq!(
            storable_why(&[], 206, &[("cache-control", "max-age=60")]),
            Some("status")
        );
        assert_eq!(
            storable_why(&[], 304, &[("cache-control", "max-age=60")]),
            Some("status")
        );
        // A non-heuristic status needs explicit freshness.
        assert_eq!(
            storable_why(&[], 500, &[("last-modified", &http_date(T0))]),
            Some("no freshness")
        );
        assert_eq!(
            storable_why(&[], 302, &[("cache-control", "max-age=60")]),
            None
        );
        // Heuristic status with a validator: stored; without anything: not.
        assert_eq!(storable_why(&[], 200, &[("etag", "\"a\"")]), None);
        assert_eq!(storable_why(&[], 200, &[]), Some("no freshness"));
        assert_eq!(
            storable_why(
                &[],
                200,
                &[("set-cookie", "a=b"), ("cache-control", "max-age=60")]
            ),
            Some("set-cookie")
        );
        assert_eq!(
            storable_why(
                &[],
                200,
                &[("vary", "accept, *"), ("cache-control", "max-age=60")]
            ),
            Some("vary *")
        );
    }

    #[test]
    fn must_understand_overrides_no_store_only_for_known_statuses() {
        let resp = [("cache-control", "must-understand, no-store, max-age=60")];
        assert_eq!(storable_why(&[], 200, &resp), None);
        assert_eq!(storable_why(&[], 599, &resp), Some("must-understand"));
    }

    #[test]
    fn authorization_needs_public_must_revalidate_or_s_maxage() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            storable_why(&auth, 200, &[("cache-control", "max-age=60")]),
            Some("authorization")
        );
        for ok in [
            "public, max-age=60",
            "must-revalidate, max-age=60",
            "s-maxage=60",
        ] {
            assert_eq!(
                storable_why(&auth, 200, &[("cache-control", ok)]),
                None,
                "{ok}"
            );
        }
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control() {
        let rs = h(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=120"),
        ]);
        let d = response_directives(&rs);
        assert!(!d.no_store);
        assert_eq!(d.max_age, Some(120));
        let rs = h(&[("cache-control", "max-age=5")]);
        assert_eq!(response_directives(&rs).max_age, Some(5));
    }

    fn lifetime(resp: &[(&str, &str)], default_ttl: u64) -> u64 {
        let rs = h(resp);
        freshness_lifetime(
            StatusCode::OK,
            &rs,
            &response_directives(&rs),
            at(T0),
            Duration::from_secs(default_ttl),
        )
    }

    #[test]
    fn freshness_order_s_maxage_max_age_expires() {
        let date = http_date(T0);
        let exp = http_date(T0 + 300);
        assert_eq!(
            lifetime(
                &[
                    ("cache-control", "max-age=60, s-maxage=30"),
                    ("expires", &exp)
                ],
                0
            ),
            30
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60"), ("expires", &exp)], 0),
            60
        );
        assert_eq!(lifetime(&[("date", &date), ("expires", &exp)], 0), 300);
        // Invalid or repeated Expires: already stale.
        assert_eq!(lifetime(&[("date", &date), ("expires", "0")], 0), 0);
        assert_eq!(
            lifetime(&[("date", &date), ("expires", &exp), ("expires", &exp)], 0),
            0
        );
        // Expires in the past.
        assert_eq!(
            lifetime(&[("date", &date), ("expires", &http_date(T0 - 10))], 0),
            0
        );
        // The other two date formats are read too.
        assert_eq!(
            lifetime(
                &[
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sunday, 06-Nov-94 08:50:37 GMT")
                ],
                0
            ),
            60
        );
        assert_eq!(
            lifetime(
                &[
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun Nov  6 08:51:37 1994")
                ],
                0
            ),
            120
        );
    }

    #[test]
    fn heuristic_only_without_explicit_freshness() {
        let date = http_date(T0);
        let lm = http_date(T0 - 1000);
        assert_eq!(lifetime(&[("date", &date), ("last-modified", &lm)], 0), 100);
        assert_eq!(
            lifetime(
                &[
                    ("date", &date),
                    ("last-modified", &http_date(T0 - 10_000_000))
                ],
                0
            ),
            HEURISTIC_MAX
        );
        assert_eq!(
            lifetime(
                &[
                    ("date", &date),
                    ("last-modified", &lm),
                    ("cache-control", "max-age=7")
                ],
                0
            ),
            7
        );
        assert_eq!(
            lifetime(
                &[
                    ("date", &date),
                    ("last-modified", &lm),
                    ("cache-control", "max-age=0")
                ],
                0
            ),
            0
        );
        // The route's default_ttl comes before the heuristic, after explicit values.
        assert_eq!(lifetime(&[("date", &date), ("last-modified", &lm)], 42), 42);
        assert_eq!(lifetime(&[("cache-control", "max-age=7")], 42), 7);
        // Not for a non-heuristic status.
        let rs = h(&[("date", &date), ("last-modified", &lm)]);
        assert_eq!(
            freshness_lifetime(
                StatusCode::FOUND,
                &rs,
                &Directives::default(),
                at(T0),
                Duration::ZERO
            ),
            0
        );
    }

    #[test]
    fn age_follows_section_4_2_3() {
        // Apparent age from Date.
        let rs = h(&[("date", &http_date(T0 - 20))]);
        assert_eq!(initial_age(&rs, at(T0), at(T0)), 20);
        // Age header plus the response delay beats a smaller apparent age.
        let rs = h(&[("date", &http_date(T0)), ("age", "50")]);
        assert_eq!(initial_age(&rs, at(T0 - 3), at(T0)), 53);
        // A Date in the future counts as 0; an invalid Age as 0.
        let rs = h(&[("date", &http_date(T0 + 100)), ("age", "x")]);
        assert_eq!(initial_age(&rs, at(T0), at(T0)), 0);
    }

    #[test]
    fn vary_lines_combine_case_insensitively_and_star_is_none() {
        let rs = h(&[
            ("vary", "Accept-Encoding"),
            ("vary", "accept-language, ACCEPT-ENCODING"),
        ]);
        assert_eq!(
            vary_names(&rs).unwrap(),
            [
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language")
            ]
        );
        assert!(vary_names(&h(&[("vary", "*")])).is_none());
        let rq = h(&[("accept-language", " en "), ("accept-language", "fr")]);
        assert_eq!(
            vary_value(&rq, &HeaderName::from_static("accept-language")).unwrap(),
            b"en, fr"
        );
        assert_eq!(vary_value(&rq, &header::ACCEPT), None);
    }

    fn fr(lifetime: u64, resp_cc: &str) -> Freshness {
        Freshness::of(&cc(resp_cc), lifetime)
    }

    #[test]
    fn reuse_fresh_stale_and_request_directives() {
        let none = Directives::default();
        assert_eq!(reuse(10, &fr(60, ""), &none, 0, 0), Reuse::Fresh);
        assert_eq!(reuse(60, &fr(60, ""), &none, 0, 0), Reuse::Revalidate);
        // Response no-cache: always revalidate.
        assert_eq!(
            reuse(0, &fr(60, "no-cache"), &none, 0, 0),
            Reuse::Revalidate
        );
        // Request no-cache, max-age, min-fresh.
        assert_eq!(
            reuse(10, &fr(60, ""), &cc("no-cache"), 0, 0),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(10, &fr(60, ""), &cc("max-age=5"), 0, 0),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(10, &fr(60, ""), &cc("max-age=10"), 0, 0),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(10, &fr(60, ""), &cc("min-fresh=55"), 0, 0),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(10, &fr(60, ""), &cc("min-fresh=50"), 0, 0),
            Reuse::Fresh
        );
        // max-stale, capped by the route.
        assert_eq!(
            reuse(70, &fr(60, ""), &cc("max-stale=20"), 0, 3600),
            Reuse::StaleAllowed
        );
        assert_eq!(
            reuse(70, &fr(60, ""), &cc("max-stale"), 0, 5),
            Reuse::Revalidate
        );
        // stale-while-revalidate: the response's own, or the route's floor.
        assert_eq!(
            reuse(70, &fr(60, "stale-while-revalidate=30"), &none, 0, 0),
            Reuse::StaleWhileRevalidate
        );
        assert_eq!(
            reuse(95, &fr(60, "stale-while-revalidate=30"), &none, 0, 0),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(70, &fr(60, ""), &none, 30, 0),
            Reuse::StaleWhileRevalidate
        );
    }

    #[test]
    fn never_stale_under_revalidation_directives() {
        for d in [
            "must-revalidate",
            "proxy-revalidate",
            "no-cache",
            "s-maxage=60",
        ] {
            let f = fr(
                60,
                &format!("{d}, stale-while-revalidate=100, stale-if-error=100"),
            );
            assert_eq!(
                reuse(70, &f, &cc("max-stale"), 100, 1000),
                Reuse::Revalidate,
                "{d}"
            );
            assert!(!usable_on_error(70, &f, 1000), "{d}");
        }
        assert!(usable_on_error(70, &fr(60, ""), 10));
        assert!(!usable_on_error(71, &fr(60, ""), 10));
        assert!(usable_on_error(100, &fr(60, "stale-if-error=50"), 0));
    }

    #[test]
    fn conditional_requests() {
        let stored = h(&[("etag", "W/\"v1\""), ("last-modified", &http_date(T0))]);
        assert!(not_modified(
            &h(&[("if-none-match", "\"v0\", \"v1\"")]),
            &stored
        ));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&h(&[("if-none-match", "\"v2\"")]), &stored));
        // If-None-Match takes precedence over If-Modified-Since.
        assert!(!not_modified(
            &h(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", &http_date(T0))
            ]),
            &stored
        ));
        assert!(not_modified(
            &h(&[("if-modified-since", &http_date(T0))]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", &http_date(T0 - 1))]),
            &stored
        ));
        assert!(!not_modified(&h(&[]), &stored));
    }

    #[test]
    fn header_update_from_304_keeps_framing_and_body_fields() {
        let stored = h(&[
            ("content-length", "5"),
            ("etag", "\"a\""),
            ("cache-control", "max-age=1"),
            ("x-old", "1"),
        ]);
        let fresh = h(&[
            ("content-length", "0"),
            ("cache-control", "max-age=60"),
            ("x-new", "2"),
            ("set-cookie", "a=b"),
        ]);
        let out = update_headers(&stored, &fresh);
        assert_eq!(out["content-length"], "5");
        assert_eq!(out["cache-control"], "max-age=60");
        assert_eq!(out.get_all("cache-control").iter().count(), 1);
        assert_eq!(out["x-old"], "1");
        assert_eq!(out["x-new"], "2");
        assert!(!out.contains_key("set-cookie"));
    }

    #[test]
    fn qualified_private_and_no_cache_fields_are_not_stored() {
        let mut rs = h(&[
            ("cache-control", "private=\"x-user\", no-cache=\"x-tmp\""),
            ("x-user", "bob"),
            ("x-tmp", "1"),
            ("x-keep", "1"),
        ]);
        let d = response_directives(&rs);
        strip_for_storage(&mut rs, &d);
        assert!(!rs.contains_key("x-user") && !rs.contains_key("x-tmp"));
        assert!(rs.contains_key("x-keep"));
    }

    #[test]
    fn invalidation_after_unsafe_methods() {
        assert!(invalidates(&Method::POST, StatusCode::OK));
        assert!(invalidates(&Method::DELETE, StatusCode::SEE_OTHER));
        assert!(!invalidates(
            &Method::POST,
            StatusCode::INTERNAL_SERVER_ERROR
        ));
        assert!(!invalidates(&Method::GET, StatusCode::OK));
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            same_origin_target(&v("/a?b"), Some("x.test")),
            Some("/a?b".into())
        );
        assert_eq!(
            same_origin_target(&v("http://x.test/c"), Some("x.test")),
            Some("/c".into())
        );
        assert_eq!(
            same_origin_target(&v("http://other.test/c"), Some("x.test")),
            None
        );
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        assert!(request_directives(&h(&[("pragma", "no-cache")])).no_cache);
        assert!(
            !request_directives(&h(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache
        );
    }

    #[test]
    fn tags_from_cache_tag_and_surrogate_key() {
        let rs = h(&[("cache-tag", "a, b"), ("surrogate-key", "c d")]);
        assert_eq!(tags(&rs), ["a", "b", "c", "d"]);
    }
}
