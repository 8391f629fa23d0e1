//! What one container declares, read from its environment and labels in the
//! three conventions: nginx-proxy variables, Traefik labels, Fulcrum labels.
//! Fulcrum labels win over Traefik labels, which win over nginx-proxy variables.
//! A value that cannot be used is skipped with a warning naming the label.

use super::container::Container;
use super::rule;
use crate::config::units::parse_duration;
use crate::config::{DockerConfig, HealthCheckOverride, HostMatch, Scheme};
use std::collections::BTreeMap;

/// Where a route's requests go: one pool per service.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Service {
    pub(crate) pool: String,
    pub(crate) port: u16,
    pub(crate) scheme: Scheme,
    pub(crate) health_check: Option<HealthCheckOverride>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteDecl {
    pub(crate) host: Option<HostMatch>,
    pub(crate) path: String,
    pub(crate) strip_prefix: bool,
    /// Index into `Declared::services`.
    pub(crate) service: usize,
}

/// What a container asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Declared {
    pub(crate) routes: Vec<RouteDecl>,
    pub(crate) services: Vec<Service>,
    /// The network named by `fulcrum.network` / `traefik.docker.network`.
    pub(crate) network: Option<String>,
    pub(crate) weight: u32,
    pub(crate) level: u32,
    pub(crate) region: Option<String>,
    /// Hosts to order certificates for (`ACME_HOST`, `fulcrum.tls=acme`, a
    /// Traefik `certresolver`).
    pub(crate) acme_hosts: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// A container is either skipped (with the reason) or declares routes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reading {
    Skip(String),
    Routes(Declared),
}

/// Reads a container's declarations.
pub(crate) fn read(c: &Container, cfg: &DockerConfig) -> Reading {
    let fulcrum = prefixed(c, "fulcrum.", cfg.read.fulcrum);
    let traefik = prefixed(c, "traefik.", cfg.read.traefik);
    let flag = |m: &BTreeMap<String, (String, String)>, k: &str| {
        m.get(k).map(|(_, v)| v.trim().eq_ignore_ascii_case("true"))
    };
    let enabled = flag(&fulcrum, "enable").or_else(|| flag(&traefik, "enable"));
    match enabled {
        Some(false) => return Reading::Skip("disabled by its enable label".into()),
        None if !cfg.exposed_by_default => {
            return Reading::Skip("not enabled (exposed_by_default is false)".into());
        }
        _ => {}
    }
    let mut d = Declared {
        weight: 1,
        ..Declared::default()
    };
    // Router labels: Traefik's, with Fulcrum's same keys on top.
    let mut routers = traefik.clone();
    routers.extend(fulcrum.clone());
    read_routers(c, &routers, &mut d);
    read_flat(c, &fulcrum, &mut d);
    if d.routes.is_empty() && cfg.read.nginx_proxy {
        read_nginx_proxy(c, &fulcrum, &mut d);
    }
    if cfg.read.nginx_proxy {
        for k in ["ACME_HOST", "LETSENCRYPT_HOST"] {
            if let Some(hosts) = c.env.get(k) {
                d.acme_hosts.extend(
                    split_list(hosts)
                        .into_iter()
                        .filter(|h| !h.starts_with("*.")),
                );
            }
        }
        for k in ["ACME_EMAIL", "LETSENCRYPT_EMAIL"] {
            if c.env.contains_key(k) {
                d.warnings.push(format!(
                    "{k}: ignored: certificates are ordered with the listener's ACME account (acme.email)"
                ));
            }
        }
    }
    match fulcrum.get("tls") {
        Some((_, v)) if v.trim().eq_ignore_ascii_case("acme") => {
            let hosts: Vec<String> = d.routes.iter().filter_map(exact_host).collect();
            d.acme_hosts.extend(hosts);
        }
        Some((l, v)) => d
            .warnings
            .push(format!("{l}: `{v}` is not supported (acme); ignored")),
        None => {}
    }
    d.acme_hosts.sort();
    d.acme_hosts.dedup();
    modifiers(&fulcrum, &traefik, &mut d);
    if d.routes.is_empty() {
        let mut why = "no route declared".to_string();
        if !d.warnings.is_empty() {
            why = format!("{why} ({})", d.warnings.join("; "));
        }
        return Reading::Skip(why);
    }
    Reading::Routes(d)
}

/// Labels under `prefix`, keys lowercased (Traefik's are case-insensitive):
/// lowercased rest → (label as written, value).
fn prefixed(c: &Container, prefix: &str, on: bool) -> BTreeMap<String, (String, String)> {
    if !on {
        return BTreeMap::new();
    }
    c.labels
        .iter()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let rest = lower.strip_prefix(prefix)?.to_string();
            Some((rest, (k.clone(), v.clone())))
        })
        .collect()
}

