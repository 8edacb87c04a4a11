//! The public keys an image signature is checked against: `--key` files, else the keys the
//! running Keel system trusts for its own updates (`/usr/share/keel/keys/*.pem`) plus any
//! default the caller adds (the `keel` CLI adds the development key, as `keel verify` does).

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_format::keys;

use crate::error::{InstallError, Result};

/// Where a Keel system keeps the keys it trusts (written by the builder, read by keel-update).
pub const SYSTEM_KEYS: &str = keel_format::initramfs::system::KEYS_DIR;
/// The public half in a key directory made by `keel keygen`.
const PUBLIC_KEY_FILE: &str = "keel-signing.pub";

#[derive(Clone, Debug)]
pub struct Trusted {
    pub keys: Vec<VerifyingKey>,
    /// Where they came from, for messages.
    pub source: String,
}

/// One SPKI PEM public key file, or a directory holding keel-signing.pub or *.pem files.
pub fn load(path: &Path) -> Result<Vec<VerifyingKey>> {
    if path.is_dir() {
        let pubfile = path.join(PUBLIC_KEY_FILE);
        if pubfile.is_file() {
            return load(&pubfile);
        }
        let keys = keys::load_trusted_keys(path)
            .map_err(|e| InstallError::Input(format!("--key {}: {e}", path.display())))?;
        if keys.is_empty() {
            return Err(InstallError::Input(format!(
                "--key {}: no {PUBLIC_KEY_FILE} or *.pem public key in that directory",
                path.display()
            )));
        }
        return Ok(keys);
    }
    let key = keys::load_key_file(path).map_err(|e| {
        InstallError::Input(format!(
            "--key: {e} (give the SPKI PEM public key, e.g. keel-signing.pub)"
        ))
    })?;
    Ok(vec![key])
}

/// `given` keys if any; else the system's keys and `fallback` (e.g. the development key).
pub fn resolve(given: &[PathBuf], fallback: Option<(PathBuf, VerifyingKey)>) -> Result<Trusted> {
    if !given.is_empty() {
        let mut keys = Vec::new();
        for p in given {
            keys.extend(load(p)?);
        }
        let source = given
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Ok(Trusted { keys, source });
    }
    let mut keys = Vec::new();
    let mut sources = Vec::new();
    // The system's keys under the one policy: a bad key file is an error, none is none.
    if Path::new(SYSTEM_KEYS).is_dir() {
        let system = keys::load_trusted_keys(Path::new(SYSTEM_KEYS))
            .map_err(|e| InstallError::Environment(format!("the system's trusted keys: {e}")))?;
        if !system.is_empty() {
            keys.extend(system);
            sources.push(SYSTEM_KEYS.to_string());
        }
    }
    if let Some((path, key)) = fallback {
        keys.push(key);
        sources.push(format!("development key {}", path.display()));
    }
    if keys.is_empty() {
        return Err(InstallError::Input(format!(
            "no --key given, no keys in {SYSTEM_KEYS} and no development key: nothing to trust the image's signature with"
        )));
    }
    Ok(Trusted {
        keys,
        source: sources.join(", "),
    })
}
