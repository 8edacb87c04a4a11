//! Ed25519 signing keys for slot metadata. Private keys are PKCS#8 PEM files (mode 0600), public
//! keys SubjectPublicKeyInfo PEM, both readable by `openssl pkey`. Verification lives in
//! `keel-format` (keel-init needs it); only the signing side is here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use keel_format::keys::{self, KeyError};

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub const PRIVATE_KEY_FILE: &str = "keel-signing.key";
pub const PUBLIC_KEY_FILE: &str = "keel-signing.pub";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("{0}: not a PKCS#8 Ed25519 private key")]
    NotEd25519(PathBuf),
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A loaded signing key.
pub struct Key {
    signing: SigningKey,
}

impl Key {
    pub fn generate() -> Result<Key, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(Key {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn from_seed(seed: [u8; 32]) -> Key {
        Key {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn load(path: &Path) -> Result<Key, SigningError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let der = keys::pem_decode(&text, "PRIVATE KEY").map_err(|source| SigningError::Key {
            path: path.to_path_buf(),
            source,
        })?;
        if der.len() != 48 || der[..16] != PKCS8_PREFIX {
            return Err(SigningError::NotEd25519(path.to_path_buf()));
        }
        let seed: [u8; 32] = der[16..].try_into().expect("length checked");
        Ok(Key::from_seed(seed))
    }

    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn key_id(&self) -> String {
        keys::key_id(&self.public())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub fn private_pem(&self) -> String {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.signing.as_bytes());
        keys::pem_encode(&der, "PRIVATE KEY")
    }

    pub fn public_pem(&self) -> String {
        keys::public_key_to_pem(&self.public())
    }

    /// Write `DIR/keel-signing.key` (0600) and `DIR/keel-signing.pub`. Refuses to replace an
    /// existing key unless `force`.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), SigningError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let private = dir.join(PRIVATE_KEY_FILE);
        let public = dir.join(PUBLIC_KEY_FILE);
        if !force {
            for p in [&private, &public] {
                if p.exists() {
                    return Err(SigningError::Exists(p.clone()));
                }
            }
        }
        let tmp = dir.join(format!(".{PRIVATE_KEY_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(self.private_pem().as_bytes())
            .map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &private).map_err(io_err(&private))?;
        fs::write(&public, self.public_pem()).map_err(io_err(&public))?;
        Ok((private, public))
    }
}

/// Load a public key file (SPKI PEM).
pub fn load_public(path: &Path) -> Result<VerifyingKey, SigningError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    keys::public_key_from_pem(&text).map_err(|source| SigningError::Key {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn save_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let k = Key::generate().unwrap();
        let (private, public) = k.save(dir.path(), false).unwrap();
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Key::load(&private).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(load_public(&public).unwrap(), k.public());
        assert!(matches!(
            Key::generate().unwrap().save(dir.path(), false),
            Err(SigningError::Exists(_))
        ));
        Key::generate().unwrap().save(dir.path(), true).unwrap();
        assert_ne!(Key::load(&private).unwrap().public(), k.public());
    }

    /// openssl, an independent implementation, reads our key files and derives the same public key.
    #[test]
    fn openssl_reads_our_keys() {
        let dir = tempfile::tempdir().unwrap();
        let k = Key::generate().unwrap();
        let (private, _) = k.save(dir.path(), false).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), k.public_pem());
    }
}
