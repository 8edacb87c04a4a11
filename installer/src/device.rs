//! The target disk and the checks that keep the installer off a disk in use: a whole disk (not
//! a partition), nothing on it mounted or used as swap, no device stacked on it (holders/), and
//! not the disk under the running system's `/` or `/usr` (followed through device-mapper slaves,
//! partitions and loop backing files). Everything is read from sysfs and /proc.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use keel_blockdev::sysfs::{DevNum, PartitionNode, SysBlock};

use crate::error::{InstallError, Result};

/// A whole block device as sysfs describes it.
#[derive(Clone, Debug)]
pub struct Disk {
    /// The path the user gave.
    pub path: PathBuf,
    /// Kernel name (`vdb`, `loop3`, `nvme0n1`) and sysfs directory.
    pub sys: SysBlock,
    pub dev: DevNum,
    /// Partitions the kernel knows, by number.
    pub partitions: BTreeMap<u32, PartitionNode>,
}

impl Disk {
    /// Resolve `path` to a whole disk; refuses anything else.
    pub fn open(path: &Path) -> Result<Disk> {
        let meta = fs::metadata(path)
            .map_err(|e| InstallError::Input(format!("--device {}: {e}", path.display())))?;
        if !meta.file_type().is_block_device() {
            return Err(InstallError::Input(format!(
                "--device {}: not a block device",
                path.display()
            )));
        }
        let dev = DevNum::from_raw(meta.rdev());
        let sys = SysBlock::of_dev(dev).map_err(|e| {
            InstallError::Environment(format!("--device {}: no sysfs entry ({e})", path.display()))
        })?;
        if sys.partition_number().is_some() {
            return Err(InstallError::Refused(format!(
                "--device {}: is a partition; give the whole disk (/dev/{})",
                path.display(),
                sys.whole_disk().name
            )));
        }
        Ok(Disk {
            path: path.to_path_buf(),
            partitions: sys.partitions(),
            sys,
            dev,
        })
    }

    /// The partition numbers the kernel knows now (sysfs, read afresh).
    pub fn kernel_partitions(&self) -> Vec<u32> {
        self.sys.partitions().into_keys().collect()
    }

    /// The disk and its partitions, by device number.
    fn all_devs(&self) -> Vec<(DevNum, String)> {
        let mut v = vec![(self.dev, self.sys.name.clone())];
        v.extend(self.partitions.values().map(|p| (p.dev, p.name.clone())));
        v
    }

    /// Every reason the disk may not be written; empty when it is free.
    pub fn in_use(&self) -> Vec<String> {
        let mut why = Vec::new();
        let devs = self.all_devs();
        let find = |d: DevNum| devs.iter().find(|(x, _)| *x == d).map(|(_, n)| n.clone());

        for (mount_dev, mountpoint) in mounts() {
            if let Some(n) = find(mount_dev) {
                why.push(format!("/dev/{n} is mounted at {mountpoint}"));
            }
        }
        for (file, d) in swaps() {
            if let Some(n) = find(d) {
                why.push(format!("/dev/{n} is in use as swap ({file})"));
            }
        }
        let mut holders_of = vec![self.sys.clone()];
        holders_of.extend(
            self.partitions
                .values()
                .map(|p| SysBlock::at(self.sys.dir.join(&p.name))),
        );
        for dev in holders_of {
            let held = dev.holders();
            if !held.is_empty() {
                why.push(format!(
                    "/dev/{} is held by {} (device-mapper, RAID or similar)",
                    dev.name,
                    held.join(", ")
                ));
            }
        }
        let running: Vec<&str> = ["/", "/usr"]
            .into_iter()
            .filter(|dir| {
                fs::metadata(dir).is_ok_and(|m| {
                    underlying_disks(DevNum::from_raw(m.dev()), 0).contains(&self.sys.name)
                })
            })
            .collect();
        if !running.is_empty() {
            why.insert(
                0,
                format!(
                    "it holds the running system ({} on it)",
                    running.join(" and ")
                ),
            );
        }
        why.dedup();
        why
    }

    /// The `/dev` node of partition `number`, waiting up to `wait` for the kernel and udev to
    /// make it after a partition table re-read.
    pub fn partition_node(&self, number: u32, wait: std::time::Duration) -> Result<PathBuf> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(p) = self.find_partition_node(number) {
                return Ok(p);
            }
            if std::time::Instant::now() > deadline {
                return Err(InstallError::Environment(format!(
                    "{}: partition {number} did not appear in sysfs and /dev after re-reading the table",
                    self.path.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The node of partition `number`, once it is the block device sysfs announces.
    fn find_partition_node(&self, number: u32) -> Option<PathBuf> {
        let part = self.sys.partitions().remove(&number)?;
        let node = part.node();
        let ok = fs::metadata(&node).is_ok_and(|m| {
            m.file_type().is_block_device() && DevNum::from_raw(m.rdev()) == part.dev
        });
        ok.then_some(node)
    }
}

/// (device, mount point) of every mount in this mount namespace.
fn mounts() -> Vec<(DevNum, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((DevNum::parse(f.get(2)?)?, f.get(4)?.to_string()))
        })
        .collect()
}

/// (file, device) of every active swap area; a swap file counts for the device it lives on.
fn swaps() -> Vec<(String, DevNum)> {
    let text = fs::read_to_string("/proc/swaps").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let file = l.split_whitespace().next()?.to_string();
            let m = fs::metadata(&file).ok()?;
            Some((file, DevNum::of(&m)))
        })
        .collect()
}

/// The whole disks a block device ultimately lives on: every device of its stack (device-mapper
/// and MD slaves) by its whole disk, and through a loop device's backing file, the disks below
/// that file.
fn underlying_disks(dev: DevNum, depth: u32) -> Vec<String> {
    if depth > 8 || dev.major == 0 {
        return Vec::new();
    }
    let Ok(top) = SysBlock::of_dev(dev) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for layer in top.stack() {
        let whole = layer.whole_disk();
        out.push(whole.name.clone());
        if let Some(file) = whole.loop_backing_file() {
            if let Ok(m) = fs::metadata(file) {
                out.extend(underlying_disks(DevNum::from_raw(m.dev()), depth + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test machine's own root is on some disk; that disk must be refused.
    #[test]
    fn the_running_systems_disk_is_refused() {
        let m = fs::metadata("/").unwrap();
        let disks = underlying_disks(DevNum::from_raw(m.dev()), 0);
        let Some(name) = disks.first() else {
            eprintln!("/ is not on a block device here (overlay, tmpfs): nothing to check");
            return;
        };
        let node = PathBuf::from(format!("/dev/{name}"));
        if !node.exists() {
            eprintln!("{} has no node here: nothing to check", node.display());
            return;
        }
        let disk = Disk::open(&node).unwrap();
        let why = disk.in_use();
        assert!(
            why.iter().any(|w| w.contains("running system")),
            "{name} not refused: {why:?}"
        );
    }
}
