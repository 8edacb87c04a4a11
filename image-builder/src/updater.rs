//! Shipping the updater in every USR tree (updater/README.md, "What the builder must do"):
//! the static `keel-update` at /usr/bin, its health-gate units and the update agent (enabled), the
//! `keel-health-generator` symlink, and the public keys the running system trusts for
//! payloads at /usr/share/keel/keys/<key id>.pem. The release file is written by `usr_tree`.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_format::keys;

use crate::error::{io_at, Result};
use crate::units;

/// The units ship with the builder that was compiled beside them, so an image never gets
/// units from a different checkout than its builder.
pub const UNITS: [(&str, &str); 4] = [
    (
        "keel-health-check.service",
        include_str!("../../updater/units/keel-health-check.service"),
    ),
    (
        "keel-health.target",
        include_str!("../../updater/units/keel-health.target"),
    ),
    (
        "keel-update-mark-good.service",
        include_str!("../../updater/units/keel-update-mark-good.service"),
    ),
    (
        "keel-update-agent.service",
        include_str!("../../updater/units/keel-update-agent.service"),
    ),
];
/// The units enabled in every image: the one whose [Install] section pulls the gate into every
/// boot, and the update agent.
pub const ENABLED_UNITS: [&str; 2] = ["keel-update-mark-good.service", "keel-update-agent.service"];
pub const BIN: &str = "usr/bin/keel-update";
pub const GENERATOR: &str = "usr/lib/systemd/system-generators/keel-health-generator";
const UNIT_DIR: &str = "usr/lib/systemd/system";

/// The trusted keys' directory in the staging root (`/usr/share/keel/keys` on the system).
pub fn keys_dir() -> PathBuf {
    Path::new("usr").join(keel_format::initramfs::usr::KEYS)
}

/// Put the updater into `root` (the staging root: usr/, etc/, var/).
pub fn install(root: &Path, bin: &Path, trusted: &[VerifyingKey]) -> Result<()> {
    let bytes = std::fs::read(bin).map_err(io_at(bin))?;
    write(&root.join(BIN), &bytes, 0o755)?;
    for (name, text) in UNITS {
        write(&root.join(UNIT_DIR).join(name), text.as_bytes(), 0o644)?;
    }
    for unit in ENABLED_UNITS {
        units::enable(root, unit)?;
    }
    let generator = root.join(GENERATOR);
    if let Some(parent) = generator.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    if generator.symlink_metadata().is_ok() {
        std::fs::remove_file(&generator).map_err(io_at(&generator))?;
    }
    std::os::unix::fs::symlink("/usr/bin/keel-update", &generator).map_err(io_at(&generator))?;
    for key in trusted {
        write(
            &root
                .join(keys_dir())
                .join(format!("{}.pem", keys::key_id(key))),
            keys::public_key_to_pem(key).as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

pub(crate) fn write(to: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    if to.symlink_metadata().is_ok() {
        std::fs::remove_file(to).map_err(io_at(to))?;
    }
    std::fs::write(to, data).map_err(io_at(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io_at(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_lays_out_binary_units_generator_and_keys() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("fake-bin");
        std::fs::write(&bin, b"\x7fELF").unwrap();
        let key = keel_signing::Key::from_seed([7; 32]);
        install(root.path(), &bin, &[key.public()]).unwrap();
        let r = root.path();
        assert_eq!(std::fs::read(r.join(BIN)).unwrap(), b"\x7fELF");
        for (name, _) in UNITS {
            assert!(r.join(UNIT_DIR).join(name).is_file(), "{name}");
        }
        for unit in ENABLED_UNITS {
            let wants = r
                .join("etc/systemd/system/multi-user.target.wants")
                .join(unit);
            assert!(wants.symlink_metadata().is_ok(), "{unit} not enabled");
        }
        assert_eq!(
            std::fs::read_link(r.join(GENERATOR)).unwrap(),
            Path::new("/usr/bin/keel-update")
        );
        let pem = r.join(keys_dir()).join(format!("{}.pem", key.key_id()));
        let text = std::fs::read_to_string(pem).unwrap();
        assert_eq!(keys::public_key_from_pem(&text).unwrap(), key.public());
    }
}
