//! EXT4_IOC_RESIZE_FS: grow a mounted ext4 filesystem online.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, Result};

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Grow the ext4 filesystem mounted at `mountpoint` to `blocks` filesystem blocks.
pub fn resize_mounted(mountpoint: &Path, blocks: u64) -> Result<()> {
    let dir = File::open(mountpoint).map_err(Error::access("opening", mountpoint))?;
    // SAFETY: the argument is a pointer to a u64 block count.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }
        .map(drop)
        .map_err(Error::call("EXT4_IOC_RESIZE_FS"))
}
