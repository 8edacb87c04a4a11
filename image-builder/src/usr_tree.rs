//! Shaping the USR tree: a copy of the cached Debian tree's /usr, with the kernel and the Keel
//! initramfs under /usr/lib/modules/<release>/, factory /etc and /var under /usr/share/keel/,
//! an empty machine-id (so systemd treats the first boot as one), os-release, the release file,
//! the files overlay, enabled units and any extra binaries.
//!
//! The staging tree shares its files with the rootfs cache: [`stage`] hard-links them (a copy
//! of the default board's 555 MiB tree took 1–4 s, the links 0.3–0.9 s) when both are on one
//! filesystem. So nothing
//! here may open a staged file for writing or change its mode or owner: every change replaces
//! the entry (unlink, then create), as `write` does, and leaves the cache's file untouched.
//! mkfs.erofs gives every inode the same fixed time (`-T`), so the links change nothing in the
//! filesystem it makes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keel_format::initramfs::usr as usr_paths;

use crate::definition::Rootfs;
use crate::error::{io_at, Error, Result};
use crate::kernel::Kernel;
use crate::tool::Tool;
use crate::units;

/// What the release file and os-release say.
pub struct Release {
    pub version: String,
    pub channel: String,
    pub board: String,
    pub arch: String,
}

pub struct Inputs<'a> {
    /// The cached Debian tree.
    pub tree: &'a Path,
    pub rootfs: &'a Rootfs,
    pub kernel: &'a Kernel,
    pub initramfs: &'a [u8],
    pub release: &'a Release,
    pub extra_bins: &'a [(String, PathBuf)],
    /// The static keel-update and the keys it trusts for payloads.
    pub update_bin: &'a Path,
    pub trusted: &'a [ed25519_dalek::VerifyingKey],
    /// The static keel-install (/usr/bin/keel-install, /usr/bin/keel).
    pub install_bin: &'a Path,
    /// The static keel-cloudinit (/usr/bin/keel-cloudinit; its units come from the rootfs).
    pub cloudinit_bin: &'a Path,
    /// The static keel-reboot-manager and its unit (reboot-manager/units).
    pub reboot_manager_bin: &'a Path,
    /// The static keel-fleet and fleet.service (fleet/units).
    pub fleet_bin: &'a Path,
    /// `--extra-file SRC=DEST`: DEST is an absolute path under /usr or /etc.
    pub extra_files: &'a [(PathBuf, String)],
    /// Debug images only: a root shell on the serial console without a password.
    pub debug_autologin_serial: bool,
}

/// The drop-in of a debug image (`--debug-autologin-serial`), relative to the root.
pub const AUTOLOGIN_DROP_IN: &str =
    "usr/lib/systemd/system/serial-getty@ttyS0.service.d/keel-debug-autologin.conf";
const AUTOLOGIN_TEXT: &str = "\
# KEEL DEBUG IMAGE (keel build --debug-autologin-serial): root is logged in on ttyS0 without a
# password. For tests only; never ship an image with this file.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM
";

/// Where the kernel and the initramfs land, relative to /usr.
pub fn kernel_image_path(release: &str) -> String {
    keel_format::initramfs::usr::kernel(release)
}
pub fn initramfs_path(release: &str) -> String {
    keel_format::initramfs::usr::initramfs(release)
}

