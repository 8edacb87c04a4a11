//! The partition images that do not depend on /usr: the ESP (with the unified kernel image)
//! and the empty OEM and ROOT ext4 filesystems. `keel build` makes them on a second thread
//! while mkfs.erofs, which uses one core, makes the USR filesystem.

use std::path::PathBuf;

use crate::error::Result;
use crate::esp::{self, Esp};
use crate::mkfs;
use keel_cli_support::progress::Reporter;

pub struct Images {
    pub esp: Esp,
    pub oem: PathBuf,
    pub root: PathBuf,
}

/// The ESP from `inp`, then OEM and ROOT for the same board, all in `inp.work`.
pub fn build(inp: &esp::Inputs, reporter: &Reporter) -> Result<Images> {
    let step = reporter.step("UKI and ESP");
    let esp = esp::build(inp)?;
    step.done(&format!("UKI {} MiB", esp.uki_bytes >> 20));

    let step = reporter.step("OEM and ROOT (ext4)");
    let board = inp.board;
    let oem = inp.work.join("oem.img");
    let root = inp.work.join("root.img");
    for (img, label, mib) in [
        (&oem, "OEM", board.partitions.oem_mib),
        (&root, "ROOT", board.partitions.root_mib),
    ] {
        mkfs::ext4(
            img,
            mib << 20,
            label,
            mkfs::derived_uuid(&format!("{label}-fs"), &board.name),
            mkfs::derived_uuid(&format!("{label}-hash-seed"), &board.name),
            inp.epoch,
        )?;
    }
    step.done("");
    Ok(Images { esp, oem, root })
}
