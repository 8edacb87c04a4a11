//! The EFI system partition: the unified kernel image every image boots under UEFI, and for
//! boards that also boot under legacy BIOS, GRUB's menu, the kernel and the initramfs beside it
//! (GRUB itself goes into the MBR and BIOS-BOOT once the disk exists: [`grub_bios`]).

use std::path::{Path, PathBuf};

use crate::definition::board::Firmware;
use crate::definition::Board;
use crate::error::{io_at, Error, Result};
use crate::grub_bios;
use crate::mkfs;
use crate::reuse::{Built, Key, Kind};
use crate::uki;

/// What the ESP is made of.
pub struct Inputs<'a> {
    pub board: &'a Board,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// The image's os-release (the UKI's `.osrel`).
    pub os_release: &'a str,
    pub cmdline: &'a str,
    /// Scratch directory; `esp.img` is written there.
    pub work: &'a Path,
    pub epoch: u64,
    /// Where a UKI made from the same inputs may be found, and this one kept.
    pub built: &'a Built,
}

pub struct Esp {
    /// The FAT image, `partitions.esp_mib` large.
    pub image: PathBuf,
    pub uki_bytes: u64,
    /// The UKI came from an earlier build with the same inputs.
    pub uki_reused: bool,
}

/// Builds the unified kernel image and the FAT image holding it (and GRUB's files for a BIOS
/// board); refuses boot files that do not fit the board's ESP with room to spare.
pub fn build(inp: &Inputs) -> Result<Esp> {
    let work = inp.work;
    let board = inp.board;
    let uki_path = work.join("BOOTX64.EFI");
    let parts = uki::Parts {
        stub: Path::new(uki::STUB),
        osrel: inp.os_release.as_bytes(),
        cmdline: inp.cmdline,
        linux: inp.kernel,
        initrd: inp.initramfs,
    };
    let key = uki_key(&parts, inp.epoch)?;
    let uki_reused = inp.built.fetch(Kind::Uki, &key, &uki_path)?;
    if !uki_reused {
        uki::build(&parts, work, &uki_path, inp.epoch)?;
        inp.built.keep(Kind::Uki, &key, &uki_path)?;
    }
    let uki_bytes = file_size(&uki_path)?;
    let bios = board.firmware.contains(&Firmware::Bios);
    // Legacy BIOS: GRUB reads its menu, the kernel and the initramfs from the ESP too.
    let grub_cfg = work.join("grub.cfg");
    let mut files: Vec<(&Path, &str)> = vec![(&uki_path, "EFI/BOOT/BOOTX64.EFI")];
    let mut content = uki_bytes;
    if bios {
        std::fs::write(&grub_cfg, grub_bios::config(inp.cmdline)).map_err(io_at(&grub_cfg))?;
        files.push((&grub_cfg, grub_bios::CONFIG));
        files.push((inp.kernel, grub_bios::KERNEL));
        files.push((inp.initramfs, grub_bios::INITRAMFS));
        content += file_size(inp.kernel)? + file_size(inp.initramfs)?;
    }
    let size = board.partitions.esp_mib << 20;
    if content + (4 << 20) > size {
        return Err(Error::input(format!(
            "{}: partitions.esp_mib: the boot files (unified kernel image{}) are {} MiB, too big for a {} MiB ESP",
            board.path.display(),
            if bios { ", and kernel + initramfs for GRUB" } else { "" },
            content.div_ceil(1 << 20),
            board.partitions.esp_mib
        )));
    }
    let image = work.join("esp.img");
    mkfs::vfat(&image, size, "EFI-SYSTEM", inp.epoch, &files)?;
    Ok(Esp {
        image,
        uki_bytes,
        uki_reused,
    })
}

/// Everything a UKI is made of (a missing stub is reported by `uki::build`).
fn uki_key(parts: &uki::Parts, epoch: u64) -> Result<String> {
    let mut key = Key::new(Kind::Uki);
    if parts.stub.is_file() {
        key.add_file("stub", parts.stub)?;
    }
    key.add("osrel", parts.osrel)
        .add("cmdline", parts.cmdline.as_bytes())
        .add("epoch", &epoch.to_le_bytes());
    key.add_file("linux", parts.linux)?
        .add_file("initrd", parts.initrd)?
        .add_tool("objcopy")?;
    Ok(key.finish())
}

fn file_size(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).map_err(io_at(p))?.len())
}
