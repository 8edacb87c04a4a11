//! What the agent needs to know about its machine: the server and group from the layered
//! `update.conf`, the machine id, and (from the running slot) version, board and channel.

use std::path::{Path, PathBuf};

use keel_format::update_conf::UpdateConf;

use crate::error::{Result, UpdateError};

/// update_engine's default `GROUP`.
pub const DEFAULT_GROUP: &str = "stable";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// The Omaha endpoint, e.g. `https://updates.example.com/v1/update/`.
    pub server: String,
    /// Where `server` was set (file:line), for messages.
    pub server_origin: String,
    pub group: String,
    /// As written (empty: the default, `best-effort`); only named in messages: the reboot
    /// manager acts on it.
    pub reboot_strategy: String,
    pub machine_id: String,
}

impl AgentConfig {
    /// `update.conf`'s layers and `etc/machine-id` under `root` (`/` on a running machine).
    pub fn load(root: &Path) -> Result<AgentConfig> {
        let conf = UpdateConf::load(root).map_err(|e| UpdateError::System(e.to_string()))?;
        let layers = keel_format::update_conf::LAYERS
            .iter()
            .map(|l| root.join(l).display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let (server, origin) = conf.get_with_origin("SERVER").ok_or_else(|| {
            UpdateError::System(format!(
                "no update server: SERVER= is not set in any of {layers}"
            ))
        })?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(UpdateError::System(format!(
                "{origin}: SERVER={server:?} is not an http:// or https:// URL"
            )));
        }
        let machine_id_file = root.join("etc/machine-id");
        let machine_id = read_machine_id(&machine_id_file)?;
        Ok(AgentConfig {
            server: server.to_string(),
            server_origin: origin.to_string(),
            group: conf
                .get("GROUP")
                .filter(|g| !g.trim().is_empty())
                .unwrap_or(DEFAULT_GROUP)
                .trim()
                .to_string(),
            reboot_strategy: conf.get("REBOOT_STRATEGY").unwrap_or("").trim().to_string(),
            machine_id,
        })
    }
}

fn read_machine_id(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UpdateError::System(format!("cannot read {}: {e}", path.display())))?;
    let id = text.trim();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(UpdateError::System(format!(
            "{}: {id:?} is not a machine id (32 hex digits)",
            path.display()
        )));
    }
    Ok(id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_machine_id_and_defaults() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let err = AgentConfig::load(r).unwrap_err().to_string();
        assert!(err.contains("SERVER= is not set"), "{err}");
        std::fs::create_dir_all(r.join("usr/share/keel")).unwrap();
        std::fs::create_dir_all(r.join("etc/keel")).unwrap();
        std::fs::write(
            r.join("usr/share/keel/update.conf"),
            "SERVER=http://a/v1/update/\nGROUP=beta\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/machine-id"),
            "0123456789ABCDEF0123456789abcdef\n",
        )
        .unwrap();
        let c = AgentConfig::load(r).unwrap();
        assert_eq!(c.group, "beta");
        assert_eq!(c.machine_id, "0123456789abcdef0123456789abcdef");
        std::fs::write(
            r.join("etc/keel/update.conf"),
            "GROUP=stable\nSERVER=ftp://x\n",
        )
        .unwrap();
        let err = AgentConfig::load(r).unwrap_err().to_string();
        assert!(
            err.contains("etc/keel/update.conf:2: SERVER=\"ftp://x\""),
            "{err}"
        );
        std::fs::write(r.join("etc/keel/update.conf"), "GROUP=\n").unwrap();
        assert_eq!(AgentConfig::load(r).unwrap().group, DEFAULT_GROUP);
        std::fs::write(r.join("etc/machine-id"), "nope\n").unwrap();
        assert!(AgentConfig::load(r).is_err());
    }
}
