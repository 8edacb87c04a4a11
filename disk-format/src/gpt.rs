//! Reading and writing the partition table. Writes go through [`DiskTable::write`], which puts
//! the backup copy down first and the primary last, each synced, so a power cut leaves at least
//! one valid, self-consistent table (GRUB's gptprio and Flatcar's cgpt do the same).

use std::io::{self, Read, Seek, SeekFrom, Write};

use gptman::{GPTPartitionEntry, PartitionName, GPT};
use serde::Serialize;
use uuid::Uuid;

use crate::attrs::SlotAttrs;
use crate::gpt_health::{self, GptHealth};
use crate::layout::{self, Role, SECTOR};

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("no valid GUID partition table (primary and backup both unreadable): {0}")]
    Read(#[source] gptman::Error),
    #[error("no valid GUID partition table: {0}")]
    NoIntactCopy(String),
    #[error("partition {number} is invalid: {why}")]
    BadEntry { number: u32, why: String },
    #[error("partition table is inconsistent: {0}")]
    Invalid(#[source] gptman::Error),
    #[error("I/O error on the partition table: {0}")]
    Io(#[from] io::Error),
    #[error("partition {0} does not exist")]
    NoSuchPartition(u32),
    #[error("partition {number} ({label}) does not fit: {why}")]
    DoesNotFit {
        number: u32,
        label: String,
        why: String,
    },
}

/// A partition as the rest of Keel sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    pub label: String,
    pub type_guid: Uuid,
    pub unique_guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attribute_bits: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
    pub fn is_usr(&self) -> bool {
        self.type_guid == layout::USR_TYPE
    }
    pub fn slot_attrs(&self) -> SlotAttrs {
        SlotAttrs::from_bits(self.attribute_bits)
    }
}

/// The GPT of one disk (or disk image).
pub struct DiskTable {
    gpt: GPT,
    health: GptHealth,
}

fn guid_to_gpt(u: Uuid) -> [u8; 16] {
    u.to_bytes_le()
}
fn guid_from_gpt(b: [u8; 16]) -> Uuid {
    Uuid::from_bytes_le(b)
}

impl DiskTable {
    /// Read the table: the primary copy, or the backup where the primary is damaged. Which
    /// copy is damaged, if any, is in [`DiskTable::health`].
    pub fn read<R: Read + Seek + ?Sized>(r: &mut R) -> Result<Self, GptError> {
        let health = gpt_health::check(r)?;
        let gpt = if health.primary_ok() {
            GPT::read_from(r, SECTOR)
        } else if health.backup_ok() {
            // gptman reads the primary first: hide it, so the copy that passed is the one read.
            GPT::read_from(&mut WithoutPrimary { inner: r, pos: 0 }, SECTOR)
        } else {
            return Err(GptError::NoIntactCopy(health.summary()));
        }
        .map_err(GptError::Read)?;
        check_entries(&gpt)?;
        Ok(DiskTable { gpt, health })
    }

    /// Which copies of the table passed their checks.
    pub fn health(&self) -> &GptHealth {
        &self.health
    }

    /// An empty table (128 entries) for a disk of `disk_bytes` bytes.
    pub fn new(disk_bytes: u64, disk_guid: Uuid) -> Result<Self, GptError> {
        let mut sizer = SizeOnly(disk_bytes);
        let mut gpt =
            GPT::new_from(&mut sizer, SECTOR, guid_to_gpt(disk_guid)).map_err(GptError::Invalid)?;
        gpt.align = layout::ALIGN / SECTOR;
        Ok(DiskTable {
            gpt,
            health: GptHealth::default(),
        })
    }

    pub fn disk_guid(&self) -> Uuid {
        guid_from_gpt(self.gpt.header.disk_guid)
    }

    /// LBA of the backup header as recorded in the primary one.
    pub fn backup_lba(&self) -> u64 {
        self.gpt.header.backup_lba.max(self.gpt.header.primary_lba)
    }

    pub fn first_usable_lba(&self) -> u64 {
        self.gpt.header.first_usable_lba
    }

    pub fn last_usable_lba(&self) -> u64 {
        self.gpt.header.last_usable_lba
    }

    pub fn partitions(&self) -> Vec<Partition> {
        self.gpt
            .iter()
            .filter(|(_, e)| e.is_used())
            .map(|(n, e)| Partition {
                number: n,
                label: e.partition_name.as_str().to_string(),
                type_guid: guid_from_gpt(e.partition_type_guid),
                unique_guid: guid_from_gpt(e.unique_partition_guid),
                first_lba: e.starting_lba,
                last_lba: e.ending_lba,
                attribute_bits: e.attribute_bits,
            })
            .collect()
    }

    pub fn partition(&self, number: u32) -> Result<Partition, GptError> {
        self.partitions()
            .into_iter()
            .find(|p| p.number == number)
            .ok_or(GptError::NoSuchPartition(number))
    }

    pub fn by_label(&self, label: &str) -> Option<Partition> {
        self.partitions().into_iter().find(|p| p.label == label)
    }

    /// The USR partitions, in table order.
    pub fn usr_slots(&self) -> Vec<Partition> {
        self.partitions()
            .into_iter()
            .filter(|p| p.is_usr())
            .collect()
    }

    /// Add partition `role` at `first_lba` with `sectors` sectors.
    pub fn add(
        &mut self,
        role: Role,
        first_lba: u64,
        sectors: u64,
        attribute_bits: u64,
    ) -> Result<(), GptError> {
        let last = first_lba + sectors - 1;
        if first_lba < self.gpt.header.first_usable_lba || last > self.gpt.header.last_usable_lba {
            return Err(GptError::DoesNotFit {
                number: role.number,
                label: role.label.into(),
                why: format!(
                    "sectors {first_lba}..={last} lie outside the usable area {}..={}",
                    self.gpt.header.first_usable_lba, self.gpt.header.last_usable_lba
                ),
            });
        }
        self.gpt[role.number] = GPTPartitionEntry {
            partition_type_guid: guid_to_gpt(role.type_guid),
            unique_partition_guid: guid_to_gpt(role.build_guid(self.disk_guid())),
            starting_lba: first_lba,
            ending_lba: last,
            attribute_bits,
            partition_name: PartitionName::from(role.label),
        };
        Ok(())
    }

    pub fn set_attribute_bits(&mut self, number: u32, bits: u64) -> Result<(), GptError> {
        let e = self.entry_mut(number)?;
        e.attribute_bits = bits;
        Ok(())
    }

    pub fn set_slot_attrs(&mut self, number: u32, attrs: SlotAttrs) -> Result<(), GptError> {
        let e = self.entry_mut(number)?;
        e.attribute_bits = attrs.apply_to(e.attribute_bits);
        Ok(())
    }

    /// Move the backup header to the end of a disk of `disk_bytes` (a larger disk than the image
    /// was built for) and extend the usable area to match.
    pub fn relocate_backup(&mut self, disk_bytes: u64) -> Result<(), GptError> {
        let mut sizer = SizeOnly(disk_bytes);
        self.gpt
            .header
            .update_from(&mut sizer, SECTOR)
            .map_err(GptError::Invalid)?;
        Ok(())
    }

    /// Grow partition `number` to the end of the usable area. Returns whether it changed.
    pub fn grow_to_end(&mut self, number: u32) -> Result<bool, GptError> {
        let last_usable = self.gpt.header.last_usable_lba;
        let align = layout::ALIGN / SECTOR;
        let start = self.entry_mut(number)?.starting_lba;
        let others_after = self
            .partitions()
            .iter()
            .any(|p| p.number != number && p.first_lba > start);
        let e = self.entry_mut(number)?;
        if others_after {
            return Ok(false);
        }
        // Keep the end aligned, as partitioning tools do.
        let new_last = ((last_usable + 1) / align) * align - 1;
        if new_last <= e.ending_lba {
            return Ok(false);
        }
        e.ending_lba = new_last;
        Ok(true)
    }

    fn entry_mut(&mut self, number: u32) -> Result<&mut GPTPartitionEntry, GptError> {
        if number == 0
            || number > self.gpt.header.number_of_partition_entries
            || self.gpt[number].is_unused()
        {
            return Err(GptError::NoSuchPartition(number));
        }
        Ok(&mut self.gpt[number])
    }

    /// Write both copies of the table: backup first, then primary, syncing after each, so that an
    /// interruption leaves one intact copy (the old primary or the new backup).
    pub fn write<W: Write + Seek + SyncAll + ?Sized>(&mut self, w: &mut W) -> Result<(), GptError> {
        let mut rec = Recorder::default();
        self.gpt.write_into(&mut rec).map_err(GptError::Invalid)?;
        let boundary = self.gpt.header.first_usable_lba * SECTOR;
        for backup_pass in [true, false] {
            for (offset, bytes) in rec.coalesced() {
                if (offset >= boundary) == backup_pass {
                    w.seek(SeekFrom::Start(offset))?;
                    w.write_all(&bytes)?;
                }
            }
            w.flush()?;
            w.sync_all()?;
        }
        Ok(())
    }

    /// Write the protective MBR that every GPT disk carries in sector 0.
    pub fn write_protective_mbr<W: Write + Seek + ?Sized>(w: &mut W) -> Result<(), GptError> {
        GPT::write_protective_mbr_into(w, SECTOR).map_err(GptError::Invalid)
    }
}

/// Every used entry lies inside the usable area and ends where it starts or later, so sizes
/// and offsets computed from it cannot overflow.
fn check_entries(gpt: &GPT) -> Result<(), GptError> {
    let (first, last) = (gpt.header.first_usable_lba, gpt.header.last_usable_lba);
    for (number, e) in gpt.iter().filter(|(_, e)| e.is_used()) {
        if e.ending_lba < e.starting_lba || e.starting_lba < first || e.ending_lba > last {
            return Err(GptError::BadEntry {
                number,
                why: format!(
                    "sectors {}..={} are not inside the usable area {first}..={last}",
                    e.starting_lba, e.ending_lba
                ),
            });
        }
    }
    Ok(())
}

/// A reader that shows zeros in place of the primary header (LBA 1).
struct WithoutPrimary<'a, R: ?Sized> {
    inner: &'a mut R,
    pos: u64,
}
impl<R: Read + ?Sized> Read for WithoutPrimary<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        let (lo, hi) = (start.max(SECTOR), end.min(2 * SECTOR));
        if lo < hi {
            buf[(lo - start) as usize..(hi - start) as usize].fill(0);
        }
        self.pos = end;
        Ok(n)
    }
}
impl<R: Seek + ?Sized> Seek for WithoutPrimary<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(pos)?;
        Ok(self.pos)
    }
}

