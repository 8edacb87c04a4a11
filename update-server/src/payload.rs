//! Checking a payload (`usr.img`) before the server accepts it: its metadata block's Ed25519
//! signature against the trusted keys, the verity geometry it claims, its exact length and the
//! signed SHA-256 of its body; and the digests Omaha announces (SHA-1 and SHA-256 of the file).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use keel_format::metadata::{SlotMetadata, METADATA_SIZE};
use keel_format::slot::{read_payload_metadata, verified_slot_metadata, SlotError, TrustError};
use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY, SHA256};

/// A payload that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedPayload {
    pub metadata: SlotMetadata,
    pub size: u64,
    pub sha1_base64: String,
    pub sha256_base64: String,
    pub sha256_hex: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{}: no signed Keel metadata block at its start ({error})", path.display())]
    NotSigned { path: PathBuf, error: String },
    #[error("{}: {error}", path.display())]
    Untrusted { path: PathBuf, error: TrustError },
    #[error("{}: {size} bytes, but its signed metadata says {expected} (truncated or padded)", path.display())]
    Length {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error("{}: body SHA-256 {got} differs from the signed {want}", path.display())]
    BodyHash {
        path: PathBuf,
        got: String,
        want: String,
    },
    #[error("{}: version {version:?} is not a semantic version", path.display())]
    Version { path: PathBuf, version: String },
}

/// Check the payload at `path` against `keys` and compute its digests, reading it once.
pub fn verify_payload(path: &Path, keys: &[VerifyingKey]) -> Result<VerifiedPayload, PayloadError> {
    let read_err = |error| PayloadError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let (unverified, block) = match read_payload_metadata(&mut file) {
        Ok(x) => x,
        Err(SlotError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(PayloadError::NotSigned {
                path: path.to_path_buf(),
                error: format!("only {size} bytes, a metadata block is {METADATA_SIZE}"),
            })
        }
        Err(SlotError::Io(e)) => return Err(read_err(e)),
        Err(e) => {
            return Err(PayloadError::NotSigned {
                path: path.to_path_buf(),
                error: e.to_string(),
            })
        }
    };
    let metadata = verified_slot_metadata(unverified, keys, None).map_err(|error| {
        PayloadError::Untrusted {
            path: path.to_path_buf(),
            error,
        }
    })?;
    if semver::Version::parse(&metadata.version).is_err() {
        return Err(PayloadError::Version {
            path: path.to_path_buf(),
            version: metadata.version,
        });
    }
    let expected = METADATA_SIZE as u64 + metadata.body_size();
    if size != expected {
        return Err(PayloadError::Length {
            path: path.to_path_buf(),
            size,
            expected,
        });
    }
    let mut whole256 = Context::new(&SHA256);
    let mut whole1 = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    let mut body256 = Context::new(&SHA256);
    whole256.update(&block);
    whole1.update(&block);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = METADATA_SIZE as u64;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        whole256.update(&buf[..n]);
        whole1.update(&buf[..n]);
        body256.update(&buf[..n]);
    }
    if read != expected {
        // The file changed while it was read.
        return Err(PayloadError::Length {
            path: path.to_path_buf(),
            size: read,
            expected,
        });
    }
    let body = hex::encode(body256.finish());
    if !body.eq_ignore_ascii_case(&metadata.body_sha256) {
        return Err(PayloadError::BodyHash {
            path: path.to_path_buf(),
            got: body,
            want: metadata.body_sha256,
        });
    }
    let sha256 = whole256.finish();
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(VerifiedPayload {
        metadata,
        size,
        sha1_base64: b64.encode(whole1.finish()),
        sha256_base64: b64.encode(sha256),
        sha256_hex: hex::encode(sha256),
    })
}
