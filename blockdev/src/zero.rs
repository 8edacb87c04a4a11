//! BLKZEROOUT: the device zeroes a byte range itself (WRITE ZEROES), and a loop device's backing
//! file stays sparse.

use std::os::fd::{AsFd, AsRawFd};

use crate::{Error, Result};

nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// Zero `length` bytes at `offset` of the block device `dev` (both multiples of 512). A regular
/// file refuses it (ENOTTY): callers write the zeros themselves then.
pub fn zero_range(dev: impl AsFd, offset: u64, length: u64) -> Result<()> {
    let range = [offset, length];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) from the pointer.
    unsafe { blkzeroout(dev.as_fd().as_raw_fd(), &range) }
        .map(drop)
        .map_err(Error::call("BLKZEROOUT"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_regular_file_is_refused() {
        let f = tempfile::tempfile().unwrap();
        assert!(super::zero_range(&f, 0, 4096).is_err());
    }
}
