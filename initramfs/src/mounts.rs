//! Mounting, with a record of what keel-init mounted so that a failed slot, a kexec and a
//! shutdown can take it all down again in reverse order.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts made by keel-init, oldest first.
static MOUNTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn mounted() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    MOUNTED.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("creating mount point {}", target.display()))?;
    mount(Some(source), target, Some(fstype), flags, data).with_context(|| {
        format!(
            "mounting {source} ({fstype}{}) on {}",
            data.map(|d| format!(", {d}")).unwrap_or_default(),
            target.display()
        )
    })?;
    mounted().push(target.to_path_buf());
    Ok(())
}

/// `mount --move from to`. The record moves to the end of the list: the mount now sits on top
/// of mounts made after it (/sysusr/usr moved onto ROOT), so it must come down before them.
pub fn move_mount(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .with_context(|| format!("moving mount {} to {}", from.display(), to.display()))?;
    let mut m = mounted();
    m.retain(|p| p != from);
    m.push(to.to_path_buf());
    Ok(())
}

/// Unmount everything recorded after the first `mark` mounts, newest first. A mount that is busy is detached
/// lazily; errors are returned as messages and do not stop the rest.
pub fn unmount_above(mark: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let mut m = mounted();
    while m.len() > mark {
        let p = m.pop().expect("len > mark");
        if let Err(e) = umount2(&p, MntFlags::empty()) {
            if let Err(e2) = umount2(&p, MntFlags::MNT_DETACH) {
                problems.push(format!("unmounting {}: {e}; detaching: {e2}", p.display()));
            } else {
                problems.push(format!("{} was busy ({e}); detached it", p.display()));
            }
        }
    }
    problems
}

/// Forget the record without unmounting (after the hand-off moved everything into place).
pub fn forget_all() {
    mounted().clear();
}

/// Is `name` a filesystem type the kernel knows right now (/proc/filesystems)?
pub fn filesystem_known(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}
