//! A failed update as the server hears it: update_engine's `errorcode` for event 3/0, from
//! keel-update's exit code (keel-cli-support's vocabulary). The exit code itself travels too,
//! as the event's `keelexitcode` attribute.

use keel_cli_support::exit;
use keel_omaha::ActionCode;

/// update_engine's kActionCodeDownloadTransferError.
pub const DOWNLOAD_TRANSFER_ERROR: ActionCode = ActionCode(9);
/// update_engine's kActionCodeInstallDeviceOpenError.
pub const INSTALL_DEVICE_OPEN_ERROR: ActionCode = ActionCode(7);
/// update_engine's kActionCodeNewRootfsVerificationError.
pub const NEW_ROOTFS_VERIFICATION_ERROR: ActionCode = ActionCode(15);
/// update_engine's kActionCodeDownloadStateInitializationError (used for "not applicable").
pub const PAYLOAD_NOT_APPLICABLE: ActionCode = ActionCode(20);

/// The `errorcode` for a failure that ended with `exit_code`; `announced_mismatch` when the
/// payload differs from the size/SHA-256 the server announced.
pub fn for_exit_code(exit_code: i32, announced_mismatch: bool) -> ActionCode {
    match exit_code {
        exit::VERIFICATION if announced_mismatch => ActionCode::PAYLOAD_HASH_MISMATCH,
        exit::VERIFICATION | exit::KEYS => ActionCode::PAYLOAD_PUBKEY_VERIFICATION,
        exit::NOT_APPLICABLE => PAYLOAD_NOT_APPLICABLE,
        exit::UNREADABLE => DOWNLOAD_TRANSFER_ERROR,
        exit::DISK | exit::REFUSED => INSTALL_DEVICE_OPEN_ERROR,
        exit::IO => NEW_ROOTFS_VERIFICATION_ERROR,
        _ => ActionCode::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_has_an_errorcode() {
        assert_eq!(for_exit_code(exit::VERIFICATION, true).0, 10);
        assert_eq!(for_exit_code(exit::VERIFICATION, false).0, 18);
        assert_eq!(for_exit_code(exit::UNREADABLE, false).0, 9);
        assert_eq!(for_exit_code(exit::IO, false).0, 15);
        assert_eq!(for_exit_code(exit::FAILED, false).0, 1);
        for (code, _) in exit::TABLE {
            assert_ne!(for_exit_code(code, false), ActionCode::SUCCESS);
        }
    }
}
