//! The JSON line, compiled once per configuration: the keys, separators and
//! quotes between consecutive fields are merged into one constant text each,
//! so a line is a short run of (text, value) steps with no dispatch on the
//! field's kind.

use super::{KEYS, json_ms, json_str, json_str_body, push_ip, push_time, push_u64};
use crate::config::AccessField;
use http::HeaderValue;
use std::net::IpAddr;
use std::time::Duration;

/// The values a line can hold, read once from the request.
pub(super) struct LineValues<'a> {
    pub now_ms: u64,
    pub request_id: &'a HeaderValue,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// `None` when the request's details were not kept (`null` in the line).
    pub protocol: Option<&'static str>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub route: &'a str,
    pub pool: &'a str,
    pub backend: &'a str,
    pub upstream_us: Option<u64>,
    pub attempts: u32,
    pub user_agent: Option<&'a HeaderValue>,
    pub referer: Option<&'a HeaderValue>,
    pub tls_version: Option<&'static str>,
    pub sni: Option<&'a str>,
    pub variant: Option<usize>,
    pub aborted: bool,
}

type Writer = fn(&mut String, &LineValues);
type Presence = fn(&LineValues) -> bool;

struct Step {
    /// Always written: the end of the previous value, the separator, the key.
    text: Box<str>,
    /// For the fields left out when empty: whether this line has a value.
    present: Option<Presence>,
    /// A comma only if a field came before (the first fields may be left out).
    comma_if_any: bool,
    /// Written only when the field is: its key, when it could not be merged.
    key: Box<str>,
    write: Writer,
}

pub(super) struct JsonPlan {
    steps: Box<[Step]>,
    end: Box<str>,
}

impl JsonPlan {
    pub fn compile(fields: &[AccessField]) -> JsonPlan {
        let mut steps = Vec::with_capacity(fields.len());
        let mut pending = String::from("{");
        // A field that is always there came before: every later one has a comma.
        let mut after_always = false;
        for &f in fields {
            let key = KEYS[f as usize];
            let text = std::mem::take(&mut pending).into_boxed_str();
            if let Some(present) = presence(f) {
                let comma = if after_always { "," } else { "" };
                steps.push(Step {
                    text,
                    present: Some(present),
                    comma_if_any: !after_always,
                    key: format!("{comma}{key}").into(),
                    write: optional_writer(f),
                });
                continue;
            }
            let (write, quoted) = always_writer(f);
            let open = if quoted { "\"" } else { "" };
            // Known whether a comma is needed: the key joins the constant text.
            let merged = after_always || steps.is_empty();
            let step = if merged {
                let comma = if after_always { "," } else { "" };
                Step {
                    text: format!("{text}{comma}{key}{open}").into(),
                    present: None,
                    comma_if_any: false,
                    key: "".into(),
                    write,
                }
            } else {
                Step {
                    text,
                    present: None,
                    comma_if_any: true,
                    key: format!("{key}{open}").into(),
                    write,
                }
            };
            steps.push(step);
            after_always = true;
            if quoted {
                pending.push('"');
            }
        }
        pending.push_str("}\n");
        JsonPlan {
            steps: steps.into(),
            end: pending.into(),
        }
    }

    /// Appends one line to `s`.
    pub fn write(&self, s: &mut String, v: &LineValues) {
        s.reserve(256 + 16 * self.steps.len());
        let mut any = false;
        for step in self.steps.iter() {
            if !step.text.is_empty() {
                s.push_str(&step.text);
            }
            if let Some(present) = step.present
                && !present(v)
            {
                continue;
            }
            if step.comma_if_any && any {
                s.push(',');
            }
            any = true;
            if !step.key.is_empty() {
                s.push_str(&step.key);
            }
            (step.write)(s, v);
        }
        s.push_str(&self.end);
    }
}

/// For the fields left out of the line when the request has no value for
/// them, the check; `None` for the fields always there (`null` when empty).
fn presence(f: AccessField) -> Option<Presence> {
    Some(match f {
        AccessField::UserAgent => |v| v.user_agent.is_some(),
        AccessField::Referer => |v| v.referer.is_some(),
        AccessField::TlsVersion => |v| v.tls_version.is_some(),
        AccessField::Sni => |v| v.sni.is_some(),
        AccessField::Variant => |v| v.variant.is_some(),
        AccessField::Aborted => |v| v.aborted,
        _ => return None,
    })
}

