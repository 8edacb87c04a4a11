//! A `#!` user-data, stored to run once: `/var/lib/keel/cloudinit/script-<sha256>` (0700)
//! and a `.ran` marker beside it that the caller makes after running it.

use std::path::Path;

use super::rootfs::{self, Change};
use super::ApplyError;

pub const SCRIPT_DIR: &str = "/var/lib/keel/cloudinit";

/// What the caller needs to run a stored script once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScript {
    /// Guest path of the script.
    pub path: String,
    /// Guest path of the marker: present once the script has run.
    pub marker: String,
    pub already_ran: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn store(root: &Path, text: &str) -> Result<(Change, StoredScript), ApplyError> {
    let path = format!("{SCRIPT_DIR}/script-{}", sha256_hex(text.as_bytes()));
    let marker = format!("{path}.ran");
    let at = rootfs::resolve(root, &path)?;
    let change = rootfs::write_file(&at, text.as_bytes(), 0o700, Some((0, 0)))?;
    let already_ran = rootfs::resolve(root, &marker)?.host_path().exists();
    Ok((
        change,
        StoredScript {
            path,
            marker,
            already_ran,
        },
    ))
}

/// Record that the script ran (the caller calls this after running it).
pub fn mark_ran(root: &Path, script: &StoredScript) -> Result<Change, ApplyError> {
    let at = rootfs::resolve(root, &script.marker)?;
    Ok(rootfs::write_file(&at, b"", 0o600, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stored_once_and_marked() {
        let t = tempfile::tempdir().unwrap();
        let (c, s) = store(t.path(), "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(c, Change::Changed);
        assert!(!s.already_ran);
        assert!(s.path.starts_with("/var/lib/keel/cloudinit/script-"));
        assert_eq!(s.path.len(), SCRIPT_DIR.len() + "/script-".len() + 64);
        let m = std::fs::metadata(t.path().join(&s.path[1..])).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        mark_ran(t.path(), &s).unwrap();
        let (c, s) = store(t.path(), "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(c, Change::Unchanged);
        assert!(s.already_ran);
    }
}
