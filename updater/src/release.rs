//! What the running system is: version, channel, board and arch. In the guest it comes from
//! `/usr/share/keel/release`; for a disk image it comes from the active slot's metadata.

use std::path::Path;

use keel_format::metadata::SlotMetadata;
use serde::Serialize;

use crate::error::{Result, UpdateError};

pub const SYSTEM_RELEASE_FILE: &str = keel_format::initramfs::system::RELEASE_FILE;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SystemInfo {
    pub version: String,
    pub channel: String,
    pub arch: String,
    pub board: String,
}

impl SystemInfo {
    pub fn from_metadata(m: &SlotMetadata) -> SystemInfo {
        SystemInfo {
            version: m.version.clone(),
            channel: m.channel.clone(),
            arch: m.arch.clone(),
            board: m.board.clone(),
        }
    }

    /// Parse `KEY=value` lines (shell style; values may be quoted). KEEL_VERSION, KEEL_ARCH and
    /// KEEL_BOARD are required, KEEL_CHANNEL is optional.
    pub fn parse_release(text: &str) -> std::result::Result<SystemInfo, String> {
        let get = |key: &str| -> Option<String> {
            text.lines().rev().find_map(|line| {
                let (k, v) = line.trim().split_once('=')?;
                (k.trim() == key).then(|| unquote(v.trim()).to_string())
            })
        };
        let need = |v: Option<String>, key: &str| v.ok_or_else(|| format!("{key} is missing"));
        Ok(SystemInfo {
            version: need(get("KEEL_VERSION"), "KEEL_VERSION")?,
            channel: get("KEEL_CHANNEL").unwrap_or_default(),
            arch: need(get("KEEL_ARCH"), "KEEL_ARCH")?,
            board: need(get("KEEL_BOARD"), "KEEL_BOARD")?,
        })
    }

    pub fn from_release_file(path: &Path) -> Result<SystemInfo> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UpdateError::System(format!("cannot read {}: {e}", path.display())))?;
        SystemInfo::parse_release(&text)
            .map_err(|e| UpdateError::System(format!("{}: {e}", path.display())))
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_files() {
        let info = SystemInfo::parse_release(
            "# Keel\nKEEL_VERSION=1.2.3\nKEEL_CHANNEL=\"stable\"\nKEEL_BOARD='qemu-x86_64'\nKEEL_ARCH=x86_64\n",
        )
        .unwrap();
        assert_eq!(
            info,
            SystemInfo {
                version: "1.2.3".into(),
                channel: "stable".into(),
                arch: "x86_64".into(),
                board: "qemu-x86_64".into(),
            }
        );
        let err = SystemInfo::parse_release("KEEL_VERSION=1\nKEEL_ARCH=x86_64\n").unwrap_err();
        assert_eq!(err, "KEEL_BOARD is missing");
    }
}
