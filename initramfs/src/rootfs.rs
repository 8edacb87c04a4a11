//! Step 7: ROOT at /sysroot, with the skeleton every boot needs, /var populated once from the
//! slot's factory copy, the /etc overlay, and OEM at /oem.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keel_format::initramfs::{root, usr};
use nix::mount::MsFlags;

use crate::copytree::copy_tree;
use crate::mounts::mount_fs;
use keel_blockdev::sysfs::PartitionNode;

pub const SYSROOT: &str = "/sysroot";

/// Directories of the new root and their modes.
pub const SKELETON_DIRS: [(&str, u32); 16] = [
    ("usr", 0o755),
    ("etc", 0o755),
    ("var", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
    ("oem", 0o755),
    ("boot", 0o755),
    (".keel", 0o700),
];

/// The merged-/usr links.
pub const SKELETON_LINKS: [(&str, &str); 4] = [
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

pub fn mount_root(part: &PartitionNode) -> Result<()> {
    mount_fs(
        &part.node().to_string_lossy(),
        Path::new(SYSROOT),
        "ext4",
        MsFlags::empty(),
        None,
    )
}

/// Create whatever of the skeleton is missing; existing entries are left alone (a warning is
/// returned for entries of the wrong kind).
pub fn skeleton(root: &Path) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (name, mode) in SKELETON_DIRS {
        let p = root.join(name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => warnings.push(format!("{} exists and is not a directory", p.display())),
            Err(_) => {
                fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
                // Explicitly: the umask would strip the sticky and world bits of tmp.
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("setting the mode of {}", p.display()))?;
            }
        }
    }
    for (name, target) in SKELETON_LINKS {
        let p = root.join(name);
        match fs::read_link(&p) {
            Ok(t) if t == Path::new(target) => {}
            Ok(t) => warnings.push(format!(
                "{} points to {}, not {target}",
                p.display(),
                t.display()
            )),
            Err(_) if fs::symlink_metadata(&p).is_ok() => warnings.push(format!(
                "{} exists and is not a symlink to {target}",
                p.display()
            )),
            Err(_) => symlink(target, &p).with_context(|| format!("creating {}", p.display()))?,
        }
    }
    Ok(warnings)
}

/// Copy the slot's factory /var to ROOT's /var, once (marker `.keel/var-populated`).
/// Returns the number of entries copied, or None when it had been done before.
pub fn populate_var(root: &Path, usr_dir: &Path) -> Result<Option<u64>> {
    let marker = root.join(root::VAR_POPULATED);
    if marker.exists() {
        return Ok(None);
    }
    let factory = usr_dir.join(usr::FACTORY_VAR);
    let count = if factory.is_dir() {
        copy_tree(&factory, &root.join("var"))
            .with_context(|| format!("copying {} to {}/var", factory.display(), root.display()))?
    } else {
        crate::warning!(
            "the slot has no factory /var ({}); /var starts empty",
            factory.display()
        );
        0
    };
    // The copy spans many files; the marker comes after.
    nix::unistd::sync();
    write_synced(&marker, b"")?;
    Ok(Some(count))
}

fn write_synced(p: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    if let Some(dir) = p.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The overlay options for /etc: the slot's factory /etc below, ROOT's changes above.
pub fn etc_overlay_options(root: &Path, usr_dir: &Path) -> (PathBuf, String) {
    let lower = usr_dir.join(usr::FACTORY_ETC);
    let upper = root.join(root::ETC_UPPER);
    let work = root.join(root::ETC_WORK);
    (
        lower.clone(),
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ),
    )
}

/// Is the slot's factory /etc there? Its absence is the slot's fault.
pub fn factory_etc_present(usr_dir: &Path) -> bool {
    usr_dir.join(usr::FACTORY_ETC).is_dir()
}

pub fn mount_etc_overlay(root: &Path, usr_dir: &Path) -> Result<()> {
    let (_, options) = etc_overlay_options(root, usr_dir);
    for d in [root::ETC_UPPER, root::ETC_WORK] {
        let p = root.join(d);
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    }
    mount_fs(
        "overlay",
        &root.join("etc"),
        "overlay",
        MsFlags::empty(),
        Some(&options),
    )
}

pub fn mount_oem(part: &PartitionNode, root: &Path) -> Result<()> {
    mount_fs(
        &part.node().to_string_lossy(),
        &root.join("oem"),
        "ext4",
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn skeleton_is_created_once_and_respects_existing_entries() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert!(skeleton(r).unwrap().is_empty());
        assert_eq!(fs::metadata(r.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
        assert_eq!(fs::metadata(r.join("root")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(
            fs::read_link(r.join("lib64")).unwrap(),
            Path::new("usr/lib64")
        );
        for (d, _) in SKELETON_DIRS {
            assert!(r.join(d).is_dir(), "{d}");
        }
        // Second run: nothing to do, nothing to warn about.
        fs::write(r.join("home/file"), b"kept").unwrap();
        assert!(skeleton(r).unwrap().is_empty());
        assert_eq!(fs::read(r.join("home/file")).unwrap(), b"kept");
        // A wrong link is reported, not replaced.
        fs::remove_file(r.join("bin")).unwrap();
        symlink("elsewhere", r.join("bin")).unwrap();
        let w = skeleton(r).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            fs::read_link(r.join("bin")).unwrap(),
            Path::new("elsewhere")
        );
    }

    #[test]
    fn var_is_populated_once() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let usr_dir = t.path().join("usr");
        fs::create_dir_all(usr_dir.join("share/keel/var/lib/demo")).unwrap();
        fs::write(usr_dir.join("share/keel/var/lib/demo/seed"), b"1").unwrap();
        fs::create_dir_all(&root).unwrap();
        skeleton(&root).unwrap();
        assert_eq!(populate_var(&root, &usr_dir).unwrap(), Some(4));
        assert_eq!(fs::read(root.join("var/lib/demo/seed")).unwrap(), b"1");
        assert!(root.join(".keel/var-populated").exists());
        // The system changed /var; the next boot does not copy over it.
        fs::write(root.join("var/lib/demo/seed"), b"2").unwrap();
        assert_eq!(populate_var(&root, &usr_dir).unwrap(), None);
        assert_eq!(fs::read(root.join("var/lib/demo/seed")).unwrap(), b"2");
    }

    #[test]
    fn overlay_options() {
        let (lower, o) = etc_overlay_options(Path::new("/sysroot"), Path::new("/sysroot/usr"));
        assert_eq!(lower, Path::new("/sysroot/usr/share/keel/etc"));
        assert_eq!(
            o,
            "lowerdir=/sysroot/usr/share/keel/etc,upperdir=/sysroot/.keel/etc-upper,\
             workdir=/sysroot/.keel/etc-work"
        );
    }
}
