//! The one error type of the builder library. Each variant maps to an exit code of the shared
//! vocabulary (keel-cli-support's `exit`), so scripts can tell bad input from a missing tool
//! from a failed verification.

use std::path::{Path, PathBuf};

use keel_cli_support::exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definition file, an argument or an input file is wrong: the user must fix it.
    #[error("{0}")]
    Input(String),
    /// The build host lacks something (a tool, the systemd stub, keel-init).
    #[error("{0}")]
    Environment(String),
    /// An image or payload failed verification.
    #[error("{0}")]
    Verification(String),
    /// An external tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
}

impl Error {
    /// The process exit code for this error (the shared vocabulary).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => exit::USAGE,
            Error::Environment(_) => exit::ENVIRONMENT,
            Error::Verification(_) => exit::VERIFICATION,
            Error::Tool { .. } | Error::Io { .. } | Error::Format(_) => exit::FAILED,
        }
    }

    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.map_err(io_at(path))`: attach the path an I/O error happened on.
pub fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<keel_signing::SigningError> for Error {
    fn from(e: keel_signing::SigningError) -> Self {
        match e {
            keel_signing::SigningError::Random(m) => Error::Environment(m),
            other => Error::Input(other.to_string()),
        }
    }
}
