//! The target disk: a block device in the guest, or a disk image file on the host. Its partition
//! table is read and written through the whole disk; a slot's contents through the slot's own
//! partition device where there is one (so the kernel's exclusive-open check tells whether it is
//! in use), else through the disk at the partition's offset.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keel_format::gpt::{DiskTable, Partition, SyncAll};
use keel_format::metadata::{Unverified, METADATA_SIZE};
use keel_format::slot;

use crate::error::{Result, UpdateError};
use crate::stream::{BodySink, ReadBack, ALIGN};
use keel_blockdev::sysfs::{self, DevNum, SysBlock};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::time::{Duration, Instant};

pub struct Disk {
    pub path: PathBuf,
    file: File,
    /// The update lock of a disk opened for writing, held as long as the disk is open.
    _lock: Option<Flock<File>>,
    block_device: bool,
}

impl Disk {
    /// Open for reading only (status).
    pub fn open_read(path: &Path) -> Result<Disk> {
        Disk::open(path, false)
    }

    /// Open for changing: takes an exclusive advisory lock on the disk so two updaters never
    /// interleave, and refuses an image file that a loop device is using.
    pub fn open_write(path: &Path) -> Result<Disk> {
        Disk::open(path, true)
    }

    fn open(path: &Path, write: bool) -> Result<Disk> {
        let err = |reason: String| UpdateError::Disk {
            disk: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|e| err(format!("cannot open it: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot stat it: {e}")))?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.is_file() {
            return Err(err(
                "it is neither a block device nor a disk image file".into()
            ));
        }
        let mut lock = None;
        if write {
            lock = Some(lock_for_update(&file).map_err(err)?);
            if !block_device {
                if let Some(loopdev) = sysfs::loop_device_backed_by(&meta) {
                    return Err(err(format!(
                        "the image is attached to {loopdev}; detach it (losetup -d) before updating it"
                    )));
                }
            }
        }
        Ok(Disk {
            path: path.to_path_buf(),
            file,
            _lock: lock,
            block_device,
        })
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    pub fn table(&mut self) -> Result<DiskTable> {
        DiskTable::read(&mut self.file).map_err(|e| UpdateError::Disk {
            disk: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Write both copies of the table (backup first, then primary; see keel_format::gpt).
    pub fn write_table(&mut self, table: &mut DiskTable) -> Result<()> {
        table
            .write(&mut DiskFile(&mut self.file))
            .map_err(|e| UpdateError::Disk {
                disk: self.path.clone(),
                reason: format!("writing the partition table failed: {e}"),
            })
    }

    /// Open a slot's contents. `write` opens it exclusively: that refuses a slot that is mounted
    /// or held by another device (dm-verity) and keeps it from being mounted while the handle
    /// lives; writes use O_DIRECT where the target supports it.
    pub fn slot(&self, part: &Partition, write: bool) -> Result<SlotDevice> {
        let node = if self.block_device {
            partition_node(&self.path, part.number)
        } else {
            None
        };
        let (path, base) = match &node {
            Some(node) => (node.as_path(), 0),
            None => (self.path.as_path(), part.offset()),
        };
        // A block device without partition nodes cannot have the slot mounted; claim the whole
        // disk then. An image file has no exclusive open (the loop check covers it).
        let exclusive = write && (node.is_some() || self.block_device);
        let (file, direct) = open_slot(path, write, exclusive).map_err(|e| {
            let reason = if e.raw_os_error() == Some(libc::EBUSY) {
                format!(
                    "{} ({}) is in use (mounted, or held by another device such as dm-verity)",
                    part.label,
                    path.display()
                )
            } else {
                format!("cannot open {} ({}): {e}", part.label, path.display())
            };
            UpdateError::Disk {
                disk: self.path.clone(),
                reason,
            }
        })?;
        Ok(SlotDevice {
            disk: self.path.clone(),
            label: part.label.clone(),
            file,
            base,
            size: part.size(),
            direct,
        })
    }
}

/// Read-only, or read-write with O_DIRECT where the file system or device supports it (tmpfs
/// does not) and buffered otherwise.
fn open_slot(path: &Path, write: bool, exclusive: bool) -> io::Result<(File, bool)> {
    let excl = if exclusive { libc::O_EXCL } else { 0 };
    let open = |extra| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(excl | extra)
            .open(path)
    };
    if !write {
        return open(0).map(|f| (f, false));
    }
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0).map(|f| (f, false)),
        Err(e) => Err(e),
    }
}

/// gptman writes through `Write + Seek`; the disk file gets the sync it needs.
struct DiskFile<'a>(&'a mut File);
impl io::Write for DiskFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        io::Write::flush(self.0)
    }
}
impl Seek for DiskFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
impl SyncAll for DiskFile<'_> {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// One slot's bytes: `size` bytes starting at `base` in `file`.
pub struct SlotDevice {
    pub disk: PathBuf,
    pub label: String,
    file: File,
    base: u64,
    pub size: u64,
    direct: bool,
}

