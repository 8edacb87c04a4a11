//! Rebooting into the next slot. A firmware reboot by default; `--kexec` loads the RUNNING
//! kernel and Keel initramfs with kexec_file_load and the current command line minus any
//! `keel.slot=`, so keel-init starts afresh, picks the staged slot and kexecs once more if that
//! slot's kernel differs. (The passive slot's own kernel would have to be read from an
//! unverified mount; keel-init reads it through dm-verity instead.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, UpdateError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootMode {
    Firmware,
    Kexec,
}

/// The command line for the kexec'd kernel: the current one without `keel.slot=`, which would
/// pin keel-init to the old slot.
pub fn kexec_cmdline(current: &str) -> String {
    current
        .split_whitespace()
        .filter(|arg| !arg.starts_with("keel.slot="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .map_err(|e| UpdateError::System(format!("cannot read the kernel release: {e}")))
}

/// Kernel and initramfs of the running release under `usr` (normally /usr).
pub fn running_boot_files(usr: &Path, release: &str) -> (PathBuf, PathBuf) {
    use keel_format::initramfs::usr as paths;
    (
        usr.join(paths::kernel(release)),
        usr.join(paths::initramfs(release)),
    )
}

/// Load a kernel for the next `reboot(RB_KEXEC)` / `systemctl kexec`.
pub fn kexec_load(kernel: &Path, initramfs: &Path, cmdline: &str) -> Result<()> {
    keel_blockdev::kexec::load(kernel, initramfs, cmdline)
        .map_err(|e| UpdateError::System(e.to_string()))
}

/// Reboot. Under systemd through `systemctl reboot|kexec` (units stop cleanly); without it
/// (rescue shells) sync and call reboot(2) directly.
pub fn reboot(mode: RebootMode) -> Result<()> {
    if mode == RebootMode::Kexec {
        let release = kernel_release()?;
        let (kernel, initramfs) = running_boot_files(Path::new("/usr"), &release);
        let current = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| UpdateError::System(format!("cannot read /proc/cmdline: {e}")))?;
        kexec_load(&kernel, &initramfs, &kexec_cmdline(&current))?;
    }
    if Path::new("/run/systemd/system").exists() {
        let verb = match mode {
            RebootMode::Firmware => "reboot",
            RebootMode::Kexec => "kexec",
        };
        let status = Command::new("systemctl")
            .arg(verb)
            .status()
            .map_err(|e| UpdateError::System(format!("cannot run systemctl {verb}: {e}")))?;
        if !status.success() {
            return Err(UpdateError::System(format!(
                "systemctl {verb} failed: {status}"
            )));
        }
        return Ok(());
    }
    let how = match mode {
        RebootMode::Firmware => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        RebootMode::Kexec => nix::sys::reboot::RebootMode::RB_KEXEC,
    };
    nix::unistd::sync();
    match nix::sys::reboot::reboot(how) {
        Err(e) => Err(UpdateError::System(format!("reboot(2) failed: {e}"))),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kexec_cmdline_drops_the_slot_pin_only() {
        assert_eq!(
            kexec_cmdline("console=ttyS0 keel.slot=USR-A keel.disk=00000000-0000-0000-0000-000000000001 keel.verify=first\n"),
            "console=ttyS0 keel.disk=00000000-0000-0000-0000-000000000001 keel.verify=first"
        );
        assert_eq!(
            running_boot_files(Path::new("/usr"), "6.1.0-28-cloud-amd64").1,
            PathBuf::from("/usr/lib/modules/6.1.0-28-cloud-amd64/keel-initramfs.img")
        );
    }
}