/// The writer of a field always there, and whether its value is always a
/// string (its quotes are then part of the constant text around it).
fn always_writer(f: AccessField) -> (Writer, bool) {
    let quoted: Writer = match f {
        AccessField::Time => |s, v| push_time(s, v.now_ms),
        AccessField::RequestId => |s, v| json_str_body(s, v.request_id.to_str().unwrap_or("")),
        AccessField::Client => |s, v| push_ip(s, v.client_ip),
        // A method is a token: nothing in it needs escaping.
        AccessField::Method => |s, v| s.push_str(v.method),
        AccessField::Host => |s, v| json_str_body(s, v.host),
        AccessField::Path => |s, v| json_str_body(s, v.path),
        AccessField::Route => |s, v| json_str_body(s, v.route),
        AccessField::Pool => |s, v| json_str_body(s, v.pool),
        AccessField::Backend => |s, v| json_str_body(s, v.backend),
        _ => return (plain_writer(f), false),
    };
    (quoted, true)
}

/// The writer of a field always there whose value is a number or may be `null`.
fn plain_writer(f: AccessField) -> Writer {
    match f {
        AccessField::Protocol => |s, v| match v.protocol {
            Some(p) => {
                s.push('"');
                s.push_str(p);
                s.push('"');
            }
            None => s.push_str("null"),
        },
        AccessField::Status => |s, v| push_u64(s, u64::from(v.status)),
        AccessField::BytesIn => |s, v| push_u64(s, v.bytes_in),
        AccessField::BytesOut => |s, v| push_u64(s, v.bytes_out),
        AccessField::DurationMs => |s, v| {
            let us = (v.duration.as_nanos() + 500) / 1000;
            json_ms(s, us as u64);
        },
        AccessField::UpstreamMs => |s, v| match v.upstream_us {
            Some(us) => json_ms(s, us),
            None => s.push_str("null"),
        },
        AccessField::Attempts => |s, v| push_u64(s, u64::from(v.attempts)),
        _ => optional_writer(f),
    }
}

/// The writer of a field left out when empty (called only when present).
fn optional_writer(f: AccessField) -> Writer {
    match f {
        AccessField::UserAgent => |s, v| header(s, v.user_agent),
        AccessField::Referer => |s, v| header(s, v.referer),
        AccessField::TlsVersion => |s, v| json_str(s, v.tls_version.unwrap_or("")),
        AccessField::Sni => |s, v| json_str(s, v.sni.unwrap_or("")),
        AccessField::Variant => |s, v| push_u64(s, v.variant.unwrap_or(0) as u64),
        AccessField::Aborted => |s, _| s.push_str("true"),
        // Every other field is always there and has its writer above.
        _ => |s, _| s.push_str("null"),
    }
}