/// `http.routers.<r>.rule` / `.service` and `http.services.<s>.loadbalancer.*`.
fn read_routers(c: &Container, m: &BTreeMap<String, (String, String)>, d: &mut Declared) {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut service_names: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix("http.services.")?.split_once('.'))
        .map(|(s, _)| s.to_string())
        .collect();
    service_names.dedup();
    for s in &service_names {
        let svc = read_service(c, m, s, service_names.len() > 1, d);
        services.insert(s.clone(), svc);
    }
    for (k, (label, _)) in m {
        let known = k.starts_with("http.routers.")
            || k.starts_with("http.services.")
            || k == "enable"
            || k == "docker.network";
        if !known && k.contains('.') {
            d.warnings.push(format!("{label}: not supported; ignored"));
        }
    }
    let mut router_names: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix("http.routers.")?.split_once('.'))
        .map(|(r, _)| r.to_string())
        .collect();
    router_names.dedup();
    for r in router_names {
        let key = format!("http.routers.{r}.rule");
        let Some((label, rule_text)) = m.get(&key) else {
            continue;
        };
        let matches = match rule::parse(rule_text) {
            Ok(v) => v,
            Err(e) => {
                d.warnings.push(format!("{label}: {e}; router skipped"));
                continue;
            }
        };
        let service = match m.get(&format!("http.routers.{r}.service")) {
            Some((l, s)) => match services.get(&s.to_ascii_lowercase()) {
                Some(_) => s.to_ascii_lowercase(),
                None => {
                    d.warnings.push(format!(
                        "{l}: service `{s}` is not defined on this container; router skipped"
                    ));
                    continue;
                }
            },
            None if services.len() == 1 => services.keys().next().cloned().unwrap_or_default(),
            None if services.is_empty() => {
                let svc = read_service(c, m, "", false, d);
                services.insert(String::new(), svc);
                String::new()
            }
            None => {
                d.warnings.push(format!(
                    "{label}: the container defines several services; name one with `.service`; router skipped"
                ));
                continue;
            }
        };
        let index = service_index(d, &services[&service]);
        let acme = m.contains_key(&format!("http.routers.{r}.tls.certresolver"));
        for mt in matches {
            let host = mt.host.map(|h| host_match(&h));
            if acme && let Some(HostMatch::Exact(h)) = &host {
                d.acme_hosts.push(h.clone());
            }
            push_route(d, host, mt.path, false, index);
        }
        router_warnings(m, &r, d);
    }
}

/// Router keys that are not read (middlewares, entry points...) are named.
fn router_warnings(m: &BTreeMap<String, (String, String)>, r: &str, d: &mut Declared) {
    let prefix = format!("http.routers.{r}.");
    let read = ["rule", "service", "tls", "tls.certresolver"];
    for (k, (label, _)) in m.range(prefix.clone()..) {
        let Some(rest) = k.strip_prefix(&prefix) else {
            break;
        };
        if !read.contains(&rest) {
            d.warnings.push(format!("{label}: not supported; ignored"));
        }
    }
}

fn exact_host(r: &RouteDecl) -> Option<String> {
    match &r.host {
        Some(HostMatch::Exact(h)) => Some(h.clone()),
        _ => None,
    }
}

/// One `http.services.<s>` (or, with `s` empty, the implicit one).
fn read_service(
    c: &Container,
    m: &BTreeMap<String, (String, String)>,
    s: &str,
    several: bool,
    d: &mut Declared,
) -> Service {
    let lb = format!("http.services.{s}.loadbalancer.");
    let get = |k: &str| m.get(&format!("{lb}{k}"));
    let port = match get("server.port") {
        Some((l, v)) => parse_port(v).unwrap_or_else(|| {
            d.warnings.push(format!(
                "{l}: `{v}` is not a port; the lowest exposed port is used"
            ));
            lowest_port(c)
        }),
        None => lowest_port(c),
    };
    let scheme = match get("server.scheme") {
        Some((l, v)) => scheme(v).unwrap_or_else(|| {
            d.warnings
                .push(format!("{l}: unknown scheme `{v}`; http is used"));
            Scheme::Http
        }),
        None => Scheme::Http,
    };
    let mut hc = HealthCheckOverride::default();
    if let Some((_, p)) = get("healthcheck.path") {
        hc.path = Some(p.clone());
    }
    for (k, slot) in [("interval", &mut hc.interval), ("timeout", &mut hc.timeout)] {
        if let Some((l, v)) = get(&format!("healthcheck.{k}")) {
            match parse_duration(v) {
                Ok(t) => *slot = Some(t),
                Err(e) => d.warnings.push(format!("{l}: {e}; ignored")),
            }
        }
    }
    for k in m.keys().filter(|k| k.starts_with(&lb)) {
        let rest = &k[lb.len()..];
        let known = [
            "server.port",
            "server.scheme",
            "healthcheck.path",
            "healthcheck.interval",
            "healthcheck.timeout",
        ];
        if !known.contains(&rest) {
            d.warnings
                .push(format!("{}: not supported; ignored", m[k].0));
        }
    }
    let mut pool = group_name(c);
    if several {
        pool = format!("{pool}-{s}");
    }
    Service {
        pool,
        port,
        scheme,
        health_check: (hc != HealthCheckOverride::default()).then_some(hc),
    }
}

