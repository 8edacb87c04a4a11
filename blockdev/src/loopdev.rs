//! Loop devices: for the diskless boot, the embedded payload's body becomes a read-only block
//! device that dm-verity can sit on ([`attach`], kept for the life of the system); on a host,
//! one partition of a disk image becomes a device for veritysetup or e2fsck ([`LoopDevice`],
//! detached when dropped).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::sysfs::{PartitionNode, SysBlock, SYS_BLOCK};
use crate::{Error, Result};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`: everything LOOP_CONFIGURE sets up in one call.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);

/// Attach `size` bytes of `file` from `offset` to a free loop device, read-only.
pub fn attach(file: &Path, offset: u64, size: u64) -> Result<PartitionNode> {
    configure(file, offset, size, false)
}

/// A loop device over a byte range of a file, detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    node: PartitionNode,
}

impl LoopDevice {
    /// Attach `size` bytes of `file` from `offset`, writable or read-only.
    pub fn attach(file: &Path, offset: u64, size: u64, writable: bool) -> Result<LoopDevice> {
        configure(file, offset, size, writable).map(|node| LoopDevice { node })
    }

    /// The device node, `/dev/loopN`.
    pub fn path(&self) -> PathBuf {
        self.node.node()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Nothing to do about a refusal here: the device stays until the next reboot.
        let _ = detach(&self.path());
    }
}

/// How many free devices to try when others are taken between GET_FREE and CONFIGURE.
const ATTEMPTS: u32 = 16;

fn configure(file: &Path, offset: u64, size: u64, writable: bool) -> Result<PartitionNode> {
    let ctl = File::open(LOOP_CONTROL).map_err(Error::access(
        "opening (is the loop module loaded?)",
        LOOP_CONTROL,
    ))?;
    let mut attempt = 1;
    loop {
        // Another process (a parallel test, losetup) can claim the free device first; its
        // LOOP_CONFIGURE then wins and ours gets EBUSY: ask for the next free one, as losetup does.
        match configure_free(&ctl, file, offset, size, writable) {
            Err(Error::Call {
                call: "LOOP_CONFIGURE",
                errno: Errno::EBUSY,
            }) if attempt < ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

fn configure_free(
    ctl: &File,
    file: &Path,
    offset: u64,
    size: u64,
    writable: bool,
) -> Result<PartitionNode> {
    // SAFETY: no argument.
    let n =
        unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }.map_err(Error::call("LOOP_CTL_GET_FREE"))?;
    let name = format!("loop{n}");
    let node = Path::new("/dev").join(&name);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.exists() {
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                path: node,
                seconds: 5,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let backing = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(file)
        .map_err(Error::access("opening", file))?;
    let dev = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&node)
        .map_err(Error::access("opening", &node))?;
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 4096,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: if writable { 0 } else { LO_FLAGS_READ_ONLY },
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a valid loop_config for the duration of the call.
    unsafe { loop_configure(dev.as_raw_fd(), &config) }.map_err(Error::call("LOOP_CONFIGURE"))?;
    let sys = SysBlock::at(Path::new(SYS_BLOCK).join(&name));
    let missing =
        |attr: &str| Error::Sysfs(format!("no {attr} for {} in sysfs", sys.dir.display()));
    Ok(PartitionNode {
        dev: sys.dev().ok_or_else(|| missing("dev"))?,
        sectors: sys.sectors().ok_or_else(|| missing("size"))?,
        number: 0,
        start: 0,
        name,
    })
}

/// Detach the loop device at `node` from its backing file.
pub fn detach(node: &Path) -> Result<()> {
    let f = File::open(node).map_err(Error::access("opening", node))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { loop_clr_fd(f.as_raw_fd()) }
        .map(drop)
        .map_err(Error::call("LOOP_CLR_FD"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    /// A real loop device on the host: the window of the file it shows, read-only.
    #[test]
    fn attaches_a_window_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payload");
        let mut bytes = vec![0xeeu8; 4096];
        bytes.extend((0..64 * 4096).map(|i| (i % 251) as u8));
        bytes.extend(vec![0xffu8; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        let part = attach(&path, 4096, 64 * 4096).unwrap();
        let node = part.node();
        let mut seen = Vec::new();
        File::open(&node).unwrap().read_to_end(&mut seen).unwrap();
        let ro = std::fs::read_to_string(format!("/sys/block/{}/ro", part.name)).unwrap();
        let written = OpenOptions::new()
            .write(true)
            .open(&node)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &[0u8; 4096]).and_then(|_| f.sync_all())
            });
        detach(&node).unwrap();
        assert_eq!(part.sectors, 64 * 8);
        assert_eq!(seen, &bytes[4096..4096 + 64 * 4096]);
        assert_eq!(ro.trim(), "1");
        assert!(written.is_err(), "the loop device must be read-only");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(part.dev.major, 7, "{}", part.dev);
    }

    /// A writable window writes through to the file, and dropping the guard detaches it.
    #[test]
    fn a_writable_loop_device_writes_through_and_detaches_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 3 * 4096]).unwrap();
        let dev = LoopDevice::attach(&path, 4096, 4096, true).unwrap();
        let node = dev.path();
        let mut f = OpenOptions::new().write(true).open(&node).unwrap();
        std::io::Write::write_all(&mut f, &[0x5a; 4096]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let name = node.file_name().unwrap().to_owned();
        drop(dev);
        let backing = Path::new("/sys/block")
            .join(&name)
            .join("loop/backing_file");
        assert!(!backing.exists(), "{} still attached", node.display());
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[..4096].iter().all(|&b| b == 0));
        assert!(bytes[4096..8192].iter().all(|&b| b == 0x5a));
        assert!(bytes[8192..].iter().all(|&b| b == 0));
    }
}
