//! Applying a payload: each step is its own function, called in this order by [`apply`]:
//!
//! 1. [`payload::read_verified_metadata`]: signature and geometry, before anything is written;
//! 2. [`check_target`]: running and passive slot by GUID, arch/board/version, size, busy;
//! 3. [`invalidate_passive`]: the passive slot can no longer boot (GPT, then metadata zeroed);
//! 4. [`write_body`]: stream the body onto the slot, hashing on the way, and (O_DIRECT slots) read
//!    each written chunk back from the disk and hash it for the verity tree while later ones arrive;
//! 5. [`verify_written`]: check the verity tree of what was read back (or re-read the whole slot
//!    now, where it is written through the page cache), then write the metadata;
//! 6. [`stage`]: only now the GPT makes the slot the next boot, on trial.

use ed25519_dalek::VerifyingKey;
use keel_format::attrs::{self, SlotAttrs};
use keel_format::gpt::Partition;
use keel_format::metadata::METADATA_SIZE;
use keel_format::verity;
use serde::Serialize;
use uuid::Uuid;

use crate::compat;
use crate::disk::{Disk, SlotDevice};
use crate::download::ResumePolicy;
use crate::error::{Result, UpdateError};
use crate::payload::{self, OpenPayload, PayloadSource, VerifiedPayload};
use crate::slots::{find_slots, Slots};
use crate::stream;
use crate::target::Target;
use keel_cli_support::progress::Progress;

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Keys a payload's metadata may be signed with.
    pub trusted_keys: Vec<VerifyingKey>,
    /// Accept a version older than or equal to the running one.
    pub allow_downgrade: bool,
    /// Trial boots the new slot gets before keel-init falls back (1..=15).
    pub tries: u8,
    /// For a payload file: hash the body before touching the disk (one extra read of the file).
    pub precheck_file: bool,
    /// For a URL: how a broken download resumes.
    pub resume: ResumePolicy,
    /// What the update server announced for the whole payload (metadata block + body): its
    /// size and SHA-256, checked on the bytes as they stream, before anything is staged.
    pub expected: Option<ExpectedPayload>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedPayload {
    pub size: u64,
    pub sha256: [u8; 32],
}

impl ApplyOptions {
    pub fn new(trusted_keys: Vec<VerifyingKey>) -> ApplyOptions {
        ApplyOptions {
            trusted_keys,
            allow_downgrade: false,
            tries: 1,
            precheck_file: true,
            resume: ResumePolicy::default(),
            expected: None,
        }
    }
}

/// What an apply did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub payload: String,
    pub version: String,
    pub previous_version: String,
    pub disk: String,
    pub slot: String,
    pub slot_guid: Uuid,
    pub slot_attrs: SlotAttrs,
    pub running_slot: String,
    pub running_attrs: SlotAttrs,
    /// Whether the body went down with O_DIRECT.
    pub direct_io: bool,
}

/// Apply the payload from `source` to the passive slot of `target`.
pub fn apply(
    source: PayloadSource,
    target: &Target,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Applied> {
    let mut payload = source.open_with(opts.resume)?;
    let announced = match &opts.expected {
        Some(exp) => Some(watch_whole_payload(&mut payload, exp)?),
        None => None,
    };
    progress.phase("verifying payload metadata", 0);
    let verified = payload::read_verified_metadata(&mut payload, &opts.trusted_keys)?;

    let mut disk = Disk::open_write(&target.disk)?;
    let checked = check_target(&mut disk, target, &verified, opts.allow_downgrade)?;
    let mut passive = disk.slot(&checked.slots.passive, true)?;
    if opts.precheck_file {
        if let Some(path) = payload.file.clone() {
            payload::precheck_file_body(&path, &verified, progress)?;
        }
    }

    progress.phase(&format!("invalidating {}", checked.slots.passive.label), 0);
    invalidate_passive(&mut disk, &checked.slots, &mut passive)?;
    let read_back = write_body(&mut payload, &verified, &mut passive, progress)?;
    if let (Some(exp), Some(hash)) = (&opts.expected, &announced) {
        check_whole_payload(&payload.name, exp, hash)?;
    }
    verify_written(&verified, &mut passive, read_back, progress)?;
    passive.write_metadata(&verified.block)?;
    let direct_io = passive.uses_direct_io();
    drop(passive);

    progress.phase(&format!("staging {}", checked.slots.passive.label), 0);
    let (running_attrs, slot_attrs) = stage(&mut disk, &checked.slots, opts.tries)?;
    Ok(Applied {
        payload: verified.name.clone(),
        version: verified.metadata.version.clone(),
        previous_version: checked.running_version,
        disk: target.disk.display().to_string(),
        slot: checked.slots.passive.label.clone(),
        slot_guid: checked.slots.passive.unique_guid,
        slot_attrs,
        running_slot: checked.slots.running.label.clone(),
        running_attrs,
        direct_io,
    })
}

/// The running SHA-256 and byte count of everything read from a payload stream.
type WholeHash = std::rc::Rc<std::cell::RefCell<(ring::digest::Context, u64)>>;

struct HashingReader {
    inner: Box<dyn std::io::Read>,
    hash: WholeHash,
}

impl std::io::Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.hash.borrow_mut();
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        Ok(n)
    }
}

