//! Process logs on stderr: text for people, JSON for machines.

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
        .with_target(false);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}
