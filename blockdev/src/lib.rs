//! Keel's one door to the kernel interfaces that have no safe wrapper (see README.md): the
//! partition ioctls, device-mapper, loop devices, `kexec_file_load`, online ext4 growth,
//! BLKZEROOUT, the signal dispositions an exec inherits, the sysfs view of block devices, and
//! children that die with this process.
//! Every `unsafe` block of Keel's programs lives in this crate; the others forbid it.

mod error;

pub mod dm;
pub mod ext4;
pub mod kexec;
pub mod loopdev;
pub mod partitions;
pub mod signals;
pub mod sysfs;
pub mod tied;
pub mod zero;

pub use error::{Error, Result};
pub use partitions::{add_partition, reread_partitions, resize_partition};
