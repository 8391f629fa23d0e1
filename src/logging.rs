//! Process logs on stderr: text for people, JSON for machines.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `level` (from `--log-level`) wins over `RUST_LOG`; the default is `info`.
/// openraft logs every vote and RPC, and every unreachable peer at each retry;
/// it is silenced unless the filter names it (the cluster logs what matters).
pub fn init(format: Format, level: Option<&str>) {
    let text = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let text = if text.contains("openraft") {
        text
    } else {
        format!("{text},openraft=off")
    };
    let filter = EnvFilter::try_new(&text).unwrap_or_else(|_| EnvFilter::new("info,openraft=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colour only on a terminal (not in a file, journald or `docker logs`), and
/// never when `NO_COLOR` is set to anything (no-color.org).
fn colour(terminal: bool, no_colour: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_colour.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())));
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(false, None));
    }
}
