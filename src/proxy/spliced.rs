//! The response rules over an answer's raw fields (`RawHead`), for the answers
//! the client side's own HTTP/1.1 path writes: the same edits as over a map
//! (`headers::remove_hop_by_hop`, `remove_proxy_auth`, the length dropped
//! next to `Transfer-Encoding`, the request ID, a split's cookie), and the
//! lines left in the order the map would iterate them after those edits, so
//! that the client gets the same bytes either way.
//!
//! A map iterates its names in the order they first came, each with all its
//! values; removing a name moves the last name into its place (`HeaderMap`
//! removes with `swap_remove`), inserting a present name keeps its place.
//! `Entries` plays exactly that over the head's lines; where no name comes
//! twice, each line is an entry and the lines are edited as the map is.

use crate::upstream::h1::response::{Field, Known, Line, Lone, MAX_HEADERS, RawHead};
use http::HeaderValue;

/// The names of a map, in its iteration order: each is the index of the line
/// where the name first came, or one of the proxy's own fields. On the stack,
/// a byte each: a head has at most `MAX_HEADERS` fields.
struct Entries<'a> {
    raw: &'a RawHead,
    /// Indices into `raw.lines`; [`REQUEST_ID`] and [`SET_COOKIE`] for ours.
    at: [u8; MAX_HEADERS + 2],
    len: usize,
}

const REQUEST_ID: u8 = u8::MAX;
const SET_COOKIE: u8 = u8::MAX - 1;
const _: () = assert!(MAX_HEADERS < SET_COOKIE as usize);

impl<'a> Entries<'a> {
    fn new(raw: &'a RawHead) -> Self {
        let mut e = Entries {
            raw,
            at: [0; MAX_HEADERS + 2],
            len: 0,
        };
        for (i, line) in raw.lines.iter().enumerate().take(MAX_HEADERS) {
            if let Line::Backend(f) = line
                && !(raw.repeats && e.all().iter().any(|&j| raw.same_name(e.field(j), f)))
            {
                e.push(i as u8);
            }
        }
        e
    }

    fn all(&self) -> &[u8] {
        &self.at[..self.len]
    }

    fn push(&mut self, i: u8) {
        if let Some(slot) = self.at.get_mut(self.len) {
            *slot = i;
            self.len += 1;
        }
    }

    /// The backend field entry `i` stands for (a nameless one for ours).
    fn field(&self, i: u8) -> &'a Field {
        const NONE: Field = Field::NONE;
        match self.raw.lines.get(usize::from(i)) {
            Some(Line::Backend(f)) if i < SET_COOKIE => f,
            _ => &NONE,
        }
    }

    /// Where the backend entry for `known` (a name other than those: `name`) is.
    fn find(&self, known: Known, name: &[u8]) -> Option<usize> {
        self.all()
            .iter()
            .position(|&i| i < SET_COOKIE && self.raw.is_named(self.field(i), name, known))
    }

    fn find_known(&self, known: Known) -> Option<usize> {
        if self.raw.names & known.bit() == 0 {
            return None;
        }
        self.find(known, b"")
    }

    /// `HeaderMap::remove`: the last entry takes the removed one's place.
    fn remove_at(&mut self, k: Option<usize>) {
        if let Some(k) = k {
            self.len -= 1;
            self.at[k] = self.at[self.len];
        }
    }

    fn remove(&mut self, known: Known) {
        self.remove_at(self.find_known(known));
    }
}

/// Applies the response rules to `raw` and puts its lines in the order they
/// are written in: `request_id` replaces any the backend sent, `set_cookie`
/// (a split's) joins the backend's cookies.
pub fn splice(raw: &mut RawHead, request_id: HeaderValue, set_cookie: Option<HeaderValue>) {
    if raw.repeats {
        splice_entries(raw, set_cookie.is_some());
    } else {
        splice_lines(raw, set_cookie.is_some());
    }
    raw.request_id = Some(request_id);
    raw.set_cookie = set_cookie;
}

