//! The installer's one error type. Each variant is an exit code of `keel install` (README.md).

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

/// Exit codes of `keel install` / `keel-install`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const VERIFICATION_FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
    pub const ENVIRONMENT: i32 = 3;
    pub const REFUSED: i32 = 5;
    pub const IO_FAILED: i32 = 6;
}

impl InstallError {
    pub fn exit_code(&self) -> i32 {
        match self {
            InstallError::Input(_) => exit::BAD_INPUT,
            InstallError::Verification(_) => exit::VERIFICATION_FAILED,
            InstallError::Refused(_) => exit::REFUSED,
            InstallError::Io(_) => exit::IO_FAILED,
            InstallError::Environment(_) => exit::ENVIRONMENT,
        }
    }
}

pub type Result<T, E = InstallError> = std::result::Result<T, E>;