/// Build the tree under `staging` and return its /usr.
pub fn assemble(staging: &Path, inp: &Inputs) -> Result<PathBuf> {
    let root = staging.join("root");
    std::fs::create_dir_all(&root).map_err(io_at(&root))?;
    for top in ["usr", "etc", "var"] {
        let src = inp.tree.join(top);
        if src.is_dir() {
            stage(&src, &root.join(top))?;
        }
    }
    if let Some(files) = &inp.rootfs.files {
        overlay(files, &root)?;
    }
    for unit in &inp.rootfs.disable_units {
        units::disable(&root, unit)?;
    }
    for unit in &inp.rootfs.enable_units {
        units::enable(&root, unit)?;
    }
    first_boot_state(&root)?;
    drop_build_leftovers(&root)?;
    dpkg_database_in_usr(&root)?;

    let usr = root.join("usr");
    let rel = &inp.kernel.version.release;
    let moddir = usr.join("lib/modules").join(rel);
    if !moddir.is_dir() {
        // A kernel given as image + modules directory is not in the Debian tree.
        Tool::new("cp")?
            .args(["-a", "--reflink=auto"])
            .arg(&inp.kernel.modules_dir)
            .arg(&moddir)
            .run()?;
    }
    copy_file(&inp.kernel.image, &usr.join(kernel_image_path(rel)), 0o644)?;
    write(&usr.join(initramfs_path(rel)), inp.initramfs, 0o644)?;
    write(
        &usr.join("lib/os-release"),
        os_release(inp.release).as_bytes(),
        0o644,
    )?;
    let etc_os_release = root.join("etc/os-release");
    if etc_os_release.symlink_metadata().is_ok() {
        std::fs::remove_file(&etc_os_release).map_err(io_at(&etc_os_release))?;
    }
    std::os::unix::fs::symlink("../usr/lib/os-release", &etc_os_release)
        .map_err(io_at(&etc_os_release))?;
    write(
        &usr.join(usr_paths::RELEASE),
        release_file(inp.release).as_bytes(),
        0o644,
    )?;
    for (name, src) in inp.extra_bins {
        copy_file(src, &usr.join("bin").join(name), 0o755)?;
    }
    crate::updater::install(&root, inp.update_bin, inp.trusted)?;
    crate::installer::install(&root, inp.install_bin)?;
    copy_file(inp.cloudinit_bin, &usr.join("bin/keel-cloudinit"), 0o755)?;
    crate::reboot_manager::install(&root, inp.reboot_manager_bin)?;
    crate::fleet::install(&root, inp.fleet_bin)?;
    for (src, dest) in inp.extra_files {
        let to = root.join(dest.trim_start_matches('/'));
        let meta = std::fs::symlink_metadata(src).map_err(io_at(src))?;
        if meta.file_type().is_symlink() {
            // A symlink stays one (e.g. enabling a unit in a .wants/ directory).
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_at(parent))?;
            }
            if to.symlink_metadata().is_ok() {
                remove_any(&to)?;
            }
            let target = std::fs::read_link(src).map_err(io_at(src))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_at(&to))?;
            continue;
        }
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        copy_file(src, &to, mode)?;
    }
    if inp.debug_autologin_serial {
        write(
            &root.join(AUTOLOGIN_DROP_IN),
            AUTOLOGIN_TEXT.as_bytes(),
            0o644,
        )?;
    }

    for (top, dest) in [
        ("etc", usr_paths::FACTORY_ETC),
        ("var", usr_paths::FACTORY_VAR),
    ] {
        let from = root.join(top);
        let to = usr.join(dest);
        if to.exists() {
            std::fs::remove_dir_all(&to).map_err(io_at(&to))?;
        }
        if from.is_dir() {
            std::fs::rename(&from, &to).map_err(io_at(&to))?;
        } else {
            std::fs::create_dir_all(&to).map_err(io_at(&to))?;
        }
    }
    Ok(usr)
}

/// Lay the directory `src` of the cached tree at `dst` (which does not exist yet): new
/// directories with `src`'s modes, owners and ACLs, holding hard links to `src`'s files when
/// both are on one filesystem (`cp -a --link`), else copies (`cp -a --reflink=auto`). Hard
/// links within `src` stay hard links either way.
pub fn stage(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = dst.parent().unwrap_or(Path::new("."));
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(io_at(p));
    if dev(src)? == dev(parent)? {
        let linked = Tool::new("cp")?
            .args(["-a", "--link"])
            .arg(src)
            .arg(dst)
            .run();
        if linked.is_ok() {
            return Ok(());
        }
        // One device number does not always mean one filesystem for link(2) (bind mounts
        // of another, overlayfs): copy instead.
        if dst.symlink_metadata().is_ok() {
            remove_any(dst)?;
        }
    }
    Tool::new("cp")?
        .args(["-a", "--reflink=auto"])
        .arg(src)
        .arg(dst)
        .run()?;
    Ok(())
}

pub fn os_release(r: &Release) -> String {
    format!(
        "NAME=Keel\nID=keel\nID_LIKE=debian\nVERSION={v}\nVERSION_ID={v}\nPRETTY_NAME=\"Keel {v} ({c})\"\nVARIANT_ID={b}\n",
        v = r.version,
        c = r.channel,
        b = r.board
    )
}

pub fn release_file(r: &Release) -> String {
    format!(
        "KEEL_VERSION={}\nKEEL_CHANNEL={}\nKEEL_BOARD={}\nKEEL_ARCH={}\n",
        r.version, r.channel, r.board, r.arch
    )
}

