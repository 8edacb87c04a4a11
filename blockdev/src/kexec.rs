//! `kexec_file_load`: stage a kernel, its initramfs and a command line for the next
//! `reboot(RB_KEXEC)`. nix has no wrapper for it, so this is the raw syscall.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

use crate::{Error, Result};

/// The running kernel as (`uname -r`, `uname -v`); empty strings if uname fails.
pub fn running_kernel() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.version().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// Load `kernel` and `initramfs` for the next kexec with `cmdline`.
pub fn load(kernel: &Path, initramfs: &Path, cmdline: &str) -> Result<()> {
    let k = File::open(kernel).map_err(Error::access("opening", kernel))?;
    let i = File::open(initramfs).map_err(Error::access("opening", initramfs))?;
    let c = CString::new(cmdline)
        .map_err(|_| Error::Invalid("the kernel command line contains a NUL byte".into()))?;
    // SAFETY: two open descriptors, a NUL-terminated string and its length including the NUL,
    // all alive for the duration of the call.
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
        let errno = Errno::last();
        return Err(Error::Kexec {
            kernel: kernel.to_path_buf(),
            errno,
            hint: hint(errno),
        });
    }
    Ok(())
}

/// What an errno of kexec_file_load usually means.
fn hint(errno: Errno) -> Option<&'static str> {
    Some(match errno {
        Errno::ENOSYS => "this kernel was built without kexec_file_load",
        Errno::EPERM => {
            "not permitted (kexec disabled by sysctl kernel.kexec_load_disabled, or lockdown)"
        }
        Errno::EKEYREJECTED | Errno::EBADMSG => {
            "the kernel image's signature was rejected (Secure Boot lockdown requires a signed kernel)"
        }
        Errno::ENOEXEC => "not a bootable kernel image (bzImage) for this architecture",
        Errno::ENOMEM => "not enough memory to stage the kernel",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_is_named() {
        let e = load(
            Path::new("/nonexistent/vmlinuz"),
            Path::new("/dev/null"),
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinuz"), "{e}");
    }

    #[test]
    fn errors_say_what_the_errno_means() {
        let e = Error::Kexec {
            kernel: "/usr/lib/modules/r/vmlinuz".into(),
            errno: Errno::ENOEXEC,
            hint: hint(Errno::ENOEXEC),
        };
        assert_eq!(
            e.to_string(),
            "kexec_file_load of /usr/lib/modules/r/vmlinuz: ENOEXEC: Exec format error: not a \
             bootable kernel image (bzImage) for this architecture"
        );
    }

    #[test]
    fn uname_names_the_running_kernel() {
        assert!(!running_kernel().0.is_empty());
    }
}
