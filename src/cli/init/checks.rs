//! One check per kind of answer, shared by the dialogue (as it is typed) and the
//! non-interactive mode. Each check puts the answer into a tiny config document
//! and loads it with the config loader itself, so an answer is refused with
//! exactly the message `fulcrum validate` would give for it in a file.

use crate::config::{self, BackendAddress, parse_listen_address, units};
use std::path::Path;
use std::time::Duration;

/// A YAML double-quoted scalar (JSON string syntax is valid YAML) holding `text`
/// literally: `${` is escaped so that it is not taken for a variable.
pub(crate) fn quoted(text: &str) -> String {
    serde_json::to_string(&text.replace("${", "$${")).unwrap_or_else(|_| "\"\"".into())
}

/// Loads a config snippet; the first error's message, without its position.
fn first_error(yaml: &str, base_dir: &Path) -> Result<(), String> {
    config::load_str_with_env(yaml, "answer", base_dir, &|_| None)
        .map(|_| ())
        .map_err(|e| {
            e.errors
                .into_iter()
                .next()
                .map(|e| e.message)
                .unwrap_or_default()
        })
}

/// An integer answer as the YAML would carry it: a number, or the decoder's own
/// message for text where a number belongs.
fn int_scalar(text: &str, what: &str) -> Result<String, String> {
    let t = text.trim();
    match t.parse::<i64>() {
        Ok(v) => Ok(v.to_string()),
        Err(_) => Err(format!("{what} must be an integer, found `{t}`")),
    }
}

fn pool_with(key_and_value: &str) -> String {
    format!("pools:\n  - name: app\n    {key_and_value}\n")
}

pub(crate) fn host(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let yaml = format!(
        "{}routes:\n  - host: {}\n    pool: app\n",
        pool_with("backends: []"),
        quoted(&t)
    );
    first_error(&yaml, Path::new(".")).map(|()| t)
}

pub(crate) fn backend_address(text: &str) -> Result<String, String> {
    let t = text.trim();
    BackendAddress::parse(t).map(|_| t.to_string())
}

pub(crate) fn weight(text: &str) -> Result<u32, String> {
    let v = int_scalar(text, "weight")?;
    first_error(
        &pool_with(&format!("backends: [{{address: \"a:1\", weight: {v}}}]")),
        Path::new("."),
    )?;
    v.parse().map_err(|e| format!("weight: {e}"))
}

/// A backup's level: 1 (first backup) or more.
pub(crate) fn backup_level(text: &str) -> Result<u32, String> {
    let v = int_scalar(text, "failover_level")?;
    first_error(
        &pool_with(&format!(
            "backends: [{{address: \"a:1\", failover_level: {v}}}]"
        )),
        Path::new("."),
    )?;
    match v.parse::<u32>() {
        Ok(0) => Err("a backup needs failover_level 1 or more (0 is the primary level)".into()),
        Ok(l) => Ok(l),
        Err(e) => Err(format!("failover_level: {e}")),
    }
}

pub(crate) fn region(text: &str) -> Result<Option<String>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    first_error(
        &pool_with(&format!(
            "backends: [{{address: \"a:1\", region: {}}}]",
            quoted(t)
        )),
        Path::new("."),
    )
    .map(|()| Some(t.to_string()))
}

pub(crate) fn algorithm(text: &str) -> Result<String, String> {
    let t = text.trim();
    // `hash` also needs a key, which is asked (and checked) on its own.
    let key = if t == "hash" {
        "\n    hash_key: path"
    } else {
        ""
    };
    first_error(
        &pool_with(&format!("algorithm: {}{key}", quoted(t))),
        Path::new("."),
    )
    .map(|()| t.to_string())
}

pub(crate) fn hash_key(text: &str) -> Result<String, String> {
    let t = text.trim();
    first_error(
        &pool_with(&format!("algorithm: hash\n    hash_key: {}", quoted(t))),
        Path::new("."),
    )
    .map(|()| t.to_string())
}

