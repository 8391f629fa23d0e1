//! Route lookup: exact host, then wildcard hosts (longest suffix first), then routes
//! without a host; within the first of those that has a match, the longest
//! `path_prefix` wins. File order never matters.

use crate::config::HostMatch;
use std::collections::HashMap;

/// Routes of one host (or of "any host"), longest prefix first.
#[derive(Default)]
struct PrefixTable {
    /// (prefix, route index), sorted by prefix length descending.
    entries: Vec<(String, usize)>,
}

impl PrefixTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.entries.push((prefix.to_string(), route));
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, r)| *r)
    }
}

#[derive(Default)]
pub struct Router {
    exact: HashMap<String, PrefixTable>,
    /// Wildcard suffixes ("example.com" for "*.example.com"), longest first.
    wildcard: Vec<(String, PrefixTable)>,
    any: PrefixTable,
}

impl Router {
    pub fn add(&mut self, host: Option<&HostMatch>, prefix: &str, route: usize) {
        match host {
            Some(HostMatch::Exact(h)) => self
                .exact
                .entry(h.clone())
                .or_default()
                .insert(prefix, route),
            Some(HostMatch::Wildcard(suffix)) => {
                match self.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                    Some((_, t)) => t.insert(prefix, route),
                    None => {
                        let mut t = PrefixTable::default();
                        t.insert(prefix, route);
                        self.wildcard.push((suffix.clone(), t));
                        self.wildcard.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
                    }
                }
            }
            None => self.any.insert(prefix, route),
        }
    }

    /// Whether any route names a host: without, [`Router::find`] goes by
    /// the path alone, and the host need not be normalized for it.
    pub fn has_hosts(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// `host` must already be lowercase and without port.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(r) = self.exact.get(host).and_then(|t| t.find(path)) {
            return Some(r);
        }
        for (suffix, table) in &self.wildcard {
            // "*.example.com" matches "a.example.com" and "a.b.example.com", not
            // "example.com" itself.
            if host.len() > suffix.len() + 1
                && host.ends_with(suffix.as_str())
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && let Some(r) = table.find(path)
            {
                return Some(r);
            }
        }
        self.any.find(path)
    }
}

/// Lowercases a Host header value and drops its port and a trailing dot, without
/// allocating when it is already in that form.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // Plain byte searches: a host is a few bytes long, and a `str` search for
    // a `char` cost ~160 instructions a call for one. The bytes searched for
    // are ASCII, so the places found are character boundaries.
    let bytes = raw.as_bytes();
    let without_port = if raw.starts_with('[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(i) => &raw[..i],
            None => raw,
        }
    };
    let h = without_port.strip_suffix('.').unwrap_or(without_port);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::default();
        r.add(None, "/", 0);
        r.add(None, "/api", 1);
        r.add(Some(&HostMatch::Wildcard("example.com".into())), "/", 2);
        r.add(Some(&HostMatch::Exact("app.example.com".into())), "/", 3);
        r.add(
            Some(&HostMatch::Exact("app.example.com".into())),
            "/admin",
            4,
        );
        r.add(Some(&HostMatch::Wildcard("eu.example.com".into())), "/", 5);
        r
    }

    #[test]
    fn precedence() {
        let r = router();
        assert_eq!(r.find("app.example.com", "/admin/x"), Some(4));
        assert_eq!(r.find("app.example.com", "/other"), Some(3));
        assert_eq!(r.find("www.example.com", "/"), Some(2));
        assert_eq!(r.find("a.eu.example.com", "/"), Some(5));
        assert_eq!(r.find("example.com", "/api/v1"), Some(1));
        assert_eq!(r.find("other.org", "/x"), Some(0));
    }

    #[test]
    fn a_router_without_hosts_goes_by_the_path() {
        let mut r = Router::default();
        r.add(None, "/", 0);
        r.add(None, "/api", 1);
        assert!(!r.has_hosts());
        for host in ["", "a.example", "b.example"] {
            assert_eq!(r.find(host, "/api/x"), Some(1));
            assert_eq!(r.find(host, "/x"), Some(0));
        }
        assert!(router().has_hosts());
        let mut wild = Router::default();
        wild.add(Some(&HostMatch::Wildcard("example.com".into())), "/", 0);
        assert!(wild.has_hosts());
    }

    #[test]
    fn falls_through_when_host_has_no_matching_path() {
        let mut r = Router::default();
        r.add(Some(&HostMatch::Exact("a.com".into())), "/only", 0);
        r.add(None, "/", 1);
        assert_eq!(r.find("a.com", "/elsewhere"), Some(1));
        assert_eq!(r.find("a.com", "/only/x"), Some(0));
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("App.Example.com:8080"), "app.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("a:b:80"), "a:b");
        assert_eq!(normalize_host("Caf\u{e9}.example:80"), "caf\u{e9}.example");
        assert_eq!(normalize_host(""), "");
        assert_eq!(normalize_host(":80"), "");
    }
}
