//! The `fulcrum` command line: parses arguments and hands over to `fulcrum::cli`.

use clap::{Parser, Subcommand};
use fulcrum::cli;
use fulcrum::logging;
use std::path::PathBuf;
use std::process::ExitCode;

/// Fulcrum: a reverse proxy and load balancer that keeps your application up.
#[derive(Parser)]
#[command(name = "fulcrum", version, about, long_about = None)]
struct Cli {
    /// Log output format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::Format,
    /// Log level or filter (e.g. `debug`, `fulcrum=debug,info`); default from RUST_LOG, else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGHUP reloads the config; SIGTERM/SIGINT drain and exit.
    Run {
        /// Config file [default: $FULCRUM_CONFIG, then ./fulcrum.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Worker threads [default: the CPUs this process may use]
        #[arg(long, env = "FULCRUM_WORKERS")]
        workers: Option<usize>,
    },
    /// Check a config file without serving: prints `ok`, or every error as FILE:LINE:COL: message.
    Validate {
        /// Config file [default: $FULCRUM_CONFIG, then ./fulcrum.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Guided setup: asks about your servers, backups, health checks and failover, writes a config.
    ///
    /// Asks for host names, servers (with weights), backups (with levels or
    /// regions), the balancing strategy, the health check, the failover strategy,
    /// notifications (webhook, e-mail, with a test on request), TLS and the admin
    /// address; checks each answer as it is typed, with `validate`'s messages, and
    /// probes each server as it is entered. Writes a commented config that
    /// `validate` accepts (never over an existing file without --force), prints a
    /// summary, the command to start it and, if asked, a systemd unit.
    /// `--non-interactive` takes the same answers from flags or `--answers FILE`.
    Init(Box<cli::init::InitArgs>),
    /// Zero-config reverse proxy: fulcrum proxy --from :8080 --to http://10.0.0.1:80 --to ...
    Proxy(cli::proxy::ProxyArgs),
    /// Self-contained demo: the proxy, three backends and a backup, one route per
    /// balancing strategy and /failover; backend-2 fails and recovers every ~20 s.
    /// Ctrl-C stops everything.
    Demo(cli::demo::DemoArgs),
    /// Run a cluster witness: a Raft voter that serves no traffic and never holds the VIP.
    Witness {
        /// Config file with a `cluster` section [default: $FULCRUM_CONFIG, then ./fulcrum.yaml]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Talk to a running Fulcrum's admin API (status, pools, drain/enable, failover...).
    Ctl(cli::ctl::CtlArgs),
    /// (Started by a cluster node with a `vip`.) Removes the VIP when the node
    /// stops renewing its lease.
    #[command(hide = true)]
    VipGuard {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        address: String,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    // The demo narrates on stdout; its eight pools' health logs would drown that
    // out, so it logs errors only unless a level is asked for.
    let quiet_demo =
        matches!(args.command, Command::Demo(_)) && std::env::var_os("RUST_LOG").is_none();
    let level = args.log_level.as_deref().or(quiet_demo.then_some("error"));
    logging::init(args.log_format, level);
    match args.command {
        Command::Run { config, workers } => cli::run::run(config, workers),
        Command::Validate { config } => cli::validate(config),
        Command::Proxy(p) => cli::proxy::run(p),
        Command::Demo(d) => cli::demo::run(d),
        Command::Init(i) => cli::init::run(*i),
        Command::Ctl(c) => cli::ctl::run(c),
        Command::Witness { config } => cli::witness::run(config),
        Command::VipGuard { interface, address } => cli::vip_guard(interface, &address),
    }
}

// mimalloc: the request path allocates many small short-lived objects (header maps,
// buffers); glibc malloc spent ~12% of user CPU on them in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc (v3) commits its first arena up front on Linux ("eager commit"), and
// memory in a committed arena is not given back when it is freed. With it off,
// Fulcrum starts at ~12.6 MiB of RSS instead of ~20, and an idle client
// connection that has served a request keeps ~23 KB instead of ~31 (measured with
// bench/idle-connections.py; see docs/benchmarks.md). The option is read when the
// first arena is reserved, before `main`, so it is set from a constructor that
// runs before mimalloc's own (priority 101). A MIMALLOC_ARENA_EAGER_COMMIT in the
// environment still wins.
#[cfg(target_os = "linux")]
mod allocator_options {
    use std::ffi::{c_int, c_long};

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }

    /// `mi_option_arena_eager_commit` in the option list of the mimalloc v3 that
    /// libmimalloc-sys 0.1.49 builds.
    const ARENA_EAGER_COMMIT: c_int = 4;

    extern "C" fn set() {
        // SAFETY: `getenv` reads the environment without allocating, and
        // `mi_option_set` only writes its static option table; nothing else runs yet.
        unsafe {
            if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
                mi_option_set(ARENA_EAGER_COMMIT, 0);
            }
        }
    }

    #[used]
    #[unsafe(link_section = ".init_array.00100")]
    static SET: extern "C" fn() = set;
}
