//! The signed metadata block of a USR slot: one 4 KiB block that says what the slot holds and
//! how to verify it, signed with Ed25519 so that keel-init trusts nothing unsigned.
//!
//! Block layout (little-endian):
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | magic `KEELMETA` |
//! | 8      | 4    | block format (1) |
//! | 12     | 4    | JSON length *n* |
//! | 16     | 64   | Ed25519 signature over bytes 0..16 followed by the JSON |
//! | 80     | *n*  | JSON of [`SlotMetadata`] |
//! | 80+*n* | …    | zero up to 4096 |

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::key_id;

pub const MAGIC: &[u8; 8] = b"KEELMETA";
pub const BLOCK_FORMAT: u32 = 1;
pub const METADATA_SIZE: usize = 4096;
const JSON_OFFSET: usize = 80;
pub const MAX_JSON: usize = METADATA_SIZE - JSON_OFFSET;

/// What a USR slot holds. Every field is covered by the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotMetadata {
    /// Release version (semver), e.g. `1.0.0`.
    pub version: String,
    /// Update channel: alpha, beta, stable, or a custom one.
    pub channel: String,
    /// Machine architecture (`x86_64`).
    pub arch: String,
    /// Board name the slot was built for (`qemu-x86_64`).
    pub board: String,
    /// SOURCE_DATE_EPOCH of the build.
    pub build_time: u64,
    /// Filesystem type of the data area (`erofs`).
    pub filesystem: String,
    pub kernel: KernelInfo,
    pub verity: VerityInfo,
    /// SHA-256 of the slot body: the data area and the verity area, `verity.hash_offset +
    /// verity.hash_size` bytes from the start of the partition.
    pub body_sha256: String,
    /// Id of the key that signed this block ([`key_id`]).
    pub key_id: String,
}

/// The kernel that ships inside the slot's /usr, for kexec and for telling whether it is the one
/// running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub build: String,
    /// Path of the kernel image below /usr.
    pub image: String,
    /// Path of the matching Keel initramfs below /usr.
    pub initramfs: String,
}

/// dm-verity parameters, enough to run `veritysetup verify --hash-offset=HASH_OFFSET DEV DEV ROOT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityInfo {
    /// Bytes of filesystem data protected by the tree (a multiple of the data block size).
    pub data_size: u64,
    /// Byte offset of the verity superblock (the hash area) from the start of the partition.
    pub hash_offset: u64,
    /// Bytes of the hash area, superblock included.
    pub hash_size: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub algorithm: String,
    pub salt: String,
    pub root_hash: String,
    pub uuid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("no Keel metadata (magic KEELMETA missing): the slot is empty or not a Keel slot")]
    NoMagic,
    #[error("unsupported metadata block format {0}")]
    Format(u32),
    #[error("metadata JSON length {0} exceeds the block")]
    Length(usize),
    #[error("metadata JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("metadata is signed by key {0}, which is not trusted")]
    UnknownKey(String),
    #[error("metadata signature does not verify with key {0}")]
    BadSignature(String),
    #[error("metadata is too large for a {METADATA_SIZE}-byte block ({0} bytes of JSON)")]
    TooLarge(usize),
}

/// A metadata block that has been parsed but whose signature has not been checked yet.
#[derive(Clone, Debug)]
pub struct Unverified {
    pub metadata: SlotMetadata,
    signed: Vec<u8>,
    signature: [u8; 64],
}

fn signed_bytes(json: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + json.len());
    m.extend_from_slice(MAGIC);
    m.extend_from_slice(&BLOCK_FORMAT.to_le_bytes());
    m.extend_from_slice(&(json.len() as u32).to_le_bytes());
    m.extend_from_slice(json);
    m
}

