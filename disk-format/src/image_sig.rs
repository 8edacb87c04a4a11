//! The detached signature of a whole disk image (`disk.raw.sig` beside `disk.raw`), as Flatcar
//! publishes `flatcar_production_image.bin.bz2.sig` beside its image: the installer reads it
//! first, then streams the image, hashing as it writes, and accepts the disk only when the
//! bytes match.
//!
//! The file is JSON; the Ed25519 signature covers a short canonical text, so any Ed25519 tool
//! can check it by hand (`openssl pkeyutl -verify -rawin`, see `signed_message`):
//!
//! ```text
//! keel-image-signature v1
//! size <bytes>
//! sha256 <64 hex>
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys;

pub const FORMAT: &str = "keel-image-signature";
pub const VERSION: u32 = 1;
/// A signature file is a few hundred bytes; anything far larger is not one.
pub const MAX_LEN: usize = 64 * 1024;
/// The suffix the signature file carries beside its image.
pub const SUFFIX: &str = ".sig";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSignature {
    pub format: String,
    pub version: u32,
    /// The image's file name when it was signed (informational; not signed).
    pub image: String,
    pub size: u64,
    pub sha256: String,
    pub key_id: String,
    /// 64 bytes, hex.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SigError {
    #[error("not a Keel image signature: {0}")]
    Malformed(String),
    #[error("signature format {format} version {version} is not {FORMAT} version {VERSION}")]
    Unsupported { format: String, version: u32 },
    #[error("signed by key {key_id}, which is not among the trusted keys ({trusted})")]
    UnknownKey { key_id: String, trusted: String },
    #[error("the Ed25519 signature does not verify with key {0}")]
    BadSignature(String),
}

/// The bytes the Ed25519 signature covers.
pub fn signed_message(size: u64, sha256_hex: &str) -> String {
    format!("{FORMAT} v{VERSION}\nsize {size}\nsha256 {sha256_hex}\n")
}

impl ImageSignature {
    /// A signature over an image of `size` bytes hashing to `sha256`, made with `sign`
    /// (the signing key lives in keel-signing, which this crate does not depend on).
    pub fn new(
        image: &str,
        size: u64,
        sha256: &[u8; 32],
        public: &VerifyingKey,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> ImageSignature {
        let sha256 = hex::encode(sha256);
        let signature = sign(signed_message(size, &sha256).as_bytes());
        ImageSignature {
            format: FORMAT.into(),
            version: VERSION,
            image: image.into(),
            size,
            sha256,
            key_id: keys::key_id(public),
            signature: hex::encode(signature),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }

    /// Parse a signature file's bytes (not yet trusted: call [`ImageSignature::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<ImageSignature, SigError> {
        if bytes.len() > MAX_LEN {
            return Err(SigError::Malformed(format!(
                "{} bytes, more than a signature file's {MAX_LEN}",
                bytes.len()
            )));
        }
        let s: ImageSignature =
            serde_json::from_slice(bytes).map_err(|e| SigError::Malformed(e.to_string()))?;
        if s.format != FORMAT || s.version != VERSION {
            return Err(SigError::Unsupported {
                format: s.format,
                version: s.version,
            });
        }
        if s.sha256.len() != 64 || hex::decode(&s.sha256).is_err() {
            return Err(SigError::Malformed(format!(
                "sha256 {:?} is not 64 hex digits",
                s.sha256
            )));
        }
        Ok(s)
    }

    /// The SHA-256 the image must hash to.
    pub fn sha256_bytes(&self) -> [u8; 32] {
        let v = hex::decode(&self.sha256).expect("checked by parse");
        v.try_into().expect("checked by parse")
    }

    /// Check the signature against `trusted`; returns the key that made it.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<VerifyingKey, SigError> {
        let key = trusted
            .iter()
            .find(|k| keys::key_id(k) == self.key_id)
            .ok_or_else(|| SigError::UnknownKey {
                key_id: self.key_id.clone(),
                trusted: if trusted.is_empty() {
                    "none".into()
                } else {
                    trusted
                        .iter()
                        .map(keys::key_id)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        let raw = hex::decode(&self.signature)
            .ok()
            .and_then(|v| <[u8; 64]>::try_from(v).ok())
            .ok_or_else(|| SigError::Malformed("signature is not 128 hex digits".into()))?;
        key.verify_strict(
            signed_message(self.size, &self.sha256).as_bytes(),
            &Signature::from_bytes(&raw),
        )
        .map_err(|_| SigError::BadSignature(self.key_id.clone()))?;
        Ok(*key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey) -> ImageSignature {
        ImageSignature::new("disk.raw", 4096, &[7; 32], &key.verifying_key(), |m| {
            key.sign(m).to_bytes()
        })
    }

    #[test]
    fn round_trip_and_verify() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let s = signed(&key);
        let back = ImageSignature::parse(s.to_json().as_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.verify(&[key.verifying_key()]).unwrap(),
            key.verifying_key()
        );
        assert_eq!(back.sha256_bytes(), [7; 32]);
    }

    #[test]
    fn wrong_key_and_altered_fields_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let s = signed(&key);
        assert!(matches!(
            s.verify(&[other.verifying_key()]),
            Err(SigError::UnknownKey { .. })
        ));
        let mut bigger = s.clone();
        bigger.size += 1;
        assert!(matches!(
            bigger.verify(&[key.verifying_key()]),
            Err(SigError::BadSignature(_))
        ));
        let mut rehashed = s;
        rehashed.sha256 = hex::encode([8u8; 32]);
        assert!(matches!(
            rehashed.verify(&[key.verifying_key()]),
            Err(SigError::BadSignature(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_signature() {
        assert!(matches!(
            ImageSignature::parse(b"not json"),
            Err(SigError::Malformed(_))
        ));
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut s = signed(&key);
        s.version = 2;
        assert!(matches!(
            ImageSignature::parse(s.to_json().as_bytes()),
            Err(SigError::Unsupported { .. })
        ));
    }
}
