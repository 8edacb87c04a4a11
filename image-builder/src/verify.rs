//! `keel verify`: for each USR slot that holds something (or the payload): the signature, the
//! geometry, a full recomputation of the dm-verity tree, and the body's SHA-256. Every failure
//! names the slot and the check.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use keel_format::gpt_health::GptHealth;
use keel_format::metadata::{self, METADATA_SIZE};
use keel_format::slot::{self, TrustError};
use keel_format::verity;
use ring::digest::{Context, SHA256};
use serde::Serialize;

use crate::error::{io_at, Error, Result};
use crate::inspect::{self, Trust};
use keel_cli_support::progress::Reporter;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct SlotReport {
    pub slot: String,
    pub version: Option<String>,
    pub ok: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub path: String,
    pub ok: bool,
    pub slots: Vec<SlotReport>,
    pub empty_slots: Vec<String>,
    /// Both copies of the partition table (disk images only).
    pub gpt: Option<GptHealth>,
    /// A damaged copy with an intact other one was accepted (`--accept-repairable`).
    pub gpt_damage_accepted: bool,
}

impl Report {
    /// The failures, one line each: `USR-A: verity: data block 12 ... does not match`.
    pub fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(h) = self.gpt.as_ref().filter(|_| !self.gpt_damage_accepted) {
            for d in &h.damaged {
                v.push(format!(
                    "partition table: {d} (the {} copy is intact: `keel verify \
                     --accept-repairable` accepts this, keel-init repairs it at boot)",
                    h.good_copy().unwrap_or("other")
                ));
            }
        }
        for s in &self.slots {
            for c in s.checks.iter().filter(|c| !c.ok) {
                v.push(format!("{}: {}: {}", s.slot, c.name, c.detail));
            }
        }
        if self.slots.is_empty() {
            v.push("no USR slot holds an image".into());
        }
        v
    }
}

/// Verify the image at `path`. A partition table with one damaged copy fails unless
/// `accept_repairable`; both copies damaged fails to open at all.
pub fn verify(
    path: &Path,
    trust: &Trust,
    reporter: &Reporter,
    accept_repairable: bool,
) -> Result<Report> {
    let mut img = inspect::open(path)?;
    let gpt = img.table.as_ref().map(|t| t.health().clone());
    let gpt_damaged = gpt.as_ref().is_some_and(|h| !h.is_clean());
    let mut slots = Vec::new();
    let mut empty = Vec::new();
    for place in img.slots.clone() {
        let block = img.read_at(place.metadata_offset, METADATA_SIZE)?;
        if block.iter().all(|&b| b == 0) {
            empty.push(place.name.clone());
            continue;
        }
        let mut checks = Vec::new();
        let mut version = None;
        let fail = |name, detail: String| Check {
            name,
            ok: false,
            detail,
        };
        let unverified = match metadata::decode(&block) {
            Ok(u) => u,
            Err(e) => {
                checks.push(fail("metadata", e.to_string()));
                slots.push(SlotReport {
                    slot: place.name.clone(),
                    version,
                    ok: false,
                    checks,
                });
                continue;
            }
        };
        version = Some(unverified.claimed().version.clone());
        let key_id = unverified.claimed().key_id.clone();
        let available = match place.partition_size {
            Some(s) => Some(s),
            None => Some(img.len - place.body_offset + METADATA_SIZE as u64),
        };
        let signed_by = || Check {
            name: "signature",
            ok: true,
            detail: format!("signed by key {key_id} ({})", trust.source),
        };
        let meta = match slot::verified_slot_metadata(unverified, &trust.keys, available) {
            Ok(m) => {
                checks.push(signed_by());
                m
            }
            Err(e) => {
                // Each check reports the refusal in its own words, as `keel verify` always has.
                match &e {
                    TrustError::Geometry { error } => {
                        checks.push(signed_by());
                        checks.push(fail("geometry", error.to_string()));
                    }
                    TrustError::Signature { error, .. } => {
                        checks.push(fail("signature", format!("{error} ({})", trust.source)))
                    }
                    other => {
                        checks.push(fail(other.check(), format!("{other} ({})", trust.source)))
                    }
                }
                slots.push(SlotReport {
                    slot: place.name.clone(),
                    version,
                    ok: false,
                    checks,
                });
                continue;
            }
        };
        checks.push(Check {
            name: "geometry",
            ok: true,
            detail: format!(
                "{} data bytes, hash area at {}",
                meta.verity.data_size, meta.verity.hash_offset
            ),
        });

        let v = &meta.verity;
        let params = verity::Params::from_info(v)
            .map_err(|e| Error::Verification(format!("{}: {e}", place.name)))?;
        let bar = reporter.bytes(&format!("{} hash tree", place.name), v.data_size);
        let res = verity::verify(&mut img.file, place.body_offset, &params, |n| bar.set(n));
        bar.done("");
        match res {
            Ok(()) => checks.push(Check {
                name: "verity",
                ok: true,
                detail: format!("hash tree recomputed, root {}", v.root_hash),
            }),
            Err(e) => checks.push(fail("verity", e.to_string())),
        }

        let body = meta.body_size();
        let bar = reporter.bytes(&format!("{} body sha256", place.name), body);
        let sha = sha256_range(&mut img.file, path, place.body_offset, body, |n| bar.set(n))?;
        bar.done("");
        if sha == meta.body_sha256 {
            checks.push(Check {
                name: "body sha256",
                ok: true,
                detail: sha,
            });
        } else {
            checks.push(fail(
                "body sha256",
                format!(
                    "body hashes to {sha}, the signed metadata says {}",
                    meta.body_sha256
                ),
            ));
        }
        let ok = checks.iter().all(|c| c.ok);
        slots.push(SlotReport {
            slot: place.name.clone(),
            version,
            ok,
            checks,
        });
    }
    let gpt_damage_accepted = gpt_damaged && accept_repairable;
    let ok =
        !slots.is_empty() && slots.iter().all(|s| s.ok) && (!gpt_damaged || gpt_damage_accepted);
    Ok(Report {
        path: path.display().to_string(),
        ok,
        slots,
        empty_slots: empty,
        gpt,
        gpt_damage_accepted,
    })
}

fn sha256_range<R: Read + Seek>(
    f: &mut R,
    path: &Path,
    offset: u64,
    len: u64,
    mut progress: impl FnMut(u64),
) -> Result<String> {
    f.seek(SeekFrom::Start(offset)).map_err(io_at(path))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..n]).map_err(io_at(path))?;
        ctx.update(&buf[..n]);
        left -= n as u64;
        progress(len - left);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}
