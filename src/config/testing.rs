//! Helpers for the sections' unit tests: load a snippet, list its errors, check
//! that its JSON form loads back to the same config.

use super::{Config, load_str_with_env, serialize};
use serde_json::Value;
use std::path::Path;

/// The crate root: snippets can name `Cargo.toml` wherever a file must exist.
fn base_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Loads a snippet that must be valid.
pub(crate) fn load(text: &str) -> Config {
    match load_str_with_env(text, "CFG", base_dir(), &no_env) {
        Ok(c) => c,
        Err(e) => panic!("config should load:\n{e}"),
    }
}

/// The `CFG:LINE:COL: message` lines of a snippet that must be invalid.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match load_str_with_env(text, "CFG", base_dir(), &no_env) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.lines(),
    }
}

/// The config's JSON (unredacted), after checking that it loads back to a config
/// with the same JSON.
pub(crate) fn round_trip(c: &Config) -> Value {
    let json = serialize::config(c, false);
    let again = load(&json.to_string());
    assert_eq!(serialize::config(&again, false), json, "JSON round trip");
    json
}
