//! Legacy BIOS boot through Debian's GRUB i386-pc images (package grub-pc-bin): `boot.img` in
//! the MBR's boot-code area, `core.img` (made by `grub-mkimage -O i386-pc`) in the BIOS-BOOT
//! partition, and a `grub.cfg` on the ESP that boots the kernel and Keel initramfs the UKI
//! carries.
//!
//! [`install`] patches the two images exactly as `grub-bios-setup --no-rs-codes` does when it
//! embeds core.img in a GPT BIOS-boot partition (GRUB 2.06 `util/setup.c`). grub-bios-setup
//! itself cannot run on an image file without mounting its directory from a block device (it
//! insists on guessing a "root device" from it), so the builder does the same few writes; a
//! test runs the real grub-bios-setup on the same disk and compares every byte.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::disk::Placement;
use crate::error::{io_at, Error, Result};
use crate::tool::Tool;

/// Where grub-pc-bin installs the i386-pc images and modules.
pub const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// ESP paths GRUB reads (partition 1: `(,gpt1)` is "partition 1 of the disk GRUB booted from").
pub const CONFIG: &str = "grub/grub.cfg";
pub const KERNEL: &str = "keel/vmlinuz";
pub const INITRAMFS: &str = "keel/initramfs.img";
const PREFIX: &str = "(,gpt1)/grub";
/// Everything core.img needs to read grub.cfg from a FAT ESP on a GPT disk and boot Linux;
/// nothing is loaded from disk later (the ESP holds no module directory).
const MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "linux",
    "boot",
    "echo",
    "serial",
    "terminal",
    "test",
];

const SECTOR: usize = 512;
/// Offsets in boot.img (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h).
const BPB_START: usize = 0x3;
const BPB_END: usize = 0x5a;
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
const WINDOWS_NT_MAGIC: usize = 0x1b8;
const PART_END: usize = 0x1fe;
/// A blocklist entry at the end of core.img's first sector (diskboot.img): u64 start sector,
/// u16 sector count, u16 load segment.
const BLOCKLIST_ENTRY: usize = 12;
/// core.img's second sector onwards loads at 0x8200 (segment 0x820).
const FIRST_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);
/// grub-bios-setup's cap: core.img must fit below 0x78000 when loaded at 0x8200.
const MAX_CORE_SECTORS: usize = (0x78000 - 0x8200) / SECTOR;