/// The rules for a head where no name comes twice (the common case): each
/// line is then an entry of its own, and a map's removal is the lines'
/// `swap_remove`, so they are edited in place.
fn splice_lines(raw: &mut RawHead, cookie: bool) {
    // Taken out while the rules edit them, so that the head can be read.
    let mut lines = std::mem::take(&mut raw.lines);
    let has = |known: Known| raw.names & known.bit() != 0;
    let find = |lines: &[Line], known: Known| {
        if !has(known) {
            return None;
        }
        lines
            .iter()
            .position(|l| matches!(l, Line::Backend(f) if f.known == known))
    };
    if has(Known::TransferEncoding) {
        remove_line(find(&lines, Known::ContentLength), &mut lines);
    }
    if raw.names & HOP_BY_HOP != 0 {
        remove_hop_by_hop_lines(raw, &mut lines);
    }
    if has(Known::ProxyAuthenticate) || has(Known::ProxyAuthenticationInfo) {
        remove_line(find(&lines, Known::ProxyAuthenticate), &mut lines);
        remove_line(find(&lines, Known::ProxyAuthenticationInfo), &mut lines);
    }
    match find(&lines, Known::XRequestId) {
        Some(k) => lines[k] = Line::RequestId,
        None => lines.push(Line::RequestId),
    }
    if cookie {
        match find(&lines, Known::SetCookie) {
            Some(k) => lines.insert(k + 1, Line::SetCookie),
            None => lines.push(Line::SetCookie),
        }
    }
    raw.lines = lines;
}

fn remove_line(at: Option<usize>, lines: &mut Vec<Line>) {
    if let Some(k) = at {
        lines.swap_remove(k);
    }
}

/// `headers::remove_hop_by_hop` (without an upgrade kept) over `lines`, the
/// lines of `raw` where no name comes twice.
fn remove_hop_by_hop_lines(raw: &RawHead, lines: &mut Vec<Line>) {
    // The hop-by-hop lines in their order, each with where it is.
    let mut present = [(Known::Other, 0); 9];
    let mut n = 0;
    let mut connection = None;
    for (i, line) in lines.iter().enumerate() {
        if let Line::Backend(f) = line
            && f.known.is_hop_by_hop()
            && n < present.len()
        {
            present[n] = (f.known, i);
            n += 1;
            if f.known == Known::Connection {
                connection = Some(*f);
            }
        }
    }
    let named = |lines: &[Line], name: &[u8], known: Known| {
        lines
            .iter()
            .position(|l| matches!(l, Line::Backend(f) if raw.is_named(f, name, known)))
    };
    if let Some(f) = connection
        && names_fields(&f, raw.value(&f))
    {
        for token in raw.value(&f).split(|&b| b == b',') {
            let name = token.trim_ascii();
            remove_line(named(lines, name, Known::of(name)), lines);
        }
        // Lines moved or went: each is looked for again.
        for &(known, _) in &present[..n] {
            remove_line(named(lines, b"", known), lines);
        }
        return;
    }
    // No name comes twice: each line goes where it was found, and the last
    // line, which takes its place, is followed there.
    for i in 0..n {
        let at = present[i].1;
        if at >= lines.len() {
            break;
        }
        lines.swap_remove(at);
        let moved = lines.len();
        for later in &mut present[i + 1..n] {
            if later.1 == moved {
                later.1 = at;
            }
        }
    }
}

/// The rules over the map's entries, for a head where a name may come more
/// than once: the lines are put in the entries' order at the end.
fn splice_entries(raw: &mut RawHead, cookie: bool) {
    let mut e = Entries::new(raw);
    if e.find_known(Known::TransferEncoding).is_some() {
        e.remove(Known::ContentLength);
    }
    remove_hop_by_hop(&mut e);
    if e.find_known(Known::ProxyAuthenticate).is_some()
        || e.find_known(Known::ProxyAuthenticationInfo).is_some()
    {
        e.remove(Known::ProxyAuthenticate);
        e.remove(Known::ProxyAuthenticationInfo);
    }
    match e.find_known(Known::XRequestId) {
        Some(k) => e.at[k] = REQUEST_ID,
        None => e.push(REQUEST_ID),
    }
    let cookie_after = match cookie.then(|| e.find_known(Known::SetCookie)) {
        Some(Some(k)) => Some(e.at[k]),
        Some(None) => {
            e.push(SET_COOKIE);
            None
        }
        None => None,
    };
    // The lines in the map's order, as indices first (the names are read
    // while the lines are still in place), then the lines themselves.
    let mut order = [0u8; 2 * MAX_HEADERS + 2];
    let mut n = 0;
    let mut put = |i: u8| {
        if let Some(slot) = order.get_mut(n) {
            *slot = i;
            n += 1;
        }
    };
    for &first in e.all() {
        if first >= SET_COOKIE {
            put(first);
            continue;
        }
        let f = e.field(first);
        put(first);
        let later = raw.lines.iter().enumerate().skip(usize::from(first) + 1);
        for (j, line) in later.take_while(|_| raw.repeats) {
            if let Line::Backend(g) = line
                && raw.same_name(f, g)
            {
                put(j as u8);
            }
        }
        if cookie_after == Some(first) {
            put(SET_COOKIE);
        }
    }
    // The lines that stay where they are (often all of the backend's) are
    // left in place; the rest follow them, then the old places go.
    let lines = &mut raw.lines;
    let old = lines.len();
    let kept = order[..n]
        .iter()
        .enumerate()
        .take_while(|&(i, &j)| i == usize::from(j))
        .count();
    for &i in &order[kept..n] {
        let line = match i {
            REQUEST_ID => Line::RequestId,
            SET_COOKIE => Line::SetCookie,
            _ => lines[usize::from(i)],
        };
        lines.push(line);
    }
    lines.drain(kept..old);
}