fn header(s: &mut String, h: Option<&HeaderValue>) {
    if let Some(h) = h {
        json_str(s, &String::from_utf8_lossy(h.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as the generic writer built it before the plan: per field,
    /// whether it is there, a comma, its key, its value.
    fn reference_line(s: &mut String, v: &LineValues, fields: &[AccessField]) {
        s.push('{');
        let mut first = true;
        for &f in fields {
            if !reference_has_value(v, f) {
                continue;
            }
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(KEYS[f as usize]);
            reference_value(s, v, f);
        }
        s.push_str("}\n");
    }

    fn reference_has_value(v: &LineValues, f: AccessField) -> bool {
        match f {
            AccessField::UserAgent => v.user_agent.is_some(),
            AccessField::Referer => v.referer.is_some(),
            AccessField::TlsVersion => v.tls_version.is_some(),
            AccessField::Sni => v.sni.is_some(),
            AccessField::Variant => v.variant.is_some(),
            AccessField::Aborted => v.aborted,
            _ => true,
        }
    }

    fn reference_value(s: &mut String, v: &LineValues, f: AccessField) {
        let header = |s: &mut String, h: Option<&HeaderValue>| {
            if let Some(h) = h {
                json_str(s, &String::from_utf8_lossy(h.as_bytes()));
            }
        };
        match f {
            AccessField::Time => {
                s.push('"');
                push_time(s, v.now_ms);
                s.push('"');
            }
            AccessField::RequestId => json_str(s, v.request_id.to_str().unwrap_or("")),
            AccessField::Client => {
                s.push('"');
                push_ip(s, v.client_ip);
                s.push('"');
            }
            AccessField::Method => json_str(s, v.method),
            AccessField::Host => json_str(s, v.host),
            AccessField::Path => json_str(s, v.path),
            AccessField::Protocol => match v.protocol {
                Some(p) => json_str(s, p),
                None => s.push_str("null"),
            },
            AccessField::Status => push_u64(s, u64::from(v.status)),
            AccessField::BytesIn => push_u64(s, v.bytes_in),
            AccessField::BytesOut => push_u64(s, v.bytes_out),
            AccessField::DurationMs => {
                let us = (v.duration.as_nanos() + 500) / 1000;
                json_ms(s, us as u64);
            }
            AccessField::Route => json_str(s, v.route),
            AccessField::Pool => json_str(s, v.pool),
            AccessField::Backend => json_str(s, v.backend),
            AccessField::UpstreamMs => match v.upstream_us {
                Some(us) => json_ms(s, us),
                None => s.push_str("null"),
            },
            AccessField::Attempts => push_u64(s, u64::from(v.attempts)),
            AccessField::UserAgent => header(s, v.user_agent),
            AccessField::Referer => header(s, v.referer),
            AccessField::TlsVersion => json_str(s, v.tls_version.unwrap_or("")),
            AccessField::Sni => json_str(s, v.sni.unwrap_or("")),
            AccessField::Variant => push_u64(s, v.variant.unwrap_or(0) as u64),
            AccessField::Aborted => s.push_str("true"),
        }
    }

    /// Values with every optional field there, or none; strings that need
    /// escaping or not.
    fn values<'a>(
        full: bool,
        id: &'a HeaderValue,
        ua: &'a HeaderValue,
        odd: &'a str,
    ) -> LineValues<'a> {
        LineValues {
            now_ms: 1_796_046_012_345,
            request_id: id,
            client_ip: if full {
                "2001:db8::1".parse().unwrap()
            } else {
                "10.0.0.7".parse().unwrap()
            },
            method: "GET",
            host: if full { odd } else { "example.com" },
            path: if full { "/a\"b" } else { "" },
            protocol: full.then_some("HTTP/1.1"),
            status: 502,
            bytes_in: 12,
            bytes_out: 3456,
            duration: Duration::from_micros(12_345),
            route: "api",
            pool: if full { odd } else { "" },
            backend: "127.0.0.1:8080",
            upstream_us: full.then_some(1230),
            attempts: 2,
            user_agent: full.then_some(ua),
            referer: full.then_some(ua),
            tls_version: full.then_some("TLSv1.3"),
            sni: full.then_some(odd),
            variant: full.then_some(1),
            aborted: full,
        }
    }

    #[test]
    fn the_plan_writes_the_line_the_generic_writer_wrote() {
        let all: Vec<AccessField> = AccessField::ALL.iter().map(|&(_, f)| f).collect();
        let mut lists: Vec<Vec<AccessField>> = vec![vec![], all.clone()];
        lists.push(all.iter().rev().copied().collect());
        // Every field alone, and every pair in both orders (optional fields
        // first, last, next to each other, twice).
        for &a in &all {
            lists.push(vec![a]);
            for &b in &all {
                lists.push(vec![a, b]);
                lists.push(vec![a, b, a]);
            }
        }
        // Rotations of the default list: the first field an optional one.
        for r in 0..all.len() {
            let mut l = all.clone();
            l.rotate_left(r);
            lists.push(l);
        }
        let id = HeaderValue::from_static("7f3a-01");
        let bad_id = HeaderValue::from_bytes(b"id\xff").unwrap();
        let ua = HeaderValue::from_bytes(b"curl/8 \"x\" \xe9").unwrap();
        for fields in &lists {
            let plan = JsonPlan::compile(fields);
            for full in [false, true] {
                for (id, odd) in [(&id, "plain"), (&bad_id, "tab\there \\ \u{1}")] {
                    let v = values(full, id, &ua, odd);
                    let (mut planned, mut reference) = (String::new(), String::new());
                    plan.write(&mut planned, &v);
                    reference_line(&mut reference, &v, fields);
                    assert_eq!(planned, reference, "{fields:?} full={full}");
                    if full {
                        let line = planned.trim_end();
                        serde_json::from_str::<serde_json::Value>(line).unwrap();
                    }
                }
            }
        }
    }
}
