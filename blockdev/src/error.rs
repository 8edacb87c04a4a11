//! The one error type of this crate: which call failed, on what, and the kernel's answer.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused an ioctl or system call.
    #[error("{call}: {errno}")]
    Call { call: &'static str, errno: Errno },
    /// `kexec_file_load` failed; `hint` says what the errno usually means there.
    #[error("kexec_file_load of {}: {errno}{}", kernel.display(), hint.map(|h| format!(": {h}")).unwrap_or_default())]
    Kexec {
        kernel: PathBuf,
        errno: Errno,
        hint: Option<&'static str>,
    },
    /// A device node, control file or sysfs attribute could not be opened or read.
    #[error("{what} {}: {source}", path.display())]
    Access {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A value does not fit the kernel's structure (a name too long, an offset too large).
    #[error("{0}")]
    Invalid(String),
    /// The kernel did not make a device node or sysfs entry in time.
    #[error("{} did not appear within {seconds} s", path.display())]
    Timeout { path: PathBuf, seconds: u64 },
    /// What sysfs shows does not answer the question (not a partition, several slaves, …).
    #[error("{0}")]
    Sysfs(String),
}

impl Error {
    /// The kernel's errno, where the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Call { errno, .. } | Error::Kexec { errno, .. } => Some(*errno),
            Error::Access { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    pub(crate) fn call(call: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::Call { call, errno }
    }

    pub(crate) fn access(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Access { what, path, source }
    }
}
