//! The GPT reader (both copies, their checks, the fallback), slot-attribute decoding, slot
//! choice, and the repair round trip: a table that reads back is written and read again clean,
//! with the same partitions.
//!
//! Input: one flag byte, then the start of a disk (protective MBR, primary header, entries).
//! Flags: 1 = recompute the primary's CRCs, 2 = put a consistent backup copy at the disk's end,
//! 4 = blank the primary header (the backup path), 8 = a disk twice as large (relocation).

use crate::disk::{fix_header_crcs, SparseDisk};
use keel_format::attrs::{self, Candidate, SlotAttrs};
use keel_format::gpt::DiskTable;
use keel_format::gpt_health;

const ENTRIES: usize = 16384;

fn disk_from(flags: u8, region: &[u8]) -> SparseDisk {
    let mut region = region.to_vec();
    region.resize(region.len().max(1024 + ENTRIES), 0);
    let alternate = u64::from_le_bytes(region[512 + 32..512 + 40].try_into().unwrap());
    let sectors = alternate.saturating_add(1).clamp(68, 1 << 34);
    let mut disk = SparseDisk::new(sectors * 512);
    if flags & 1 != 0 {
        let (head, rest) = region.split_at_mut(1024);
        fix_header_crcs(&mut head[512..1024], Some(&rest[..ENTRIES]));
    }
    disk.put(0, &region);
    if flags & 2 != 0 {
        let last = disk.sectors() - 1;
        let entry_lba = last - (ENTRIES as u64 / 512);
        let mut header = region[512..1024].to_vec();
        let primary_lba = header[24..32].to_vec();
        header[24..32].copy_from_slice(&last.to_le_bytes());
        header[32..40].copy_from_slice(&primary_lba);
        header[72..80].copy_from_slice(&entry_lba.to_le_bytes());
        fix_header_crcs(&mut header, Some(&region[1024..1024 + ENTRIES]));
        disk.put(entry_lba * 512, &region[1024..1024 + ENTRIES]);
        disk.put(last * 512, &header);
    }
    if flags & 4 != 0 {
        disk.put(512, &[0u8; 512]);
    }
    disk
}

fn summary(t: &DiskTable) -> Vec<(u32, String, u64, u64, u64, uuid::Uuid)> {
    t.partitions()
        .into_iter()
        .map(|p| {
            (
                p.number,
                p.label,
                p.first_lba,
                p.last_lba,
                p.attribute_bits,
                p.unique_guid,
            )
        })
        .collect()
}

pub fn run(data: &[u8]) {
    let Some((&flags, region)) = data.split_first() else {
        return;
    };
    if region.len() >= 1024 {
        let _ = gpt_health::parse_header(&region[512..1024], 1, 1 << 40);
    }
    let mut disk = disk_from(flags, region);
    let Ok(mut table) = DiskTable::read(&mut disk) else {
        return;
    };
    let _ = table.health().summary();
    let mut candidates = Vec::new();
    for p in table.partitions() {
        assert!(p.first_lba <= p.last_lba);
        let _ = (p.offset(), p.size(), p.is_usr());
        let a = p.slot_attrs();
        assert_eq!(SlotAttrs::from_bits(a.apply_to(p.attribute_bits)), a);
        assert_eq!(a.apply_to(p.attribute_bits), p.attribute_bits);
        if p.is_usr() {
            candidates.push(Candidate {
                number: p.number,
                attrs: a,
            });
        }
    }
    if let Some(c) = attrs::choose(&candidates) {
        let _ = attrs::start_boot(c.attrs);
    }
    let before = summary(&table);
    if flags & 8 != 0 {
        let bigger = disk.sectors() * 2 * 512;
        let mut grown = SparseDisk::new(bigger);
        if table.relocate_backup(bigger).is_ok() {
            let _ = table.grow_to_end(9);
            let _ = table.write(&mut grown);
        }
        return;
    }
    // The repair keel-init does: write both copies from the one read.
    if table.write(&mut disk).is_ok() {
        let again = DiskTable::read(&mut disk).expect("a table just written reads back");
        assert!(again.health().is_clean(), "{:?}", again.health());
        assert_eq!(summary(&again), before);
    }
}
