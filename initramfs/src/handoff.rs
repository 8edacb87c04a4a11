//! Step 8: hand the machine to the real init. Move the kernel filesystems into /sysroot, empty
//! the initramfs (a ramfs: its memory is only freed by deleting), make /sysroot the root, and
//! exec the hand-off program as PID 1.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, execv};

use crate::mounts::move_mount;
use crate::rootfs::SYSROOT;

/// Is `program` an executable regular file inside the new root? Absolute symlinks resolve
/// against /sysroot, as they will after the switch (openat2 with RESOLVE_IN_ROOT).
pub fn check_program(new_root: &Path, program: &str) -> Result<()> {
    let root =
        fs::File::open(new_root).with_context(|| format!("opening {}", new_root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(&root, program.trim_start_matches('/'), how)
        .map_err(|e| anyhow::anyhow!("{program} is not in the new root: {e}"))?;
    let file = fs::File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        bail!("{program} in the new root is not an executable file");
    }
    Ok(())
}

/// Delete everything on the initramfs root filesystem, staying on it (`root_dev`) and out of
/// `keep` (the new root).
fn clear_initramfs(dir: &Path, root_dev: u64, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p == keep {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if m.dev() != root_dev {
                continue; // another mount: not ours to empty
            }
            clear_initramfs(&p, root_dev, keep);
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Never returns on success; any error leaves the caller with a half-torn-down initramfs, so
/// it can only end the boot.
pub fn switch_root(program: &str) -> Result<std::convert::Infallible> {
    let new_root = Path::new(SYSROOT);
    for (_, target, _, _) in crate::early::EARLY {
        move_mount(
            Path::new(target),
            &new_root.join(target.trim_start_matches('/')),
        )?;
    }
    let root_dev = fs::metadata("/")?.dev();
    clear_initramfs(Path::new("/"), root_dev, new_root);
    chdir(new_root).context("chdir /sysroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving /sysroot to /")?;
    chroot(".").context("chroot")?;
    chdir("/").context("chdir /")?;
    crate::mounts::forget_all();

    crate::pid1::reset_signals_for_exec();
    let path = CString::new(program).context("NUL in path")?;
    // The kernel's leftover arguments for init (e.g. `single`) go on to the real init.
    let mut argv = vec![path.clone()];
    argv.extend(
        std::env::args()
            .skip(1)
            .filter_map(|a| CString::new(a).ok()),
    );
    let e = execv(&path, &argv).unwrap_err();
    bail!("executing {program}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn program_checks_resolve_inside_the_new_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        fs::write(r.join("usr/lib/systemd/systemd"), b"#!").unwrap();
        fs::set_permissions(
            r.join("usr/lib/systemd/systemd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::create_dir_all(r.join("sbin")).unwrap();
        // An absolute link, as in Debian's /sbin/init -> /lib/systemd/systemd.
        symlink("/usr/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        fs::write(r.join("notexec"), b"").unwrap();
        check_program(r, "/usr/lib/systemd/systemd").unwrap();
        check_program(r, "/sbin/init").unwrap();
        assert!(check_program(r, "/notexec").is_err());
        assert!(check_program(r, "/usr/bin/missing").is_err());
        // The host's own /bin/sh does not count.
        assert!(check_program(r, "/bin/sh").is_err());
    }

    #[test]
    fn clearing_stays_out_of_the_new_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("etc/keel/keys")).unwrap();
        fs::write(r.join("init"), b"x").unwrap();
        fs::write(r.join("etc/keel/keys/a.pem"), b"x").unwrap();
        fs::create_dir_all(r.join("sysroot/usr")).unwrap();
        fs::write(r.join("sysroot/usr/keep"), b"x").unwrap();
        let dev = fs::metadata(r).unwrap().dev();
        clear_initramfs(r, dev, &r.join("sysroot"));
        let left: Vec<_> = fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["sysroot"]);
        assert!(r.join("sysroot/usr/keep").exists());
    }
}
