//! The two machines the boot benchmarks compare, booted the same way (QEMU TCG, direct kernel
//! boot, same kernel): a Keel image (kernel, initramfs and command line out of its UKI) and the
//! Debian tree that image was built from, booted the usual way (initramfs-tools, ext4 root).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use keel_qemu::{Accel, BootOptions, Firmware};

use crate::{command, rootfs, uki};

/// The rootfs cache entry an image was built from (its manifest's `rootfs_cache_key`).
pub fn tree_of_image(image_dir: &Path) -> Result<PathBuf> {
    let manifest = image_dir.join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?,
    )?;
    let key = m["inputs"]["rootfs_cache_key"]
        .as_str()
        .with_context(|| format!("no rootfs_cache_key in {}", manifest.display()))?;
    let tree = Path::new(keel_builder::rootfs_cache::DEFAULT_CACHE).join(key);
    if !tree.join("usr").is_dir() {
        bail!(
            "{} (the image's rootfs) is not in the cache: rebuild the image",
            tree.display()
        );
    }
    Ok(tree)
}

/// What one machine boots.
pub struct BootSetup {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
}

/// The kernel, Keel initramfs and command line from the image's UKI (the ESP's BOOTX64.EFI).
pub fn keel(disk: &Path, work: &Path) -> Result<BootSetup> {
    let s = uki::extract(disk, work)?;
    Ok(BootSetup {
        disk: disk.to_path_buf(),
        kernel: s.kernel,
        initrd: s.initrd,
        append: s.cmdline,
    })
}

/// Debian's initramfs for the rootfs cache's tree `cached` and `kernel` (which must be that
/// tree's), and the tree on an ext4 partition (`work/NAME-disk.raw`), after `customize` changed
/// a copy of it (`work/NAME-root`; made once: delete it to redo).
pub fn debian(
    work: &Path,
    name: &str,
    cached: &Path,
    kernel: &Path,
    customize: impl Fn(&Path) -> Result<()>,
) -> Result<BootSetup> {
    let cached = cached.to_path_buf();
    let (cached_kernel, release) =
        rootfs::kernel_in(&cached).context("no kernel in the cached tree")?;
    if std::fs::read(&cached_kernel)? != std::fs::read(kernel)? {
        bail!(
            "the image's kernel is not {}: rebuild the image from the current rootfs cache",
            cached_kernel.display()
        );
    }
    // A copy, so that mkinitramfs in a chroot leaves the shared cache untouched.
    let tree = work.join(format!("{name}-root"));
    if !tree.join("usr").is_dir() {
        let tmp = work.join(format!("{name}-root.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        command::run(Command::new("cp").arg("-a").arg(&cached).arg(&tmp))?;
        customize(&tmp)?;
        std::fs::rename(&tmp, &tree)?;
    }
    let initrd = work.join(format!("{name}-initrd.img"));
    if !initrd.is_file() {
        let inside = tree.join("tmp/keel-bench-initrd.img");
        command::run(Command::new("chroot").arg(&tree).args([
            "mkinitramfs",
            "-o",
            "/tmp/keel-bench-initrd.img",
            &release,
        ]))?;
        std::fs::rename(&inside, &initrd)?;
    }
    let disk = work.join(format!("{name}-disk.raw"));
    if !disk.is_file() {
        let tmp = work.join(format!("{name}-disk.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let f = std::fs::File::create(&tmp)?;
        f.set_len((2048 + 2) << 20)?;
        drop(f);
        let mut sfdisk = Command::new("sfdisk");
        sfdisk
            .arg("-q")
            .arg(&tmp)
            .stdin(std::process::Stdio::piped());
        let mut child = sfdisk.spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("sfdisk stdin")?
            .write_all(b"label: gpt\nstart=2048, size=4194304, type=L, name=root\n")?;
        if !child.wait()?.success() {
            bail!("sfdisk {} failed", tmp.display());
        }
        command::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "root", "-E", "offset=1048576", "-d"])
                .arg(&tree)
                .arg(&tmp)
                .arg("2097152k"),
        )?;
        std::fs::rename(&tmp, &disk)?;
    }
    Ok(BootSetup {
        disk,
        kernel: kernel.to_path_buf(),
        initrd,
        append: "console=ttyS0,115200n8 panic=10 root=/dev/vda1".into(),
    })
}

/// Direct kernel boot of `s` under TCG, console to `log`.
pub fn options(s: &BootSetup, log: &Path) -> BootOptions {
    let mut o = BootOptions::new(&s.disk);
    o.firmware = Firmware::Direct {
        kernel: s.kernel.clone(),
        initrd: Some(s.initrd.clone()),
        append: s.append.clone(),
    };
    o.accel = Accel::Tcg;
    o.log_path = Some(log.to_path_buf());
    o
}

/// The printk timestamp (`[    2.131014] ...`) of the first console line holding `needle`.
pub fn timestamp_of(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    line[open + 1..close].trim().parse().ok()
}
