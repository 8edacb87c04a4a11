//! The machine as the reboot manager sees it: is an update staged, is this boot good (or did
//! the last update fail), and how to reboot. On a Keel machine these are
//! `/run/reboot-required`, `keel-update status --json` and `keel-update reboot`; the commands
//! can be replaced (host-process tests run the real manager with a reboot that restarts it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use thiserror::Error;

pub use keel_format::update_conf::REBOOT_REQUIRED;

#[derive(Debug, Error)]
pub enum SystemError {
    #[error("running {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command:?} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "{command:?} printed what is not keel-update's status JSON: {source}; it began {start:?}"
    )]
    Status {
        command: String,
        start: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The parts of `keel-update status --json` the manager reads.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct Status {
    #[serde(default)]
    pub reboot_pending: bool,
    pub running: Option<RunningSlot>,
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RunningSlot {
    pub attrs: Attrs,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Attrs {
    pub successful: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Verdict {
    pub state: String,
    pub version: String,
}

impl Status {
    /// The running slot passed its health gate (marked successful).
    pub fn boot_is_good(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.attrs.successful)
    }

    /// The last staged update failed (keel-init fell back to the old slot): the lock stays held.
    pub fn failed_version(&self) -> Option<&str> {
        self.verdict
            .as_ref()
            .filter(|v| v.state == "failed")
            .map(|v| v.version.as_str())
    }
}

/// How the manager reaches the rest of the machine.
#[derive(Debug, Clone)]
pub struct System {
    pub root: PathBuf,
    pub status_command: String,
    pub reboot_command: String,
}

impl System {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            status_command: "keel-update status --json".into(),
            reboot_command: "keel-update reboot".into(),
        }
    }

    pub fn status(&self) -> Result<Status, SystemError> {
        let out = shell(&self.status_command)?;
        serde_json::from_slice(&out).map_err(|source| SystemError::Status {
            command: self.status_command.clone(),
            start: String::from_utf8_lossy(&out[..out.len().min(80)]).into_owned(),
            source,
        })
    }

    /// An update is staged: `/run/reboot-required`, or keel-update's own word for it, and only
    /// once this boot passed its health gate: a slot still on trial makes the other slot the
    /// next boot too, and rebooting it then would spend its trial before the gate could judge.
    pub fn reboot_needed(&self, status: &Status) -> bool {
        status.boot_is_good() && (self.root.join(REBOOT_REQUIRED).exists() || status.reboot_pending)
    }

    pub fn reboot(&self) -> Result<(), SystemError> {
        shell(&self.reboot_command).map(|_| ())
    }
}

fn shell(command: &str) -> Result<Vec<u8>, SystemError> {
    let out = Command::new("/bin/sh")
        .args(["-c", command])
        .output()
        .map_err(|source| SystemError::Spawn {
            command: command.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(SystemError::Failed {
            command: command.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keel_update_status_json() {
        let json = r#"{"disk":"/dev/vda","running":{"label":"USR-B","partition":4,"attrs":{"priority":2,"tries":0,"successful":true},"version":"2.0.0","verified":true},
            "passive":{},"next_boot":"USR-B","reboot_pending":false,
            "verdict":{"state":"failed","version":"2.0.1","slot":"USR-A"}}"#;
        let s: Status = serde_json::from_str(json).unwrap();
        assert!(s.boot_is_good());
        assert_eq!(s.failed_version(), Some("2.0.1"));
        let s: Status = serde_json::from_str(r#"{"reboot_pending":true}"#).unwrap();
        assert!(!s.boot_is_good());
        assert!(s.reboot_pending);
    }

    #[test]
    fn a_status_command_that_prints_garbage_is_named() {
        let mut sys = System::new(Path::new("/"));
        sys.status_command = "echo '<html>oops'".into();
        let e = sys.status().unwrap_err().to_string();
        assert!(e.contains("<html>oops") && e.contains("echo"), "{e}");
        sys.status_command = "echo nope >&2; exit 3".into();
        let e = sys.status().unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