/// The pool name of a container's services: its compose project and service
/// (so replicas share it), else its name.
fn group_name(c: &Container) -> String {
    let project = c.labels.get("com.docker.compose.project");
    let service = c.labels.get("com.docker.compose.service");
    match (project, service) {
        (Some(p), Some(s)) => format!("docker-{p}-{s}"),
        _ => format!("docker-{}", c.name),
    }
}

/// `fulcrum.host`, `fulcrum.path`, `fulcrum.port`... : one route per container.
fn read_flat(c: &Container, m: &BTreeMap<String, (String, String)>, d: &mut Declared) {
    let Some((_, hosts)) = m.get("host") else {
        return;
    };
    let path = flat_path(m, d);
    let strip = m
        .get("strip_prefix")
        .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("true"));
    let port = flat_port(m, d).unwrap_or_else(|| lowest_port(c));
    let scheme = flat_scheme(m, d).unwrap_or(Scheme::Http);
    for h in split_list(hosts) {
        let pool = match m.get("pool") {
            Some((_, p)) if !p.trim().is_empty() => p.trim().to_string(),
            _ => pool_for_route(&h, &path),
        };
        let index = service_index(
            d,
            &Service {
                pool,
                port,
                scheme,
                health_check: None,
            },
        );
        push_route(d, Some(host_match(&h)), path.clone(), strip, index);
    }
}

/// `VIRTUAL_HOST`, `VIRTUAL_PORT`, `VIRTUAL_PATH`, `VIRTUAL_DEST`, `VIRTUAL_PROTO`.
fn read_nginx_proxy(c: &Container, fulcrum: &BTreeMap<String, (String, String)>, d: &mut Declared) {
    let Some(hosts) = c.env.get("VIRTUAL_HOST") else {
        return;
    };
    let path = c
        .env
        .get("VIRTUAL_PATH")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    if !path.starts_with('/') || path.starts_with("~") {
        d.warnings.push(format!(
            "VIRTUAL_PATH `{path}`: only plain paths starting with `/` are supported; container skipped"
        ));
        return;
    }
    let strip = match c.env.get("VIRTUAL_DEST").map(|s| s.trim()) {
        None | Some("") => false,
        Some("/") => true,
        Some(dest) if dest.trim_end_matches('/') == path.trim_end_matches('/') => false,
        Some(dest) => {
            d.warnings.push(format!(
                "VIRTUAL_DEST `{dest}`: only `/` (strip VIRTUAL_PATH) is supported; container skipped"
            ));
            return;
        }
    };
    let mut port = match c.env.get("VIRTUAL_PORT") {
        Some(p) => parse_port(p).unwrap_or_else(|| {
            d.warnings
                .push(format!("VIRTUAL_PORT `{p}` is not a port; 80 is used"));
            80
        }),
        None if c.exposed.len() == 1 => c.exposed[0],
        None => 80,
    };
    let mut scheme = match c
        .env
        .get("VIRTUAL_PROTO")
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => Scheme::Http,
        Some(p) => match p.as_str() {
            "" | "http" => Scheme::Http,
            "https" => Scheme::Https,
            "grpc" => Scheme::H2c,
            other => {
                d.warnings.push(format!(
                    "VIRTUAL_PROTO `{other}` is not supported (http, https, grpc); container skipped"
                ));
                return;
            }
        },
    };
    // Fulcrum's labels win over the variables.
    if let Some(p) = flat_port(fulcrum, d) {
        port = p;
    }
    if let Some(s) = flat_scheme(fulcrum, d) {
        scheme = s;
    }
    for h in split_list(hosts) {
        let index = service_index(
            d,
            &Service {
                pool: pool_for_route(&h, &path),
                port,
                scheme,
                health_check: None,
            },
        );
        push_route(d, Some(host_match(&h)), path.clone(), strip, index);
    }
}

