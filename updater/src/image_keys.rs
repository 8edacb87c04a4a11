//! The keys a disk image trusts: `/usr/share/keel/keys` inside the erofs of the slot its boot
//! rule picks, what `keel-update` on that system would trust. The host has no device-mapper and
//! mounts nothing: the slot's filesystem (its data area, before the verity tree) is copied to a
//! scratch file and unpacked with `fsck.erofs --extract` (erofs-utils), which needs no root.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use ed25519_dalek::VerifyingKey;
use keel_format::initramfs::{system, usr};

use crate::disk::Disk;
use crate::error::{Result, UpdateError};
use crate::slots::find_slots;
use crate::target::Target;

/// The tool that reads an erofs without mounting it.
const FSCK_EROFS: &str = "fsck.erofs";

/// The trusted keys of the slot `target`'s boot rule picks (its running slot). Errors name the
/// image and the slot.
pub fn load(target: &Target) -> Result<Vec<VerifyingKey>> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let slot = &slots.running;
    let fail = |reason: String| {
        UpdateError::Keys(format!(
            "cannot read the keys {} trusts from its {} ({}): {reason}",
            target.disk.display(),
            slot.label,
            system::KEYS_DIR
        ))
    };
    let mut dev = disk.slot(slot, false)?;
    let meta = dev
        .read_metadata()
        .map_err(|e| fail(format!("no readable metadata block: {e}")))?;
    let scratch = tempfile::tempdir().map_err(|e| fail(format!("a scratch directory: {e}")))?;
    let fs_image = scratch.path().join("usr.erofs");
    let mut reader = dev
        .buffered_reader()
        .map_err(|e| fail(format!("opening it: {e}")))?;
    copy_range(
        &mut reader,
        dev.base(),
        meta.metadata.verity.data_size,
        &fs_image,
    )
    .map_err(|e| fail(format!("copying its filesystem out: {e}")))?;
    let tree = scratch.path().join("usr");
    extract(&fs_image, &tree).map_err(fail)?;
    keel_format::keys::require_keys(&tree.join(usr::KEYS)).map_err(|e| fail(e.to_string()))
}

/// `len` bytes of `from` starting at `offset` into a new file `to`.
fn copy_range(from: &mut File, offset: u64, len: u64, to: &Path) -> std::io::Result<()> {
    from.seek(SeekFrom::Start(offset))?;
    let mut out = File::create(to)?;
    let copied = std::io::copy(&mut from.take(len), &mut out)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{copied} of {len} bytes"),
        ));
    }
    Ok(())
}

/// Unpack the erofs `image` into the new directory `into`.
fn extract(image: &Path, into: &Path) -> std::result::Result<(), String> {
    let out = Command::new(FSCK_EROFS)
        .arg(format!("--extract={}", into.display()))
        .arg("--no-preserve")
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run {FSCK_EROFS} (Debian's erofs-utils): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{FSCK_EROFS} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
