//! The keys a payload must be signed with: the running system's (`/usr/share/keel/keys/*.pem`)
//! or a disk image's (inside its running slot), or the ones named on the command line
//! (`--pubkey`).

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use keel_format::keys;

use crate::error::{Result, UpdateError};
use crate::slots::RunningSlot;

/// Where the running system keeps the public keys it trusts; the image builder puts them there.
pub const SYSTEM_KEYS_DIR: &str = keel_format::initramfs::system::KEYS_DIR;

/// Load one public key file (Ed25519, SubjectPublicKeyInfo PEM).
pub fn load_key(path: &Path) -> Result<VerifyingKey> {
    keys::load_key_file(path).map_err(|e| UpdateError::Keys(e.to_string()))
}

/// The keys `target` itself trusts: the running system's [`SYSTEM_KEYS_DIR`], or for a disk
/// image the same directory inside the slot its boot rule picks ([`crate::image_keys`]).
pub fn trusted_by(target: &crate::Target) -> Result<Vec<VerifyingKey>> {
    match target.running {
        RunningSlot::Mounted(_) => load_dir(Path::new(SYSTEM_KEYS_DIR)),
        RunningSlot::Chosen => crate::image_keys::load(target),
    }
}

/// Load every `*.pem` in `dir`, in name order. An empty or missing directory is an error:
/// trusting nothing would refuse every payload with a misleading message.
pub fn load_dir(dir: &Path) -> Result<Vec<VerifyingKey>> {
    keys::require_keys(dir).map_err(|e| UpdateError::Keys(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pem_files_and_refuses_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_dir(dir.path()), Err(UpdateError::Keys(_))));
        let a = keel_signing::Key::from_seed([1; 32]);
        let b = keel_signing::Key::from_seed([2; 32]);
        std::fs::write(dir.path().join("b.pem"), b.public_pem()).unwrap();
        std::fs::write(dir.path().join("a.pem"), a.public_pem()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap(), vec![a.public(), b.public()]);
        std::fs::write(dir.path().join("c.pem"), "garbage").unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("c.pem"), "{err}");
    }
}
