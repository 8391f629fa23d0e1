//! Configuration: parse (YAML or JSON), validate, fill in defaults.
//!
//! Errors are reported all at once as `FILE:LINE:COL: message`.

pub mod access_log;
mod decode;
mod env;
mod model;
mod parse;
pub mod serialize;
pub mod tree;
pub mod units;

pub use decode::ConfigError;
pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one config source.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    fn single(source_name: &str, message: String) -> Self {
        ConfigErrors {
            source_name: source_name.to_string(),
            errors: vec![ConfigError {
                loc: tree::Loc { line: 1, col: 1 },
                message,
            }],
        }
    }

    /// One `FILE:LINE:COL: message` line per error.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{}:{}: {}",
                    self.source_name, e.loc.line, e.loc.col, e.message
                )
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// A successfully loaded config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    /// The source text, to detect a reload that changes nothing.
    pub text: String,
}

/// The default config path: `$FULCRUM_CONFIG`, then `./fulcrum.yaml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("FULCRUM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fulcrum.yaml"))
}

pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&name, format!("cannot read config: {e}")))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config = load_str(&text, &name, base)?;
    Ok(Loaded {
        config,
        path: Some(path.to_path_buf()),
        text,
    })
}

/// Parses config text (YAML, or JSON which is YAML too). `base_dir` resolves
/// relative paths such as certificate files.
pub fn load_str(text: &str, source_name: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    load_str_with_env(text, source_name, base_dir, &|k| std::env::var(k).ok())
}

pub fn load_str_with_env(
    text: &str,
    source_name: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let root = match tree::parse(text) {
        Ok(root) => root,
        Err(e) => {
            return Err(ConfigErrors {
                source_name: source_name.to_string(),
                errors: vec![ConfigError {
                    loc: e.loc,
                    message: e.message,
                }],
            });
        }
    };
    let mut d = decode::Decoder::new(env);
    let config = parse::decode_config(&mut d, &root, base_dir);
    if d.errors.is_empty() {
        Ok(config)
    } else {
        let mut errors = d.errors;
        errors.sort();
        errors.dedup();
        Err(ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        })
    }
}
