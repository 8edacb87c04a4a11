//! Disk images: format detection, throwaway overlays, reading the final state.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::ToolError;
use crate::tool::{run, QEMU_IMG};

/// The image formats the runner hands to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    /// A VMDK sparse extent (e.g. streamOptimized), read-only for QEMU: booted through
    /// the overlay.
    Vmdk,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
const VMDK_SPARSE_MAGIC: &[u8; 4] = b"KDMV";

/// qcow2 or VMDK when the file starts with that format's magic, raw otherwise. Decided by us,
/// not by QEMU's probing, so a raw guest disk can never be taken for another format.
pub fn detect_format(path: &Path) -> std::io::Result<DiskFormat> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path)?;
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(match (filled, &magic) {
        (4, m) if m == QCOW2_MAGIC => DiskFormat::Qcow2,
        (4, m) if m == VMDK_SPARSE_MAGIC => DiskFormat::Vmdk,
        _ => DiskFormat::Raw,
    })
}

/// Creates a qcow2 overlay at `overlay` whose backing file is `backing` (an
/// absolute path, so the overlay works from anywhere).
pub fn create_overlay(
    backing: &Path,
    backing_format: DiskFormat,
    overlay: &Path,
) -> Result<(), ToolError> {
    run(
        QEMU_IMG,
        [
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            backing_format.as_str().as_ref(),
            "-b".as_ref(),
            backing.as_os_str(),
            overlay.as_os_str(),
        ],
    )?;
    Ok(())
}

/// Writes the full content seen through `source` (an overlay and its backing
/// chain, or a plain image) to `dest` as a raw image.
pub fn convert_to_raw(source: &Path, dest: &Path) -> Result<(), ToolError> {
    let format = detect_format(source).map_err(|e| ToolError::Spawn {
        command: format!("read {}", source.display()),
        source: e,
    })?;
    run(
        QEMU_IMG,
        [
            "convert".as_ref(),
            "-f".as_ref(),
            format.as_str().as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            source.as_os_str(),
            dest.as_os_str(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_qcow2_and_raw_stays_raw() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        std::fs::write(&raw, vec![0x55u8; 1 << 20]).unwrap();
        assert_eq!(detect_format(&raw).unwrap(), DiskFormat::Raw);

        let overlay = dir.path().join("overlay.qcow2");
        create_overlay(&raw, DiskFormat::Raw, &overlay).unwrap();
        assert_eq!(detect_format(&overlay).unwrap(), DiskFormat::Qcow2);

        let back = dir.path().join("back.raw");
        convert_to_raw(&overlay, &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&raw).unwrap());
    }

    #[test]
    fn tiny_file_is_raw() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, b"QF").unwrap();
        assert_eq!(detect_format(&tiny).unwrap(), DiskFormat::Raw);
    }
}
