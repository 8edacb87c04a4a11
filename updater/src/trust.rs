//! The keys a payload must be signed with: the running system's (`/usr/share/keel/keys/*.pem`)
//! or the ones named on the command line (`--pubkey`).

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_format::keys::public_key_from_pem;

use crate::error::{Result, UpdateError};

/// Where the running system keeps the public keys it trusts; the image builder puts them there.
pub const SYSTEM_KEYS_DIR: &str = "/usr/share/keel/keys";

/// Load one public key file (Ed25519, SubjectPublicKeyInfo PEM).
pub fn load_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UpdateError::Keys(format!("cannot read {}: {e}", path.display())))?;
    public_key_from_pem(&text).map_err(|e| UpdateError::Keys(format!("{}: {e}", path.display())))
}

/// Load every `*.pem` in `dir`, in name order. An empty or missing directory is an error:
/// trusting nothing would refuse every payload with a misleading message.
pub fn load_dir(dir: &Path) -> Result<Vec<VerifyingKey>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| UpdateError::Keys(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(UpdateError::Keys(format!(
            "no *.pem public keys in {}",
            dir.display()
        )));
    }
    paths.iter().map(|p| load_key(p)).collect()
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
