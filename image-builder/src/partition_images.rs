//! The partition images besides USR: the ESP (with the unified kernel image), the empty OEM
//! ext4, and ROOT, an ext4 that already holds the slot's factory /var. `keel build` makes the
//! ESP and OEM on a second thread while mkfs.erofs, which uses one core, makes the USR
//! filesystem, and ROOT on a third once the USR tree (its /var) is staged.

use std::path::{Path, PathBuf};

use keel_format::initramfs::root as root_paths;

use crate::definition::Board;
use crate::error::{io_at, Result};
use crate::esp::{self, Esp};
use crate::mkfs;
use crate::tool::Tool;
use keel_cli_support::progress::Reporter;

pub struct Images {
    pub esp: Esp,
    pub oem: PathBuf,
}

/// The ESP from `inp`, then OEM for the same board, in `inp.work`.
pub fn build(inp: &esp::Inputs, reporter: &Reporter) -> Result<Images> {
    let step = reporter.step("UKI and ESP");
    let esp = esp::build(inp)?;
    step.done(&format!("UKI {} MiB", esp.uki_bytes >> 20));

    let step = reporter.step("OEM (ext4)");
    let board = inp.board;
    let oem = inp.work.join("oem.img");
    ext4(
        &oem,
        "OEM",
        board.partitions.oem_mib,
        board,
        inp.epoch,
        None,
    )?;
    step.done("");
    Ok(Images { esp, oem })
}

/// ROOT in `work/root.img`: an ext4 holding a copy of `factory_var` at `/var` and keel-init's
/// marker that /var is populated, so that a first boot copies nothing (keel-init still fills
/// /var from the slot when ROOT lacks the marker: a ROOT made another way).
pub fn root(work: &Path, board: &Board, epoch: u64, factory_var: &Path) -> Result<PathBuf> {
    let stage = work.join("root-stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(io_at(&stage))?;
    }
    let marker = stage.join(root_paths::VAR_POPULATED);
    let keel_dir = marker.parent().expect("the marker is in a directory");
    std::fs::create_dir_all(keel_dir).map_err(io_at(keel_dir))?;
    std::fs::write(&marker, b"").map_err(io_at(&marker))?;
    if factory_var.is_dir() {
        Tool::new("cp")?
            .arg("-a")
            .arg(factory_var)
            .arg(stage.join("var"))
            .run()?;
    }
    let image = work.join("root.img");
    let made = ext4(
        &image,
        "ROOT",
        board.partitions.root_mib,
        board,
        epoch,
        Some(&stage),
    );
    std::fs::remove_dir_all(&stage).map_err(io_at(&stage))?;
    made?;
    Ok(image)
}

fn ext4(
    image: &Path,
    label: &str,
    mib: u64,
    board: &Board,
    epoch: u64,
    tree: Option<&Path>,
) -> Result<()> {
    mkfs::ext4_with(
        image,
        mib << 20,
        label,
        mkfs::derived_uuid(&format!("{label}-fs"), &board.name),
        mkfs::derived_uuid(&format!("{label}-hash-seed"), &board.name),
        epoch,
        tree,
    )
}
