//! `fulcrum run`: serve until told to stop, reloading on SIGHUP and file changes.

use crate::command::CommandError;
use crate::config::Loaded;
use crate::listener::CoreThreads;
use crate::supervisor::{ReloadOutcome, Supervisor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

pub fn run(path: Option<PathBuf>, workers: Option<usize>) -> ExitCode {
    if path.is_none() && !crate::config::default_path().exists() {
        eprintln!(
            "fulcrum: no config file: {} does not exist.\n  \
             fulcrum run -c FILE          run with a config file (or set FULCRUM_CONFIG)\n  \
             fulcrum proxy --from :8080 --to http://127.0.0.1:9001   proxy without a config file\n  \
             fulcrum demo                 see it work with local demo backends",
            crate::config::default_path().display()
        );
        return ExitCode::FAILURE;
    }
    match super::load_or_report(path) {
        Some(loaded) => {
            if let Some(w) = super::no_routes_warning(&loaded.config) {
                tracing::warn!("{w}");
            }
            serve(loaded, workers, true)
        }
        None => ExitCode::FAILURE,
    }
}

/// Runs an instance from a loaded config until SIGTERM/SIGINT.
///
/// One worker: one current-thread runtime runs everything. More: each worker
/// thread runs its own current-thread runtime and accepts on its own socket of
/// every listener (see `listener::cores`), and the control plane (admin API,
/// health checks, reloads, signals, cluster, ACME, discovery) keeps a
/// current-thread runtime on this thread: its work is light and comes in
/// bursts, one thread is enough for it, and off the workers' threads a reload's
/// compile cannot delay a request.
pub fn serve(loaded: Loaded, workers: Option<usize>, watch_file: bool) -> ExitCode {
    let n = super::worker_count(workers);
    let started = super::current_thread_runtime().and_then(|rt| {
        let core_threads = if n > 1 {
            Some(CoreThreads::start(n)?)
        } else {
            None
        };
        Ok((rt, core_threads))
    });
    let (rt, core_threads) = match started {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cores = core_threads
        .as_ref()
        .map(CoreThreads::cores)
        .unwrap_or_default();
    let code = rt.block_on(async move {
        // Signal handlers first: a SIGHUP that arrives while starting must not kill
        // the process (its default action).
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fulcrum: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = match Supervisor::start_on(loaded, cores).await {
            Ok(app) => app,
            Err(e) => {
                // One line: through the log (which goes to stderr) only.
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        supervise(&app, signals, watch_file).await;
        ExitCode::SUCCESS
    });
    // Connections still open past the shutdown timeout end with their runtime.
    drop(core_threads);
    code
}

pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Until SIGTERM or SIGINT (SIGHUP is ignored).
    pub async fn wait_for_stop(&mut self) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {}
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
            }
        }
    }
}

/// Handles signals and file changes; returns after a graceful shutdown.
pub async fn supervise(app: &Arc<Supervisor>, signals: Signals, watch_file: bool) {
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = match (app.config_path(), watch_file) {
        (Some(p), true) => watch(p, changed_tx),
        _ => None,
    };
    // Everything that reacts to the outside is in place: say so.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        generation = app.generation(),
        "fulcrum started"
    );
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                report(app.reload_from_file(true).await);
            }
            Some(()) = changed_rx.recv() => {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while changed_rx.try_recv().is_ok() {}
                report(app.reload_from_file(false).await);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let timeout = app.shutdown_timeout();
    tracing::info!(timeout = ?timeout, "shutting down: draining in-flight requests");
    app.shutdown(timeout).await;
    tracing::info!("stopped");
}

/// The outcome of a reload from the file. The supervisor has logged an applied
/// or a rejected change already (and counted it for the metrics).
fn report(r: Result<ReloadOutcome, CommandError>) {
    if let Ok(ReloadOutcome::Unchanged(_)) = r {
        tracing::debug!("config file unchanged");
    }
}

/// Watches the config file's directory (editors replace files rather than write
/// them in place) and signals changes to that file.
fn watch(
    path: &std::path::Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let file_name = path.file_name()?.to_os_string();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let ours = ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file_name.as_os_str()));
            if ours && (ev.kind.is_modify() || ev.kind.is_create()) {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; SIGHUP still reloads"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the config directory; SIGHUP still reloads");
        return None;
    }
    Some(watcher)
}
