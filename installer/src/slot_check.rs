//! The last check before success: the USR-A slot on the disk carries metadata signed by a
//! trusted key, with a geometry that fits its partition (what keel-init checks at boot).

use std::fs::File;

use ed25519_dalek::VerifyingKey;
use keel_format::gpt::DiskTable;
use keel_format::layout;
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
    let meta = slot::read_verified_slot_metadata(dev, part.offset(), part.size(), trusted)
        .map_err(|e| fail(format!("{}: {e}", e.check())))?;
    Ok(SlotSummary {
        slot: part.label,
        version: meta.version.clone(),
        channel: meta.channel.clone(),
        key_id: meta.key_id.clone(),
        root_hash: meta.verity.root_hash.clone(),
    })
}
