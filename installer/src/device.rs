//! The target disk and the checks that keep the installer off a disk in use: a whole disk (not
//! a partition), nothing on it mounted or used as swap, no device stacked on it (holders/), and
//! not the disk under the running system's `/` or `/usr` (followed through device-mapper slaves,
//! partitions and loop backing files). Everything is read from sysfs and /proc.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{InstallError, Result};

/// A whole block device as sysfs describes it.
#[derive(Clone, Debug)]
pub struct Disk {
    /// The path the user gave.
    pub path: PathBuf,
    /// Kernel name (`vdb`, `loop3`, `nvme0n1`).
    pub name: String,
    /// `/sys/block/<name>`.
    pub sysfs: PathBuf,
    pub dev: (u32, u32),
    /// Partitions: (kernel name, number, major:minor).
    pub partitions: Vec<(String, u32, (u32, u32))>,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn dev_of(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
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
        let dev = dev_of(meta.rdev());
        let sys = fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)).map_err(|e| {
            InstallError::Environment(format!(
                "--device {}: no sysfs entry for {}:{} ({e})",
                path.display(),
                dev.0,
                dev.1
            ))
        })?;
        if sys.join("partition").exists() {
            let parent = sys
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| format!("/dev/{}", n.to_string_lossy()))
                .unwrap_or_default();
            return Err(InstallError::Refused(format!(
                "--device {}: is a partition; give the whole disk ({parent})",
                path.display()
            )));
        }
        let name = sys
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut partitions = Vec::new();
        for e in fs::read_dir(&sys).into_iter().flatten().flatten() {
            let p = e.path();
            let Some(num) = read_trim(&p.join("partition")).and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Some(d) = read_trim(&p.join("dev")).and_then(|s| parse_dev(&s)) else {
                continue;
            };
            partitions.push((e.file_name().to_string_lossy().into_owned(), num, d));
        }
        partitions.sort_by_key(|p| p.1);
        Ok(Disk {
            path: path.to_path_buf(),
            name,
            sysfs: sys,
            dev,
            partitions,
        })
    }

    /// The partition numbers the kernel knows now (sysfs, read afresh).
    pub fn kernel_partitions(&self) -> Vec<u32> {
        fs::read_dir(&self.sysfs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_trim(&e.path().join("partition")).and_then(|s| s.parse().ok()))
            .collect()
    }

    /// The disk and its partitions, by device number.
    fn all_devs(&self) -> Vec<((u32, u32), String)> {
        let mut v = vec![(self.dev, self.name.clone())];
        v.extend(self.partitions.iter().map(|(n, _, d)| (*d, n.clone())));
        v
    }

    /// Every reason the disk may not be written; empty when it is free.
    pub fn in_use(&self) -> Vec<String> {
        let mut why = Vec::new();
        let devs = self.all_devs();
        let find = |d: (u32, u32)| devs.iter().find(|(x, _)| *x == d).map(|(_, n)| n.clone());

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
        let mut holders_of = vec![(self.sysfs.clone(), self.name.clone())];
        holders_of.extend(
            self.partitions
                .iter()
                .map(|(n, _, _)| (self.sysfs.join(n), n.clone())),
        );
        for (dir, n) in holders_of {
            let held: Vec<String> = fs::read_dir(dir.join("holders"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !held.is_empty() {
                why.push(format!(
                    "/dev/{n} is held by {} (device-mapper, RAID or similar)",
                    held.join(", ")
                ));
            }
        }
        let running: Vec<&str> = ["/", "/usr"]
            .into_iter()
            .filter(|dir| {
                fs::metadata(dir)
                    .is_ok_and(|m| underlying_disks(dev_of(m.dev()), 0).contains(&self.name))
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

    fn find_partition_node(&self, number: u32) -> Option<PathBuf> {
        for e in fs::read_dir(&self.sysfs).ok()?.flatten() {
            let p = e.path();
            if read_trim(&p.join("partition")).and_then(|s| s.parse::<u32>().ok()) != Some(number) {
                continue;
            }
            let d = read_trim(&p.join("dev")).and_then(|s| parse_dev(&s))?;
            let node = Path::new("/dev").join(e.file_name());
            let ok = fs::metadata(&node)
                .is_ok_and(|m| m.file_type().is_block_device() && dev_of(m.rdev()) == d);
            return ok.then_some(node);
        }
        None
    }
}

/// (device, mount point) of every mount in this mount namespace.
fn mounts() -> Vec<((u32, u32), String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((parse_dev(f.get(2)?)?, f.get(4)?.to_string()))
        })
        .collect()
}

/// (file, device) of every active swap area; a swap file counts for the device it lives on.
fn swaps() -> Vec<(String, (u32, u32))> {
    let text = fs::read_to_string("/proc/swaps").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let file = l.split_whitespace().next()?.to_string();
            let m = fs::metadata(&file).ok()?;
            let d = if m.file_type().is_block_device() {
                dev_of(m.rdev())
            } else {
                dev_of(m.dev())
            };
            Some((file, d))
        })
        .collect()
}

/// The whole disks a block device ultimately lives on: through its partition's parent,
/// device-mapper/MD slaves and a loop device's backing file.
fn underlying_disks(dev: (u32, u32), depth: u32) -> Vec<String> {
    if depth > 8 || dev.0 == 0 {
        return Vec::new();
    }
    let Ok(sys) = fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.0, dev.1)) else {
        return Vec::new();
    };
    let whole = if sys.join("partition").exists() {
        sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone())
    } else {
        sys.clone()
    };
    let mut out = vec![whole
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()];
    for e in fs::read_dir(sys.join("slaves"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(d) = read_trim(&e.path().join("dev")).and_then(|s| parse_dev(&s)) {
            out.extend(underlying_disks(d, depth + 1));
        }
    }
    if let Some(file) = read_trim(&whole.join("loop/backing_file")) {
        if let Ok(m) = fs::metadata(file.trim_end_matches(" (deleted)")) {
            out.extend(underlying_disks(dev_of(m.dev()), depth + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_parse() {
        assert_eq!(parse_dev("259:3\n"), Some((259, 3)));
        assert_eq!(parse_dev("x"), None);
    }

    /// This test machine's own root is on some disk; that disk must be refused.
    #[test]
    fn the_running_systems_disk_is_refused() {
        let m = fs::metadata("/").unwrap();
        let disks = underlying_disks(dev_of(m.dev()), 0);
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
