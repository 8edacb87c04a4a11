//! The updater's memory across boots, `/var/lib/keel/update-state.json` in the guest: which
//! update is staged and how the last operation ended.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, UpdateError};

pub const STATE_FILE: &str = "/var/lib/keel/update-state.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// An update written and staged, not yet judged (marked good, or found failed).
    pub staged: Option<StagedUpdate>,
    /// How the last apply, mark-good or rollback ended.
    pub last: Option<Outcome>,
    /// The update agent's attempts, oldest first (at most [`HISTORY_LEN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// Versions that failed on this machine (rolled back, failed the health gate, refused as
    /// untrusted): the agent does not apply them again; a newer version is tried as usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_versions: Vec<String>,
    /// Omaha events not yet delivered to the update server (sent with the next check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_events: Vec<PendingEvent>,
}

pub const HISTORY_LEN: usize = 32;

/// One update attempt of the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub version: String,
    pub from_version: String,
    /// `staged`, `failed` (download/apply), `good` (marked good after the reboot),
    /// `update-failed` (the machine came back on the old slot), `skipped` (failed before).
    pub result: String,
    pub message: String,
    pub time: u64,
}

/// An Omaha event waiting for the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub event_type: u32,
    pub event_result: u32,
    pub error_code: Option<i64>,
    pub previous_version: Option<String>,
    /// The version the event is about.
    pub version: String,
}

impl UpdateState {
    pub fn record_attempt(&mut self, version: &str, from: &str, result: &str, message: String) {
        self.history.push(Attempt {
            version: version.into(),
            from_version: from.into(),
            result: result.into(),
            message,
            time: now(),
        });
        let excess = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..excess);
    }

    pub fn has_failed(&self, version: &str) -> bool {
        self.failed_versions.iter().any(|v| v == version)
    }

    pub fn mark_failed(&mut self, version: &str) {
        if !self.has_failed(version) {
            self.failed_versions.push(version.into());
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpdate {
    pub version: String,
    pub previous_version: String,
    pub slot: String,
    pub slot_guid: Uuid,
    pub time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `apply`, `mark-good`, `rollback`.
    pub action: String,
    /// `ok`, `failed`, or for an update judged at boot `good` / `update-failed`.
    pub result: String,
    pub message: String,
    pub time: u64,
}

impl Outcome {
    pub fn now(action: &str, result: &str, message: impl Into<String>) -> Outcome {
        Outcome {
            action: action.into(),
            result: result.into(),
            message: message.into(),
            time: now(),
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UpdateState {
    /// A missing file is an empty state.
    pub fn load(path: &Path) -> Result<UpdateState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                UpdateError::System(format!("{} is not valid update state: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateState::default()),
            Err(e) => Err(UpdateError::System(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Write atomically: a temporary file, synced, renamed over the old one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |e: std::io::Error| {
            UpdateError::System(format!("cannot write {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut text = serde_json::to_vec_pretty(self).expect("state serializes");
        text.push(b'\n');
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_missing_save_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/keel/update-state.json");
        assert_eq!(UpdateState::load(&path).unwrap(), UpdateState::default());
        let s = UpdateState {
            staged: Some(StagedUpdate {
                version: "2.0.0".into(),
                previous_version: "1.0.0".into(),
                slot: "USR-B".into(),
                slot_guid: keel_format::layout::USR_B_GUID,
                time: 5,
            }),
            last: Some(Outcome::now("apply", "ok", "staged")),
            ..Default::default()
        };
        s.save(&path).unwrap();
        assert_eq!(UpdateState::load(&path).unwrap(), s);
        // A file from before the agent (no history fields) still loads.
        std::fs::write(&path, r#"{"staged":null,"last":null}"#).unwrap();
        assert_eq!(UpdateState::load(&path).unwrap(), UpdateState::default());
        std::fs::write(&path, "{").unwrap();
        assert!(UpdateState::load(&path).is_err());
    }
}
