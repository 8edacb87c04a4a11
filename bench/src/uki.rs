//! The kernel, initramfs and command line of a built image's unified kernel image (the ESP's
//! `EFI/BOOT/BOOTX64.EFI`), taken out with mtools and objcopy.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{command, files};

/// The sections of one image's UKI, as files.
pub struct Sections {
    pub uki: PathBuf,
    /// `.linux`
    pub kernel: PathBuf,
    /// `.initrd` (the Keel initramfs)
    pub initrd: PathBuf,
    /// `.cmdline`, without the trailing NUL
    pub cmdline: String,
}

/// Copy `disk`'s UKI into `dir` and split it into kernel, initramfs and command line.
pub fn extract(disk: &Path, dir: &Path) -> Result<Sections> {
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let esp = files::partitions(disk)?
        .into_iter()
        .find(|p| p.label == "EFI-SYSTEM")
        .with_context(|| format!("{} has no EFI-SYSTEM partition", disk.display()))?;
    let uki = dir.join("BOOTX64.EFI");
    let _ = std::fs::remove_file(&uki);
    command::run(
        Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@{}", disk.display(), esp.offset()))
            .arg("::/EFI/BOOT/BOOTX64.EFI")
            .arg(&uki),
    )?;
    let section = |name: &str, out: &Path| -> Result<()> {
        command::run(
            Command::new("objcopy")
                .args(["-O", "binary", &format!("--only-section={name}")])
                .arg(&uki)
                .arg(out),
        )?;
        Ok(())
    };
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("keel-initramfs.img");
    let cmdline = dir.join("cmdline");
    section(".linux", &kernel)?;
    section(".initrd", &initrd)?;
    section(".cmdline", &cmdline)?;
    let cmdline = std::fs::read_to_string(&cmdline)?
        .trim_end_matches('\0')
        .trim()
        .to_string();
    Ok(Sections {
        uki,
        kernel,
        initrd,
        cmdline,
    })
}
