//! Ed25519 public keys as PEM (SubjectPublicKeyInfo, the format `openssl pkey -pubout` writes)
//! and the short key id that signed metadata names.

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