/// `weight`, `level`, `region`, `network` (Fulcrum), `docker.network` (Traefik).
fn modifiers(
    fulcrum: &BTreeMap<String, (String, String)>,
    traefik: &BTreeMap<String, (String, String)>,
    d: &mut Declared,
) {
    let mut int = |k: &str, max: u32| -> Option<u32> {
        let (l, v) = fulcrum.get(k)?;
        match v.trim().parse::<u32>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                d.warnings.push(format!(
                    "{l}: `{v}` must be a number from 0 to {max}; ignored"
                ));
                None
            }
        }
    };
    if let Some(w) = int("weight", 1_000_000) {
        d.weight = w.max(1);
    }
    if let Some(l) = int("level", 100) {
        d.level = l;
    }
    d.region = fulcrum.get("region").map(|(_, v)| v.trim().to_string());
    d.network = fulcrum
        .get("network")
        .or_else(|| traefik.get("docker.network"))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let known = [
        "enable",
        "tls",
        "host",
        "path",
        "port",
        "scheme",
        "strip_prefix",
        "pool",
        "weight",
        "level",
        "region",
        "network",
    ];
    for (k, (label, _)) in fulcrum {
        if !known.contains(&k.as_str()) && !k.contains('.') {
            d.warnings.push(format!("{label}: unknown label; ignored"));
        }
    }
}

fn flat_path(m: &BTreeMap<String, (String, String)>, d: &mut Declared) -> String {
    match m.get("path") {
        Some((l, p)) if !p.trim().starts_with('/') => {
            d.warnings
                .push(format!("{l}: `{p}` must start with `/`; `/` is used"));
            "/".into()
        }
        Some((_, p)) => p.trim().to_string(),
        None => "/".into(),
    }
}

fn flat_port(m: &BTreeMap<String, (String, String)>, d: &mut Declared) -> Option<u16> {
    let (l, v) = m.get("port")?;
    let p = parse_port(v);
    if p.is_none() {
        d.warnings
            .push(format!("{l}: `{v}` is not a port; ignored"));
    }
    p
}

fn flat_scheme(m: &BTreeMap<String, (String, String)>, d: &mut Declared) -> Option<Scheme> {
    let (l, v) = m.get("scheme")?;
    let s = scheme(v);
    if s.is_none() {
        d.warnings.push(format!(
            "{l}: unknown scheme `{v}` (http, https, h2c); ignored"
        ));
    }
    s
}

fn scheme(v: &str) -> Option<Scheme> {
    match v.trim().to_ascii_lowercase().as_str() {
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        "h2c" => Some(Scheme::H2c),
        _ => None,
    }
}

