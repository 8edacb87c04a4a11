//! The unified kernel image on the ESP: Debian's systemd-stub with the os-release, command
//! line, kernel and initramfs added as PE sections by `objcopy` (Debian 12 has no ukify), then
//! its COFF time stamp pinned and checksum recomputed, since objcopy stamps the current time.

use std::path::Path;

use goblin::pe::PE;

use crate::error::{io_at, Error, Result};
use crate::tool::Tool;

pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const PAGE: u64 = 0x1000;

pub struct Parts<'a> {
    pub stub: &'a Path,
    pub osrel: &'a [u8],
    pub cmdline: &'a str,
    pub linux: &'a Path,
    pub initrd: &'a Path,
}

/// Build the UKI at `out`, using `work` for the small section files.
pub fn build(parts: &Parts, work: &Path, out: &Path, epoch: u64) -> Result<()> {
    if !parts.stub.is_file() {
        return Err(Error::Environment(format!(
            "{} is missing (Debian package systemd-boot-efi; ci/install-deps.sh installs it)",
            parts.stub.display()
        )));
    }
    let stub = std::fs::read(parts.stub).map_err(io_at(parts.stub))?;
    let end =
        image_end(&stub).map_err(|e| Error::Format(format!("{}: {e}", parts.stub.display())))?;

    let osrel = work.join("osrel");
    let cmdline = work.join("cmdline");
    std::fs::write(&osrel, parts.osrel).map_err(io_at(&osrel))?;
    std::fs::write(&cmdline, parts.cmdline.as_bytes()).map_err(io_at(&cmdline))?;

    let mut vma = align(end);
    let mut t = Tool::new("objcopy")?.env("SOURCE_DATE_EPOCH", epoch.to_string());
    for (name, file) in [
        (".osrel", osrel.as_path()),
        (".cmdline", cmdline.as_path()),
        (".linux", parts.linux),
        (".initrd", parts.initrd),
    ] {
        let size = std::fs::metadata(file).map_err(io_at(file))?.len();
        t = t
            .arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
        vma = align(vma + size);
    }
    t.arg(parts.stub).arg(out).run()?;

    let mut bytes = std::fs::read(out).map_err(io_at(out))?;
    pin_timestamp(&mut bytes, epoch as u32)?;
    std::fs::write(out, &bytes).map_err(io_at(out))?;
    Ok(())
}

fn align(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// The first virtual address after the stub's own sections (image base included, which is
/// what objcopy's --change-section-vma takes).
fn image_end(stub: &[u8]) -> std::result::Result<u64, goblin::error::Error> {
    let pe = PE::parse(stub)?;
    let end = pe
        .sections
        .iter()
        .map(|s| s.virtual_address as u64 + (s.virtual_size.max(s.size_of_raw_data)) as u64)
        .max()
        .unwrap_or(0);
    Ok(pe.image_base + end)
}

fn pe_header_offset(bytes: &[u8]) -> Result<usize> {
    let bad = || Error::Format("UKI is not a PE file".into());
    let off = u32::from_le_bytes(
        bytes
            .get(0x3c..0x40)
            .ok_or_else(bad)?
            .try_into()
            .expect("4"),
    ) as usize;
    if bytes.get(off..off + 4) != Some(b"PE\0\0") {
        return Err(bad());
    }
    Ok(off)
}

/// Set the COFF TimeDateStamp and recompute the optional header's CheckSum.
pub fn pin_timestamp(bytes: &mut [u8], stamp: u32) -> Result<()> {
    let pe = pe_header_offset(bytes)?;
    bytes[pe + 8..pe + 12].copy_from_slice(&stamp.to_le_bytes());
    let sum_at = pe + 24 + 64;
    bytes[sum_at..sum_at + 4].copy_from_slice(&[0; 4]);
    let sum = pe_checksum(bytes, sum_at);
    bytes[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The PE image checksum (as imagehlp's CheckSumMappedFile): a 16-bit one's-complement-style
/// sum of the file with the checksum field taken as zero, plus the file length.
pub fn pe_checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let word = if (checksum_at..checksum_at + 4).contains(&i) {
            0
        } else {
            let lo = bytes[i] as u64;
            let hi = bytes.get(i + 1).copied().unwrap_or(0) as u64;
            lo | (hi << 8)
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// A PE section as read back.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub virtual_address: u64,
    pub size: u64,
}

/// Sections of a PE file, and the payload of each (raw data cut to the virtual size).
pub fn sections(bytes: &[u8]) -> Result<Vec<(Section, &[u8])>> {
    let pe = PE::parse(bytes).map_err(|e| Error::Format(format!("not a PE image: {e}")))?;
    let mut out = Vec::new();
    for s in &pe.sections {
        let name = s.name().unwrap_or("?").to_string();
        let start = s.pointer_to_raw_data as usize;
        let len = (s.virtual_size.min(s.size_of_raw_data)) as usize;
        let data = bytes.get(start..start + len).unwrap_or(&[]);
        out.push((
            Section {
                name,
                virtual_address: pe.image_base + s.virtual_address as u64,
                size: len as u64,
            },
            data,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_what_objcopy_writes() {
        let Ok(stub) = std::fs::read(STUB) else {
            panic!("{STUB} missing: apt-get install systemd-boot-efi")
        };
        let pe = pe_header_offset(&stub).unwrap();
        let at = pe + 24 + 64;
        let stored = u32::from_le_bytes(stub[at..at + 4].try_into().unwrap());
        if stored != 0 {
            assert_eq!(pe_checksum(&stub, at), stored);
        }
    }

    /// A UKI made from the real stub: sections in place, payloads byte-identical, no overlap,
    /// same bytes on a second build, objdump (an independent reader) agrees on the sections.
    #[test]
    fn builds_a_readable_reproducible_uki() {
        let d = tempfile::tempdir().unwrap();
        let linux = d.path().join("linux");
        let initrd = d.path().join("initrd");
        std::fs::write(&linux, vec![0x11u8; 300_000]).unwrap();
        std::fs::write(&initrd, vec![0x22u8; 70_001]).unwrap();
        let parts = Parts {
            stub: Path::new(STUB),
            osrel: b"NAME=Keel\n",
            cmdline: "console=ttyS0",
            linux: &linux,
            initrd: &initrd,
        };
        let a = d.path().join("a.efi");
        let b = d.path().join("b.efi");
        build(&parts, d.path(), &a, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        build(&parts, d.path(), &b, 1_700_000_000).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());

        let secs = sections(&bytes).unwrap();
        let get = |n: &str| {
            secs.iter()
                .find(|(s, _)| s.name == n)
                .unwrap_or_else(|| panic!("no {n}"))
        };
        assert_eq!(get(".cmdline").1, b"console=ttyS0");
        assert_eq!(get(".osrel").1, b"NAME=Keel\n");
        assert_eq!(get(".linux").1, &std::fs::read(&linux).unwrap()[..]);
        assert_eq!(get(".initrd").1, &std::fs::read(&initrd).unwrap()[..]);
        let mut spans: Vec<(u64, u64)> = secs
            .iter()
            .map(|(s, _)| (s.virtual_address, s.virtual_address + s.size))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlapping sections {spans:?}");
        }

        let out = std::process::Command::new("objdump")
            .arg("-h")
            .arg(&a)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for n in [".osrel", ".cmdline", ".linux", ".initrd", ".sbat", ".text"] {
            assert!(text.contains(n), "objdump misses {n}:\n{text}");
        }
    }
}