/// Lay `files` over `root`: directories 0755, files 0644 or 0755 (executable in the source),
/// owned by whoever builds (root), so the result does not depend on a checkout's umask.
pub fn overlay(files: &Path, root: &Path) -> Result<()> {
    for e in std::fs::read_dir(files).map_err(io_at(files))? {
        let e = e.map_err(io_at(files))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !["usr", "etc", "var"].contains(&name.as_str()) {
            return Err(Error::input(format!(
                "{}: only usr/, etc/ and var/ may be overlaid (the rest of the root is created at boot)",
                e.path().display()
            )));
        }
    }
    copy_tree(files, root)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(io_at(src))?
        .collect::<std::io::Result<_>>()
        .map_err(io_at(src))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(io_at(&from))?;
        if meta.file_type().is_symlink() {
            if to.symlink_metadata().is_ok() {
                remove_any(&to)?;
            }
            let target = std::fs::read_link(&from).map_err(io_at(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_at(&to))?;
        } else if meta.is_dir() {
            if to.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                remove_any(&to)?;
            }
            std::fs::create_dir_all(&to).map_err(io_at(&to))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                .map_err(io_at(&to))?;
            copy_tree(&from, &to)?;
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            copy_file(&from, &to, mode)?;
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(p).map_err(io_at(p))?;
    if m.is_dir() {
        std::fs::remove_dir_all(p).map_err(io_at(p))
    } else {
        std::fs::remove_file(p).map_err(io_at(p))
    }
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let data = std::fs::read(from).map_err(io_at(from))?;
    write(to, &data, mode)
}

fn write(to: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    if to.symlink_metadata().is_ok() {
        remove_any(to)?;
    }
    std::fs::write(to, data).map_err(io_at(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io_at(to))
}

/// An empty /etc/machine-id makes systemd generate one and run first-boot setup
/// (`ConditionFirstBoot=`), as Flatcar's initrd arranges by removing its placeholder. SSH host
/// keys that openssh-server's maintainer script made are secrets of one machine and would make
/// every build differ: they go, and each machine makes its own on first boot (`ssh-keygen -A`).
fn first_boot_state(root: &Path) -> Result<()> {
    write(&root.join("etc/machine-id"), b"", 0o444)?;
    let ssh = root.join("etc/ssh");
    if ssh.is_dir() {
        for e in std::fs::read_dir(&ssh).map_err(io_at(&ssh))?.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path()).map_err(io_at(&e.path()))?;
            }
        }
    }
    let dbus = root.join("var/lib/dbus/machine-id");
    if dbus.symlink_metadata().is_ok_and(|m| m.is_file()) {
        std::fs::remove_file(&dbus).map_err(io_at(&dbus))?;
    }
    Ok(())
}

/// Where the dpkg database goes, under /usr; `/var/lib/dpkg` links to it.
pub const DPKG_DATABASE: &str = "share/keel/dpkg";

