//! Shipping the reboot manager in every USR tree: the static `keel-reboot-manager` at
//! /usr/bin and its unit, enabled. What it does is `REBOOT_STRATEGY`'s business
//! (reboot-manager/README.md): `best-effort` by default, so a machine without etcd reboots
//! once an update is staged, as Flatcar's do.

use std::path::Path;

use crate::error::Result;
use crate::units;

/// The unit ships with the builder that was compiled beside it (as the updater's do).
pub const UNIT: (&str, &str) = (
    "keel-reboot-manager.service",
    include_str!("../../reboot-manager/units/keel-reboot-manager.service"),
);
pub const BIN: &str = "usr/bin/keel-reboot-manager";
const UNIT_DIR: &str = "usr/lib/systemd/system";

/// Put the reboot manager into `root` (the staging root: usr/, etc/, var/).
pub fn install(root: &Path, bin: &Path) -> Result<()> {
    let bytes = std::fs::read(bin).map_err(crate::error::io_at(bin))?;
    crate::updater::write(&root.join(BIN), &bytes, 0o755)?;
    let (name, text) = UNIT;
    crate::updater::write(&root.join(UNIT_DIR).join(name), text.as_bytes(), 0o644)?;
    units::enable(root, name)?;
    Ok(())
}