/// Serialize `meta` into a block, signing it with `sign` (which gets the exact signed bytes).
pub fn encode(
    meta: &SlotMetadata,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, MetadataError> {
    let json = serde_json::to_vec(meta)?;
    if json.len() > MAX_JSON {
        return Err(MetadataError::TooLarge(json.len()));
    }
    let signed = signed_bytes(&json);
    let sig = sign(&signed);
    let mut block = vec![0u8; METADATA_SIZE];
    block[..16].copy_from_slice(&signed[..16]);
    block[16..80].copy_from_slice(&sig);
    block[80..80 + json.len()].copy_from_slice(&json);
    Ok(block)
}

/// Parse a block without trusting it yet.
pub fn decode(block: &[u8]) -> Result<Unverified, MetadataError> {
    if block.len() < METADATA_SIZE || &block[..8] != MAGIC {
        return Err(MetadataError::NoMagic);
    }
    let format = u32::from_le_bytes(block[8..12].try_into().expect("4 bytes"));
    if format != BLOCK_FORMAT {
        return Err(MetadataError::Format(format));
    }
    let len = u32::from_le_bytes(block[12..16].try_into().expect("4 bytes")) as usize;
    if len > MAX_JSON {
        return Err(MetadataError::Length(len));
    }
    let json = &block[JSON_OFFSET..JSON_OFFSET + len];
    let metadata: SlotMetadata = serde_json::from_slice(json)?;
    Ok(Unverified {
        metadata,
        signed: signed_bytes(json),
        signature: block[16..80].try_into().expect("64 bytes"),
    })
}

impl Unverified {
    /// Check the signature against the trusted keys; only then is the metadata returned.
    pub fn verify(self, trusted: &[VerifyingKey]) -> Result<SlotMetadata, MetadataError> {
        let claimed = &self.metadata.key_id;
        let key = trusted
            .iter()
            .find(|k| &key_id(k) == claimed)
            .ok_or_else(|| MetadataError::UnknownKey(claimed.clone()))?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signed, &sig)
            .map_err(|_| MetadataError::BadSignature(claimed.clone()))?;
        Ok(self.metadata)
    }

    /// The metadata as claimed, for display next to a failed verification.
    pub fn claimed(&self) -> &SlotMetadata {
        &self.metadata
    }
}

impl SlotMetadata {
    /// Bytes of the slot body (data area plus verity area).
    pub fn body_size(&self) -> u64 {
        self.verity.hash_offset + self.verity.hash_size
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    pub fn sample(key: &SigningKey) -> SlotMetadata {
        SlotMetadata {
            version: "1.0.0".into(),
            channel: "stable".into(),
            arch: "x86_64".into(),
            board: "qemu-x86_64".into(),
            build_time: 1_700_000_000,
            filesystem: "erofs".into(),
            kernel: KernelInfo {
                release: "6.1.0-28-cloud-amd64".into(),
                build: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)".into(),
                image: "lib/modules/6.1.0-28-cloud-amd64/vmlinuz".into(),
                initramfs: "lib/keel/initramfs.img".into(),
            },
            verity: VerityInfo {
                data_size: 4096,
                hash_offset: 4096,
                hash_size: 8192,
                data_block_size: 4096,
                hash_block_size: 4096,
                algorithm: "sha256".into(),
                salt: "00".repeat(32),
                root_hash: "11".repeat(32),
                uuid: "00000000-0000-0000-0000-000000000000".into(),
            },
            body_sha256: "22".repeat(32),
            key_id: key_id(&key.verifying_key()),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let meta = sample(&key);
        let block = encode(&meta, |m| key.sign(m).to_bytes()).unwrap();
        assert_eq!(block.len(), METADATA_SIZE);
        let got = decode(&block)
            .unwrap()
            .verify(&[other.verifying_key(), key.verifying_key()])
            .unwrap();
        assert_eq!(got, meta);

        // Untrusted key.
        assert!(matches!(
            decode(&block).unwrap().verify(&[other.verifying_key()]),
            Err(MetadataError::UnknownKey(_))
        ));
        // A changed byte in the JSON: either unparsable or a bad signature, never accepted.
        let mut t = block.clone();
        let pos = 80 + t[80..].windows(5).position(|w| w == b"1.0.0").unwrap();
        t[pos] = b'9';
        assert!(matches!(
            decode(&t).unwrap().verify(&[key.verifying_key()]),
            Err(MetadataError::BadSignature(_))
        ));
        // A changed signature byte.
        let mut t = block.clone();
        t[20] ^= 1;
        assert!(decode(&t).unwrap().verify(&[key.verifying_key()]).is_err());
        // Signed by another key that claims the trusted key's id.
        let forged = encode(&meta, |m| other.sign(m).to_bytes()).unwrap();
        assert!(matches!(
            decode(&forged).unwrap().verify(&[key.verifying_key()]),
            Err(MetadataError::BadSignature(_))
        ));
        // Empty slot.
        assert!(matches!(decode(&[0u8; 4096]), Err(MetadataError::NoMagic)));
    }
}
