//! The live ISO: a hybrid ISO 9660 image (xorriso) that boots the PXE form's live system —
//! kernel + Keel initramfs with the signed payload inside — under BIOS and UEFI, from a CD
//! or from a USB stick.
//!
//! Both firmwares start GRUB from Debian's packages, which reads one `boot/grub/grub.cfg` and
//! the kernel and initramfs from `live/` on the ISO 9660 filesystem:
//! * BIOS: El Torito no-emulation entry `boot/grub/i386-pc/eltorito.img` (`grub-mkimage -O
//!   i386-pc-eltorito`, grub-pc-bin), and GRUB's `boot_hybrid.img` as the MBR for USB sticks;
//! * UEFI: El Torito EFI entry `efi.img`, a FAT image with `EFI/BOOT/BOOTX64.EFI` (`grub-mkimage
//!   -O x86_64-efi`, grub-efi-amd64-bin), also a GPT partition for USB sticks.
//!
//! The arguments are those grub-mkrescue passes to xorriso; the builder makes the GRUB images
//! itself so that every file has the build's SOURCE_DATE_EPOCH.

use std::path::Path;

use crate::error::{io_at, Error, Result};
use crate::mkfs;
use crate::tool::Tool;

pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
pub const GRUB_PC_DIR: &str = crate::grub_bios::GRUB_PC_DIR;
/// Volume label; GRUB's EFI image finds the ISO filesystem by a file on it.
pub const VOLUME_ID: &str = "KEEL_LIVE";
pub const KERNEL: &str = "live/vmlinuz";
pub const INITRAMFS: &str = "live/initramfs.img";
const BIOS_IMAGE: &str = "boot/grub/i386-pc/eltorito.img";
const EFI_IMAGE: &str = "efi.img";
const COMMON_MODULES: &[&str] = &[
    "normal",
    "configfile",
    "linux",
    "boot",
    "echo",
    "serial",
    "terminal",
    "test",
    "search",
    "search_fs_file",
    "iso9660",
];
const BIOS_MODULES: &[&str] = &["biosdisk"];
const EFI_MODULES: &[&str] = &["part_gpt", "part_msdos", "fat", "efi_gop"];

/// The file name of the ISO in the output directory.
pub fn file_name(artifact: &str) -> String {
    format!("{artifact}.iso")
}

