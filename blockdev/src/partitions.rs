//! The ioctls that change the kernel's view of a disk's partitions: BLKRRPART (re-read the
//! table), BLKPG_ADD_PARTITION and BLKPG_RESIZE_PARTITION (what `partx -a` and `resizepart` do).

use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use nix::errno::Errno;

use crate::{Error, Result};

nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition` (linux/blkpg.h); offsets and lengths in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// Make the kernel read the partition table again (fails with EBUSY while a partition is in use).
pub fn reread_partitions(disk: impl AsFd) -> Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blkrrpart(disk.as_fd().as_raw_fd()) }
        .map(drop)
        .map_err(Error::call("BLKRRPART"))
}

/// Tell the kernel about partition `number` at `start`..`start + length` bytes.
pub fn add_partition(disk: impl AsFd, number: u32, start: u64, length: u64) -> Result<()> {
    blkpg_partition(disk, BLKPG_ADD_PARTITION, number, start, length)
        .map_err(Error::call("BLKPG_ADD_PARTITION"))
}

/// Tell the kernel partition `number` now spans `start`..`start + length` bytes (works while
/// it is mounted; the start must not move).
pub fn resize_partition(disk: impl AsFd, number: u32, start: u64, length: u64) -> Result<()> {
    blkpg_partition(disk, BLKPG_RESIZE_PARTITION, number, start, length)
        .map_err(Error::call("BLKPG_RESIZE_PARTITION"))
}

fn blkpg_partition(
    disk: impl AsFd,
    op: libc::c_int,
    number: u32,
    start: u64,
    length: u64,
) -> nix::Result<()> {
    let too_big = |_| Errno::EOVERFLOW;
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(too_big)?,
        length: i64::try_from(length).map_err(too_big)?,
        pno: libc::c_int::try_from(number).map_err(too_big)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at a live blkpg_partition for the duration of the call.
    unsafe { blkpg(disk.as_fd().as_raw_fd(), &arg) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a regular file the kernel refuses each ioctl (ENOTTY): the calls reach it and the
    /// error comes back instead of a crash or a silent success.
    #[test]
    fn a_regular_file_is_refused_by_the_kernel() {
        let f = tempfile::tempfile().unwrap();
        assert!(reread_partitions(&f).is_err());
        assert!(add_partition(&f, 1, 1 << 20, 1 << 20).is_err());
        assert!(resize_partition(&f, 1, 1 << 20, 1 << 20).is_err());
    }

    #[test]
    fn sizes_beyond_the_ioctl_are_an_error() {
        let f = tempfile::tempfile().unwrap();
        let e = add_partition(&f, 1, u64::MAX, 1).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EOVERFLOW));
        assert_eq!(
            e.to_string(),
            "BLKPG_ADD_PARTITION: EOVERFLOW: Value too large for defined data type"
        );
    }
}
