//! What the kernel knows about block devices, read from sysfs: which partition /usr comes
//! from (through dm-verity), the device node of a partition, and loop devices over an image.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::disk::dev_of;
use crate::error::{Result, UpdateError};

const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// The partition a mounted file system (e.g. /usr) reads from, looking through stacked devices
/// such as dm-verity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingPartition {
    /// The whole disk's device node, e.g. /dev/vda.
    pub disk: PathBuf,
    /// Kernel name of the partition, e.g. vda3.
    pub name: String,
    /// Partition number in the disk's table.
    pub number: u32,
}

/// The partition under the file system mounted at `mount` (stat → major:minor → slaves → …).
pub fn backing_partition(mount: &Path) -> Result<BackingPartition> {
    let meta = fs::metadata(mount)
        .map_err(|e| UpdateError::System(format!("cannot stat {}: {e}", mount.display())))?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let mut dir = sys_block_dir(major, minor).ok_or_else(|| {
        UpdateError::System(format!(
            "{} is on device {major}:{minor}, which is not a block device",
            mount.display()
        ))
    })?;
    // dm-verity's data and hash devices are the same partition: one slave per level.
    for _ in 0..8 {
        let slaves = list_dir(&dir.join("slaves"));
        match slaves.as_slice() {
            [] => break,
            [one] => {
                dir = fs::canonicalize(dir.join("slaves").join(one)).map_err(|e| {
                    UpdateError::System(format!("cannot follow {}: {e}", dir.display()))
                })?
            }
            many => {
                return Err(UpdateError::System(format!(
                    "{} is on {}, which stacks several devices ({}); cannot tell the USR slot",
                    mount.display(),
                    dir.display(),
                    many.join(", ")
                )))
            }
        }
    }
    let name = file_name(&dir);
    let number: u32 = read_trimmed(&dir.join("partition"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            UpdateError::System(format!(
                "{} comes from block device {name}, which is not a partition",
                mount.display()
            ))
        })?;
    let disk_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(BackingPartition {
        disk: device_node(&disk_dir).ok_or_else(|| {
            UpdateError::System(format!("no device node for the disk holding {name}"))
        })?,
        name,
        number,
    })
}

/// The device node of partition `number` of the block device `disk`, if the kernel has one.
pub fn partition_node(disk: &Path, number: u32) -> Option<PathBuf> {
    let (major, minor) = dev_of(&fs::metadata(disk).ok()?);
    let dir = sys_block_dir(major, minor)?;
    list_dir(&dir)
        .into_iter()
        .map(|n| dir.join(n))
        .find(|d| read_trimmed(&d.join("partition")).and_then(|s| s.parse().ok()) == Some(number))
        .and_then(|d| device_node(&d))
}

/// The loop device (e.g. /dev/loop0) whose backing file is the image at `path`, if any.
pub fn loop_device_backed_by(meta: &fs::Metadata) -> Option<String> {
    for name in list_dir(Path::new("/sys/block")) {
        if !name.starts_with("loop") {
            continue;
        }
        let Some(backing) = read_trimmed(
            &Path::new("/sys/block")
                .join(&name)
                .join("loop/backing_file"),
        ) else {
            continue;
        };
        let backing = backing.trim_end_matches(" (deleted)");
        let same = fs::metadata(backing)
            .map(|b| b.dev() == meta.dev() && b.ino() == meta.ino())
            .unwrap_or(false);
        if same {
            return Some(format!("/dev/{name}"));
        }
    }
    None
}

fn sys_block_dir(major: u32, minor: u32) -> Option<PathBuf> {
    fs::canonicalize(Path::new(SYS_DEV_BLOCK).join(format!("{major}:{minor}"))).ok()
}

/// /dev/NAME, or /dev/block/MAJOR:MINOR where udev made no NAME node.
fn device_node(sys_dir: &Path) -> Option<PathBuf> {
    let named = Path::new("/dev").join(file_name(sys_dir));
    if named.exists() {
        return Some(named);
    }
    let dev = read_trimmed(&sys_dir.join("dev"))?;
    let by_number = Path::new("/dev/block").join(dev);
    by_number.exists().then_some(by_number)
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
