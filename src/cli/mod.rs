//! What each subcommand does.

pub mod ctl;
pub mod demo;
pub mod init;
pub mod proxy;
pub mod run;
pub mod witness;

use crate::config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Loads a config file, or prints every error (FILE:LINE:COL: message).
pub fn load_or_report(path: Option<PathBuf>) -> Option<config::Loaded> {
    let path = path.unwrap_or_else(config::default_path);
    match config::load_file(&path) {
        Ok(l) => Some(l),
        Err(errors) => {
            for line in errors.lines() {
                eprintln!("{line}");
            }
            None
        }
    }
}

/// `fulcrum validate`: `ok` and exit 0, or every error and exit 1. Warnings
/// (a config that is valid but cannot serve anything) go to stderr.
pub fn validate(path: Option<PathBuf>) -> ExitCode {
    match load_or_report(path) {
        Some(l) => {
            if let Some(w) = no_routes_warning(&l.config) {
                eprintln!("warning: {w}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// A config without routes is valid (a base to add to through the API) but
/// answers every request with 404: say so.
pub fn no_routes_warning(config: &config::Config) -> Option<&'static str> {
    config
        .routes
        .is_empty()
        .then_some("no routes: every request will be answered 404 (add `routes:`)")
}

/// Worker threads: the given number, else what the CPU affinity allows.
pub fn worker_count(workers: Option<usize>) -> usize {
    workers.filter(|&n| n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// One runtime for everything: a current-thread one for one worker (no
/// work-stealing machinery), else a work-stealing one with a thread per worker.
pub fn tokio_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let n = worker_count(workers);
    if n == 1 {
        current_thread_runtime()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
    }
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `fulcrum vip-guard` (hidden): see `cluster::vip_guard`.
pub fn vip_guard(interface: String, address: &str) -> ExitCode {
    let Ok(net) = address.parse::<ipnet::IpNet>() else {
        eprintln!("fulcrum vip-guard: bad address `{address}`");
        return ExitCode::FAILURE;
    };
    let vip = config::VipConfig {
        address: net.addr(),
        prefix_len: net.prefix_len(),
        interface,
        garp_count: 0,
    };
    match crate::cluster::vip_guard::run(vip) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum vip-guard: {e}");
            ExitCode::FAILURE
        }
    }
}
