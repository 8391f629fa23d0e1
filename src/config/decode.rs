//! Typed reads from the span-carrying tree that collect every error instead of
//! stopping at the first one.

use super::tree::{Loc, Node, Value};
use super::{env, units};
use std::time::Duration;

/// One problem in a config file, at a position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigError {
    pub loc: Loc,
    pub message: String,
}

pub struct Decoder<'e> {
    pub errors: Vec<ConfigError>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

/// A mapping whose keys were checked against the allowed set.
pub struct MapView<'n> {
    pub loc: Loc,
    entries: &'n [(Node, Node)],
}

impl<'n> MapView<'n> {
    /// The value under `key`; an explicit `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entry(key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// The value under `key` even when it is `null`.
    pub fn get_raw(&self, key: &str) -> Option<&'n Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn key_loc(&self, key: &str) -> Option<Loc> {
        self.entry(key).map(|(k, _)| k.loc)
    }

    fn entry(&self, key: &str) -> Option<&'n (Node, Node)> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
    }
}

impl<'e> Decoder<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Decoder {
            errors: Vec::new(),
            env,
        }
    }

    pub fn error(&mut self, loc: Loc, message: impl Into<String>) {
        self.errors.push(ConfigError {
            loc,
            message: message.into(),
        });
    }

    /// Reads a mapping and reports keys outside `allowed` (with a suggestion).
    pub fn map<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<MapView<'n>> {
        let entries: &'n [(Node, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.error(
                    node.loc,
                    format!("{what} must be a mapping, found {}", node.kind()),
                );
                return None;
            }
        };
        for (k, _) in entries {
            match &k.value {
                Value::Str(name) if allowed.contains(&name.as_str()) => {}
                Value::Str(name) => {
                    let hint = suggest(name, allowed)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_else(|| format!(" (known keys: {})", allowed.join(", ")));
                    self.error(k.loc, format!("unknown key `{name}` in {what}{hint}"));
                }
                _ => self.error(
                    k.loc,
                    format!(
                        "keys of {what} must be strings, found {}",
                        k.scalar_text().unwrap_or_else(|| k.kind().into())
                    ),
                ),
            }
        }
        Some(MapView {
            loc: node.loc,
            entries,
        })
    }

    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => {
                self.error(
                    node.loc,
                    format!("{what} must be a list, found {}", node.kind()),
                );
                &[]
            }
        }
    }

    /// A string, with `${ENV}` interpolated.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => match env::interpolate(s, self.env) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(node.loc, e);
                    None
                }
            },
            _ => {
                self.error(
                    node.loc,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A string that may also be written as a plain number (e.g. a port or status).
    pub fn scalar_string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Int(i) => Some(i.to_string()),
            _ => self.string(node, what),
        }
    }

    pub fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) if s.contains("${") => match self.string(node, what)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    self.error(
                        node.loc,
                        format!("{what} must be true or false, found `{other}`"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    node.loc,
                    format!("{what} must be true or false, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// An integer within `min..=max` (a `${VAR}` string is accepted too).
    pub fn int(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        let v = match &node.value {
            Value::Int(i) => *i,
            Value::Str(s) if s.contains("${") => {
                let text = self.string(node, what)?;
                match text.trim().parse::<i64>() {
                    Ok(v) => v,
                    Err(_) => {
                        self.error(
                            node.loc,
                            format!("{what} must be an integer, found `{text}`"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    node.loc,
                    format!("{what} must be an integer, found {}", node.kind()),
                );
                return None;
            }
        };
        if v < min || v > max {
            self.error(
                node.loc,
                format!("{what} must be between {min} and {max}, found {v}"),
            );
            return None;
        }
        Some(v)
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = match &node.value {
            Value::Int(0) => return Some(Duration::ZERO),
            Value::Int(i) => {
                self.error(
                    node.loc,
                    format!("{what}: duration `{i}` needs a unit (ms, s, m, h), e.g. `{i}s`"),
                );
                return None;
            }
            _ => self.string(node, what)?,
        };
        match units::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.loc, format!("{what}: {e}"));
                None
            }
        }
    }

    pub fn size(&mut self, node: &Node, what: &str) -> Option<u64> {
        let text = match &node.value {
            Value::Int(i) if *i >= 0 => return Some(*i as u64),
            _ => self.scalar_string(node, what)?,
        };
        match units::parse_size(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(node.loc, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A list of strings; a single string is accepted as a one-element list.
    pub fn string_list(&mut self, node: &Node, what: &str) -> Vec<(String, Loc)> {
        if let Value::Str(_) = node.value {
            return self
                .string(node, what)
                .map(|s| vec![(s, node.loc)])
                .unwrap_or_default();
        }
        let mut out = Vec::new();
        for item in self.seq(node, what) {
            if let Some(s) = self.scalar_string(item, what) {
                out.push((s, item.loc));
            }
        }
        out
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let text = self.string(node, what)?;
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                let hint = suggest(&text, &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.error(
                    node.loc,
                    format!(
                        "{what} must be one of {}, found `{text}`{hint}",
                        names.join(" | ")
                    ),
                );
                None
            }
        }
    }
}

/// The closest allowed word, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (levenshtein(word, o), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words() {
        assert_eq!(
            suggest("algoritm", &["algorithm", "backends"]),
            Some("algorithm")
        );
        assert_eq!(suggest("zzz", &["algorithm", "backends"]), None);
    }
}
