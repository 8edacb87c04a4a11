//! Which USR slot is running and which one is passive, identified by partition GUID.

use keel_format::attrs::{self, Candidate};
use keel_format::gpt::{DiskTable, Partition};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Result, UpdateError};

/// How to tell the running slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "guid")]
pub enum RunningSlot {
    /// The slot /usr is mounted from (in the guest), by its partition's unique GUID.
    Mounted(Uuid),
    /// A disk that is not running: the slot the boot rule (`attrs::choose`) would pick.
    Chosen,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    pub running: Partition,
    pub passive: Partition,
}

/// Find the running and the passive USR slot of `table`.
pub fn find_slots(
    table: &DiskTable,
    running: RunningSlot,
    disk: &std::path::Path,
) -> Result<Slots> {
    let err = |reason: String| UpdateError::Disk {
        disk: disk.to_path_buf(),
        reason,
    };
    let usr = table.usr_slots();
    if usr.len() != 2 {
        return Err(err(format!(
            "it has {} USR partitions, an A/B disk has exactly 2",
            usr.len()
        )));
    }
    let running_guid = match running {
        RunningSlot::Mounted(guid) => guid,
        RunningSlot::Chosen => {
            let candidates: Vec<Candidate> = usr
                .iter()
                .map(|p| Candidate {
                    number: p.number,
                    attrs: p.slot_attrs(),
                })
                .collect();
            let chosen = attrs::choose(&candidates)
                .ok_or_else(|| err("none of its USR slots is bootable".into()))?;
            usr.iter()
                .find(|p| p.number == chosen.number)
                .expect("chosen from these")
                .unique_guid
        }
    };
    let running = usr
        .iter()
        .find(|p| p.unique_guid == running_guid)
        .cloned()
        .ok_or_else(|| {
            err(format!(
                "no USR partition has the running slot's GUID {running_guid}"
            ))
        })?;
    let passive = usr
        .iter()
        .find(|p| p.unique_guid != running_guid)
        .cloned()
        .ok_or_else(|| {
            err(format!(
                "both USR partitions have the GUID {running_guid}; cannot tell the passive slot"
            ))
        })?;
    if passive.number == running.number {
        return Err(err(
            "the running and passive slot are the same partition".into()
        ));
    }
    Ok(Slots { running, passive })
}
