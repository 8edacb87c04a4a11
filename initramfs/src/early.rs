//! Step 1: the kernel filesystems every later step needs.

use std::path::Path;

use anyhow::Result;
use nix::mount::MsFlags;

use crate::mounts::mount_fs;

/// The early mounts, in order. They stay until the hand-off moves them into the new root.
pub const EARLY: [(&str, &str, &str, &str); 4] = [
    ("proc", "/proc", "proc", ""),
    ("sysfs", "/sys", "sysfs", ""),
    ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    ("tmpfs", "/run", "tmpfs", "mode=0755"),
];

pub fn mount_kernel_filesystems() -> Result<()> {
    for (source, target, fstype, data) in EARLY {
        let flags = match fstype {
            "proc" | "sysfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            "tmpfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            _ => MsFlags::MS_NOSUID,
        };
        mount_fs(
            source,
            Path::new(target),
            fstype,
            flags,
            (!data.is_empty()).then_some(data),
        )?;
    }
    Ok(())
}

/// If the kernel could not open /dev/console for us (no node in the initramfs), stdin/stdout/
/// stderr are closed: attach them to the console now that devtmpfs provides it.
pub fn attach_console() {
    let closed = nix::fcntl::fcntl(std::io::stdout(), nix::fcntl::FcntlArg::F_GETFD).is_err();
    if !closed {
        return;
    }
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let _ = nix::unistd::dup2_stdin(&console);
        let _ = nix::unistd::dup2_stdout(&console);
        let _ = nix::unistd::dup2_stderr(&console);
    }
}