/// The dpkg database describes /usr, and nothing installs packages on a running Keel: it moves
/// to the read-only slot, where it changes with the slot it describes, and `/var/lib/dpkg`
/// becomes a symlink to it. Copied into every new ROOT's /var instead, its ~700 small files
/// were most of what the first boot spent populating /var.
fn dpkg_database_in_usr(root: &Path) -> Result<()> {
    let var = root.join("var/lib/dpkg");
    if !var.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let to = root.join("usr").join(DPKG_DATABASE);
    if to.exists() {
        remove_any(&to)?;
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    std::fs::rename(&var, &to).map_err(io_at(&to))?;
    std::os::unix::fs::symlink(format!("/usr/{DPKG_DATABASE}"), &var).map_err(io_at(&var))?;
    Ok(())
}

/// Logs and caches of the bootstrap that say nothing about the image and would only make it
/// differ between two cache entries of the same inputs.
fn drop_build_leftovers(root: &Path) -> Result<()> {
    for rel in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
        "var/log/apt",
        "var/cache/apt",
        "var/cache/ldconfig/aux-cache",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "etc/initramfs-tools",
    ] {
        let p = root.join(rel);
        if p.symlink_metadata().is_ok() {
            remove_any(&p)?;
        }
    }
    let lists = root.join("var/lib/apt/lists");
    if lists.is_dir() {
        for e in std::fs::read_dir(&lists).map_err(io_at(&lists))?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) && e.file_name() != "lock" {
                std::fs::remove_file(e.path()).map_err(io_at(&e.path()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::KernelVersion;
    use crate::definition::rootfs::Variant;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// Every entry under `root`: kind, mode, owner, and content or link target.
    fn snapshot(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let what = if m.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(&p).unwrap().display())
                } else if m.is_dir() {
                    walk(root, &p, out);
                    "dir".to_string()
                } else {
                    format!("file {:?}", std::fs::read(&p).unwrap())
                };
                out.insert(
                    rel,
                    format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
                );
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The staging tree links the cache's files, and every file assemble replaces, adds or
    /// removes (binaries, units, os-release, machine-id, host keys, overlay and extra files,
    /// the dpkg database, the kernel) leaves the cache's copy as it was.
    #[test]
    fn assemble_leaves_the_cached_tree_untouched() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        let rel = "6.1.0-test";
        let unit =
            "[Unit]\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";
        for f in [
            "usr/bin/keel-install",
            "usr/bin/keel-update",
            "usr/bin/keel-cloudinit",
            "usr/bin/keel-reboot-manager",
            "usr/bin/keel-fleet",
            "usr/bin/extra",
            "usr/bin/tool",
            "usr/lib/os-release",
            "usr/share/doc/untouched",
            "etc/os-release",
            "etc/machine-id",
            "etc/hostname",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/extra.conf",
            "var/lib/dbus/machine-id",
            "var/lib/dpkg/status",
            "var/log/dpkg.log",
            "boot/vmlinuz",
        ] {
            put(&tree, f, &format!("cached {f}\n"));
        }
        put(&tree, &format!("usr/lib/modules/{rel}/modules.dep"), "");
        put(
            &tree,
            &format!("usr/lib/modules/{rel}/vmlinuz"),
            "old kernel",
        );
        put(
            &tree,
            &format!("usr/lib/modules/{rel}/keel-initramfs.img"),
            "old",
        );
        for u in [
            "hello.service",
            "keel-update-agent.service",
            "keel-reboot-manager.service",
            "fleet.service",
        ] {
            put(&tree, &format!("usr/lib/systemd/system/{u}"), unit);
        }
        let files = d.path().join("files");
        put(&files, "etc/hostname", "overlay\n");
        put(&files, "usr/bin/tool", "overlay tool\n");
        let bin = d.path().join("bin");
        std::fs::write(&bin, "new binary").unwrap();
        let extra_file = d.path().join("extra.conf");
        std::fs::write(&extra_file, "extra").unwrap();
        let before = snapshot(&tree);

        let rootfs = Rootfs {
            path: d.path().join("rootfs.yaml"),
            suite: "bookworm".into(),
            variant: Variant::Minbase,
            mirrors: vec![],
            packages: vec![],
            dpkg_path_excludes: vec![],
            dpkg_path_includes: vec![],
            files: Some(files),
            enable_units: vec!["hello.service".into()],
            disable_units: vec![],
            source_date_epoch: 1_700_000_000,
        };
        let kernel = Kernel {
            image: tree.join("boot/vmlinuz"),
            modules_dir: tree.join("usr/lib/modules").join(rel),
            version: KernelVersion {
                release: rel.into(),
                build: "#1".into(),
            },
        };
        let key = keel_signing::Key::from_seed([3; 32]);
        let release = Release {
            version: "1.0.0".into(),
            channel: "stable".into(),
            board: "test".into(),
            arch: "x86_64".into(),
        };
        let stage = d.path().join("stage");
        let usr = assemble(
            &stage,
            &Inputs {
                tree: &tree,
                rootfs: &rootfs,
                kernel: &kernel,
                initramfs: b"new initramfs",
                release: &release,
                extra_bins: &[("extra".into(), bin.clone())],
                update_bin: &bin,
                trusted: &[key.public()],
                install_bin: &bin,
                cloudinit_bin: &bin,
                reboot_manager_bin: &bin,
                fleet_bin: &bin,
                extra_files: &[(extra_file, "/etc/extra.conf".into())],
                debug_autologin_serial: false,
            },
        )
        .unwrap();

        assert_eq!(snapshot(&tree), before, "assemble changed the cached tree");
        assert_eq!(
            std::fs::read_to_string(usr.join("bin/keel-install")).unwrap(),
            "new binary"
        );
        assert_eq!(
            std::fs::read_to_string(usr.join("share/keel/etc/hostname")).unwrap(),
            "overlay\n"
        );
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&usr.join("share/doc/untouched")),
            ino(&tree.join("usr/share/doc/untouched")),
            "one filesystem: the staged file is the cache's, linked"
        );
    }

    #[test]
    fn overlay_refuses_paths_outside_usr_etc_var() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("boot")).unwrap();
        let e = overlay(src.path(), dst.path()).unwrap_err().to_string();
        assert!(e.contains("boot"), "{e}");
    }

    #[test]
    fn overlay_normalizes_modes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("usr/bin")).unwrap();
        let f = src.path().join("usr/bin/tool");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o775)).unwrap();
        std::fs::write(src.path().join("usr/data"), "y").unwrap();
        std::fs::set_permissions(
            src.path().join("usr/data"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        overlay(src.path(), dst.path()).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dst.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("usr/bin/tool"), 0o755);
        assert_eq!(mode("usr/data"), 0o644);
    }

    #[test]
    fn release_texts() {
        let r = Release {
            version: "1.2.3".into(),
            channel: "beta".into(),
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
        };
        assert!(os_release(&r).starts_with("NAME=Keel\n"));
        assert!(release_file(&r).contains("KEEL_CHANNEL=beta\n"));
    }
}
