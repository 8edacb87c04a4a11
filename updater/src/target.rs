//! The disk an operation works on and how to tell its running slot: the running system (guest)
//! or a disk image / unmounted disk (host).

use std::path::{Path, PathBuf};

use keel_format::layout;

use crate::disk::Disk;
use crate::error::{Result, UpdateError};
use crate::release::{SystemInfo, SYSTEM_RELEASE_FILE};
use crate::slots::{RunningSlot, Slots};

#[derive(Clone, Debug)]
pub struct Target {
    /// Block device or disk image file.
    pub disk: PathBuf,
    pub running: RunningSlot,
    /// The running system's release file; `None` takes version, board and arch from the
    /// running slot's metadata block instead.
    pub release_file: Option<PathBuf>,
}

impl Target {
    /// A disk that is not running (an image file, or a disk attached to another machine): the
    /// running slot is the one the boot rule picks.
    pub fn offline(disk: impl Into<PathBuf>) -> Target {
        Target {
            disk: disk.into(),
            running: RunningSlot::Chosen,
            release_file: None,
        }
    }

    /// The system this process runs on: the slot /usr comes from, on the disk that holds it.
    pub fn running_system() -> Result<Target> {
        Target::running_from(Path::new("/usr"), Path::new(SYSTEM_RELEASE_FILE))
    }

    /// As [`Target::running_system`] with /usr mounted at `usr`.
    pub fn running_from(usr: &Path, release_file: &Path) -> Result<Target> {
        let part = BackingPartition::of(usr)?;
        let mut disk = Disk::open_read(&part.disk)?;
        let entry = disk
            .table()?
            .partition(part.number)
            .map_err(|e| UpdateError::Disk {
                disk: part.disk.clone(),
                reason: format!("{} is mounted from {}: {e}", usr.display(), part.name),
            })?;
        if entry.type_guid != layout::USR_TYPE {
            return Err(UpdateError::Disk {
                disk: part.disk.clone(),
                reason: format!(
                    "{} is mounted from partition {} ({}), which is not a USR partition",
                    usr.display(),
                    part.number,
                    entry.label
                ),
            });
        }
        Ok(Target {
            disk: part.disk,
            running: RunningSlot::Mounted(entry.unique_guid),
            release_file: Some(release_file.to_path_buf()),
        })
    }

    /// Version, channel, board and arch of the running system.
    pub fn system_info(&self, disk: &Disk, slots: &Slots) -> Result<SystemInfo> {
        if let Some(f) = &self.release_file {
            return SystemInfo::from_release_file(f);
        }
        // Only a compatibility check: the claimed values suffice (the payload carries the
        // trust), and a slot signed by a retired key must still be updatable.
        let mut dev = disk.slot(&slots.running, false)?;
        let meta = dev.read_metadata().map_err(|e| UpdateError::Disk {
            disk: self.disk.clone(),
            reason: format!(
                "the running slot {} has no readable metadata block to compare the payload with: {e}",
                slots.running.label
            ),
        })?;
        Ok(SystemInfo::from_metadata(meta.claimed()))
    }
}

/// The partition a mounted file system (e.g. /usr) reads from, below dm-verity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingPartition {
    /// The whole disk's device node, e.g. /dev/vda.
    pub disk: PathBuf,
    /// Kernel name of the partition, e.g. vda3.
    pub name: String,
    /// Partition number in the disk's table.
    pub number: u32,
}

impl BackingPartition {
    pub fn of(mount: &Path) -> Result<BackingPartition> {
        let (part, number) = keel_blockdev::sysfs::backing_partition(mount)
            .map_err(|e| UpdateError::System(e.to_string()))?;
        let disk = part.whole_disk().device_node().ok_or_else(|| {
            UpdateError::System(format!("no device node for the disk holding {}", part.name))
        })?;
        Ok(BackingPartition {
            disk,
            name: part.name,
            number,
        })
    }
}
