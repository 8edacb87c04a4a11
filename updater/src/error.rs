//! The updater's errors. Each message is a plain sentence that names the payload, the slot and
//! the check that failed; each kind maps to one exit code of the shared vocabulary
//! (keel-cli-support's `exit`).

use std::io;
use std::path::PathBuf;

use keel_cli_support::exit;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The payload's signature, metadata or body does not check out: never apply it.
    #[error("payload {payload} was refused: {reason}")]
    Untrusted { payload: String, reason: String },

    /// The payload is genuine but not for this system (arch, board, version).
    #[error("payload {payload} was refused: {reason}")]
    NotApplicable { payload: String, reason: String },

    /// The payload could not be read or downloaded completely.
    #[error("could not read payload {payload}: {reason}")]
    Transport { payload: String, reason: String },

    /// The trusted keys could not be loaded.
    #[error("trusted keys: {0}")]
    Keys(String),

    /// The disk, its partition table or the slot layout does not allow the operation.
    #[error("disk {disk}: {reason}")]
    Disk { disk: PathBuf, reason: String },

    /// Reading or writing a slot failed.
    #[error("{slot} on {disk}: {what}: {source}")]
    SlotIo {
        disk: PathBuf,
        slot: String,
        what: String,
        #[source]
        source: io::Error,
    },

    /// What was written to the slot does not read back as the signed payload.
    #[error("{slot} on {disk} does not match payload {payload} after writing: {reason}")]
    Readback {
        disk: PathBuf,
        slot: String,
        payload: String,
        reason: String,
    },

    /// A lifecycle request (rollback, mark-good, reboot) that the slots' state does not allow.
    #[error("{0}")]
    Refused(String),

    /// The update server could not be asked, or its answer is not usable.
    #[error("update server: {0}")]
    Server(String),

    /// A failure already printed (by `check`); only its exit code is left to return.
    #[error("exit code {0}")]
    Reported(i32),

    /// Anything about the running system itself: /usr, sysfs, the state file, kexec.
    #[error("{0}")]
    System(String),
}

impl UpdateError {
    /// The process exit code for this error, from the one vocabulary ([`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            UpdateError::Untrusted { .. } => exit::VERIFICATION,
            UpdateError::NotApplicable { .. } => exit::NOT_APPLICABLE,
            UpdateError::Transport { .. } | UpdateError::Server(_) => exit::UNREADABLE,
            UpdateError::Keys(_) => exit::KEYS,
            UpdateError::Disk { .. } => exit::DISK,
            UpdateError::SlotIo { .. } | UpdateError::Readback { .. } => exit::IO,
            UpdateError::Refused(_) => exit::REFUSED,
            UpdateError::System(_) => exit::FAILED,
            UpdateError::Reported(code) => *code,
        }
    }
}

pub type Result<T, E = UpdateError> = std::result::Result<T, E>;