/// Files and block devices can be synced; in-memory buffers trivially are.
pub trait SyncAll {
    fn sync_all(&mut self) -> io::Result<()>;
}
impl SyncAll for std::fs::File {
    fn sync_all(&mut self) -> io::Result<()> {
        std::fs::File::sync_all(self)
    }
}
impl<T> SyncAll for io::Cursor<T> {
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A seekable sink that only knows its length: lets gptman size a table without a device.
struct SizeOnly(u64);
impl Seek for SizeOnly {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        Ok(match pos {
            SeekFrom::End(d) => (self.0 as i64 + d) as u64,
            SeekFrom::Start(s) => s,
            SeekFrom::Current(_) => 0,
        })
    }
}
impl Read for SizeOnly {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("size-only device"))
    }
}

/// Records gptman's many small writes so they can be replayed as a few large ones, in order.
#[derive(Default)]
struct Recorder {
    pos: u64,
    writes: Vec<(u64, Vec<u8>)>,
}
impl Recorder {
    fn coalesced(&self) -> Vec<(u64, Vec<u8>)> {
        let mut sorted = self.writes.clone();
        sorted.sort_by_key(|(o, _)| *o);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (o, b) in sorted {
            if let Some((lo, lb)) = out.last_mut() {
                if *lo + lb.len() as u64 == o {
                    lb.extend_from_slice(&b);
                    continue;
                }
            }
            out.push((o, b));
        }
        out
    }
}
impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push((self.pos, buf.to_vec()));
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Seek for Recorder {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::Start(s) => self.pos = s,
            _ => return Err(io::Error::other("recorder seeks absolutely only")),
        }
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt_health::GptPart;
    use crate::layout::*;
    use std::io::Cursor;

    fn sample(disk: u64) -> (DiskTable, Cursor<Vec<u8>>) {
        let mut t = DiskTable::new(disk, DISK_GUID).unwrap();
        let mib = 1024 * 1024 / SECTOR;
        t.add(EFI_SYSTEM, 2 * mib, 8 * mib, 0).unwrap();
        t.add(
            USR_A,
            10 * mib,
            4 * mib,
            SlotAttrs::new(1, 0, true).apply_to(0),
        )
        .unwrap();
        t.add(USR_B, 14 * mib, 4 * mib, 0).unwrap();
        t.add(ROOT, 18 * mib, 4 * mib, 0).unwrap();
        let mut c = Cursor::new(vec![0u8; disk as usize]);
        DiskTable::write_protective_mbr(&mut c).unwrap();
        t.write(&mut c).unwrap();
        (t, c)
    }

    #[test]
    fn slots_keep_their_numbers_across_rewrites() {
        let (_, mut c) = sample(32 << 20);
        let mut t = DiskTable::read(&mut c).unwrap();
        t.set_slot_attrs(4, SlotAttrs::new(2, 1, false)).unwrap();
        t.write(&mut c).unwrap();
        let t = DiskTable::read(&mut c).unwrap();
        let nums: Vec<u32> = t.partitions().iter().map(|p| p.number).collect();
        assert_eq!(nums, vec![1, 3, 4, 9]);
        assert_eq!(
            t.partition(4).unwrap().slot_attrs(),
            SlotAttrs::new(2, 1, false)
        );
        assert_eq!(t.partition(3).unwrap().unique_guid, USR_A_GUID);
        assert_eq!(t.partition(9).unwrap().label, "ROOT");
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let (_, mut c) = sample(32 << 20);
        c.get_mut()[512 + 60] ^= 0xff; // the disk GUID, inside the primary header
        let t = DiskTable::read(&mut c).unwrap();
        assert_eq!(t.partition(3).unwrap().label, "USR-A");
        assert_eq!(t.health().good_copy(), Some("backup"));
    }

    fn parts_damaged(c: &mut Cursor<Vec<u8>>) -> Vec<GptPart> {
        let t = DiskTable::read(c).unwrap();
        t.health().damaged.iter().map(|d| d.part).collect()
    }

    #[test]
    fn each_damaged_copy_is_named_and_a_rewrite_repairs_it() {
        let disk = 32u64 << 20;
        let last = (disk / SECTOR - 1) as usize * SECTOR as usize;
        let cases: [(usize, GptPart); 4] = [
            (512 + 16, GptPart::PrimaryHeader), // the header's CRC field
            (1024 + 200, GptPart::PrimaryEntries),
            (last + 16, GptPart::BackupHeader),
            (last - 16384 + 200, GptPart::BackupEntries),
        ];
        for (offset, part) in cases {
            let (_, mut c) = sample(disk);
            assert!(DiskTable::read(&mut c).unwrap().health().is_clean());
            c.get_mut()[offset] ^= 0x5a;
            assert_eq!(parts_damaged(&mut c), vec![part], "flipped byte {offset}");
            let mut t = DiskTable::read(&mut c).unwrap();
            assert!(t.health().repairable());
            assert_eq!(t.partition(4).unwrap().label, "USR-B");
            t.write(&mut c).unwrap();
            assert_eq!(parts_damaged(&mut c), vec![], "after the rewrite ({part})");
        }
    }

    #[test]
    fn both_copies_damaged_is_an_error_naming_both() {
        let disk = 32u64 << 20;
        let (_, mut c) = sample(disk);
        c.get_mut()[512 + 16] ^= 1;
        c.get_mut()[(disk - SECTOR) as usize + 16] ^= 1;
        let e = DiskTable::read(&mut c).err().unwrap().to_string();
        assert!(
            e.contains("primary GPT header") && e.contains("backup GPT header"),
            "{e}"
        );
    }

    /// Set the u64 at `field` of the header at byte `at`, and its CRC.
    fn set_header_u64(c: &mut Cursor<Vec<u8>>, at: usize, field: usize, v: u64) {
        let b = c.get_mut();
        b[at + field..at + field + 8].copy_from_slice(&v.to_le_bytes());
        b[at + 16..at + 20].fill(0);
        let crc = crc32fast::hash(&b[at..at + 92]);
        b[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
    }

    /// Found by the `gpt` fuzz target: a backup header (valid CRC) whose alternate LBA was not
    /// 1 was trusted, and the repair wrote the "primary" copy there, into the partitions.
    #[test]
    fn a_backup_pointing_elsewhere_for_the_primary_is_damaged() {
        let disk = 32u64 << 20;
        let (_, mut c) = sample(disk);
        let backup = (disk - SECTOR) as usize;
        set_header_u64(&mut c, backup, 32, 65281);
        c.get_mut()[512 + 16] ^= 1;
        let e = DiskTable::read(&mut c).err().unwrap().to_string();
        assert!(
            e.contains("backup GPT header is damaged: points to LBA 65281 for the primary"),
            "{e}"
        );
    }

    #[test]
    fn a_primary_pointing_into_the_partitions_for_the_backup_is_damaged() {
        let (_, mut c) = sample(32 << 20);
        set_header_u64(&mut c, 512, 32, 4096);
        let t = DiskTable::read(&mut c).unwrap();
        assert_eq!(t.health().good_copy(), Some("backup"));
        assert!(t.health().summary().contains("lies inside the usable area"));
    }

    /// Found by the `gpt` fuzz target: an entry starting at LBA 0 (both copies, valid CRCs)
    /// made gptman's alignment guess unwrap `None`, a panic in keel-init.
    #[test]
    fn an_entry_ending_before_it_starts_is_refused() {
        let (_, mut c) = sample(32 << 20);
        // gptman refuses to write such a table, so put it down by hand with valid CRCs.
        let e = &mut c.get_mut()[1024 + 8 * 128..1024 + 9 * 128];
        e[40..48].copy_from_slice(&0u64.to_le_bytes());
        let crc = crc32fast::hash(&c.get_ref()[1024..1024 + 16384]);
        c.get_mut()[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        c.get_mut()[512 + 16..512 + 20].fill(0);
        let hcrc = crc32fast::hash(&c.get_ref()[512..512 + 92]);
        c.get_mut()[512 + 16..512 + 20].copy_from_slice(&hcrc.to_le_bytes());
        let t = DiskTable::read(&mut c).unwrap();
        assert_eq!(t.health().good_copy(), Some("backup"));
        let why = t.health().summary();
        assert!(
            why.starts_with("primary GPT entry array is damaged: entry 9 covers sectors"),
            "{why}"
        );
    }

    #[test]
    fn relocate_and_grow_on_a_larger_disk() {
        let (_, c) = sample(32 << 20);
        let mut bytes = c.into_inner();
        bytes.resize(64 << 20, 0);
        let mut c = Cursor::new(bytes);
        let mut t = DiskTable::read(&mut c).unwrap();
        t.relocate_backup(64 << 20).unwrap();
        assert!(t.grow_to_end(9).unwrap());
        t.write(&mut c).unwrap();
        let t = DiskTable::read(&mut c).unwrap();
        assert_eq!(t.backup_lba(), (64 << 20) / SECTOR - 1);
        assert!(t.partition(9).unwrap().last_lba > (60 << 20) / SECTOR);
    }
}
