//! The last check before success: the USR-A slot on the disk carries metadata signed by a
//! trusted key, with a geometry that fits its partition (what keel-init checks at boot).

use std::fs::File;
use std::os::unix::fs::FileExt;

use ed25519_dalek::VerifyingKey;
use keel_format::gpt::DiskTable;
use keel_format::layout;
use keel_format::metadata::{self, METADATA_SIZE};
use keel_format::slot;
use serde::Serialize;

use crate::error::{InstallError, Result};

#[derive(Debug, Serialize)]
pub struct SlotSummary {
    pub slot: String,
    pub version: String,
    pub channel: String,
    pub key_id: String,
    pub root_hash: String,
}

pub fn check_usr_a(dev: &mut File, trusted: &[VerifyingKey]) -> Result<SlotSummary> {
    let fail = |what: String| InstallError::Verification(format!("USR-A on the disk: {what}"));
    let table = DiskTable::read(dev).map_err(|e| fail(e.to_string()))?;
    let part = table
        .partition(layout::USR_A.number)
        .map_err(|e| fail(e.to_string()))?;
    let mut block = vec![0u8; METADATA_SIZE];
    dev.read_exact_at(
        &mut block,
        part.offset() + part.size() - METADATA_SIZE as u64,
    )
    .map_err(|e| fail(format!("reading its metadata block: {e}")))?;
    let meta = metadata::decode(&block)
        .map_err(|e| fail(format!("metadata: {e}")))?
        .verify(trusted)
        .map_err(|e| fail(format!("signature: {e}")))?;
    slot::check_geometry(&meta, Some(part.size())).map_err(|e| fail(format!("geometry: {e}")))?;
    Ok(SlotSummary {
        slot: part.label,
        version: meta.version.clone(),
        channel: meta.channel.clone(),
        key_id: meta.key_id.clone(),
        root_hash: meta.verity.root_hash.clone(),
    })
}
