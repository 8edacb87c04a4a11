//! Filesystems by the real tools, made reproducible: erofs for USR (`-T` fixed time, `-U` fixed
//! UUID), FAT32 for the ESP (`--invariant`, mtools with SOURCE_DATE_EPOCH), ext4 for OEM and
//! ROOT (E2FSPROGS_FAKE_TIME, fixed UUID and hash seed, every file time at the epoch).

use std::fs::File;
use std::path::Path;

use uuid::Uuid;

use crate::definition::board::{Compression, UsrFilesystem};
use crate::digest;
use crate::error::{io_at, Result};
use crate::tool::Tool;

/// A UUID derived from `tag` and `seed`: stable across builds, distinct per use.
pub fn derived_uuid(tag: &str, seed: &str) -> Uuid {
    let d = digest::sha256(format!("keel:{tag}:{seed}").as_bytes());
    uuid::Builder::from_random_bytes(d[..16].try_into().expect("16 bytes")).into_uuid()
}

pub fn erofs(tree: &Path, out: &Path, epoch: u64, uuid: Uuid, fs: &UsrFilesystem) -> Result<()> {
    let mut t = Tool::new("mkfs.erofs")?
        .arg("--quiet")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"));
    let compressor = match fs.compression {
        Compression::Lz4hc => Some("-zlz4hc"),
        Compression::Lz4 => Some("-zlz4"),
        Compression::None => None,
    };
    if let Some(z) = compressor {
        t = t
            .arg(z)
            .arg(format!("-C{}", fs.physical_cluster_kib * 1024));
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
    ext4_with(out, size, label, uuid, hash_seed, epoch, None)
}

/// An ext4 filesystem of `size` bytes holding a copy of the directory `tree` (`mkfs.ext4 -d`,
/// which adds entries sorted by name), every timestamp at `epoch`.
pub fn ext4_with(
    out: &Path,
    size: u64,
    label: &str,
    uuid: Uuid,
    hash_seed: Uuid,
    epoch: u64,
    tree: Option<&Path>,
) -> Result<()> {
    let f = File::create(out).map_err(io_at(out))?;
    f.set_len(size).map_err(io_at(out))?;
    drop(f);
    let mut t = Tool::new("mkfs.ext4")?
        .args(["-q", "-F", "-b", "4096", "-T", "default", "-L", label])
        .arg(format!("-U{uuid}"))
        .arg(format!(
            "-Ehash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0"
        ));
    let mut paths = Vec::new();
    if let Some(tree) = tree {
        paths = set_times(tree, epoch)?;
        t = t.arg("-d").arg(tree);
    }
    t.arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .run()?;
    if !paths.is_empty() {
        set_change_times(out, &paths, epoch)?;
    }
    Ok(())
}

/// `mkfs.ext4 -d` copies each file's change time, which nobody can set on the host: it is
/// rewritten in the image with debugfs.
fn set_change_times(image: &Path, paths: &[String], epoch: u64) -> Result<()> {
    let mut commands = String::new();
    for p in paths {
        if p.contains(['"', '\n', '\\']) {
            return Err(crate::error::Error::input(format!(
                "{p:?}: a name debugfs cannot be given (quote, backslash or newline)"
            )));
        }
        commands.push_str(&format!("sif \"/{p}\" ctime @{epoch}\n"));
    }
    let script = image.with_extension("debugfs");
    std::fs::write(&script, commands).map_err(io_at(&script))?;
    let run = Tool::new("debugfs")?
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(image)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .run();
    let _ = std::fs::remove_file(&script);
    run?;
    Ok(())
}

/// Every entry below `tree` (and `tree`) gets `epoch` as its access and modification time;
/// symbolic links themselves, not their targets. Returns the entries' paths below `tree`, sorted.
fn set_times(tree: &Path, epoch: u64) -> Result<Vec<String>> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(epoch as i64, 0);
    let touch = |path: &Path| {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_at(path)(e.into()))
    };
    // A directory is touched after it is read: reading it would set its access time again.
    let mut dirs = vec![tree.to_path_buf()];
    let mut found = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            if std::fs::symlink_metadata(&path)
                .map_err(io_at(&path))?
                .is_dir()
            {
                dirs.push(path.clone());
            } else {
                touch(&path)?;
            }
            if let Ok(rel) = path.strip_prefix(tree) {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
        touch(&dir)?;
    }
    found.sort();
    Ok(found)
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

    /// The same files written in a different order (so that small directories list them in
    /// another order) at other times give the same filesystem, which holds them.
    #[test]
    fn ext4_with_a_tree_is_reproducible_and_clean() {
        let d = tempfile::tempdir().unwrap();
        let (u, s) = (derived_uuid("t", "u"), derived_uuid("t", "s"));
        let names = ["b", "a", "c/d", "c/e"];
        for (tree, order) in [("ta", [0, 1, 2, 3]), ("tb", [3, 2, 1, 0])] {
            for i in order {
                let p = d.path().join(tree).join("var").join(names[i]);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, names[i]).unwrap();
            }
            std::os::unix::fs::symlink("a", d.path().join(tree).join("var/link")).unwrap();
            let tree = d.path().join(tree);
            ext4_with(
                &tree.with_extension("img"),
                16 << 20,
                "ROOT",
                u,
                s,
                1_700_000_000,
                Some(&tree),
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let (a, b) = (d.path().join("ta.img"), d.path().join("tb.img"));
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let st = std::process::Command::new("e2fsck")
            .args(["-fn"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let listing = std::process::Command::new("debugfs")
            .args(["-R", "cat /var/c/e"])
            .arg(&a)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&listing.stdout), "c/e");
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