fn health_key(key: &str, value: &str) -> Result<(), String> {
    first_error(
        &pool_with(&format!("health_check: {{{key}: {value}}}")),
        Path::new("."),
    )
}

pub(crate) fn health_path(text: &str) -> Result<String, String> {
    let t = text.trim();
    health_key("path", &quoted(t)).map(|()| t.to_string())
}

/// A duration under `key` of a health check (`interval`, `timeout`), normalised
/// to the way it is written back (`5000ms` becomes `5s`).
pub(crate) fn health_duration(key: &str, text: &str) -> Result<String, String> {
    health_key(key, &quoted(text.trim()))?;
    normalise_duration(text)
}

pub(crate) fn threshold(key: &str, text: &str) -> Result<u32, String> {
    let v = int_scalar(text, key)?;
    health_key(key, &v)?;
    v.parse().map_err(|e| format!("{key}: {e}"))
}

pub(crate) fn expected_status(text: &str) -> Result<String, String> {
    let t = text.trim();
    // A list is written as a comma list at the prompt: `200, 204` or `2xx, 301`.
    let items: Vec<String> = t.split(',').map(|s| quoted(s.trim())).collect::<Vec<_>>();
    health_key("expected_status", &format!("[{}]", items.join(", ")))?;
    Ok(t.split(',').map(str::trim).collect::<Vec<_>>().join(", "))
}

fn failover_key(key: &str, value: &str) -> Result<(), String> {
    first_error(&format!("failover:\n  {key}: {value}\n"), Path::new("."))
}

pub(crate) fn strategy(text: &str) -> Result<String, String> {
    let t = text.trim();
    failover_key("strategy", &quoted(t)).map(|()| t.to_string())
}

/// A duration under `key` of the failover section (`recovery_interval`, `delay`, `ramp`).
pub(crate) fn failover_duration(key: &str, text: &str) -> Result<String, String> {
    failover_key(key, &quoted(text.trim()))?;
    normalise_duration(text)
}

fn normalise_duration(text: &str) -> Result<String, String> {
    units::parse_duration(text).map(units::format_duration)
}

pub(crate) fn duration_value(text: &str) -> Duration {
    units::parse_duration(text).unwrap_or_default()
}

fn channel(fields: &str) -> Result<(), String> {
    first_error(
        &format!("failover:\n  notification:\n    channels:\n      - {{{fields}}}\n"),
        Path::new("."),
    )
}

pub(crate) fn webhook_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    channel(&format!("type: webhook, url: {}", quoted(t))).map(|()| t.to_string())
}

pub(crate) fn webhook_format(text: &str) -> Result<String, String> {
    let t = text.trim();
    channel(&format!(
        "type: webhook, url: \"http://x\", format: {}",
        quoted(t)
    ))
    .map(|()| t.to_string())
}

pub(crate) fn email(text: &str) -> Result<String, String> {
    let t = text.trim();
    config::check_email(t).map(|()| t.to_string())
}

/// A comma list of e-mail addresses (at least one).
pub(crate) fn recipients(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err("an email channel needs at least one of `recipients`".into());
    }
    for r in &list {
        config::check_email(r)?;
    }
    Ok(list)
}

pub(crate) fn smtp_server(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) || t.contains('/') {
        return Err(format!(
            "invalid smtp_server `{t}` (expected a host name or IP, e.g. smtp.example.com)"
        ));
    }
    channel(&format!(
        "type: email, smtp_server: {}, recipients: [\"a@b.c\"]",
        quoted(t)
    ))
    .map(|()| t.to_string())
}

pub(crate) fn smtp_port(text: &str) -> Result<u16, String> {
    let v = int_scalar(text, "smtp_port")?;
    channel(&format!(
        "type: email, smtp_server: \"x\", smtp_port: {v}, recipients: [\"a@b.c\"]"
    ))?;
    v.parse().map_err(|e| format!("smtp_port: {e}"))
}

