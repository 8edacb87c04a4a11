//! The cluster's state in etcd v3: one key per fact, JSON values, under one prefix
//! (`/keel/fleet/v1/` by default). Nothing else holds state and no agent talks to another.
//!
//! | key | value | written by | lifetime |
//! |---|---|---|---|
//! | `units/<unit>` | [`UnitRecord`]: file text and target state | fleetctl verbs | until `destroy` |
//! | `machines/<id>` | [`MachineRecord`]: ip, metadata | that machine's agent | its lease |
//! | `schedule/<id>/<unit>` | [`Assignment`]: what the machine must run | the leader | until moved |
//! | `states/<unit>/<id>` | [`UnitStatus`]: systemd's states | that machine's agent | its lease |
//! | `unplaced/<unit>` | [`Unplaced`]: why no machine can take it | the leader | until placed |
//! | `leader/…` | the leader's machine id | etcd's election API | the leader's lease |
//!
//! An agent watches only `schedule/<its id>/`; only the leader reads `units/` and `machines/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::unit::TargetState;

pub const DEFAULT_PREFIX: &str = "/keel/fleet/v1/";

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn units(&self) -> String {
        format!("{}units/", self.prefix)
    }
    pub fn unit(&self, name: &str) -> String {
        format!("{}units/{name}", self.prefix)
    }
    pub fn machines(&self) -> String {
        format!("{}machines/", self.prefix)
    }
    pub fn machine(&self, id: &str) -> String {
        format!("{}machines/{id}", self.prefix)
    }
    pub fn schedule(&self) -> String {
        format!("{}schedule/", self.prefix)
    }
    pub fn schedule_of(&self, machine: &str) -> String {
        format!("{}schedule/{machine}/", self.prefix)
    }
    pub fn assignment(&self, machine: &str, unit: &str) -> String {
        format!("{}schedule/{machine}/{unit}", self.prefix)
    }
    pub fn states(&self) -> String {
        format!("{}states/", self.prefix)
    }
    pub fn states_of(&self, unit: &str) -> String {
        format!("{}states/{unit}/", self.prefix)
    }
    pub fn state(&self, unit: &str, machine: &str) -> String {
        format!("{}states/{unit}/{machine}", self.prefix)
    }
    pub fn unplaced(&self) -> String {
        format!("{}unplaced/", self.prefix)
    }
    pub fn unplaced_unit(&self, unit: &str) -> String {
        format!("{}unplaced/{unit}", self.prefix)
    }
    pub fn election(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// The part of `key` after `dir` (one of the directories above).
    pub fn rest<'k>(&self, dir: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(dir)
    }
}

/// A unit as submitted: `units/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub name: String,
    pub content: String,
    pub target: TargetState,
}

/// A machine's registration: `machines/<id>`, under the agent's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What one machine must run: `schedule/<machine>/<unit>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub name: String,
    pub content: String,
    /// `loaded` (written, not started) or `launched`.
    pub target: TargetState,
}

/// systemd's view of a unit on one machine: `states/<unit>/<machine>`, under its agent's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitStatus {
    pub machine: String,
    pub load: String,
    pub active: String,
    pub sub: String,
    /// Content hash of the file the agent wrote.
    pub hash: String,
    /// What the agent was told (`loaded` or `launched`): fleet's current state.
    #[serde(default)]
    pub target: TargetState,
}

/// Why the leader could not place a unit: `unplaced/<unit>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    pub reason: String,
}

/// `"region=us-west,group=hw_webservers"` → map (fleet's `metadata=`: split on `,`, then on the
/// first `=`, spaces trimmed). An entry without `=` is an error naming it.
pub fn parse_metadata(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("metadata entry {entry:?} is not key=value")),
        }
    }
    Ok(out)
}

/// The map as fleetctl prints it: `k=v` sorted by key, joined with `,`; `-` when empty.
pub fn format_metadata(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let m = parse_metadata(" region=us-west , group=hw_webservers,").unwrap();
        assert_eq!(format_metadata(&m), "group=hw_webservers,region=us-west");
        assert!(parse_metadata("region").unwrap_err().contains("\"region\""));
        assert_eq!(format_metadata(&BTreeMap::new()), "-");
    }

    #[test]
    fn keys_under_a_prefix() {
        let k = Keys::new("/p");
        assert_eq!(k.assignment("m1", "a.service"), "/p/schedule/m1/a.service");
        assert_eq!(k.rest(&k.units(), "/p/units/a.service"), Some("a.service"));
    }
}
