//! The real container engine for the discovery tests: a test image built here
//! (no image can be pulled), and a scope that names everything it creates with a
//! per-run prefix and removes it all when dropped, on failure too.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Why the engine cannot be used, or `None` when it answers.
fn engine_missing() -> Option<String> {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(format!("no docker command: {e}")),
    }
}

/// Whether the engine answers; prints why the test is skipped when not.
pub fn engine_or_skip() -> bool {
    match engine_missing() {
        None => true,
        Some(why) => {
            eprintln!("skipped: no container engine ({why})");
            false
        }
    }
}

/// The prefix of every container, network and image this test process makes.
fn prefix() -> String {
    format!("fulcrum-t{}", std::process::id())
}

fn docker_out(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// Runs `docker ARGS`; panics with its output when it fails. Returns stdout.
pub fn docker(args: &[&str]) -> String {
    let o = docker_out(args);
    assert!(
        o.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The static test server binary, compiled once per test process.
fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/srv.rs");
        let dir = crate::target_tmp().join("docker-srv");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("srv");
        let fresh = |o: &PathBuf| {
            let built = std::fs::metadata(o).and_then(|m| m.modified()).ok();
            let source = std::fs::metadata(&src).and_then(|m| m.modified()).ok();
            matches!((built, source), (Some(b), Some(s)) if b >= s)
        };
        if !fresh(&out) {
            let o = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                .args([
                    "--edition",
                    "2021",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                ])
                .args(["--target", "x86_64-unknown-linux-gnu", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .expect("run rustc");
            assert!(
                o.status.success(),
                "building the static test server failed (libc6-dev?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        out
    })
    .clone()
}

/// Users of the test images; the images go when the last one does.
static IMAGE_USERS: Mutex<usize> = Mutex::new(0);

/// The test images: `plain` (no HEALTHCHECK) and `checked` (HEALTHCHECK every
/// second, `srv check`).
pub struct Images {
    pub plain: String,
    pub checked: String,
}

impl Images {
    fn get() -> Images {
        let images = Images {
            plain: format!("{}-srv", prefix()),
            checked: format!("{}-srv-hc", prefix()),
        };
        let mut users = IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 {
            let ctx = crate::target_tmp().join(format!("docker-ctx-{}", std::process::id()));
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::copy(server_binary(), ctx.join("srv")).unwrap();
            std::fs::write(
                ctx.join("Dockerfile"),
                "FROM scratch\nCOPY srv /srv\nEXPOSE 8080\nENTRYPOINT [\"/srv\"]\n",
            )
            .unwrap();
            let c = ctx.to_str().unwrap();
            docker(&["build", "-q", "-t", &images.plain, c]);
            std::fs::write(
                ctx.join("Dockerfile"),
                format!(
                    "FROM {}\nHEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD [\"/srv\", \"check\"]\n",
                    images.plain
                ),
            )
            .unwrap();
            docker(&["build", "-q", "-t", &images.checked, c]);
            let _ = std::fs::remove_dir_all(&ctx);
        }
        *users += 1;
        images
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let mut users = IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = docker_out(&["rmi", "-f", &self.checked, &self.plain]);
        }
    }
}

/// Containers and networks of one test, removed when it ends. Keep it declared
/// after the `Fulcrum` of the test only if the order does not matter; it is
/// dropped in reverse declaration order.
pub struct Scope {
    pub name: String,
    pub images: Images,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl Scope {
    /// `tag` tells this test's resources apart from the other tests'.
    pub fn new(tag: &str) -> Scope {
        Scope {
            name: format!("{}-{tag}", prefix()),
            images: Images::get(),
            containers: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
        }
    }

    /// A unique host name for routes (`NAME.test`).
    pub fn host(&self, name: &str) -> String {
        format!("{name}.{}.test", self.name)
    }

    /// `docker run -d --name SCOPE-NAME ARGS... IMAGE`; returns the full name.
    pub fn run(&self, name: &str, args: &[&str], image: &str) -> String {
        let full = format!("{}-{name}", self.name);
        self.containers.lock().unwrap().push(full.clone());
        let mut all = vec!["run", "-d", "--name", full.as_str(), "-e"];
        let env_name = format!("NAME={name}");
        all.push(&env_name);
        all.extend_from_slice(args);
        all.push(image);
        docker(&all);
        full
    }

    /// Creates a network named SCOPE-NAME; returns the full name.
    pub fn network(&self, name: &str) -> String {
        let full = format!("{}-{name}", self.name);
        self.networks.lock().unwrap().push(full.clone());
        docker(&["network", "create", &full]);
        full
    }

    /// A container's address on one network.
    pub fn ip(&self, container: &str, network: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        docker(&["inspect", "--format", &format, container])
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let containers =
            std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker_out(&args);
        }
        for n in self
            .networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = docker_out(&["network", "rm", n]);
        }
    }
}
