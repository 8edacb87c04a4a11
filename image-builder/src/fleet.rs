//! Shipping the fleet agent in every USR tree: the static `keel-fleet` at /usr/bin (with
//! `fleetctl` naming the same binary, as the source document types it) and fleet.service,
//! not enabled: keel-cloudinit starts it when a cloud-config has a `coreos.fleet` section
//! (fleet/README.md).

use std::path::Path;

use crate::error::Result;

pub const UNIT: (&str, &str) = (
    "fleet.service",
    include_str!("../../fleet/units/fleet.service"),
);
pub const BIN: &str = "usr/bin/keel-fleet";
pub const FLEETCTL: &str = "usr/bin/fleetctl";
const UNIT_DIR: &str = "usr/lib/systemd/system";

pub fn install(root: &Path, bin: &Path) -> Result<()> {
    let bytes = std::fs::read(bin).map_err(crate::error::io_at(bin))?;
    crate::updater::write(&root.join(BIN), &bytes, 0o755)?;
    let link = root.join(FLEETCTL);
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("keel-fleet", &link).map_err(crate::error::io_at(&link))?;
    }
    let (name, text) = UNIT;
    crate::updater::write(&root.join(UNIT_DIR).join(name), text.as_bytes(), 0o644)?;
    Ok(())
}