/// Refuse a payload whose announced length differs from the server's, and hash the rest of
/// the stream as it is read.
fn watch_whole_payload(payload: &mut OpenPayload, exp: &ExpectedPayload) -> Result<WholeHash> {
    if let Some(len) = payload.length.filter(|l| *l != exp.size) {
        return Err(UpdateError::Untrusted {
            payload: payload.name.clone(),
            reason: format!(
                "it is {len} bytes long, the update server announced {}",
                exp.size
            ),
        });
    }
    let hash: WholeHash = std::rc::Rc::new(std::cell::RefCell::new((
        ring::digest::Context::new(&ring::digest::SHA256),
        0,
    )));
    let inner = std::mem::replace(&mut payload.reader, Box::new(std::io::empty()));
    payload.reader = Box::new(HashingReader {
        inner,
        hash: hash.clone(),
    });
    Ok(hash)
}

fn check_whole_payload(name: &str, exp: &ExpectedPayload, hash: &WholeHash) -> Result<()> {
    let (ctx, count) = hash.borrow().clone();
    let got = ctx.finish();
    let refuse = |reason: String| UpdateError::Untrusted {
        payload: name.to_string(),
        reason,
    };
    if count != exp.size {
        return Err(refuse(format!(
            "it was {count} bytes long, the update server announced {}",
            exp.size
        )));
    }
    if got.as_ref() != exp.sha256 {
        return Err(refuse(format!(
            "its SHA-256 is {}, the update server announced {}",
            hex::encode(got.as_ref()),
            hex::encode(exp.sha256)
        )));
    }
    Ok(())
}

pub struct CheckedTarget {
    pub slots: Slots,
    pub running_version: String,
}

/// Step 2: find the slots, and refuse a payload that is not for this system or does not fit, and
/// a running slot that has not proven itself (its partner may be the only good system left).
pub fn check_target(
    disk: &mut Disk,
    target: &Target,
    payload: &VerifiedPayload,
    allow_downgrade: bool,
) -> Result<CheckedTarget> {
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let info = target.system_info(disk, &slots)?;
    compat::check_compatible(&payload.name, &payload.metadata, &info, allow_downgrade)?;
    let needed = payload.metadata.body_size() + METADATA_SIZE as u64;
    if needed > slots.passive.size() {
        return Err(UpdateError::NotApplicable {
            payload: payload.name.clone(),
            reason: format!(
                "its body and metadata need {needed} bytes, slot {} has {}",
                slots.passive.label,
                slots.passive.size()
            ),
        });
    }
    let running = slots.running.slot_attrs();
    if !running.successful {
        return Err(UpdateError::Refused(format!(
            "the running slot {} ({running}) has not been marked good yet; updating now would \
             overwrite {}, the last known-good system (run `keel-update mark-good` once this boot is healthy)",
            slots.running.label, slots.passive.label
        )));
    }
    Ok(CheckedTarget {
        slots,
        running_version: info.version,
    })
}

/// Re-read the table and find `part` in it again by GUID (the table may have changed since).
fn refind(disk: &mut Disk, part: &Partition) -> Result<(keel_format::gpt::DiskTable, u32)> {
    let table = disk.table()?;
    let number = table
        .usr_slots()
        .iter()
        .find(|p| p.unique_guid == part.unique_guid)
        .map(|p| p.number)
        .ok_or_else(|| UpdateError::Disk {
            disk: disk.path.clone(),
            reason: format!(
                "slot {} (GUID {}) disappeared from the partition table",
                part.label, part.unique_guid
            ),
        })?;
    Ok((table, number))
}

/// Step 3: priority 0 in the GPT, then the metadata block zeroed, both synced: from here on a
/// half-written slot can never be booted or mistaken for a complete one.
pub fn invalidate_passive(disk: &mut Disk, slots: &Slots, passive: &mut SlotDevice) -> Result<()> {
    let (mut table, number) = refind(disk, &slots.passive)?;
    table
        .set_slot_attrs(number, attrs::invalidate())
        .map_err(|e| UpdateError::Disk {
            disk: disk.path.clone(),
            reason: e.to_string(),
        })?;
    disk.write_table(&mut table)?;
    passive.write_metadata(&[0u8; METADATA_SIZE])
}

