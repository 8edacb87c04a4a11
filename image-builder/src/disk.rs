//! The raw disk image: protective MBR, GPT (keel_format's layout and GUIDs), and the partition
//! contents copied in sparsely.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, Role, ALIGN, SECTOR};

use crate::definition::board::PartitionSizes;
use crate::error::{io_at, Error, Result};
use crate::sparse;
use keel_cli_support::progress::Reporter;

const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub role: Role,
    pub first_lba: u64,
    pub sectors: u64,
}

impl Placement {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub disk_bytes: u64,
    pub parts: Vec<Placement>,
}

impl Layout {
    pub fn get(&self, role: Role) -> Placement {
        *self
            .parts
            .iter()
            .find(|p| p.role == role)
            .expect("every role is placed")
    }
}

/// Each role's size from the board, keyed by `layout::ROLES`' roles (never by number).
fn size_of(sizes: &PartitionSizes, role: Role) -> u64 {
    let table = [
        (layout::EFI_SYSTEM, sizes.esp_mib),
        (layout::BIOS_BOOT, sizes.bios_boot_mib),
        (layout::USR_A, sizes.usr_mib),
        (layout::USR_B, sizes.usr_mib),
        (layout::OEM, sizes.oem_mib),
        (layout::ROOT, sizes.root_mib),
    ];
    let (_, mib) = table
        .into_iter()
        .find(|(r, _)| *r == role)
        .unwrap_or_else(|| panic!("the board gives no size for {}", role.label));
    mib * MIB
}

/// Partitions in on-disk order, each starting on a 2 MiB boundary; 2 MiB at each end for the
/// GPT copies.
pub fn plan(sizes: &PartitionSizes) -> Layout {
    let mut at = ALIGN;
    let mut parts = Vec::new();
    for role in layout::ROLES {
        let size = size_of(sizes, role);
        parts.push(Placement {
            role,
            first_lba: at / SECTOR,
            sectors: size / SECTOR,
        });
        at = (at + size).div_ceil(ALIGN) * ALIGN;
    }
    Layout {
        disk_bytes: at + ALIGN,
        parts,
    }
}

/// GPT attribute bits each partition gets at build time: USR-A is the first boot, proven.
pub fn build_attributes(role: Role) -> u64 {
    if role == layout::USR_A {
        SlotAttrs::new(1, 0, true).apply_to(0)
    } else {
        0
    }
}

pub struct Contents<'a> {
    pub esp: &'a Path,
    pub usr_a_body: &'a Path,
    pub usr_a_metadata: &'a [u8],
    pub oem: &'a Path,
    pub root: &'a Path,
}

pub fn write(out: &Path, layout: &Layout, c: &Contents, reporter: &Reporter) -> Result<()> {
    let mut f = File::create(out).map_err(io_at(out))?;
    f.set_len(layout.disk_bytes).map_err(io_at(out))?;

    let mut table = DiskTable::new(layout.disk_bytes, layout::DISK_GUID)
        .map_err(|e| Error::Format(format!("partition table: {e}")))?;
    for p in &layout.parts {
        table
            .add(p.role, p.first_lba, p.sectors, build_attributes(p.role))
            .map_err(|e| Error::Input(format!("partition sizes do not fit: {e}")))?;
    }
    DiskTable::write_protective_mbr(&mut f).map_err(|e| Error::Format(e.to_string()))?;
    table
        .write(&mut f)
        .map_err(|e| Error::Format(format!("writing the partition table: {e}")))?;

    let pieces: [(Role, &Path); 4] = [
        (layout::EFI_SYSTEM, c.esp),
        (layout::USR_A, c.usr_a_body),
        (layout::OEM, c.oem),
        (layout::ROOT, c.root),
    ];
    let mut total = 0;
    for (role, src) in pieces {
        let len = std::fs::metadata(src).map_err(io_at(src))?.len();
        let part = layout.get(role);
        let room = if role == layout::USR_A {
            part.size() - c.usr_a_metadata.len() as u64
        } else {
            part.size()
        };
        if len > room {
            return Err(Error::Input(format!(
                "{} needs {} MiB but partition {} is {} MiB: raise the board's partition size",
                role.label,
                len.div_ceil(MIB),
                role.label,
                part.size() / MIB
            )));
        }
        total += len;
    }
    let bar = reporter.bytes("writing disk.raw", total);
    let mut done = 0;
    for (role, src) in pieces {
        let part = layout.get(role);
        done += sparse::copy_into(src, &mut f, out, part.offset(), |n| bar.set(done + n))?;
    }
    let usr_a = layout.get(layout::USR_A);
    f.seek(SeekFrom::Start(
        usr_a.offset() + keel_format::slot::metadata_offset(usr_a.size()),
    ))
    .map_err(io_at(out))?;
    f.write_all(c.usr_a_metadata).map_err(io_at(out))?;
    f.sync_all().map_err(io_at(out))?;
    bar.done("");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_ordered_and_inside_the_disk() {
        let l = plan(&PartitionSizes {
            esp_mib: 127,
            bios_boot_mib: 2,
            usr_mib: 1024,
            oem_mib: 128,
            root_mib: 1024,
        });
        let mut end = 0;
        for p in &l.parts {
            assert_eq!(p.offset() % ALIGN, 0);
            assert!(p.offset() >= end);
            end = p.offset() + p.size();
        }
        assert!(end + 33 * SECTOR <= l.disk_bytes);
        assert_eq!(l.get(layout::EFI_SYSTEM).size(), 127 * MIB);
        assert_eq!(l.get(layout::BIOS_BOOT).size(), 2 * MIB);
        assert_eq!(l.get(layout::USR_B).size(), 1024 * MIB);
        assert_eq!(l.get(layout::OEM).size(), 128 * MIB);
        assert_eq!(l.parts.len(), layout::ROLES.len());
        assert_eq!(build_attributes(layout::USR_A), (1 << 48) | (1 << 56));
        assert_eq!(build_attributes(layout::USR_B), 0);
    }
}
