//! The standard `process_*` metrics, read from /proc at scrape time (Linux).

/// What /proc says about this process; a field is `None` where it could not be
/// read (another OS, a restricted /proc).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

pub(crate) fn read() -> ProcessStats {
    // SAFETY: sysconf has no preconditions; it only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().and_then(stat_fields);
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let mut out = ProcessStats::default();
    if let Some(f) = fields
        && ticks > 0
    {
        let ticks = ticks as f64;
        out.cpu_seconds = Some((f.utime + f.stime) as f64 / ticks);
        out.start_time_seconds = boot_time.map(|b| b as f64 + f.starttime as f64 / ticks);
        out.virtual_bytes = Some(f.vsize);
        if page > 0 {
            out.resident_bytes = Some(f.rss_pages * page as u64);
        }
    }
    out.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    out.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| max_open_files(&s));
    out
}

struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/self/stat`: the command name (field 2) is in parentheses and may hold
/// spaces, so fields are counted from the last `)`.
fn stat_fields(s: &str) -> Option<StatFields> {
    let rest = &s[s.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: at(14)?,
        stime: at(15)?,
        starttime: at(22)?,
        vsize: at(23)?,
        rss_pages: at(24)?,
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0 4242 123456789 2048 18446744073709551615";
        let f = stat_fields(line).unwrap();
        assert_eq!((f.utime, f.stime), (250, 50));
        assert_eq!(f.starttime, 4242);
        assert_eq!(f.vsize, 123456789);
        assert_eq!(f.rss_pages, 2048);
    }

    #[test]
    fn parses_limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1700000000)
        );
    }

    #[test]
    fn reads_this_process() {
        let p = read();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|r| r > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds.is_some_and(|n| n > 0), "{p:?}");
        let now = crate::clock::unix_secs_f64();
        assert!(
            p.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86400.0 * 365.0),
            "{p:?}"
        );
    }
}
