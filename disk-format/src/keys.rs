//! Ed25519 public keys as PEM (SubjectPublicKeyInfo, the format `openssl pkey -pubout` writes)
//! and the short key id that signed metadata names.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::VerifyingKey;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM block labelled {0}")]
    NotPem(&'static str),
    #[error("PEM body is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("not an Ed25519 key (wrong DER structure)")]
    NotEd25519,
    #[error("invalid Ed25519 public key: {0}")]
    Invalid(String),
}

/// Decode the body of the first PEM block labelled `label`.
pub fn pem_decode(text: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or(KeyError::NotPem(label))? + begin.len();
    let stop = text[start..].find(&end).ok_or(KeyError::NotPem(label))? + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

pub fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn public_key_from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
    let der = pem_decode(text, "PUBLIC KEY")?;
    if der.len() != 44 || der[..12] != SPKI_PREFIX {
        return Err(KeyError::NotEd25519);
    }
    let bytes: [u8; 32] = der[12..].try_into().expect("length checked");
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Invalid(e.to_string()))
}

pub fn public_key_to_pem(key: &VerifyingKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    pem_encode(&der, "PUBLIC KEY")
}

/// First 8 bytes of SHA-256 over the raw public key, in hex: names the key in slot metadata.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    hex::encode(&d.as_ref()[..8])
}

/// A trusted-keys file or directory that cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: {error}", path.display())]
    Malformed { path: PathBuf, error: KeyError },
    #[error("no trusted keys: no *.pem public key in {}", dir.display())]
    NoKeys { dir: PathBuf },
}

/// One public key file (Ed25519, SubjectPublicKeyInfo PEM).
pub fn load_key_file(path: &Path) -> Result<VerifyingKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    public_key_from_pem(&text).map_err(|error| KeyFileError::Malformed {
        path: path.to_path_buf(),
        error,
    })
}

/// The trusted keys of a key directory: every `*.pem` in it, in name order (other files are
/// not keys). The one policy every piece follows: a directory that cannot be read, or a `*.pem`
/// that cannot be read or is not an Ed25519 public key, is an error naming it; an empty
/// directory is "no trusted keys" (an empty list; [`require_keys`] for callers that need one).
pub fn load_trusted_keys(dir: &Path) -> Result<Vec<VerifyingKey>, KeyFileError> {
    let entries = std::fs::read_dir(dir).map_err(|error| KeyFileError::Read {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_key_file(p)).collect()
}

/// [`load_trusted_keys`] for callers that cannot work without a key: none is an error.
pub fn require_keys(dir: &Path) -> Result<Vec<VerifyingKey>, KeyFileError> {
    let keys = load_trusted_keys(dir)?;
    if keys.is_empty() {
        return Err(KeyFileError::NoKeys {
            dir: dir.to_path_buf(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(seed: u8) -> (VerifyingKey, String) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
        (key, public_key_to_pem(&key))
    }

    #[test]
    fn one_policy_for_key_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_trusted_keys(dir.path()).unwrap(), vec![]);
        let e = require_keys(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("no trusted keys"), "{e}");
        let (a, a_pem) = pem(1);
        let (b, b_pem) = pem(2);
        std::fs::write(dir.path().join("b.pem"), b_pem).unwrap();
        std::fs::write(dir.path().join("a.pem"), a_pem).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        assert_eq!(require_keys(dir.path()).unwrap(), vec![a, b]);
        std::fs::write(dir.path().join("c.pem"), "garbage").unwrap();
        let e = load_trusted_keys(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.pem") && e.contains("PEM"), "{e}");
        let e = load_trusted_keys(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
