//! The write side: every change an operator, a peer or a background task asks of a
//! running node, as one typed vocabulary with one error type.
//!
//! The admin API turns a request into a [`Command`] and hands it to a
//! [`CommandSink`]. A standalone node executes it at once; in a cluster a
//! replicated command goes through the Raft log (whose entry type is this enum)
//! and every node executes it when it is committed, in the same order.
//! Node-local commands (reload the file, persist the config) never enter the log.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    /// `PUT /api/v1/config`: the shared part of the config (node-local keys are
    /// kept from each node's own file).
    #[serde(rename = "put_config")]
    ReplaceConfig {
        text: String,
    },
    AddBackend {
        pool: String,
        address: String,
        weight: u32,
        failover_level: u32,
        region: Option<String>,
        /// A name for people (older log entries have none).
        #[serde(default)]
        name: Option<String>,
    },
    RemoveBackend {
        pool: String,
        address: String,
    },
    /// Drain, disable or enable one backend (rolling updates).
    #[serde(rename = "backend_state")]
    Backend {
        pool: String,
        address: String,
        action: BackendAction,
    },
    /// Manual failover.
    Failover {
        pool: String,
        action: FailoverAction,
    },
    /// An ACME challenge answer published by the primary (`value: None`
    /// withdraws it): for http-01 `name` is the token and `value` the key
    /// authorization; for tls-alpn-01 `name` is the domain and `value` the
    /// digest in hex.
    AcmeChallenge {
        directory: String,
        kind: ChallengeKind,
        name: String,
        value: Option<String>,
    },
    /// A certificate the primary obtained, for every node to store and serve.
    AcmeCertificate {
        directory: String,
        domain: String,
        chain_pem: String,
        key_pem: String,
    },
    /// Removes cached responses on every caching route: by URL (`kind: url`),
    /// URL prefix (`prefix`) or tag (`tag`, from `Cache-Tag`/`Surrogate-Key`).
    PurgeCache {
        kind: PurgeKind,
        value: String,
    },
    /// A node joins the cluster (`fulcrum ctl cluster add`): carried out by the
    /// primary as a Raft membership change, not as a log command.
    AddNode {
        id: String,
        address: String,
        #[serde(default)]
        witness: bool,
    },
    /// A node leaves the cluster (`fulcrum ctl cluster remove`).
    RemoveNode {
        id: String,
    },
    /// Node-local: read the config file again (`force`: even if unchanged).
    ReloadFile {
        force: bool,
    },
    /// Node-local: replace the config and write it to the config file
    /// (standalone nodes only).
    PersistConfig {
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BackendAction {
    /// No new requests; in-flight ones finish.
    Drain,
    Disable,
    /// Back in rotation once a health check passes.
    Enable,
}

impl BackendAction {
    pub(crate) fn parse(word: &str) -> Option<Self> {
        match word {
            "drain" => Some(BackendAction::Drain),
            "disable" => Some(BackendAction::Disable),
            "enable" => Some(BackendAction::Enable),
            _ => None,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            BackendAction::Drain => "drain",
            BackendAction::Disable => "disable",
            BackendAction::Enable => "enable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailoverAction {
    /// Force traffic to the backup level (maintenance).
    Activate,
    /// Back to automatic.
    Deactivate,
}

impl FailoverAction {
    pub(crate) fn parse(word: &str) -> Option<Self> {
        match word {
            "activate" => Some(FailoverAction::Activate),
            "deactivate" => Some(FailoverAction::Deactivate),
            _ => None,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            FailoverAction::Activate => "activate",
            FailoverAction::Deactivate => "deactivate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PurgeKind {
    Url,
    Prefix,
    Tag,
}

impl PurgeKind {
    pub(crate) fn word(self) -> &'static str {
        match self {
            PurgeKind::Url => "url",
            PurgeKind::Prefix => "prefix",
            PurgeKind::Tag => "tag",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChallengeKind {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    pub(crate) fn word(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl Command {
    /// Whether the command changes state every node of a cluster shares (and so
    /// goes through the Raft log); the others act on this node only.
    pub(crate) fn is_replicated(&self) -> bool {
        !matches!(
            self,
            Command::ReloadFile { .. }
                | Command::PersistConfig { .. }
                | Command::AddNode { .. }
                | Command::RemoveNode { .. }
        )
    }
}

/// A short description for logs, events and the audit trail.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::ReplaceConfig { text } => write!(f, "config ({} bytes)", text.len()),
            Command::PersistConfig { text } => {
                write!(f, "config ({} bytes, persisted)", text.len())
            }
            Command::ReloadFile { .. } => f.write_str("reload from the file"),
            Command::AddBackend { pool, address, .. } => write!(f, "add {address} to {pool}"),
            Command::RemoveBackend { pool, address } => write!(f, "remove {address} from {pool}"),
            Command::Backend {
                pool,
                address,
                action,
            } => write!(f, "{} {address} in {pool}", action.word()),
            Command::Failover { pool, action } => write!(f, "failover {} {pool}", action.word()),
            Command::AcmeChallenge {
                kind, name, value, ..
            } => write!(
                f,
                "{} {} challenge {name}",
                if value.is_some() {
                    "publish"
                } else {
                    "withdraw"
                },
                kind.word()
            ),
            Command::AcmeCertificate { domain, .. } => write!(f, "certificate for {domain}"),
            Command::PurgeCache { kind, value } => {
                write!(f, "purge cache by {} {value}", kind.word())
            }
            Command::AddNode {
                id,
                address,
                witness,
            } => write!(
                f,
                "add {} {id} at {address} to the cluster",
                if *witness { "witness" } else { "node" }
            ),
            Command::RemoveNode { id } => write!(f, "remove node {id} from the cluster"),
        }
    }
}

/// What kind of failure a command met; the admin API maps it to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    /// The command itself is wrong (a bad address, an invalid config).
    Invalid,
    /// It names a pool or backend that does not exist.
    NotFound,
    /// It conflicts with the current state (already there, nothing to do it to).
    Conflict,
    /// The node cannot carry it out right now (no primary, shutting down).
    Unavailable,
    /// It was accepted but failed while being carried out.
    Failed,
}

/// The one error type of the write side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommandError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// Details, one per line (e.g. every `FILE:LINE:COL: message` of a config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) details: Vec<String>,
}

impl CommandError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    pub(crate) fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for d in &self.details {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {}

/// What executing a command produced: a JSON answer, or why it failed.
pub(crate) type Outcome = Result<Value, CommandError>;

/// Where commands go. The supervisor provides two: one that executes on this
/// node, and one that first replicates what must be replicated.
pub(crate) trait CommandSink: Send + Sync + 'static {
    fn submit(&self, cmd: Command) -> BoxFut<'static, Outcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_keep_their_wire_names() {
        let c = Command::Backend {
            pool: "web".into(),
            address: "127.0.0.1:80".into(),
            action: BackendAction::Drain,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["op"], "backend_state");
        assert_eq!(v["action"], "drain");
        let back: Command = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let put = serde_json::to_value(Command::ReplaceConfig { text: "x".into() }).unwrap();
        assert_eq!(put["op"], "put_config");
        let ch = serde_json::to_value(Command::AcmeChallenge {
            directory: "d".into(),
            kind: ChallengeKind::TlsAlpn01,
            name: "a".into(),
            value: None,
        })
        .unwrap();
        assert_eq!(ch["kind"], "tls-alpn-01");
    }

    #[test]
    fn a_cache_purge_is_replicated_to_every_node() {
        let c = Command::PurgeCache {
            kind: PurgeKind::Prefix,
            value: "/assets/".into(),
        };
        assert!(c.is_replicated());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["kind"].as_str()),
            (Some("purge_cache"), Some("prefix"))
        );
        assert_eq!(serde_json::from_value::<Command>(v).unwrap(), c);
    }

    #[test]
    fn local_commands_are_not_replicated() {
        assert!(!Command::ReloadFile { force: true }.is_replicated());
        assert!(
            !Command::PersistConfig {
                text: String::new()
            }
            .is_replicated()
        );
        assert!(
            Command::Failover {
                pool: "p".into(),
                action: FailoverAction::Activate
            }
            .is_replicated()
        );
    }

    #[test]
    fn errors_carry_their_details() {
        let e = CommandError::invalid("invalid config").with_details(vec!["api:1:1: x".into()]);
        assert_eq!(e.to_string(), "invalid config\napi:1:1: x");
        let round: CommandError =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(round, e);
    }
}
