//! Step 3: find the boot disk by its GPT disk GUID, and name its partitions' device nodes from
//! sysfs (`/sys/block/<disk>/<part>/partition`), never by guessing names.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use keel_blockdev::sysfs::{self, PartitionNode, SysBlock};
use keel_format::gpt::DiskTable;
use uuid::Uuid;

pub use keel_blockdev::sysfs::SYS_BLOCK;
const POLL: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct BootDisk {
    pub name: String,
    pub sys: PathBuf,
}

/// Block devices that are never a boot disk: RAM and loop devices, device-mapper devices
/// (ours included), zram, optical and floppy drives.
pub fn ignored(name: &str, include_loop: bool) -> bool {
    let prefixes: &[&str] = &["ram", "zram", "dm-", "sr", "fd", "md"];
    prefixes.iter().any(|p| name.starts_with(p)) || (!include_loop && name.starts_with("loop"))
}

/// The disks under `sys_block` worth reading a GPT from.
pub fn candidate_disks(sys_block: &Path, include_loop: bool) -> Vec<String> {
    sysfs::list_dir(sys_block)
        .into_iter()
        .filter(|n| !ignored(n, include_loop))
        .filter(|n| {
            SysBlock::at(sys_block.join(n))
                .sectors()
                .is_some_and(|s| s > 0)
        })
        .collect()
}

fn disk_guid_of(node: &Path) -> Result<Uuid> {
    let mut f = File::open(node).with_context(|| format!("opening {}", node.display()))?;
    Ok(DiskTable::read(&mut f)
        .with_context(|| format!("reading the GPT of {}", node.display()))?
        .disk_guid())
}

/// Scan once: the disk under `sys_block` whose GPT carries `guid`.
pub fn scan(sys_block: &Path, guid: Uuid, include_loop: bool) -> Result<Option<BootDisk>> {
    let mut found: Vec<String> = Vec::new();
    for name in candidate_disks(sys_block, include_loop) {
        let node = Path::new("/dev").join(&name);
        if let Ok(g) = disk_guid_of(&node) {
            if g == guid {
                found.push(name);
            }
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => {
            let name = found.remove(0);
            Ok(Some(BootDisk {
                sys: sys_block.join(&name),
                name,
            }))
        }
        _ => bail!(
            "{} disks carry the boot disk GUID {guid}: {}; refusing to guess (give each disk its \
             own GUID, or detach the copies)",
            found.len(),
            found.join(", ")
        ),
    }
}

/// Wait up to `timeout` for the boot disk to appear.
pub fn wait_for(guid: Uuid, timeout: Duration, include_loop: bool) -> Result<BootDisk> {
    let sys_block = Path::new(SYS_BLOCK);
    let start = Instant::now();
    let mut next_report = start;
    loop {
        if let Some(d) = scan(sys_block, guid, include_loop)? {
            crate::info!(
                "boot disk {guid} is /dev/{} (found after {} ms)",
                d.name,
                start.elapsed().as_millis()
            );
            return Ok(d);
        }
        let seen = candidate_disks(sys_block, include_loop);
        if start.elapsed() >= timeout {
            bail!(
                "no disk with GPT disk GUID {guid} appeared within {} s (disks seen: {}); \
                 is the disk driver in the initramfs, and is keel.disk= right?",
                timeout.as_secs(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
        if Instant::now() >= next_report {
            crate::info!(
                "waiting for the boot disk {guid} (disks so far: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
            next_report += REPORT_EVERY;
        }
        std::thread::sleep(POLL);
    }
}

impl BootDisk {
    pub fn node(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    pub fn open_read(&self) -> Result<File> {
        File::open(self.node()).with_context(|| format!("opening {}", self.node().display()))
    }

    pub fn open_write(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.node())
            .with_context(|| format!("opening {} for writing", self.node().display()))
    }

    pub fn read_table(&self) -> Result<DiskTable> {
        DiskTable::read(&mut self.open_read()?)
            .with_context(|| format!("reading the GPT of {}", self.node().display()))
    }

    /// Write the table back (backup copy first, primary last, each synced). Shutdown waits for
    /// a write in progress.
    pub fn write_table(&self, table: &mut DiskTable) -> Result<()> {
        let _guard = crate::pid1::critical();
        let mut f = self.open_write()?;
        table
            .write(&mut f)
            .with_context(|| format!("writing the GPT of {}", self.node().display()))
    }

    /// A table with one damaged copy (header or entry array) is rewritten from the intact one,
    /// and the console says which copy was damaged and whether the repair held. A disk that
    /// cannot be written boots on from the intact copy.
    pub fn repair_table(&self) {
        let node = self.node();
        // An unreadable table is reported by the boot that reads it next.
        let Ok(mut table) = self.read_table() else {
            return;
        };
        let health = table.health().clone();
        if health.is_clean() {
            return;
        }
        for d in &health.damaged {
            crate::warning!("{}: {d}", node.display());
        }
        let good = health.good_copy().unwrap_or("intact");
        let result = self
            .write_table(&mut table)
            .and_then(|()| self.read_table());
        match result {
            Ok(t) if t.health().is_clean() => {
                crate::info!(
                    "repaired the GPT of {}: rewrote the damaged copy from the {good} copy",
                    node.display()
                );
                // Linux ignores a disk whose primary copy is bad unless booted with `gpt`, so
                // it shows no partitions yet; nothing on this disk is in use so far.
                if !health.primary_ok() {
                    let reread = self.open_read().and_then(|f| {
                        keel_blockdev::reread_partitions(&f)
                            .map_err(|e| anyhow!("re-reading its partition table: {e}"))
                    });
                    match reread {
                        Ok(()) => {
                            crate::info!("the kernel re-read the partitions of {}", node.display())
                        }
                        Err(e) => crate::warning!("{}: {e:#}", node.display()),
                    }
                }
            }
            Ok(t) => crate::warning!(
                "the GPT of {} is still damaged after rewriting it: {}",
                node.display(),
                t.health().summary()
            ),
            Err(e) => crate::warning!(
                "could not repair the GPT of {} ({e:#}); booting on from the {good} copy",
                node.display()
            ),
        }
    }

    /// Size of the disk in bytes, as the kernel has it.
    pub fn size_bytes(&self) -> Result<u64> {
        let sectors = SysBlock::at(&self.sys)
            .sectors()
            .ok_or_else(|| anyhow!("no size for {} in sysfs", self.name))?;
        Ok(sectors * 512)
    }

    /// Partition `number`, waiting briefly for the kernel to announce it and for devtmpfs to
    /// create its node.
    pub fn partition(&self, number: u32) -> Result<PartitionNode> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = SysBlock::at(&self.sys).partitions().remove(&number) {
                if p.node().exists() {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the kernel shows no partition {number} on /dev/{} (sysfs: {})",
                    self.name,
                    self.sys.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_devices() {
        for n in ["ram0", "zram0", "dm-0", "sr0", "fd0", "loop3", "md127"] {
            assert!(ignored(n, false), "{n}");
        }
        for n in ["vda", "sda", "nvme0n1", "xvda", "mmcblk0"] {
            assert!(!ignored(n, false), "{n}");
        }
        assert!(!ignored("loop3", true));
    }
}