/// The hop-by-hop names, a bit each in [`RawHead::names`].
const HOP_BY_HOP: u32 = {
    let all = [
        Known::Connection,
        Known::Te,
        Known::Trailer,
        Known::TransferEncoding,
        Known::Upgrade,
        Known::ProxyAuthorization,
        Known::KeepAlive,
        Known::ProxyConnection,
        Known::Http2Settings,
    ];
    let mut bits = 0;
    let mut i = 0;
    while i < all.len() {
        bits |= 1 << all[i] as u32;
        i += 1;
    }
    bits
};

/// Whether the value `v` of the `Connection` field `f` names fields to
/// remove, as the map's rules read it: not a lone standard token (which
/// holds no comma), and visible ASCII (a value that is not names nothing:
/// `to_str` fails).
fn names_fields(f: &Field, v: &[u8]) -> bool {
    f.lone == Lone::No && v.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// `headers::remove_hop_by_hop` (without an upgrade kept), over the entries.
fn remove_hop_by_hop(e: &mut Entries<'_>) {
    if e.raw.names & HOP_BY_HOP == 0 {
        return;
    }
    let mut present = [Known::Other; 9];
    let mut n = 0;
    for &i in e.all() {
        let known = e.field(i).known;
        if n < present.len() && known.is_hop_by_hop() {
            present[n] = known;
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    let raw = e.raw;
    // Names listed in Connection go first, in the order they are listed.
    for f in raw.fields().filter(|f| f.known == Known::Connection) {
        let v = raw.value(f);
        if !names_fields(f, v) {
            continue;
        }
        for token in v.split(|&b| b == b',') {
            let name = token.trim_ascii();
            e.remove_at(e.find(Known::of(name), name));
        }
    }
    for &known in &present[..n] {
        e.remove(known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::h1::response::{Scratch, parse};

    /// The lines of `head` through the rules both ways: over the entries, and
    /// over the lines (only where no name comes twice).
    fn both_ways(head: &str, cookie: bool) -> Option<(Vec<Line>, Vec<Line>)> {
        let raw = || {
            let mut buf = bytes::BytesMut::from(head.as_bytes());
            let head = parse(&mut buf, &mut Scratch::default(), true);
            head.unwrap().unwrap().raw.unwrap()
        };
        let (mut entries, mut lines) = (raw(), raw());
        if lines.repeats {
            return None;
        }
        splice_entries(&mut entries, cookie);
        splice_lines(&mut lines, cookie);
        Some((entries.lines.clone(), lines.lines.clone()))
    }

    #[test]
    fn lines_are_edited_as_the_entries_are() {
        const NAMES: [&str; 16] = [
            "Connection",
            "Keep-Alive",
            "Content-Length",
            "Transfer-Encoding",
            "X-Request-Id",
            "Set-Cookie",
            "Trailer",
            "TE",
            "Upgrade",
            "Proxy-Authenticate",
            "Proxy-Authentication-Info",
            "Date",
            "X-A",
            "x-bb",
            "Xyz-Ccc",
            "Server",
        ];
        const CONNECTION: [&str; 7] = [
            "close",
            "keep-alive",
            "X-A",
            "x-bb, close",
            "Upgrade, xyz-ccc",
            "te, connection, x-request-id",
            "proxy-authenticate, set-cookie",
        ];
        let mut next = crate::rand::seeded(0x9e37_79b9_7f4a_7c15_u64);
        let mut compared = 0;
        for _ in 0..3000 {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            let mut used = [false; NAMES.len()];
            for _ in 0..next(10) {
                let i = next(NAMES.len());
                if std::mem::replace(&mut used[i], true) {
                    continue;
                }
                let value = match NAMES[i] {
                    "Connection" => CONNECTION[next(CONNECTION.len())],
                    _ => "v",
                };
                head.push_str(&format!("{}: {value}\r\n", NAMES[i]));
            }
            head.push_str("\r\n");
            let cookie = next(2) == 0;
            if let Some((entries, lines)) = both_ways(&head, cookie) {
                assert_eq!(entries, lines, "{head} cookie={cookie}");
                compared += 1;
            }
        }
        // The names not known (three) are told apart by their bits.
        assert_eq!(compared, 3000);
    }
}