fn parse_port(v: &str) -> Option<u16> {
    v.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

fn lowest_port(c: &Container) -> u16 {
    c.exposed.first().copied().unwrap_or(80)
}

/// A comma list, trimmed, empty entries dropped.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

fn host_match(h: &str) -> HostMatch {
    match h.strip_prefix("*.") {
        Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
        None => HostMatch::Exact(h.to_string()),
    }
}

/// The pool shared by every container that declares this host and path.
pub(crate) fn pool_for_route(host: &str, path: &str) -> String {
    let path = path.trim_matches('/').replace('/', "-");
    if path.is_empty() {
        format!("docker-{host}")
    } else {
        format!("docker-{host}-{path}")
    }
}

fn service_index(d: &mut Declared, s: &Service) -> usize {
    match d.services.iter().position(|x| x == s) {
        Some(i) => i,
        None => {
            d.services.push(s.clone());
            d.services.len() - 1
        }
    }
}

fn push_route(
    d: &mut Declared,
    host: Option<HostMatch>,
    path: String,
    strip: bool,
    service: usize,
) {
    let r = RouteDecl {
        host,
        path,
        strip_prefix: strip,
        service,
    };
    if !d
        .routes
        .iter()
        .any(|x| x.host == r.host && x.path == r.path)
    {
        d.routes.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::sample;
    use super::*;

    fn routes(r: &Reading) -> Vec<(String, String, u16)> {
        let Reading::Routes(d) = r else {
            panic!("skipped: {r:?}")
        };
        d.routes
            .iter()
            .map(|x| {
                let h = match &x.host {
                    Some(HostMatch::Exact(h)) => h.clone(),
                    Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
                    None => "*".into(),
                };
                let s = &d.services[x.service];
                (format!("{h}{}", x.path), s.pool.clone(), s.port)
            })
            .collect()
    }

    #[test]
    fn nginx_proxy_variables() {
        let cfg = DockerConfig::default();
        let c = sample(
            "web-1",
            &[
                "VIRTUAL_HOST= a.local, ,*.b.local",
                "VIRTUAL_PATH=/api",
                "VIRTUAL_DEST=/",
            ],
            &[],
        );
        let r = read(&c, &cfg);
        assert_eq!(
            routes(&r),
            [
                ("a.local/api".into(), "docker-a.local-api".into(), 8080),
                ("*.b.local/api".into(), "docker-*.b.local-api".into(), 8080)
            ]
        );
        let Reading::Routes(d) = r else { panic!() };
        assert!(d.routes[0].strip_prefix);
        let c = sample("web-1", &["VIRTUAL_HOST=a.local", "VIRTUAL_PORT=3000"], &[]);
        assert_eq!(routes(&read(&c, &cfg))[0].2, 3000);
        let c = sample("web-1", &["VIRTUAL_HOST=a.local", "VIRTUAL_DEST=/v2"], &[]);
        assert!(matches!(read(&c, &cfg), Reading::Skip(w) if w.contains("VIRTUAL_DEST")));
    }

    #[test]
    fn traefik_labels_and_compose_pools() {
        let cfg = DockerConfig::default();
        let c = sample(
            "proj-api-2",
            &["VIRTUAL_HOST=ignored.local"],
            &[
                (
                    "traefik.http.routers.api.rule",
                    "Host(`api.local`) && PathPrefix(`/v1`)",
                ),
                ("traefik.http.services.api.loadbalancer.server.port", "9000"),
                (
                    "traefik.http.services.api.loadbalancer.sticky.cookie",
                    "true",
                ),
                ("com.docker.compose.project", "proj"),
                ("com.docker.compose.service", "api"),
                ("Traefik.Docker.Network", "front"),
                ("traefik.http.middlewares.m.stripprefix.prefixes", "/v1"),
            ],
        );
        let r = read(&c, &cfg);
        assert_eq!(
            routes(&r),
            [("api.local/v1".into(), "docker-proj-api".into(), 9000)]
        );
        let Reading::Routes(d) = r else { panic!() };
        assert_eq!(d.network.as_deref(), Some("front"));
        assert!(
            d.warnings[0].contains("sticky.cookie: not supported"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn fulcrum_labels_win_and_modify() {
        let cfg = DockerConfig::default();
        let c = sample(
            "b",
            &["VIRTUAL_HOST=a.local"],
            &[
                ("traefik.http.routers.r.rule", "Host(`t.local`)"),
                ("fulcrum.http.routers.r.rule", "Host(`f.local`)"),
                ("fulcrum.level", "1"),
                ("fulcrum.weight", "5"),
                ("fulcrum.colour", "blue"),
            ],
        );
        let r = read(&c, &cfg);
        assert_eq!(routes(&r), [("f.local/".into(), "docker-b".into(), 8080)]);
        let Reading::Routes(d) = r else { panic!() };
        assert_eq!((d.level, d.weight), (1, 5));
        assert!(d.warnings[0].contains("fulcrum.colour"));
        let c = sample(
            "c",
            &[],
            &[
                ("fulcrum.host", "x.local"),
                ("fulcrum.port", "81"),
                ("fulcrum.pool", "shared"),
            ],
        );
        assert_eq!(
            routes(&read(&c, &cfg)),
            [("x.local/".into(), "shared".into(), 81)]
        );
    }

    #[test]
    fn skipped_containers_say_why() {
        let cfg = DockerConfig {
            exposed_by_default: false,
            ..DockerConfig::default()
        };
        let c = sample("a", &["VIRTUAL_HOST=a.local"], &[]);
        assert!(matches!(read(&c, &cfg), Reading::Skip(w) if w.contains("exposed_by_default")));
        let c = sample(
            "a",
            &["VIRTUAL_HOST=a.local"],
            &[("fulcrum.enable", "true")],
        );
        assert!(matches!(read(&c, &cfg), Reading::Routes(_)));
        let c = sample("a", &[], &[("traefik.enable", "false")]);
        assert!(
            matches!(read(&c, &DockerConfig::default()), Reading::Skip(w) if w.contains("disabled"))
        );
        let c = sample("a", &[], &[]);
        assert_eq!(
            read(&c, &DockerConfig::default()),
            Reading::Skip("no route declared".into())
        );
        let c = sample(
            "a",
            &[],
            &[("traefik.http.routers.r.rule", "Method(`GET`)")],
        );
        assert!(
            matches!(read(&c, &DockerConfig::default()), Reading::Skip(w) if w.contains("Method"))
        );
    }
}