impl SlotDevice {
    fn io_err(&self, what: impl Into<String>) -> impl FnOnce(io::Error) -> UpdateError + '_ {
        let what = what.into();
        move |source| UpdateError::SlotIo {
            disk: self.disk.clone(),
            slot: self.label.clone(),
            what,
            source,
        }
    }

    pub fn uses_direct_io(&self) -> bool {
        self.direct
    }

    /// The metadata block in the slot's last 4 KiB, parsed but not verified.
    pub fn read_metadata(&mut self) -> std::result::Result<Unverified, slot::SlotError> {
        let mut reader = self.buffered_reader().map_err(slot::SlotError::Io)?;
        slot::read_partition_metadata(&mut reader, self.base, self.size)
    }

    /// Write the 4 KiB metadata block (or zeros) into the slot's last 4 KiB and sync.
    pub fn write_metadata(&mut self, block: &[u8]) -> Result<()> {
        assert_eq!(block.len(), METADATA_SIZE);
        let mut buf = crate::stream::AlignedBuf::new(METADATA_SIZE);
        buf.space().copy_from_slice(block);
        buf.set_filled(METADATA_SIZE);
        let at = slot::metadata_offset(self.size);
        self.write_at(at, buf.filled())
            .map_err(self.io_err("writing its metadata block failed"))?;
        self.sync()
            .map_err(self.io_err("syncing its metadata block failed"))
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let pos = self.base + offset;
        match self.file.write_all_at(data, pos) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // The device refuses this alignment for direct I/O: carry on buffered.
                clear_direct(&self.file)?;
                self.direct = false;
                self.file.write_all_at(data, pos)
            }
            other => other,
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Sync, then drop the cached pages of the slot so the next read comes from the disk.
    pub fn sync_and_drop_cache(&self) -> Result<()> {
        self.sync().map_err(self.io_err("syncing it failed"))?;
        // Advice only: a refusal changes nothing.
        let _ = nix::fcntl::posix_fadvise(
            &self.file,
            self.base as libc::off_t,
            self.size as libc::off_t,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        Ok(())
    }

    /// A buffered reader over the same file (O_DIRECT reads would need aligned buffers).
    pub fn buffered_reader(&self) -> io::Result<File> {
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        File::open(fd_path)
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// A second handle that reads the body back from the disk while it is written, when the
    /// slot is written with O_DIRECT (its reads bypass the page cache too); `None` otherwise.
    pub fn direct_read_back(&self) -> Result<Option<SlotReadBack>> {
        if !self.direct {
            return Ok(None);
        }
        let file = self
            .file
            .try_clone()
            .map_err(self.io_err("opening it to read it back failed"))?;
        Ok(Some(SlotReadBack {
            file,
            base: self.base,
        }))
    }

    /// A sink that writes the body at the start of the slot.
    pub fn body_sink(&mut self) -> SlotSink<'_> {
        SlotSink { slot: self }
    }

    /// Read `len` bytes at `offset` within the slot (tests and status).
    pub fn read_bytes(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = self.buffered_reader()?;
        f.seek(SeekFrom::Start(self.base + offset))?;
        let mut v = vec![0u8; len];
        f.read_exact(&mut v)?;
        Ok(v)
    }
}

pub struct SlotSink<'a> {
    slot: &'a mut SlotDevice,
}

impl BodySink for SlotSink<'_> {
    fn write_chunk(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len() % ALIGN, 0);
        self.slot.write_at(offset, data)
    }
}

/// The slot's body read with O_DIRECT: the same open file as the writes, so a fall back to
/// buffered writes (see [`SlotDevice::uses_direct_io`]) shows here too.
pub struct SlotReadBack {
    file: File,
    base: u64,
}

impl ReadBack for SlotReadBack {
    fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        debug_assert_eq!(buf.len() % ALIGN, 0);
        self.file.read_exact_at(buf, self.base + offset)
    }
}

fn clear_direct(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags & !OFlag::O_DIRECT))?;
    Ok(())
}

/// The device node of partition `number` of the block device `disk`, if the kernel has one.
fn partition_node(disk: &Path, number: u32) -> Option<PathBuf> {
    let dev = DevNum::of(&std::fs::metadata(disk).ok()?);
    SysBlock::of_dev(dev).ok()?.partition(number)?.device_node()
}

/// How long udev may keep probing a disk we want to change. Its workers hold a shared flock on
/// the whole disk while they read it (systemd.io/BLOCK_DEVICE_LOCKING), for instance right after
/// mark-good rewrote the partition table; under emulation that can take seconds.
const SHARED_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Take the exclusive update lock. A shared holder (udev probing) is waited for; an exclusive
/// holder (another updater) is refused at once.
fn lock_for_update(file: &File) -> std::result::Result<Flock<File>, String> {
    let started = Instant::now();
    loop {
        let handle = file
            .try_clone()
            .map_err(|e| format!("cannot duplicate its descriptor: {e}"))?;
        let errno = match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, errno)) => errno,
        };
        if errno != Errno::EWOULDBLOCK {
            return Err(format!("cannot lock it: {}", io::Error::from(errno)));
        }
        let probe = file
            .try_clone()
            .map_err(|e| format!("cannot duplicate its descriptor: {e}"))?;
        if let Err((_, errno)) = Flock::lock(probe, FlockArg::LockSharedNonblock) {
            return Err(format!(
                "another process holds its update lock ({})",
                io::Error::from(errno)
            ));
        }
        // The shared probe lock is dropped here; someone else's shared lock remains.
        if started.elapsed() >= SHARED_LOCK_WAIT {
            return Err(format!(
                "another process has held a shared lock on it (udev probing?) for {} s",
                SHARED_LOCK_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