/// The files the BIOS boot needs, checked before any work.
pub fn check_host() -> Result<()> {
    crate::tool::find("grub-mkimage")?;
    for f in ["boot.img", "diskboot.img", "kernel.img", "moddep.lst"] {
        let p = Path::new(GRUB_PC_DIR).join(f);
        if !p.is_file() {
            return Err(Error::Environment(format!(
                "{} is missing (Debian package grub-pc-bin; ci/install-deps.sh installs it)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// `grub-mkimage -O i386-pc` into `out`. Its output depends only on its inputs (no time stamps).
pub fn make_core(out: &Path) -> Result<PathBuf> {
    Tool::new("grub-mkimage")?
        .args(["-O", "i386-pc", "-d", GRUB_PC_DIR, "-p", PREFIX, "-o"])
        .arg(out)
        .args(MODULES)
        .run()?;
    Ok(out.to_path_buf())
}

/// The menu: the same kernel, initramfs and command line as the unified kernel image, on the
/// serial console as well as the screen. keel-init picks the USR slot, so there is one entry.
pub fn config(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=0\n\
         menuentry \"Keel\" {{\n\
         \techo \"GRUB: loading /{KERNEL} and /{INITRAMFS}\"\n\
         \tlinux /{KERNEL} {cmdline}\n\
         \tinitrd /{INITRAMFS}\n\
         }}\n"
    )
}

pub fn boot_img() -> Result<Vec<u8>> {
    let p = Path::new(GRUB_PC_DIR).join("boot.img");
    std::fs::read(&p).map_err(io_at(&p))
}

/// Makes core.img (in `work`) and writes it and boot.img into `disk`, whose BIOS-boot partition
/// is `bios_boot`; returns core.img's size.
pub fn install_built(disk: &Path, work: &Path, bios_boot: Placement) -> Result<usize> {
    let core = make_core(&work.join("core.img"))?;
    let core = std::fs::read(&core).map_err(io_at(&core))?;
    install(disk, &boot_img()?, &core, bios_boot)?;
    Ok(core.len())
}

/// Write `boot_img` and `core_img` into `disk` (whose sector 0 is the protective MBR and whose
/// partition `bios_boot` is the BIOS-boot partition), as grub-bios-setup does.
pub fn install(disk: &Path, boot_img: &[u8], core_img: &[u8], bios_boot: Placement) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io_at(disk))?;
    let mut mbr = [0u8; SECTOR];
    f.read_exact(&mut mbr).map_err(io_at(disk))?;
    let (boot, core) = patch(&mbr, boot_img, core_img, bios_boot)?;
    f.seek(SeekFrom::Start(bios_boot.offset()))
        .map_err(io_at(disk))?;
    f.write_all(&core).map_err(io_at(disk))?;
    f.seek(SeekFrom::Start(0)).map_err(io_at(disk))?;
    f.write_all(&boot).map_err(io_at(disk))?;
    f.sync_all().map_err(io_at(disk))?;
    Ok(())
}

/// The new sector 0 and the sectors for the BIOS-boot partition.
fn patch(
    old_mbr: &[u8; SECTOR],
    boot_img: &[u8],
    core_img: &[u8],
    bios_boot: Placement,
) -> Result<(Vec<u8>, Vec<u8>)> {
    if boot_img.len() != SECTOR {
        return Err(Error::Format(format!(
            "GRUB boot.img is {} bytes, not {SECTOR}",
            boot_img.len()
        )));
    }
    let core_sectors = core_img.len().div_ceil(SECTOR);
    if core_img.len() < SECTOR || core_sectors > MAX_CORE_SECTORS {
        return Err(Error::Format(format!(
            "GRUB core.img is {} bytes: it must be 1 to {MAX_CORE_SECTORS} sectors",
            core_img.len()
        )));
    }
    if (bios_boot.sectors as usize) < core_sectors {
        return Err(Error::Input(format!(
            "GRUB core.img needs {core_sectors} sectors but BIOS-BOOT has {}: raise partitions.bios_boot_mib",
            bios_boot.sectors
        )));
    }
    let mut boot = boot_img.to_vec();
    boot[BPB_START..BPB_END].copy_from_slice(&old_mbr[BPB_START..BPB_END]);
    // A hard disk: jump over the check that works around BIOSes passing a wrong boot drive.
    boot[DRIVE_CHECK] = 0x90;
    boot[DRIVE_CHECK + 1] = 0x90;
    // Keep the disk signature and the protective partition entry.
    boot[WINDOWS_NT_MAGIC..PART_END].copy_from_slice(&old_mbr[WINDOWS_NT_MAGIC..PART_END]);
    boot[BOOT_DRIVE] = 0xff;
    let first = bios_boot.first_lba;
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&first.to_le_bytes());

    let mut core = core_img.to_vec();
    core.resize(core_sectors * SECTOR, 0);
    let no_rs_length = u16::from_le_bytes([core[SECTOR + 0x14], core[SECTOR + 0x15]]);
    if no_rs_length == 0xffff {
        return Err(Error::Format("GRUB core.img version mismatch".into()));
    }
    // Clear the blocklists diskboot.img carries (only their start field, as setup.c does),
    // then describe sectors 1.. of core.img as one contiguous run, and a terminator.
    let mut at = SECTOR - BLOCKLIST_ENTRY;
    while u16::from_le_bytes([core[at + 8], core[at + 9]]) != 0 {
        core[at..at + 8].fill(0);
        at = at.checked_sub(BLOCKLIST_ENTRY).ok_or_else(|| {
            Error::Format("GRUB core.img: no terminator in the blocklists".into())
        })?;
    }
    let entry = SECTOR - BLOCKLIST_ENTRY;
    if core_sectors > 1 {
        core[entry..entry + 8].copy_from_slice(&(first + 1).to_le_bytes());
        core[entry + 8..entry + 10].copy_from_slice(&(core_sectors as u16 - 1).to_le_bytes());
        core[entry + 10..entry + 12].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
        let term = entry - BLOCKLIST_ENTRY;
        core[term..entry].fill(0);
    } else {
        core[entry..entry + BLOCKLIST_ENTRY].fill(0);
    }
    Ok((boot, core))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_format::layout;
    use std::process::Command;

    /// The builder's writes equal the real grub-bios-setup's (`--no-rs-codes`) on the same disk.
    /// grub-bios-setup needs its directory on a block device GRUB can open, so the test serves
    /// boot.img and core.img from a loop-mounted ext4 filesystem (root, loop devices).
    #[test]
    fn same_bytes_as_grub_bios_setup() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("disk.raw");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let st = Command::new("sgdisk")
            .args(["-n1:4096:+32M", "-t1:ef00", "-n2:2048:4095", "-t2:ef02"])
            .arg(&disk)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let ours = d.path().join("ours.raw");
        std::fs::copy(&disk, &ours).unwrap();
        let core = make_core(&d.path().join("core.img")).unwrap();
        let bios_boot = Placement {
            role: layout::BIOS_BOOT,
            first_lba: 2048,
            sectors: 2048,
        };
        install(
            &ours,
            &boot_img().unwrap(),
            &std::fs::read(&core).unwrap(),
            bios_boot,
        )
        .unwrap();

        let fs = d.path().join("dir.ext4");
        std::fs::File::create(&fs)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        assert!(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&fs)
            .status()
            .unwrap()
            .success());
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&fs)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let loopdev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mnt = d.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .arg(&loopdev)
            .arg(&mnt)
            .status()
            .unwrap()
            .success();
        let setup = mounted.then(|| {
            std::fs::copy(
                Path::new(GRUB_PC_DIR).join("boot.img"),
                mnt.join("boot.img"),
            )
            .unwrap();
            std::fs::copy(&core, mnt.join("core.img")).unwrap();
            let map = d.path().join("device.map");
            std::fs::write(&map, format!("(hd0) {}\n", disk.display())).unwrap();
            Command::new(Path::new(GRUB_PC_DIR).join("grub-bios-setup"))
                .args(["--skip-fs-probe", "--no-rs-codes", "-d"])
                .arg(&mnt)
                .arg("-m")
                .arg(&map)
                .arg(&disk)
                .output()
                .unwrap()
        });
        if mounted {
            Command::new("umount").arg(&mnt).status().unwrap();
        }
        Command::new("losetup")
            .args(["-d", &loopdev])
            .status()
            .unwrap();
        assert!(mounted, "mounting {loopdev} failed");
        let setup = setup.unwrap();
        assert!(setup.status.success(), "grub-bios-setup: {setup:?}");
        let (a, b) = (std::fs::read(&disk).unwrap(), std::fs::read(&ours).unwrap());
        assert!(
            a[..446] != vec![0u8; 446][..],
            "grub-bios-setup wrote no boot code"
        );
        let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
        assert_eq!(first_diff, None, "first differing byte");
        // sgdisk still reads a protective MBR and a clean GPT.
        let v = Command::new("sgdisk")
            .arg("-v")
            .arg(&ours)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }

    #[test]
    fn refuses_a_small_bios_boot_partition() {
        let mbr = [0u8; SECTOR];
        let part = Placement {
            role: keel_format::layout::BIOS_BOOT,
            first_lba: 2048,
            sectors: 4,
        };
        let e = patch(&mbr, &[0u8; SECTOR], &vec![0u8; 10 * SECTOR], part).unwrap_err();
        assert!(e.to_string().contains("bios_boot_mib"), "{e}");
    }
}
