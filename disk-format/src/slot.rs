//! Where things sit in a USR slot, and in the payload file that carries one.
//!
//! A USR **partition** holds, from its first byte: the filesystem (the dm-verity data area,
//! `verity.data_size` bytes), the verity area at `verity.hash_offset` (veritysetup superblock
//! then the tree, `verity.hash_size` bytes), free space, and the signed metadata block in the
//! **last 4 KiB** of the partition. Putting the metadata at the end keeps the filesystem at
//! offset 0, where the kernel and `veritysetup` expect it.
//!
//! A **payload** file (`usr.img`, the unit an update ships) is the metadata block first, then the
//! slot body (data area and verity area). With the metadata first, a streamed payload can be
//! verified before a single byte is written to the disk.

use std::io::{self, Read, Seek, SeekFrom};

use ed25519_dalek::VerifyingKey;

use crate::metadata::{self, MetadataError, SlotMetadata, Unverified, METADATA_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{0}")]
    Metadata(#[from] metadata::MetadataError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("slot body ({body} bytes) does not fit a {partition}-byte partition with its metadata block")]
    TooLarge { body: u64, partition: u64 },
    #[error("verity parameters are inconsistent: {0}")]
    Inconsistent(String),
}

/// Why a slot's metadata block cannot be trusted, by the check that refused it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted keys: nothing can be verified")]
    NoKeys,
    #[error("reading its metadata block: {error}")]
    Read { error: io::Error },
    #[error("{error}")]
    Decode { error: MetadataError },
    #[error("metadata (claims version {claimed}) failed signature verification: {error}")]
    Signature {
        claimed: String,
        error: MetadataError,
    },
    #[error("signed verity geometry is unusable: {error}")]
    Geometry { error: SlotError },
}

impl TrustError {
    /// The check that refused the block: `metadata`, `signature` or `geometry`.
    pub fn check(&self) -> &'static str {
        match self {
            TrustError::NoKeys | TrustError::Signature { .. } => "signature",
            TrustError::Read { .. } | TrustError::Decode { .. } => "metadata",
            TrustError::Geometry { .. } => "geometry",
        }
    }
}

/// The one way to trust a slot's metadata: its signature verifies with one of `keys`, and the
/// verity geometry it claims is consistent and fits a partition of `partition_size` bytes
/// (a payload has none). Nothing in the block may be used before this passes.
pub fn verified_slot_metadata(
    unverified: Unverified,
    keys: &[VerifyingKey],
    partition_size: Option<u64>,
) -> Result<SlotMetadata, TrustError> {
    if keys.is_empty() {
        return Err(TrustError::NoKeys);
    }
    let claimed = unverified.claimed().version.clone();
    let meta = unverified
        .verify(keys)
        .map_err(|error| TrustError::Signature { claimed, error })?;
    check_geometry(&meta, partition_size).map_err(|error| TrustError::Geometry { error })?;
    Ok(meta)
}

/// Read the metadata block of the partition at `offset` with `size` bytes of `dev` and trust
/// it ([`verified_slot_metadata`]).
pub fn read_verified_slot_metadata<R: Read + Seek + ?Sized>(
    dev: &mut R,
    offset: u64,
    size: u64,
    keys: &[VerifyingKey],
) -> Result<SlotMetadata, TrustError> {
    let unverified = match read_partition_metadata(dev, offset, size) {
        Ok(u) => u,
        Err(SlotError::Io(error)) => return Err(TrustError::Read { error }),
        Err(SlotError::Metadata(error)) => return Err(TrustError::Decode { error }),
        Err(other) => {
            return Err(TrustError::Read {
                error: io::Error::other(other.to_string()),
            })
        }
    };
    verified_slot_metadata(unverified, keys, Some(size))
}

/// Offset of the metadata block within a partition of `partition_size` bytes.
pub fn metadata_offset(partition_size: u64) -> u64 {
    partition_size - METADATA_SIZE as u64
}

/// Read the metadata block of the partition at `offset` with `size` bytes in `dev`.
pub fn read_partition_metadata<R: Read + Seek + ?Sized>(
    dev: &mut R,
    offset: u64,
    size: u64,
) -> Result<Unverified, SlotError> {
    dev.seek(SeekFrom::Start(offset + metadata_offset(size)))?;
    let mut block = vec![0u8; METADATA_SIZE];
    dev.read_exact(&mut block)?;
    Ok(metadata::decode(&block)?)
}

/// Read the metadata block at the head of a payload.
pub fn read_payload_metadata<R: Read + ?Sized>(
    payload: &mut R,
) -> Result<(Unverified, Vec<u8>), SlotError> {
    let mut block = vec![0u8; METADATA_SIZE];
    payload.read_exact(&mut block)?;
    Ok((metadata::decode(&block)?, block))
}

/// Check that the verity geometry a (verified) block claims is self-consistent and fits the
/// partition; keel-init and the updater call this before they trust any offset in it.
pub fn check_geometry(meta: &SlotMetadata, partition_size: Option<u64>) -> Result<(), SlotError> {
    let v = &meta.verity;
    let bad = |why: String| Err(SlotError::Inconsistent(why));
    if v.data_block_size != 4096 || v.hash_block_size != 4096 || v.algorithm != "sha256" {
        return bad(format!(
            "only sha256 with 4096-byte blocks is supported, got {} {}/{}",
            v.algorithm, v.data_block_size, v.hash_block_size
        ));
    }
    if v.data_size == 0 || !v.data_size.is_multiple_of(4096) {
        return bad(format!(
            "data size {} is not a positive multiple of 4096",
            v.data_size
        ));
    }
    if v.hash_offset < v.data_size || !v.hash_offset.is_multiple_of(4096) {
        return bad(format!(
            "hash offset {} overlaps the data or is unaligned",
            v.hash_offset
        ));
    }
    let want = crate::verity::hash_area_size(v.data_size / 4096);
    if v.hash_size != want {
        return bad(format!(
            "hash area is {} bytes, the tree needs {want}",
            v.hash_size
        ));
    }
    if let Some(size) = partition_size {
        if meta.body_size() + METADATA_SIZE as u64 > size {
            return Err(SlotError::TooLarge {
                body: meta.body_size(),
                partition: size,
            });
        }
    }
    Ok(())
}
