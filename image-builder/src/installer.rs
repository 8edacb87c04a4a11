//! Shipping the installer in every USR tree: the static `keel-install` at /usr/bin, and
//! /usr/bin/keel pointing at it, so `keel install --image ... --device ...` works on a Keel
//! system (the live ISO/PXE system and installed ones) as on the build host. The full `keel`
//! CLI (QEMU runner, image builder) has no place on a node; the installer is the one command a
//! node needs.

use std::path::{Path, PathBuf};

use crate::error::{io_at, Error, Result};

pub const BIN: &str = "usr/bin/keel-install";
pub const ALIAS: &str = "usr/bin/keel";

/// `--install-bin`, else `$KEEL_INSTALL`, else a static `keel-install` next to `keel`, else
/// `../x86_64-unknown-linux-gnu/init/keel-install` (where ci/build.sh puts it). A dynamic one
/// next to `keel` (cargo's own build of the crate) is passed over.
pub fn find_install_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::input(format!(
                "--install-bin {}: no such file",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("KEEL_INSTALL").map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::input(format!(
                "KEEL_INSTALL={}: no such file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for p in [
            dir.join("keel-install"),
            dir.join("../x86_64-unknown-linux-gnu/init/keel-install"),
        ] {
            let is_static =
                std::fs::read(&p).is_ok_and(|bytes| check_install_bin(&p, &bytes).is_ok());
            if is_static {
                return Ok(p);
            }
            tried.push(p.display().to_string());
        }
    }
    Err(Error::Environment(format!(
        "no static keel-install binary: pass --install-bin PATH or set KEEL_INSTALL, or build it with ci/build.sh (looked at {})",
        tried.join(", ")
    )))
}

/// It runs on any Keel system, whatever the slot's libraries: it must be static.
pub fn check_install_bin(path: &Path, bytes: &[u8]) -> Result<()> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| {
        Error::input(format!(
            "{}: keel-install is not an ELF executable: {e}",
            path.display()
        ))
    })?;
    if let Some(interp) = elf.interpreter {
        return Err(Error::input(format!(
            "{}: keel-install is dynamically linked (interpreter {interp}); it must be static (ci/build.sh)",
            path.display()
        )));
    }
    Ok(())
}

/// Put the installer and its `keel` alias into `root` (the staging root).
pub fn install(root: &Path, bin: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let to = root.join(BIN);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
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
