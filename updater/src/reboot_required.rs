//! `/run/reboot-required`: the flag that an update is staged, for the reboot manager and for
//! kured (Kubernetes' reboot daemon watches exactly this path). Written after a successful
//! apply on the running system, removed by a rollback; `/run` forgets it at the reboot.

use std::path::Path;

use keel_format::update_conf::REBOOT_REQUIRED;

/// Sets the flag under `root`, naming the staged version in `reboot-required.pkgs` (Debian's
/// companion file). Atomic: a reader sees no file or a whole one.
pub fn set(root: &Path, version: &str) -> std::io::Result<()> {
    let flag = root.join(REBOOT_REQUIRED);
    if let Some(dir) = flag.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let pkgs = flag.with_extension("pkgs");
    write_atomic(&pkgs, format!("keel-usr {version}\n").as_bytes())?;
    write_atomic(&flag, b"*** System restart required ***\n")
}

/// Clears the flag under `root` (nothing to do when it is not there).
pub fn clear(root: &Path) -> std::io::Result<()> {
    let flag = root.join(REBOOT_REQUIRED);
    for p in [flag.clone(), flag.with_extension("pkgs")] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_clear() {
        let t = tempfile::tempdir().unwrap();
        set(t.path(), "2.0.0").unwrap();
        assert!(t.path().join("run/reboot-required").is_file());
        assert_eq!(
            std::fs::read_to_string(t.path().join("run/reboot-required.pkgs")).unwrap(),
            "keel-usr 2.0.0\n"
        );
        clear(t.path()).unwrap();
        clear(t.path()).unwrap();
        assert!(!t.path().join("run/reboot-required").exists());
        assert!(!t.path().join("run/reboot-required.pkgs").exists());
    }
}
