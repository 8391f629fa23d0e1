//! Durations (`250ms`, `5s`, `1h30m`) and byte sizes (`64KiB`, `10MB`).

use std::time::Duration;

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d`, compounds like `1h30m`, and a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total = Duration::ZERO;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "invalid duration `{text}` (expected e.g. 250ms, 5s, 2m, 1h)"
            ));
        }
        let number: f64 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid number in duration `{text}`"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_secs = match &s[ustart..i] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!(
                    "duration `{text}` needs a unit (ms, s, m, h), e.g. `{number}s`"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit `{other}` in duration `{text}` (use ms, s, m, h or d)"
                ));
            }
        };
        let secs = number * unit_secs;
        if !secs.is_finite() || secs > 1e12 {
            return Err(format!("duration `{text}` is too large"));
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// Formats a duration the way a user would write it (`1.5s`, `250ms`, `2m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && d.as_nanos() > 0 {
        return format!("{}us", d.as_micros());
    }
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses `65536`, `64KiB`, `10MB`, `1GiB` (KB = 1000, KiB = 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let number: f64 = num
        .parse()
        .map_err(|_| format!("invalid size `{text}` (expected e.g. 64KiB, 10MB, 1048576)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in size `{text}` (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let v = number * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("size `{text}` is out of range"));
    }
    Ok(v.round() as u64)
}

/// Checks an e-mail address the way the SMTP sender will parse it.
pub fn check_email(text: &str) -> Result<(), String> {
    text.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| format!("invalid e-mail address `{text}` (expected e.g. ops@example.com)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["250ms", "5s", "2m", "1h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
