//! After an apply: status, mark-good, rollback, and judging a staged update once the machine
//! has booted again.

use ed25519_dalek::VerifyingKey;
use keel_format::attrs::{self, Candidate, SlotAttrs};
use keel_format::gpt::{DiskTable, Partition};
use keel_format::metadata::SlotMetadata;
use keel_format::slot;
use serde::Serialize;
use uuid::Uuid;

use crate::disk::Disk;
use crate::error::{Result, UpdateError};
use crate::slots::{find_slots, Slots};
use crate::state::{Outcome, StagedUpdate, UpdateState};
use crate::target::Target;

#[derive(Clone, Debug, Serialize)]
pub struct SlotStatus {
    pub label: String,
    pub partition: u32,
    pub guid: Uuid,
    pub attrs: SlotAttrs,
    pub bootable: bool,
    /// The version its metadata claims (shown even when the signature does not verify).
    pub version: Option<String>,
    /// Whether its metadata verifies with the trusted keys and fits the partition.
    pub verified: bool,
    /// Why it does not verify.
    pub problem: Option<String>,
}

/// What became of a staged update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Verdict {
    /// Written and staged; the next boot tries it.
    RebootPending { version: String, slot: String },
    /// Running on trial, not marked good yet.
    OnTrial { version: String, slot: String },
    /// Running and marked good.
    Good { version: String, slot: String },
    /// Not running, no tries left, never marked good: keel-init fell back.
    Failed { version: String, slot: String },
    /// The slot no longer looks staged (rolled back, or overwritten).
    Abandoned { version: String, slot: String },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::RebootPending { version, slot } => {
                write!(f, "version {version} is staged on {slot}; reboot to try it")
            }
            Verdict::OnTrial { version, slot } => {
                write!(
                    f,
                    "version {version} is running on {slot}, on trial (not marked good yet)"
                )
            }
            Verdict::Good { version, slot } => {
                write!(f, "version {version} is running on {slot} and marked good")
            }
            Verdict::Failed { version, slot } => write!(
                f,
                "version {version} failed: {slot} ran out of tries without being marked good, \
                 the previous system was booted instead"
            ),
            Verdict::Abandoned { version, slot } => {
                write!(f, "version {version} on {slot} is no longer staged")
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub disk: String,
    pub running: SlotStatus,
    pub passive: SlotStatus,
    /// The slot the next boot picks (`attrs::choose`).
    pub next_boot: Option<String>,
    pub reboot_pending: bool,
    pub staged: Option<StagedUpdate>,
    pub verdict: Option<Verdict>,
    /// The verdict in words, e.g. "version 2.0.0 failed: …".
    pub verdict_message: Option<String>,
    /// update_engine's word: `UPDATED_NEED_REBOOT` while a staged update waits for the reboot,
    /// `IDLE` otherwise.
    pub update_status: &'static str,
    pub last: Option<Outcome>,
    /// The update agent's attempts, oldest first.
    pub history: Vec<crate::state::Attempt>,
    /// Versions the agent will not apply again.
    pub failed_versions: Vec<String>,
    /// Events waiting for the update server.
    pub pending_events: usize,
}

fn disk_err(disk: &Disk, e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Disk {
        disk: disk.path.clone(),
        reason: e.to_string(),
    }
}

/// Read and verify a slot's metadata block: the claimed metadata, and whether it verifies.
pub fn slot_metadata(
    disk: &Disk,
    part: &Partition,
    keys: &[VerifyingKey],
) -> Result<(
    Option<SlotMetadata>,
    std::result::Result<SlotMetadata, String>,
)> {
    let mut dev = disk.slot(part, false)?;
    let unverified = match dev.read_metadata() {
        Ok(u) => u,
        Err(e) => return Ok((None, Err(e.to_string()))),
    };
    let claimed = unverified.claimed().clone();
    let verified = slot::verified_slot_metadata(unverified, keys, Some(part.size()))
        .map_err(|e| e.to_string());
    Ok((Some(claimed), verified))
}

fn slot_status(disk: &Disk, part: &Partition, keys: &[VerifyingKey]) -> Result<SlotStatus> {
    let (claimed, verified) = slot_metadata(disk, part, keys)?;
    let attrs = part.slot_attrs();
    Ok(SlotStatus {
        label: part.label.clone(),
        partition: part.number,
        guid: part.unique_guid,
        attrs,
        bootable: attrs.bootable(),
        version: claimed.map(|m| m.version),
        verified: verified.is_ok(),
        problem: verified.err(),
    })
}

fn next_boot(slots: &Slots) -> Option<&Partition> {
    let c = |p: &Partition| Candidate {
        number: p.number,
        attrs: p.slot_attrs(),
    };
    let chosen = attrs::choose(&[c(&slots.running), c(&slots.passive)])?;
    [&slots.running, &slots.passive]
        .into_iter()
        .find(|p| p.number == chosen.number)
}

/// Judge a staged update against the slots as they are now.
pub fn judge(staged: &StagedUpdate, slots: &Slots) -> Verdict {
    let version = staged.version.clone();
    let slot = staged.slot.clone();
    if slots.running.unique_guid == staged.slot_guid {
        return if slots.running.slot_attrs().successful {
            Verdict::Good { version, slot }
        } else {
            Verdict::OnTrial { version, slot }
        };
    }
    if slots.passive.unique_guid != staged.slot_guid {
        return Verdict::Abandoned { version, slot };
    }
    let a = slots.passive.slot_attrs();
    if a.tries == 0 && !a.successful {
        return Verdict::Failed { version, slot };
    }
    if next_boot(slots).map(|p| p.unique_guid) == Some(staged.slot_guid) {
        Verdict::RebootPending { version, slot }
    } else {
        Verdict::Abandoned { version, slot }
    }
}

