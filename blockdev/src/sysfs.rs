//! What the kernel says about block devices in sysfs: a device's directory from its number, its
//! partitions (number, node, start, size), the devices stacked below it (`slaves/`, e.g. under
//! dm-verity), those above it (`holders/`) and a loop device's backing file. Device nodes are
//! named from sysfs, never guessed from a disk's name.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Every block device by kernel name.
pub const SYS_BLOCK: &str = "/sys/block";
/// Every block device by `major:minor`.
pub const SYS_DEV_BLOCK: &str = "/sys/dev/block";
/// How deep `slaves/` may go (a loop guard; dm-verity over a partition is two levels).
const MAX_STACK: usize = 8;

/// A device number, written `major:minor` as sysfs and device-mapper tables do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    pub fn from_raw(dev: u64) -> DevNum {
        DevNum {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }

    /// Parse `major:minor` (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Option<DevNum> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// The device itself for a block device node, else the device holding the file.
    pub fn of(meta: &fs::Metadata) -> DevNum {
        if meta.file_type().is_block_device() {
            DevNum::from_raw(meta.rdev())
        } else {
            DevNum::from_raw(meta.dev())
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One partition as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionNode {
    /// Kernel name (`vda3`, `nvme0n1p3`); the node is `/dev/<name>`.
    pub name: String,
    /// Number in the disk's table (0 for a whole device used as one, e.g. a loop device).
    pub number: u32,
    pub dev: DevNum,
    /// Start and size in 512-byte sectors, as the kernel has them.
    pub start: u64,
    pub sectors: u64,
}

impl PartitionNode {
    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

/// A block device's directory in sysfs (`/sys/devices/…/vda` or `…/vda/vda3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysBlock {
    /// Kernel name (`vda`, `vda3`, `dm-0`, `loop3`).
    pub name: String,
    pub dir: PathBuf,
}

impl SysBlock {
    /// The directory `dir` (e.g. `/sys/block/vda`).
    pub fn at(dir: impl Into<PathBuf>) -> SysBlock {
        let dir = dir.into();
        SysBlock {
            name: file_name(&dir),
            dir,
        }
    }

    /// The device numbered `dev`, through `/sys/dev/block/MAJOR:MINOR`.
    pub fn of_dev(dev: DevNum) -> Result<SysBlock> {
        let link = Path::new(SYS_DEV_BLOCK).join(dev.to_string());
        let dir = fs::canonicalize(&link).map_err(Error::access("resolving", link))?;
        Ok(SysBlock::at(dir))
    }

    /// One attribute file, trimmed; None when it is missing or unreadable.
    pub fn attr(&self, name: &str) -> Option<String> {
        read_trimmed(&self.dir.join(name))
    }

    pub fn dev(&self) -> Option<DevNum> {
        DevNum::parse(&self.attr("dev")?)
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> Option<u64> {
        self.attr("size")?.parse().ok()
    }

    /// The partition number, if this is a partition.
    pub fn partition_number(&self) -> Option<u32> {
        self.attr("partition")?.parse().ok()
    }

    /// The whole disk: the parent directory of a partition, else the device itself.
    pub fn whole_disk(&self) -> SysBlock {
        match (self.partition_number(), self.dir.parent()) {
            (Some(_), Some(parent)) => SysBlock::at(parent),
            _ => self.clone(),
        }
    }

    /// The partitions of this disk, by number.
    pub fn partitions(&self) -> BTreeMap<u32, PartitionNode> {
        list_dir(&self.dir)
            .into_iter()
            .map(|name| SysBlock::at(self.dir.join(name)))
            .filter_map(|p| {
                let node = PartitionNode {
                    number: p.partition_number()?,
                    dev: p.dev()?,
                    start: p.attr("start")?.parse().ok()?,
                    sectors: p.sectors()?,
                    name: p.name,
                };
                Some((node.number, node))
            })
            .collect()
    }

    /// The directory of partition `number` of this disk.
    pub fn partition(&self, number: u32) -> Option<SysBlock> {
        list_dir(&self.dir)
            .into_iter()
            .map(|name| SysBlock::at(self.dir.join(name)))
            .find(|p| p.partition_number() == Some(number))
    }

    /// The devices directly below this one (device-mapper and MD targets).
    pub fn slaves(&self) -> Vec<SysBlock> {
        let dir = self.dir.join("slaves");
        list_dir(&dir)
            .into_iter()
            .filter_map(|n| fs::canonicalize(dir.join(n)).ok())
            .map(SysBlock::at)
            .collect()
    }

    /// This device and every device below it through `slaves/`, top first.
    pub fn stack(&self) -> Vec<SysBlock> {
        let mut out = vec![self.clone()];
        let mut level = vec![self.clone()];
        for _ in 0..MAX_STACK {
            level = level.iter().flat_map(SysBlock::slaves).collect();
            if level.is_empty() {
                break;
            }
            out.extend(level.iter().cloned());
        }
        out
    }

    /// Names of the devices stacked on this one (`holders/`).
    pub fn holders(&self) -> Vec<String> {
        list_dir(&self.dir.join("holders"))
    }

    /// The file a loop device reads from, if this is an attached loop device.
    pub fn loop_backing_file(&self) -> Option<PathBuf> {
        let text = self.attr("loop/backing_file")?;
        Some(PathBuf::from(text.trim_end_matches(" (deleted)")))
    }

    /// `/dev/NAME`, or `/dev/block/MAJOR:MINOR` where udev made no NAME node.
    pub fn device_node(&self) -> Option<PathBuf> {
        let named = Path::new("/dev").join(&self.name);
        if named.exists() {
            return Some(named);
        }
        let by_number = Path::new("/dev/block").join(self.dev()?.to_string());
        by_number.exists().then_some(by_number)
    }
}

/// The partition a file system (e.g. /usr) reads from, through stacked devices such as
/// dm-verity (one device per level: dm-verity's data and hash device are the same partition).
pub fn backing_partition(mount: &Path) -> Result<(SysBlock, u32)> {
    let meta = fs::metadata(mount).map_err(Error::access("stat of", mount))?;
    let top = SysBlock::of_dev(DevNum::from_raw(meta.dev())).map_err(|_| {
        Error::Sysfs(format!(
            "{} is on device {}, which is not a block device",
            mount.display(),
            DevNum::from_raw(meta.dev())
        ))
    })?;
    let mut bottom: Vec<SysBlock> = top
        .stack()
        .into_iter()
        .filter(|d| d.slaves().is_empty())
        .collect();
    bottom.dedup();
    let part = match bottom.as_slice() {
        [one] => one.clone(),
        many => {
            return Err(Error::Sysfs(format!(
                "{} is on {}, which stacks several devices ({}); cannot tell the partition",
                mount.display(),
                top.name,
                many.iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let number = part.partition_number().ok_or_else(|| {
        Error::Sysfs(format!(
            "{} comes from block device {}, which is not a partition",
            mount.display(),
            part.name
        ))
    })?;
    Ok((part, number))
}

/// The loop device (e.g. /dev/loop0) whose backing file is the file of `meta`, if any.
pub fn loop_device_backed_by(meta: &fs::Metadata) -> Option<String> {
    list_dir(Path::new(SYS_BLOCK))
        .into_iter()
        .filter(|name| name.starts_with("loop"))
        .find(|name| {
            SysBlock::at(Path::new(SYS_BLOCK).join(name))
                .loop_backing_file()
                .and_then(|backing| fs::metadata(backing).ok())
                .is_some_and(|b| b.dev() == meta.dev() && b.ino() == meta.ino())
        })
        .map(|name| format!("/dev/{name}"))
}

/// Entry names of `dir`, sorted; empty when it cannot be read.
pub fn list_dir(dir: &Path) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        assert_eq!(
            DevNum::parse("259:3\n"),
            Some(DevNum {
                major: 259,
                minor: 3
            })
        );
        assert_eq!(DevNum::parse("x"), None);
        assert_eq!(DevNum { major: 7, minor: 0 }.to_string(), "7:0");
    }

    /// A fake sysfs tree: a disk with two partitions, one of them under a dm device.
    #[test]
    fn partitions_and_stacks_from_a_tree() {
        let t = tempfile::tempdir().unwrap();
        let disk = t.path().join("vda");
        for (part, n, dev, start) in [("vda1", 1, "254:1", 2048), ("vda3", 3, "254:3", 4096)] {
            let d = disk.join(part);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("partition"), format!("{n}\n")).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            fs::write(d.join("start"), format!("{start}\n")).unwrap();
            fs::write(d.join("size"), "2048\n").unwrap();
        }
        fs::create_dir_all(disk.join("holders")).unwrap();
        let parts = SysBlock::at(&disk).partitions();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(parts[&3].name, "vda3");
        assert_eq!(parts[&3].dev.to_string(), "254:3");
        assert_eq!(parts[&3].node(), PathBuf::from("/dev/vda3"));
        let dm = t.path().join("dm-0");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda3"), dm.join("slaves/vda3")).unwrap();
        let stack = SysBlock::at(&dm).stack();
        let names: Vec<&str> = stack.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["dm-0", "vda3"]);
        assert_eq!(stack[1].whole_disk().name, "vda");
        assert_eq!(stack[1].partition_number(), Some(3));
    }

    /// This machine's root file system sits on some block device (or on none, in a container).
    #[test]
    fn the_root_file_system_has_a_stack() {
        let m = fs::metadata("/").unwrap();
        if let Ok(top) = SysBlock::of_dev(DevNum::of(&m)) {
            assert!(!top.stack().is_empty());
        }
    }
}