/// Tools and GRUB files the ISO needs, checked before any work.
pub fn check_host() -> Result<()> {
    crate::tool::find("xorriso")?;
    crate::tool::find("grub-mkimage")?;
    for (dir, file, package) in [
        (GRUB_PC_DIR, "cdboot.img", "grub-pc-bin"),
        (GRUB_PC_DIR, "boot_hybrid.img", "grub-pc-bin"),
        (GRUB_EFI_DIR, "kernel.img", "grub-efi-amd64-bin"),
    ] {
        let p = Path::new(dir).join(file);
        if !p.is_file() {
            return Err(Error::Environment(format!(
                "{} is missing (Debian package {package}; ci/install-deps.sh installs it)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The menu both GRUBs read. The EFI one starts on the FAT image, so it first finds the ISO
/// filesystem by the kernel's path.
pub fn config(cmdline: &str) -> String {
    format!(
        "search --no-floppy --file --set=root /{KERNEL}\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=0\n\
         menuentry \"Keel live\" {{\n\
         \techo \"GRUB: loading /{KERNEL} and /{INITRAMFS}\"\n\
         \tlinux /{KERNEL} {cmdline}\n\
         \tinitrd /{INITRAMFS}\n\
         }}\n"
    )
}

/// Write the ISO to `out`, staging its tree in `work` (created).
pub fn write(
    out: &Path,
    work: &Path,
    kernel: &Path,
    live_initramfs: &[u8],
    cmdline: &str,
    epoch: u64,
) -> Result<()> {
    let tree = work.join("tree");
    for d in ["live", "boot/grub/i386-pc"] {
        let p = tree.join(d);
        std::fs::create_dir_all(&p).map_err(io_at(&p))?;
    }
    let k = tree.join(KERNEL);
    std::fs::copy(kernel, &k).map_err(io_at(&k))?;
    let i = tree.join(INITRAMFS);
    std::fs::write(&i, live_initramfs).map_err(io_at(&i))?;
    let cfg = tree.join("boot/grub/grub.cfg");
    std::fs::write(&cfg, config(cmdline)).map_err(io_at(&cfg))?;

    // BIOS: cdboot.img + core, the root device is the CD it booted from.
    mkimage(
        "i386-pc-eltorito",
        GRUB_PC_DIR,
        &[BIOS_MODULES, COMMON_MODULES].concat(),
        None,
        &tree.join(BIOS_IMAGE),
    )?;
    // UEFI: GRUB starts on the FAT image; its embedded config finds the ISO filesystem.
    let early = work.join("early.cfg");
    std::fs::write(
        &early,
        format!("search --no-floppy --file --set=root /{KERNEL}\nset prefix=($root)/boot/grub\n"),
    )
    .map_err(io_at(&early))?;
    let efi_loader = work.join("BOOTX64.EFI");
    mkimage(
        "x86_64-efi",
        GRUB_EFI_DIR,
        &[EFI_MODULES, COMMON_MODULES].concat(),
        Some(&early),
        &efi_loader,
    )?;
    let loader_size = std::fs::metadata(&efi_loader)
        .map_err(io_at(&efi_loader))?
        .len();
    // FAT12/16 with room to spare; El Torito counts it in 512-byte sectors (16 bits).
    let efi_img = tree.join(EFI_IMAGE);
    let fat_size = (loader_size + (1 << 20)).next_multiple_of(1 << 20);
    mkfs::vfat_small(
        &efi_img,
        fat_size,
        "KEEL-EFI",
        epoch,
        &[(&efi_loader, "EFI/BOOT/BOOTX64.EFI")],
    )?;
    set_times(&tree, epoch)?;

    Tool::new("xorriso")?
        .args(["-as", "mkisofs", "-graft-points", "-quiet"])
        .args(["-V", VOLUME_ID, "-r"])
        .args(["-b", BIOS_IMAGE, "-no-emul-boot", "-boot-load-size", "4"])
        .args(["-boot-info-table", "--grub2-boot-info", "--grub2-mbr"])
        .arg(Path::new(GRUB_PC_DIR).join("boot_hybrid.img"))
        .args([
            "--efi-boot",
            EFI_IMAGE,
            "-efi-boot-part",
            "--efi-boot-image",
        ])
        .args(["--protective-msdos-label", "-o"])
        .arg(out)
        .arg(&tree)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()?;
    Ok(())
}

fn mkimage(
    format: &str,
    dir: &str,
    modules: &[&str],
    config: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let mut t = Tool::new("grub-mkimage")?
        .args(["-O", format, "-d", dir, "-p", "/boot/grub", "-o"])
        .arg(out);
    if let Some(c) = config {
        t = t.arg("-c").arg(c);
    }
    t.args(modules).run()?;
    Ok(())
}

/// Every file and directory under `root` gets modification time `epoch` (xorriso records
/// them; SOURCE_DATE_EPOCH only pins the volume's own dates).
fn set_times(root: &Path, epoch: u64) -> Result<()> {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).map_err(io_at(&p))? {
                stack.push(e.map_err(io_at(&p))?.path());
            }
        }
        let f = std::fs::File::open(&p).map_err(io_at(&p))?;
        f.set_modified(when).map_err(io_at(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_grubs_find_the_live_files() {
        let c = config("console=ttyS0");
        assert!(c.starts_with("search --no-floppy --file --set=root /live/vmlinuz\n"));
        assert!(c.contains("\tlinux /live/vmlinuz console=ttyS0\n\tinitrd /live/initramfs.img\n"));
    }
}