pub fn status(target: &Target, keys: &[VerifyingKey], state: &UpdateState) -> Result<Status> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let next = next_boot(&slots).map(|p| p.label.clone());
    let reboot_pending = next.as_deref() == Some(slots.passive.label.as_str());
    let verdict = state.staged.as_ref().map(|s| judge(s, &slots));
    Ok(Status {
        disk: disk.path.display().to_string(),
        running: slot_status(&disk, &slots.running, keys)?,
        passive: slot_status(&disk, &slots.passive, keys)?,
        next_boot: next,
        reboot_pending,
        staged: state.staged.clone(),
        verdict_message: verdict.as_ref().map(|v| v.to_string()),
        // On a disk image nothing has booted: a staged slot the boot rule picks is "on trial"
        // there, and still waits for its (first) boot.
        update_status: if matches!(verdict, Some(Verdict::RebootPending { .. }))
            || (target.running == crate::slots::RunningSlot::Chosen
                && matches!(verdict, Some(Verdict::OnTrial { .. })))
        {
            "UPDATED_NEED_REBOOT"
        } else {
            "IDLE"
        },
        verdict,
        last: state.last.clone(),
        history: state.history.clone(),
        failed_versions: state.failed_versions.clone(),
        pending_events: state.pending_events.len(),
    })
}

/// A change of the two slots' attributes.
#[derive(Clone, Debug, Serialize)]
pub struct SlotChange {
    pub running: String,
    pub running_before: SlotAttrs,
    pub running_after: SlotAttrs,
    pub other: String,
    pub other_before: SlotAttrs,
    pub other_after: SlotAttrs,
    pub changed: bool,
}

fn change_slots(
    disk: &mut Disk,
    table: &mut DiskTable,
    slots: &Slots,
    running_after: SlotAttrs,
    other_after: SlotAttrs,
) -> Result<SlotChange> {
    let running_before = slots.running.slot_attrs();
    let other_before = slots.passive.slot_attrs();
    let changed = running_before != running_after || other_before != other_after;
    if changed {
        table
            .set_slot_attrs(slots.running.number, running_after)
            .map_err(|e| disk_err(disk, e))?;
        table
            .set_slot_attrs(slots.passive.number, other_after)
            .map_err(|e| disk_err(disk, e))?;
        disk.write_table(table)?;
    }
    Ok(SlotChange {
        running: slots.running.label.clone(),
        running_before,
        running_after,
        other: slots.passive.label.clone(),
        other_before,
        other_after,
        changed,
    })
}

/// The running slot passed its health gate: successful, no tries, ranked above the other.
pub fn mark_good(target: &Target) -> Result<SlotChange> {
    let mut disk = Disk::open_write(&target.disk)?;
    let mut table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let (running, other) = attrs::mark_good(slots.running.slot_attrs(), slots.passive.slot_attrs());
    change_slots(&mut disk, &mut table, &slots, running, other)
}

/// Make the other slot the next boot. Refused unless its metadata verifies with `keys` and it
/// has been marked good before.
pub fn rollback(target: &Target, keys: &[VerifyingKey]) -> Result<SlotChange> {
    let mut disk = Disk::open_write(&target.disk)?;
    let mut table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let other = &slots.passive;
    let (claimed, verified) = slot_metadata(&disk, other, keys)?;
    let version = claimed.map_or("(none)".to_string(), |m| m.version);
    if let Err(why) = verified {
        return Err(UpdateError::Refused(format!(
            "cannot roll back to {} (version {version}): its metadata does not verify: {why}",
            other.label
        )));
    }
    let Some((running, other_after)) =
        attrs::rollback(slots.running.slot_attrs(), other.slot_attrs())
    else {
        return Err(UpdateError::Refused(format!(
            "cannot roll back to {} (version {version}, {}): it has never been marked good",
            other.label,
            other.slot_attrs()
        )));
    };
    change_slots(&mut disk, &mut table, &slots, running, other_after)
}

/// Record a mark-good in the state: the staged update, if any, is judged (good or failed) and
/// no longer pending. Returns the verdict.
pub fn record_mark_good(
    target: &Target,
    state: &mut UpdateState,
    change: &SlotChange,
) -> Result<Option<Verdict>> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let verdict = state.staged.as_ref().map(|s| judge(s, &slots));
    if verdict.is_none() && !change.changed {
        // Nothing new to say; keep the last outcome (it may be an update that failed).
        return Ok(None);
    }
    let (result, message) = match &verdict {
        Some(v @ Verdict::Good { .. }) => ("good", v.to_string()),
        Some(v @ Verdict::Failed { .. }) => ("update-failed", v.to_string()),
        _ => ("ok", format!("{} marked good", change.running)),
    };
    if matches!(
        verdict,
        Some(Verdict::Good { .. } | Verdict::Failed { .. } | Verdict::Abandoned { .. })
    ) {
        state.staged = None;
    }
    state.last = Some(Outcome::now("mark-good", result, message));
    Ok(verdict)
}
