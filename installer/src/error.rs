//! The installer's one error type. Each variant is an exit code of the shared vocabulary
//! (keel-cli-support's `exit`).

use keel_cli_support::exit;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A missing or unreadable image, signature, key or cloud-config: the user must fix it.
    #[error("{0}")]
    Input(String),
    /// The signature, the image's bytes or its USR-A slot failed verification.
    #[error("{0}")]
    Verification(String),
    /// The target may not be written: mounted, swap, held, the running system, too small.
    #[error("{0}")]
    Refused(String),
    /// Reading the image or writing the device failed part way.
    #[error("{0}")]
    Io(String),
    /// The machine lacks something the installer needs (an ioctl, a partition node).
    #[error("{0}")]
    Environment(String),
}

impl InstallError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            InstallError::Input(_) => exit::USAGE,
            InstallError::Verification(_) => exit::VERIFICATION,
            InstallError::Refused(_) => exit::REFUSED,
            InstallError::Io(_) => exit::IO,
            InstallError::Environment(_) => exit::ENVIRONMENT,
        }
    }
}

pub type Result<T, E = InstallError> = std::result::Result<T, E>;
