//! Step 6: start the slot's own kernel when it is not the one running (kexec_file_load, then
//! reboot(RB_KEXEC)). nix has no wrapper for kexec_file_load, so this is the raw syscall.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;

/// The running kernel as (`uname -r`, `uname -v`).
pub fn running_kernel() -> (String, String) {
    // SAFETY: utsname is plain data filled in by the kernel.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (field(&u.release), field(&u.version))
}

/// Load `kernel` and `initramfs` for the next kexec with `cmdline`.
pub fn load(kernel: &Path, initramfs: &Path, cmdline: &str) -> Result<()> {
    let k = File::open(kernel).with_context(|| format!("opening {}", kernel.display()))?;
    let i = File::open(initramfs).with_context(|| format!("opening {}", initramfs.display()))?;
    let c = CString::new(cmdline).context("command line contains a NUL byte")?;
    // SAFETY: valid descriptors, a NUL-terminated string and its length including the NUL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_raw_fd(),
            c.as_bytes_with_nul().len(),
            c.as_ptr(),
            0 as libc::c_ulong,
        )
    };
    if r != 0 {
        let e = Errno::last();
        let why = match e {
            Errno::ENOSYS => "this kernel was built without kexec_file_load",
            Errno::EPERM => "not permitted (kexec disabled by sysctl kernel.kexec_load_disabled, or lockdown)",
            Errno::EKEYREJECTED | Errno::EBADMSG => {
                "the kernel image's signature was rejected (Secure Boot lockdown requires a signed kernel)"
            }
            Errno::ENOEXEC => "not a bootable kernel image (bzImage) for this architecture",
            Errno::ENOMEM => "not enough memory to stage the kernel",
            _ => "",
        };
        anyhow::bail!(
            "kexec_file_load failed: {e}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        );
    }
    Ok(())
}

/// Jump into the loaded kernel. Returns only on failure.
pub fn execute() -> anyhow::Error {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Err(e) => anyhow::anyhow!("reboot(RB_KEXEC) failed: {e}"),
        Ok(never) => match never {},
    }
}
