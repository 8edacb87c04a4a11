//! First boot on a disk larger than the image: move the backup GPT to the disk's end, grow ROOT
//! to fill it, tell the kernel (BLKPG_RESIZE_PARTITION, which works while the disk is in use),
//! and grow the mounted ext4 online (EXT4_IOC_RESIZE_FS). Each step checks the state first, so
//! a boot interrupted half-way finishes the job on the next one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use keel_format::gpt::DiskTable;
use keel_format::layout::SECTOR;

use crate::disk::{BootDisk, PartitionNode};

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Is the backup GPT short of the disk's last sector?
pub fn needs_relocation(backup_lba: u64, disk_sectors: u64) -> bool {
    backup_lba + 1 < disk_sectors
}

/// Size of an ext4 filesystem, from its superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext4Size {
    pub block_size: u64,
    pub blocks: u64,
}

/// Parse the 1024-byte ext4 superblock (found at byte 1024 of the filesystem).
pub fn parse_ext4_superblock(sb: &[u8]) -> Option<Ext4Size> {
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    if sb.len() < 1024 || u16::from_le_bytes([sb[56], sb[57]]) != 0xef53 {
        return None;
    }
    let log = u32_at(24);
    if log > 6 {
        return None;
    }
    let incompat_64bit = u32_at(96) & 0x80 != 0;
    let hi = if incompat_64bit {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    Some(Ext4Size {
        block_size: 1024 << log,
        blocks: (hi << 32) | u64::from(u32_at(4)),
    })
}

pub fn read_ext4_size(node: &Path) -> Result<Ext4Size> {
    let mut f = File::open(node).with_context(|| format!("opening {}", node.display()))?;
    let mut sb = vec![0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)
        .with_context(|| format!("reading the ext4 superblock of {}", node.display()))?;
    parse_ext4_superblock(&sb)
        .with_context(|| format!("{} holds no ext4 filesystem", node.display()))
}

/// The block count to grow to, if the partition has room for at least one more block.
pub fn fs_target_blocks(partition_bytes: u64, fs: Ext4Size) -> Option<u64> {
    let fits = partition_bytes / fs.block_size;
    (fits > fs.blocks).then_some(fits)
}

/// Before ROOT is mounted: bring the GPT and the kernel's partition to the disk's full size.
/// Returns whether anything changed.
pub fn grow_partition(disk: &BootDisk, table: &mut DiskTable, number: u32) -> Result<bool> {
    let disk_bytes = disk.size_bytes()?;
    let mut changed = false;
    if needs_relocation(table.backup_lba(), disk_bytes / SECTOR) {
        let before = table.partition(number)?;
        table.relocate_backup(disk_bytes)?;
        let grew = table.grow_to_end(number)?;
        disk.write_table(table)?;
        let after = table.partition(number)?;
        crate::info!(
            "disk is {} MiB, larger than the image: moved the backup GPT to its end{}",
            disk_bytes >> 20,
            if grew {
                format!(
                    " and grew {} from {} to {} MiB",
                    after.label,
                    before.size() >> 20,
                    after.size() >> 20
                )
            } else {
                String::new()
            }
        );
        changed = true;
    }
    let want = table.partition(number)?;
    let kernel = disk.partition(number)?;
    if kernel.sectors * 512 != want.size() {
        if kernel.start * 512 != want.offset() {
            bail!(
                "the kernel has partition {number} at sector {}, the GPT at {}: not resizing",
                kernel.start,
                want.first_lba
            );
        }
        resize_kernel_partition(disk, number, want.offset(), want.size())?;
        crate::info!(
            "told the kernel {} is now {} MiB",
            kernel.name,
            want.size() >> 20
        );
        changed = true;
    }
    Ok(changed)
}

fn resize_kernel_partition(disk: &BootDisk, number: u32, start: u64, length: u64) -> Result<()> {
    let f = disk.open_read()?;
    let mut part = BlkpgPartition {
        start: start as i64,
        length: length as i64,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at a live blkpg_partition for the duration of the call.
    unsafe { blkpg(f.as_raw_fd(), &arg) }
        .with_context(|| format!("BLKPG_RESIZE_PARTITION of partition {number}"))?;
    Ok(())
}

/// After ROOT is mounted at `mountpoint`: grow the filesystem to fill its partition.
pub fn grow_filesystem(part: &PartitionNode, mountpoint: &Path) -> Result<bool> {
    let fs = read_ext4_size(&part.node())?;
    let Some(blocks) = fs_target_blocks(part.sectors * 512, fs) else {
        return Ok(false);
    };
    let dir =
        File::open(mountpoint).with_context(|| format!("opening {}", mountpoint.display()))?;
    {
        let _guard = crate::pid1::critical();
        // SAFETY: the argument is a pointer to a u64 block count.
        unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }.with_context(|| {
            format!(
                "EXT4_IOC_RESIZE_FS of {} to {blocks} blocks",
                mountpoint.display()
            )
        })?;
    }
    crate::info!(
        "grew the filesystem on {} from {} to {} MiB",
        part.name,
        (fs.blocks * fs.block_size) >> 20,
        (blocks * fs.block_size) >> 20
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation_rule() {
        assert!(!needs_relocation(2047, 2048));
        assert!(needs_relocation(2047, 4096));
    }

    #[test]
    fn target_blocks() {
        let fs = Ext4Size {
            block_size: 4096,
            blocks: 1000,
        };
        assert_eq!(fs_target_blocks(1000 * 4096, fs), None);
        assert_eq!(fs_target_blocks(1000 * 4096 + 4095, fs), None);
        assert_eq!(fs_target_blocks(2000 * 4096, fs), Some(2000));
    }

    /// Against a filesystem made by the real mkfs.ext4.
    #[test]
    fn superblock_of_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let st = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-L", "ROOT"])
            .arg(&img)
            .arg("10000")
            .status()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(st.success());
        assert_eq!(
            read_ext4_size(&img).unwrap(),
            Ext4Size {
                block_size: 4096,
                blocks: 10000
            }
        );
        let mut zero = vec![0u8; 1024];
        assert_eq!(parse_ext4_superblock(&zero), None);
        zero[56] = 0x53;
        zero[57] = 0xef;
        assert!(parse_ext4_superblock(&zero).is_some());
    }
}