/// Step 4: stream the body onto the slot from offset 0 and check its SHA-256. Where the slot is
/// written with O_DIRECT, each chunk is also read back from the disk and hashed as it lands:
/// the verity tree of what the disk holds is returned, for [`verify_written`].
pub fn write_body(
    payload: &mut OpenPayload,
    verified: &VerifiedPayload,
    passive: &mut SlotDevice,
    progress: &dyn Progress,
) -> Result<Option<verity::Tree>> {
    let size = verified.metadata.body_size();
    let params = signed_verity_params(verified)?;
    progress.phase(&format!("writing {}", passive.label), size);
    let disk = passive.disk.clone();
    let label = passive.label.clone();
    let mut read_back = passive.direct_read_back()?;
    let mut hashes = match read_back {
        Some(_) => Some(
            verity::DataHashes::new(params.data_size, &params.salt).map_err(|e| {
                UpdateError::Untrusted {
                    payload: verified.name.clone(),
                    reason: format!("its verity geometry: {e}"),
                }
            })?,
        ),
        None => None,
    };
    let verifying = match (&mut read_back, &mut hashes) {
        (Some(source), Some(hashes)) => Some(stream::Verifying { source, hashes }),
        _ => None,
    };
    let digest = stream::copy_and_hash(
        &mut payload.reader,
        size,
        Some(&mut passive.body_sink()),
        verifying,
        progress,
    )
    .map_err(|e| e.into_update_error(&verified.name, Some((&disk, &label))))?;
    progress.finish();
    payload::check_body_hash(verified, &digest, &verified.body_sha256()?)?;
    passive.sync_and_drop_cache()?;
    // A write the device refused for O_DIRECT went on buffered, and so did the reads after it:
    // those could have come from the page cache, so the tree is not kept.
    match hashes {
        Some(hashes) if passive.uses_direct_io() => {
            hashes
                .finish(params.uuid)
                .map(Some)
                .map_err(|e| UpdateError::Readback {
                    disk: disk.clone(),
                    slot: label.clone(),
                    payload: verified.name.clone(),
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

fn signed_verity_params(verified: &VerifiedPayload) -> Result<verity::Params> {
    payload::verity_params(&verified.metadata).map_err(|reason| UpdateError::Untrusted {
        payload: verified.name.clone(),
        reason,
    })
}

/// Step 5: check the slot's verity tree against the signed root hash: the tree of the data as
/// [`write_body`] read it back, or, without one, the data read back from the disk now; either
/// way compared with the hash area the disk holds.
pub fn verify_written(
    verified: &VerifiedPayload,
    passive: &mut SlotDevice,
    read_back: Option<verity::Tree>,
    progress: &dyn Progress,
) -> Result<()> {
    let params = signed_verity_params(verified)?;
    let mut reader = passive
        .buffered_reader()
        .map_err(|source| UpdateError::SlotIo {
            disk: passive.disk.clone(),
            slot: passive.label.clone(),
            what: "opening it to read it back failed".into(),
            source,
        })?;
    let result = match &read_back {
        Some(tree) => {
            progress.phase(
                &format!("verifying {} (data read back while writing)", passive.label),
                0,
            );
            verity::check_stored_tree(&mut reader, passive.base(), &params, tree)
        }
        None => {
            progress.phase(&format!("verifying {}", passive.label), params.data_size);
            verity::verify(&mut reader, passive.base(), &params, |n| progress.set(n))
        }
    };
    progress.finish();
    result.map_err(|e| UpdateError::Readback {
        disk: passive.disk.clone(),
        slot: passive.label.clone(),
        payload: verified.name.clone(),
        reason: e.to_string(),
    })
}

/// Step 6: the written slot becomes the next boot, on trial with `tries` boots; the running slot
/// keeps its attributes (lowered by one only at the priority ceiling). Returns the new
/// (running, staged) attributes.
pub fn stage(disk: &mut Disk, slots: &Slots, tries: u8) -> Result<(SlotAttrs, SlotAttrs)> {
    let (mut table, passive_number) = refind(disk, &slots.passive)?;
    let (_, running_number) = refind(disk, &slots.running)?;
    let running = table
        .partition(running_number)
        .map_err(|e| UpdateError::Disk {
            disk: disk.path.clone(),
            reason: e.to_string(),
        })?
        .slot_attrs();
    let (running, staged) = attrs::stage(running, tries);
    let set = |table: &mut keel_format::gpt::DiskTable, n, a| {
        table.set_slot_attrs(n, a).map_err(|e| UpdateError::Disk {
            disk: disk.path.clone(),
            reason: e.to_string(),
        })
    };
    set(&mut table, running_number, running)?;
    set(&mut table, passive_number, staged)?;
    disk.write_table(&mut table)?;
    Ok((running, staged))
}
