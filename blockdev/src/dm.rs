//! Device-mapper through its ioctls on /dev/mapper/control (what libdevmapper does, without
//! the library): create a device, load a table, resume it, read its status, remove it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::{Error, Result};

pub const CONTROL: &str = "/dev/mapper/control";

const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;
/// The interface version we speak; the kernel accepts any 4.x request at or below its own.
const VERSION: [u32; 3] = [4, 0, 0];

const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

/// `struct dm_ioctl` from <linux/dm-ioctl.h>.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DmIoctl {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub padding: u32,
    pub dev: u64,
    pub name: [u8; DM_NAME_LEN],
    pub uuid: [u8; DM_UUID_LEN],
    pub data: [u8; 7],
}

/// `struct dm_target_spec`, followed in the buffer by the target's parameter string.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; DM_MAX_TYPE_NAME],
}

const HEADER: usize = std::mem::size_of::<DmIoctl>();
const SPEC: usize = std::mem::size_of::<DmTargetSpec>();

nix::ioctl_readwrite!(dm_version, 0xfd, 0, DmIoctl);
nix::ioctl_readwrite!(dm_dev_create, 0xfd, 3, DmIoctl);
nix::ioctl_readwrite!(dm_dev_remove, 0xfd, 4, DmIoctl);
nix::ioctl_readwrite!(dm_dev_suspend, 0xfd, 6, DmIoctl);
nix::ioctl_readwrite!(dm_table_load, 0xfd, 9, DmIoctl);
nix::ioctl_readwrite!(dm_table_status, 0xfd, 12, DmIoctl);
nix::ioctl_readwrite!(dm_list_versions, 0xfd, 13, DmIoctl);

type IoctlFn = unsafe fn(i32, *mut DmIoctl) -> nix::Result<i32>;

/// One line of a table: `start length type params`, in 512-byte sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub length: u64,
    pub kind: String,
    pub params: String,
}

/// An ioctl buffer: the header, then the payload at `data_start`. Backed by u64s for alignment.
struct Buffer {
    words: Vec<u64>,
}

impl Buffer {
    fn new(name: &str, uuid: &str, size: usize) -> Result<Buffer> {
        if name.len() >= DM_NAME_LEN || uuid.len() >= DM_UUID_LEN {
            return Err(Error::Invalid(format!(
                "device-mapper name {name:?} or uuid {uuid:?} too long"
            )));
        }
        let size = size.max(HEADER).next_multiple_of(8);
        let mut b = Buffer {
            words: vec![0u64; size / 8],
        };
        let h = b.header_mut();
        h.version = VERSION;
        h.data_size = size as u32;
        h.data_start = HEADER as u32;
        h.name[..name.len()].copy_from_slice(name.as_bytes());
        h.uuid[..uuid.len()].copy_from_slice(uuid.as_bytes());
        Ok(b)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: a u64 slice viewed as bytes; same length in bytes, u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.words.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.words.len() * 8)
        }
    }
    fn header(&self) -> &DmIoctl {
        // SAFETY: the buffer is at least HEADER bytes, 8-aligned, and DmIoctl is plain data.
        unsafe { &*self.words.as_ptr().cast::<DmIoctl>() }
    }
    fn header_mut(&mut self) -> &mut DmIoctl {
        // SAFETY: as in `header`.
        unsafe { &mut *self.words.as_mut_ptr().cast::<DmIoctl>() }
    }

    /// Write the targets as consecutive specs after the header (the DM_TABLE_LOAD payload).
    fn put_targets(&mut self, targets: &[Target]) -> Result<()> {
        let mut at = HEADER;
        for t in targets {
            if t.kind.len() >= DM_MAX_TYPE_NAME {
                return Err(Error::Invalid(format!("target type {:?} too long", t.kind)));
            }
            let len = (SPEC + t.params.len() + 1).next_multiple_of(8);
            if at + len > self.bytes().len() {
                return Err(Error::Invalid("table does not fit the ioctl buffer".into()));
            }
            let mut kind = [0u8; DM_MAX_TYPE_NAME];
            kind[..t.kind.len()].copy_from_slice(t.kind.as_bytes());
            let spec = DmTargetSpec {
                sector_start: t.start,
                length: t.length,
                status: 0,
                // On input `next` is relative to this spec.
                next: len as u32,
                target_type: kind,
            };
            let bytes = self.bytes_mut();
            // SAFETY: `at` is 8-aligned and SPEC bytes fit (checked above).
            unsafe { std::ptr::write_unaligned(bytes[at..].as_mut_ptr().cast(), spec) };
            bytes[at + SPEC..at + SPEC + t.params.len()].copy_from_slice(t.params.as_bytes());
            at += len;
        }
        self.header_mut().target_count = targets.len() as u32;
        Ok(())
    }

    /// Read the targets the kernel returned (DM_TABLE_STATUS): on output `next` is relative to
    /// the start of the data area.
    fn targets(&self) -> Result<Vec<Target>> {
        let bytes = self.bytes();
        let h = self.header();
        let data = h.data_start as usize;
        let end = (h.data_size as usize).min(bytes.len());
        let mut out = Vec::new();
        let mut at = data;
        for _ in 0..h.target_count {
            if at + SPEC > end {
                return Err(Error::Invalid("device-mapper reply is truncated".into()));
            }
            // SAFETY: bounds checked; the spec is plain data.
            let spec: DmTargetSpec =
                unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
            let params = &bytes[at + SPEC..end];
            let params = &params[..params.iter().position(|&b| b == 0).unwrap_or(params.len())];
            out.push(Target {
                start: spec.sector_start,
                length: spec.length,
                kind: c_string(&spec.target_type),
                params: String::from_utf8_lossy(params).into_owned(),
            });
            at = data + spec.next as usize;
        }
        Ok(out)
    }
}