/// `IP:PORT` (or `:PORT`), written back as the loader reads it.
pub(crate) fn listen_address(text: &str) -> Result<String, String> {
    parse_listen_address(text).map(|a| a.to_string())
}

/// The admin address: also refused when it would collide with the listener
/// (the same address, or the same port where one of them is every interface).
pub(crate) fn admin_address(text: &str, listen: &str) -> Result<String, String> {
    let admin = parse_listen_address(text)?;
    if !admin.ip().is_loopback() {
        return Err(format!(
            "the admin address {admin} is not loopback: beyond loopback the admin API needs TLS (`admin.tls` in the config); keep it on 127.0.0.1 here and add TLS to the file afterwards"
        ));
    }
    let Ok(listen) = parse_listen_address(listen) else {
        return Ok(admin.to_string());
    };
    if admin == listen {
        return Err(format!(
            "listener address {admin} is also the admin address"
        ));
    }
    if admin.port() == listen.port()
        && (admin.ip().is_unspecified() || listen.ip().is_unspecified())
    {
        return Err(format!(
            "the admin address {admin} and the listener {listen} share port {} (an address of 0.0.0.0 takes the port on every interface)",
            admin.port()
        ));
    }
    Ok(admin.to_string())
}

/// A certificate or key file: must exist (relative paths are taken from the
/// current directory and written out absolute, so the config works from anywhere).
pub(crate) fn existing_file(key: &str, text: &str) -> Result<String, String> {
    let t = text.trim();
    let p = Path::new(t);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let yaml = format!(
        "listeners:\n  - address: \"127.0.0.1:1\"\n    tls:\n      certificates:\n        - {{cert: {c}, key: {c}}}\n",
        c = quoted(&abs.display().to_string())
    );
    first_error(&yaml, Path::new("/"))
        .map_err(|m| m.replacen("cert file", &format!("{key} file"), 1))?;
    Ok(abs.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_loaders() {
        assert_eq!(
            backend_address("10.0.0.1:99999").unwrap_err(),
            "invalid backend address `10.0.0.1:99999`: bad port `99999`"
        );
        assert_eq!(
            health_duration("interval", "5").unwrap_err(),
            "interval: duration `5` needs a unit (ms, s, m, h), e.g. `5s`"
        );
        assert_eq!(health_duration("timeout", "2000ms").unwrap(), "2s");
        assert_eq!(
            health_path("health").unwrap_err(),
            "health_check path must start with `/`"
        );
        assert_eq!(
            threshold("unhealthy_threshold", "0").unwrap_err(),
            "unhealthy_threshold must be between 1 and 1000, found 0"
        );
        assert!(
            strategy("gracefull")
                .unwrap_err()
                .contains("did you mean `graceful`")
        );
        assert!(
            webhook_url("hooks.example.com")
                .unwrap_err()
                .contains("must start with http://")
        );
        assert!(email("ops@").is_err());
        assert_eq!(email(" ops@example.com ").unwrap(), "ops@example.com");
        assert_eq!(host("App.Example.com.").unwrap(), "app.example.com");
        assert!(host("a b").unwrap_err().starts_with("invalid host"));
        assert_eq!(weight("3").unwrap(), 3);
        assert_eq!(algorithm("hash").unwrap(), "hash");
        assert!(
            algorithm("least")
                .unwrap_err()
                .contains("algorithm must be one of")
        );
        assert!(weight("x").unwrap_err().contains("must be an integer"));
        assert_eq!(backup_level("2").unwrap(), 2);
        assert!(backup_level("0").is_err());
        assert_eq!(expected_status("200,204").unwrap(), "200, 204");
        assert!(expected_status("2xxx").is_err());
        assert!(
            existing_file("key", "/nonexistent/x.pem")
                .unwrap_err()
                .starts_with("key file `/nonexistent/x.pem` does not exist")
        );
        assert_eq!(quoted("a${B}"), "\"a$${B}\"");
    }
}
