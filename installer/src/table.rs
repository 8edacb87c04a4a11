//! After the image is down: move the backup GPT to the end of a larger disk and grow ROOT to
//! fill it (keel-init grows the ext4 inside on first boot, as it does for a cloud disk), then
//! make the kernel re-read the table (BLKRRPART).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use keel_format::gpt::{DiskTable, Partition};
use keel_format::layout::{self, SECTOR};
use serde::Serialize;

use crate::error::{InstallError, Result};

#[derive(Debug, Serialize)]
pub struct Layout {
    /// The backup header moved from the image's end to the disk's.
    pub relocated: bool,
    pub backup_header_lba: u64,
    pub root_grown: bool,
    pub root_bytes: u64,
    pub partitions: Vec<Partition>,
}

/// Fit the table to a disk of `disk_bytes`; the image was `image_bytes`.
pub fn fit(dev: &mut File, image_bytes: u64, disk_bytes: u64) -> Result<Layout> {
    let bad = |e: keel_format::gpt::GptError| {
        InstallError::Verification(format!("the written partition table: {e}"))
    };
    let mut table = DiskTable::read(dev).map_err(bad)?;
    let last_lba = disk_bytes / SECTOR - 1;
    let old_backup = table.backup_lba();
    let mut relocated = false;
    let mut root_grown = false;
    if old_backup < last_lba {
        table.relocate_backup(disk_bytes).map_err(bad)?;
        root_grown = table.grow_to_end(layout::ROOT.number).map_err(bad)?;
        table.write(dev).map_err(bad)?;
        // The image's backup header now lies inside ROOT: clear it so no tool finds a stale
        // second table there.
        if old_backup * SECTOR < image_bytes {
            dev.write_all_at(&[0u8; SECTOR as usize], old_backup * SECTOR)
                .and_then(|_| dev.sync_all())
                .map_err(|e| InstallError::Io(format!("clearing the old backup header: {e}")))?;
        }
        relocated = true;
    }
    let root = table.partition(layout::ROOT.number).map_err(bad)?;
    Ok(Layout {
        relocated,
        backup_header_lba: table.backup_lba(),
        root_grown,
        root_bytes: root.size(),
        partitions: table.partitions(),
    })
}

/// BLKRRPART, retried while the kernel reports the disk busy (udev probing the new partitions).
pub fn reread(dev: &File) -> Result<()> {
    use nix::errno::Errno;
    let mut busy = None;
    for _ in 0..50 {
        match keel_blockdev::reread_partitions(dev) {
            Ok(_) => return Ok(()),
            Err(e) if e.errno() == Some(Errno::EBUSY) => {
                busy = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                let hint = if e.errno() == Some(Errno::EINVAL) {
                    " (a loop device needs partition scanning: losetup -P)"
                } else {
                    ""
                };
                return Err(InstallError::Environment(format!(
                    "re-reading the partition table: {e}{hint}"
                )));
            }
        }
    }
    Err(InstallError::Environment(format!(
        "re-reading the partition table: {}",
        busy.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// After BLKRRPART: a kernel built without a GPT parser (CONFIG_EFI_PARTITION unset) finds no
/// partitions. Then tell it about each one from the table just written (BLKPG_ADD_PARTITION,
/// what `partx -a` does). Returns whether partitions had to be added.
pub fn announce_partitions(dev: &File, known: &[u32], partitions: &[Partition]) -> Result<bool> {
    if partitions.iter().all(|p| known.contains(&p.number)) {
        return Ok(false);
    }
    for p in partitions.iter().filter(|p| !known.contains(&p.number)) {
        keel_blockdev::add_partition(dev, p.number, p.offset(), p.size()).map_err(|e| {
            InstallError::Environment(format!(
                "telling the kernel about partition {} ({}): {e}",
                p.number, p.label
            ))
        })?;
    }
    Ok(true)
}
