//! Filesystems by the real tools, made reproducible: erofs for USR (`-T` fixed time, `-U` fixed
//! UUID), FAT32 for the ESP (`--invariant`, mtools with SOURCE_DATE_EPOCH), empty ext4 for OEM
//! and ROOT (E2FSPROGS_FAKE_TIME, fixed UUID and hash seed).

use std::fs::File;
use std::path::Path;

use uuid::Uuid;

use crate::definition::board::Compression;
use crate::digest;
use crate::error::{io_at, Result};
use crate::tool::Tool;

/// A UUID derived from `tag` and `seed`: stable across builds, distinct per use.
pub fn derived_uuid(tag: &str, seed: &str) -> Uuid {
    let d = digest::sha256(format!("keel:{tag}:{seed}").as_bytes());
    uuid::Builder::from_random_bytes(d[..16].try_into().expect("16 bytes")).into_uuid()
}

pub fn erofs(
    tree: &Path,
    out: &Path,
    epoch: u64,
    uuid: Uuid,
    compression: Compression,
) -> Result<()> {
    let mut t = Tool::new("mkfs.erofs")?
        .arg("--quiet")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"));
    match compression {
        Compression::Lz4hc => t = t.arg("-zlz4hc"),
        Compression::Lz4 => t = t.arg("-zlz4"),
        Compression::None => {}
    }
    t.arg(out).arg(tree).run()?;
    Ok(())
}

/// A FAT32 filesystem of `size` bytes holding `files` (source, destination like
/// `EFI/BOOT/BOOTX64.EFI`).
pub fn vfat(out: &Path, size: u64, label: &str, epoch: u64, files: &[(&Path, &str)]) -> Result<()> {
    vfat_with("32", out, size, label, epoch, files)
}

/// A FAT12 filesystem for a few MiB of `files` (the ISO's EFI boot image).
pub fn vfat_small(
    out: &Path,
    size: u64,
    label: &str,
    epoch: u64,
    files: &[(&Path, &str)],
) -> Result<()> {
    vfat_with("12", out, size, label, epoch, files)
}

fn vfat_with(
    fat_bits: &str,
    out: &Path,
    size: u64,
    label: &str,
    epoch: u64,
    files: &[(&Path, &str)],
) -> Result<()> {
    if out.exists() {
        std::fs::remove_file(out).map_err(io_at(out))?;
    }
    Tool::new("mkfs.vfat")?
        .args(["-F", fat_bits, "-n", label, "--invariant", "-C"])
        .arg(out)
        .arg((size / 1024).to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()?;
    let mut dirs: Vec<String> = Vec::new();
    for (_, dest) in files {
        let parts: Vec<&str> = dest.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let img = format!("{}", out.display());
    if !dirs.is_empty() {
        Tool::new("mmd")?
            .args(["-i", &img])
            .args(dirs.iter().map(|d| format!("::/{d}")))
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .run()?;
    }
    for (src, dest) in files {
        Tool::new("mcopy")?
            .args(["-i", &img])
            .arg(src)
            .arg(format!("::/{dest}"))
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .run()?;
    }
    Ok(())
}

/// An empty ext4 filesystem of `size` bytes.
pub fn ext4(
    out: &Path,
    size: u64,
    label: &str,
    uuid: Uuid,
    hash_seed: Uuid,
    epoch: u64,
) -> Result<()> {
    let f = File::create(out).map_err(io_at(out))?;
    f.set_len(size).map_err(io_at(out))?;
    drop(f);
    Tool::new("mkfs.ext4")?
        .args(["-q", "-F", "-b", "4096", "-T", "default", "-L", label])
        .arg(format!("-U{uuid}"))
        .arg(format!(
            "-Ehash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0"
        ))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        assert_eq!(derived_uuid("a", "x"), derived_uuid("a", "x"));
        assert_ne!(derived_uuid("a", "x"), derived_uuid("b", "x"));
        assert_eq!(derived_uuid("a", "x").get_version_num(), 4);
    }

    /// Two ext4 filesystems made at different moments are identical, and e2fsck finds them clean.
    #[test]
    fn ext4_is_reproducible_and_clean() {
        let d = tempfile::tempdir().unwrap();
        let (u, s) = (derived_uuid("t", "u"), derived_uuid("t", "s"));
        ext4(&d.path().join("a"), 16 << 20, "ROOT", u, s, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        ext4(&d.path().join("b"), 16 << 20, "ROOT", u, s, 1_700_000_000).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("a")).unwrap(),
            std::fs::read(d.path().join("b")).unwrap()
        );
        let st = std::process::Command::new("e2fsck")
            .args(["-fn"])
            .arg(d.path().join("a"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stdout)
        );
    }

    #[test]
    fn vfat_is_reproducible_and_clean() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("payload");
        std::fs::write(&src, vec![7u8; 100_000]).unwrap();
        vfat(
            &d.path().join("a"),
            40 << 20,
            "EFI-SYSTEM",
            1_700_000_000,
            &[(&src, "EFI/BOOT/BOOTX64.EFI")],
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        vfat(
            &d.path().join("b"),
            40 << 20,
            "EFI-SYSTEM",
            1_700_000_000,
            &[(&src, "EFI/BOOT/BOOTX64.EFI")],
        )
        .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("a")).unwrap(),
            std::fs::read(d.path().join("b")).unwrap()
        );
        let st = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(d.path().join("a"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}