fn c_string(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// An open /dev/mapper/control.
pub struct Control {
    file: File,
}

/// A created device-mapper device: its name and device number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub major: u32,
    pub minor: u32,
}

impl Device {
    /// The node devtmpfs creates for it.
    pub fn node(&self) -> String {
        format!("/dev/dm-{}", self.minor)
    }
}

impl Control {
    pub fn open() -> Result<Control> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(CONTROL)
            .map_err(Error::access("opening", CONTROL))?;
        Ok(Control { file })
    }

    fn call(&self, what: &'static str, f: IoctlFn, buf: &mut Buffer) -> Result<()> {
        // SAFETY: the buffer starts with a valid dm_ioctl whose data_size is the buffer length.
        unsafe { f(self.file.as_raw_fd(), buf.header_mut()) }.map_err(Error::call(what))?;
        Ok(())
    }

    /// The kernel's device-mapper interface version.
    pub fn version(&self) -> Result<[u32; 3]> {
        let mut b = Buffer::new("", "", HEADER)?;
        self.call("DM_VERSION", dm_version, &mut b)?;
        Ok(b.header().version)
    }

    /// Names of the registered target types (`verity` is there once dm-verity is loaded).
    pub fn target_types(&self) -> Result<Vec<String>> {
        let mut b = Buffer::new("", "", 16 * 1024)?;
        self.call("DM_LIST_VERSIONS", dm_list_versions, &mut b)?;
        // struct dm_target_versions { u32 next; u32 version[3]; char name[]; }, `next` relative
        // to this entry, 0 on the last.
        let bytes = b.bytes();
        let mut at = b.header().data_start as usize;
        let mut out = Vec::new();
        while at + 16 <= bytes.len() {
            let next = u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
            out.push(c_string(&bytes[at + 16..]));
            if next == 0 {
                break;
            }
            at += next as usize;
        }
        Ok(out)
    }

    pub fn create(&self, name: &str, uuid: &str) -> Result<Device> {
        let mut b = Buffer::new(name, uuid, HEADER)?;
        self.call("DM_DEV_CREATE", dm_dev_create, &mut b)?;
        let dev = b.header().dev as libc::dev_t;
        Ok(Device {
            name: name.to_string(),
            major: libc::major(dev),
            minor: libc::minor(dev),
        })
    }

    /// Load `targets` as the inactive table of `name`; `read_only` makes the device read-only.
    pub fn load_table(&self, name: &str, targets: &[Target], read_only: bool) -> Result<()> {
        let size: usize = HEADER
            + targets
                .iter()
                .map(|t| (SPEC + t.params.len() + 1).next_multiple_of(8))
                .sum::<usize>();
        let mut b = Buffer::new(name, "", size)?;
        b.put_targets(targets)?;
        if read_only {
            b.header_mut().flags |= DM_READONLY_FLAG;
        }
        self.call("DM_TABLE_LOAD", dm_table_load, &mut b)
    }

    /// Make the loaded table live (DM_DEV_SUSPEND without the suspend flag).
    pub fn resume(&self, name: &str) -> Result<()> {
        let mut b = Buffer::new(name, "", HEADER)?;
        self.call("DM_DEV_SUSPEND (resume)", dm_dev_suspend, &mut b)
    }

    /// The status line of each target (for verity: `V` verified so far, `C` corruption seen).
    pub fn status(&self, name: &str) -> Result<Vec<Target>> {
        let mut size = 16 * 1024;
        loop {
            let mut b = Buffer::new(name, "", size)?;
            self.call("DM_TABLE_STATUS", dm_table_status, &mut b)?;
            if b.header().flags & DM_BUFFER_FULL_FLAG == 0 {
                return b.targets();
            }
            size *= 4;
        }
    }

    /// Remove device `name`; returns false if there was none (ENXIO).
    pub fn remove(&self, name: &str) -> Result<bool> {
        let mut b = Buffer::new(name, "", HEADER)?;
        // SAFETY: as in `call`.
        match unsafe { dm_dev_remove(self.file.as_raw_fd(), b.header_mut()) } {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENXIO) => Ok(false),
            Err(errno) => Err(Error::Call {
                call: "DM_DEV_REMOVE",
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<DmIoctl>(), 312);
        assert_eq!(std::mem::offset_of!(DmIoctl, data_size), 12);
        assert_eq!(std::mem::offset_of!(DmIoctl, flags), 28);
        assert_eq!(std::mem::offset_of!(DmIoctl, dev), 40);
        assert_eq!(std::mem::offset_of!(DmIoctl, name), 48);
        assert_eq!(std::mem::offset_of!(DmIoctl, uuid), 176);
        assert_eq!(std::mem::offset_of!(DmIoctl, data), 305);
        assert_eq!(std::mem::size_of::<DmTargetSpec>(), 40);
    }

    #[test]
    fn ioctl_numbers_match_libdevmapper() {
        // _IOWR(0xfd, nr, struct dm_ioctl), as in <linux/dm-ioctl.h>.
        let code = |nr: u8| nix::request_code_readwrite!(0xfd, nr, std::mem::size_of::<DmIoctl>());
        assert_eq!(code(0), 0xc138_fd00); // DM_VERSION
        assert_eq!(code(3), 0xc138_fd03); // DM_DEV_CREATE
        assert_eq!(code(4), 0xc138_fd04); // DM_DEV_REMOVE
        assert_eq!(code(6), 0xc138_fd06); // DM_DEV_SUSPEND
        assert_eq!(code(9), 0xc138_fd09); // DM_TABLE_LOAD
        assert_eq!(code(12), 0xc138_fd0c); // DM_TABLE_STATUS
    }

    #[test]
    fn table_load_buffer() {
        let t = Target {
            start: 0,
            length: 8,
            kind: "verity".into(),
            params: "1 253:3 253:3 4096 4096 1 1 sha256 aa bb".into(),
        };
        let mut b = Buffer::new("usr", "KEEL-USR-A", 4096).unwrap();
        b.put_targets(std::slice::from_ref(&t)).unwrap();
        let bytes = b.bytes();
        assert_eq!(&bytes[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 4096);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 312);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 1);
        assert_eq!(&bytes[48..52], b"usr\0");
        assert_eq!(&bytes[176..187], b"KEEL-USR-A\0");
        // The spec at data_start, then the NUL-terminated parameters.
        assert_eq!(
            u64::from_ne_bytes(bytes[312 + 8..320 + 8].try_into().unwrap()),
            8
        );
        assert_eq!(&bytes[312 + 24..312 + 31], b"verity\0");
        let p = 312 + 40;
        assert_eq!(&bytes[p..p + t.params.len()], t.params.as_bytes());
        assert_eq!(bytes[p + t.params.len()], 0);
        // Read back the way a status reply is parsed (one target: `next` is not followed).
        assert_eq!(b.targets().unwrap(), vec![t]);
    }

    #[test]
    fn status_reply_with_two_targets() {
        // Build a reply as the kernel lays it out: `next` relative to the data area.
        let mut b = Buffer::new("x", "", 1024).unwrap();
        let first = DmTargetSpec {
            sector_start: 0,
            length: 16,
            status: 0,
            next: 48,
            target_type: *b"verity\0\0\0\0\0\0\0\0\0\0",
        };
        let second = DmTargetSpec {
            sector_start: 16,
            length: 8,
            status: 0,
            next: 96,
            target_type: *b"zero\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        let bytes = b.bytes_mut();
        // SAFETY: both specs (40 bytes each) fit in the buffer at 312 and 360;
        // write_unaligned needs no alignment.
        unsafe {
            std::ptr::write_unaligned(bytes[312..].as_mut_ptr().cast(), first);
            std::ptr::write_unaligned(bytes[360..].as_mut_ptr().cast(), second);
        }
        bytes[352] = b'V';
        b.header_mut().target_count = 2;
        let got = b.targets().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].kind.as_str(), got[0].params.as_str()),
            ("verity", "V")
        );
        assert_eq!((got[1].start, got[1].kind.as_str()), (16, "zero"));
    }

    #[test]
    fn names_must_fit() {
        assert!(Buffer::new(&"x".repeat(128), "", 0).is_err());
        assert!(Buffer::new(&"x".repeat(127), &"u".repeat(128), 0).is_ok());
    }
}
