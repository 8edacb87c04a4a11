//! Shipping the installer in every USR tree: the static `keel-install` at /usr/bin, and
//! /usr/bin/keel pointing at it, so `keel install --image ... --device ...` works on a Keel
//! system (the live ISO/PXE system and installed ones) as on the build host. The full `keel`
//! CLI (QEMU runner, image builder) has no place on a node; the installer is the one command a
//! node needs.

use std::path::Path;

use crate::error::{io_at, Result};

pub const BIN: &str = "usr/bin/keel-install";
pub const ALIAS: &str = "usr/bin/keel";

/// Put the installer and its `keel` alias into `root` (the staging root).
pub fn install(root: &Path, bin: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let to = root.join(BIN);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    // Replaced, never written in place: the staged tree's files are the rootfs cache's (usr_tree).
    if to.symlink_metadata().is_ok() {
        std::fs::remove_file(&to).map_err(io_at(&to))?;
    }
    std::fs::copy(bin, &to).map_err(io_at(bin))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).map_err(io_at(&to))?;
    let alias = root.join(ALIAS);
    if alias.symlink_metadata().is_ok() {
        std::fs::remove_file(&alias).map_err(io_at(&alias))?;
    }
    std::os::unix::fs::symlink("keel-install", &alias).map_err(io_at(&alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_lays_out_binary_and_alias() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("fake");
        std::fs::write(&bin, b"\x7fELF").unwrap();
        install(root.path(), &bin).unwrap();
        assert_eq!(std::fs::read(root.path().join(BIN)).unwrap(), b"\x7fELF");
        assert_eq!(
            std::fs::read_link(root.path().join(ALIAS)).unwrap(),
            Path::new("keel-install")
        );
    }
}
