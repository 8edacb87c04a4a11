//! `--cloud-config FILE`: checked before anything is written (a `#cloud-config` first line, then
//! a YAML mapping), and put on the OEM partition (ext4, mounted at /oem on the installed
//! system) as `cloud-config.yml`, the file a CoreOS OEM partition carried for first-boot
//! provisioning. It may hold secrets: mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};

use crate::error::{InstallError, Result};

pub const HEADER: &str = "#cloud-config";
/// On the OEM filesystem; `/oem/cloud-config.yml` on the installed system.
pub const FILE_NAME: &str = "cloud-config.yml";
/// A cloud-config is a small text file; refuse anything that is clearly something else.
const MAX_LEN: u64 = 1 << 20;

/// Read and check the file; returns its bytes.
pub fn load(path: &Path) -> Result<Vec<u8>> {
    let bad =
        |why: String| InstallError::Input(format!("--cloud-config {}: {why}", path.display()));
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_LEN {
        return Err(bad(format!("{} bytes, more than {MAX_LEN}", meta.len())));
    }
    let bytes = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    validate(text).map_err(bad)?;
    Ok(bytes)
}

/// `#cloud-config` on the first line, then YAML whose document is a mapping (or empty).
pub fn validate(text: &str) -> std::result::Result<(), String> {
    let first = text.lines().next().unwrap_or("").trim_end();
    if first != HEADER {
        return Err(format!(
            "line 1: must be `{HEADER}` (found {:?})",
            first.chars().take(40).collect::<String>()
        ));
    }
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        format!("{at}not valid YAML: {}", e.without_snippet())
    })?;
    match value {
        serde_json::Value::Object(_) | serde_json::Value::Null => Ok(()),
        other => Err(format!(
            "the document must be a mapping of keys (hostname, users, ...), found {}",
            match other {
                serde_json::Value::Array(_) => "a list",
                serde_json::Value::String(_) => "a string",
                _ => "a scalar",
            }
        )),
    }
}

/// Mount the OEM partition `node` (ext4), write the file, sync, unmount.
pub fn write_to_oem(node: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keel-install-oem-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| InstallError::Io(format!("{}: {e}", dir.display())))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounted = mount(Some(node), &dir, Some("ext4"), flags, None::<&str>);
    if let Err(e) = mounted {
        let _ = fs::remove_dir(&dir);
        return Err(InstallError::Io(format!(
            "mounting the OEM partition {} (ext4): {e}",
            node.display()
        )));
    }
    let result = write_file(&dir.join(FILE_NAME), bytes);
    let unmounted = umount(&dir);
    let _ = fs::remove_dir(&dir);
    result?;
    unmounted.map_err(|e| {
        InstallError::Io(format!(
            "unmounting the OEM partition {}: {e}",
            node.display()
        ))
    })?;
    Ok(PathBuf::from("/oem").join(FILE_NAME))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| InstallError::Io(format!("{}: {e}", path.display()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_yaml_are_checked() {
        assert!(validate("#cloud-config\nhostname: box\nusers:\n  - name: core\n").is_ok());
        assert!(validate("#cloud-config\n").is_ok());
        let e = validate("hostname: box\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = validate("#cloud-config\nhostname: [unclosed\n").unwrap_err();
        assert!(e.contains("not valid YAML"), "{e}");
        let e = validate("#cloud-config\n- a\n- b\n").unwrap_err();
        assert!(e.contains("mapping"), "{e}");
    }
}
