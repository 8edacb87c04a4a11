//! Checking each copy of the partition table on its own (primary header and entry array at the
//! start of the disk, backup header and entry array at its end), so a damaged copy is reported,
//! and can be rewritten from the good one, instead of being silently read past. The checks also
//! bound every number a header carries before anything is allocated or seeked from it.

use std::io::{self, Read, Seek, SeekFrom};

use serde::Serialize;

use crate::layout::SECTOR;

/// UEFI reserves at least 16 KiB for the entry array; more than 1 MiB is not a real table.
const MIN_ENTRY_ARRAY: u64 = 16 * 1024;
const MAX_ENTRY_ARRAY: u64 = 1024 * 1024;
const HEADER_SIZE: u32 = 92;

/// One of the four parts of a GPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GptPart {
    PrimaryHeader,
    PrimaryEntries,
    BackupHeader,
    BackupEntries,
}

impl std::fmt::Display for GptPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GptPart::PrimaryHeader => "primary GPT header",
            GptPart::PrimaryEntries => "primary GPT entry array",
            GptPart::BackupHeader => "backup GPT header",
            GptPart::BackupEntries => "backup GPT entry array",
        })
    }
}

impl GptPart {
    pub fn is_primary(self) -> bool {
        matches!(self, GptPart::PrimaryHeader | GptPart::PrimaryEntries)
    }
}

/// A part of the table that failed its checks, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub part: GptPart,
    pub why: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is damaged: {}", self.part, self.why)
    }
}

/// The state of both copies. Empty `damaged`: both intact and in agreement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GptHealth {
    pub damaged: Vec<Damage>,
}

impl GptHealth {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
    pub fn primary_ok(&self) -> bool {
        !self.damaged.iter().any(|d| d.part.is_primary())
    }
    pub fn backup_ok(&self) -> bool {
        self.damaged.iter().all(|d| d.part.is_primary())
    }
    /// Damaged, but one copy is intact and can be rewritten from it.
    pub fn repairable(&self) -> bool {
        !self.is_clean() && (self.primary_ok() || self.backup_ok())
    }
    /// Which copy is good, as words for a message: `backup` or `primary`.
    pub fn good_copy(&self) -> Option<&'static str> {
        if self.primary_ok() {
            Some("primary")
        } else if self.backup_ok() {
            Some("backup")
        } else {
            None
        }
    }
    pub fn summary(&self) -> String {
        self.damaged
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The fields of a header that passed its own checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: [u8; 16],
    pub entry_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    pub fn entry_array_bytes(&self) -> u64 {
        u64::from(self.entries) * u64::from(self.entry_size)
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Check the header in `sector` (read from LBA `at_lba` of a disk of `disk_sectors` sectors).
pub fn parse_header(sector: &[u8], at_lba: u64, disk_sectors: u64) -> Result<Header, String> {
    if sector.len() < SECTOR as usize {
        return Err(format!("only {} bytes could be read", sector.len()));
    }
    if &sector[0..8] != b"EFI PART" {
        return Err("no \"EFI PART\" signature".into());
    }
    if sector[8..12] != [0, 0, 1, 0] {
        return Err(format!("revision {:02x?} is not 1.0", &sector[8..12]));
    }
    let header_size = u32_at(sector, 12);
    if header_size != HEADER_SIZE {
        return Err(format!("header size {header_size}, not {HEADER_SIZE}"));
    }
    let stored = u32_at(sector, 16);
    let mut copy = sector[..HEADER_SIZE as usize].to_vec();
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy);
    if stored != computed {
        return Err(format!(
            "header CRC32 is {stored:#010x}, the header hashes to {computed:#010x}"
        ));
    }
    let h = Header {
        my_lba: u64_at(sector, 24),
        alternate_lba: u64_at(sector, 32),
        first_usable_lba: u64_at(sector, 40),
        last_usable_lba: u64_at(sector, 48),
        disk_guid: sector[56..72].try_into().expect("16 bytes"),
        entry_lba: u64_at(sector, 72),
        entries: u32_at(sector, 80),
        entry_size: u32_at(sector, 84),
        entries_crc: u32_at(sector, 88),
    };
    if h.my_lba != at_lba {
        return Err(format!(
            "says it lies at LBA {}, read at {at_lba}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || !h.entry_size.is_power_of_two() {
        return Err(format!(
            "entry size {} is not a power of two of at least 128",
            h.entry_size
        ));
    }
    let array = h.entry_array_bytes();
    if !(MIN_ENTRY_ARRAY..=MAX_ENTRY_ARRAY).contains(&array) {
        return Err(format!(
            "entry array of {} entries × {} bytes is outside {MIN_ENTRY_ARRAY}..={MAX_ENTRY_ARRAY} bytes",
            h.entries, h.entry_size
        ));
    }
    let array_sectors = array.div_ceil(SECTOR);
    let fits = |lba: u64, n: u64| lba.checked_add(n).is_some_and(|end| end <= disk_sectors);
    if h.entry_lba < 2 || !fits(h.entry_lba, array_sectors) {
        return Err(format!(
            "entry array at LBA {} ({array_sectors} sectors) is not on the {disk_sectors}-sector disk",
            h.entry_lba
        ));
    }
    if h.alternate_lba == 0 || h.alternate_lba >= disk_sectors || h.alternate_lba == h.my_lba {
        return Err(format!(
            "alternate header LBA {} is not elsewhere on the disk",
            h.alternate_lba
        ));
    }
    if h.first_usable_lba < 2
        || h.first_usable_lba > h.last_usable_lba.saturating_add(1)
        || h.last_usable_lba >= disk_sectors
    {
        return Err(format!(
            "usable area {}..={} does not fit the disk",
            h.first_usable_lba, h.last_usable_lba
        ));
    }
    // Where the other copy and this copy's entries lie follows from which copy this is; a
    // rewrite puts data where these fields say, so they must not point into the usable area.
    let array_end = h.entry_lba + array_sectors;
    if at_lba == 1 {
        if h.alternate_lba <= h.last_usable_lba {
            return Err(format!(
                "backup header LBA {} lies inside the usable area",
                h.alternate_lba
            ));
        }
        // A rewrite puts the backup's entries right after the usable area, before its header.
        if h.last_usable_lba + 1 + array_sectors > h.alternate_lba {
            return Err(format!(
                "no room for the backup's entry array between LBA {} and the backup header",
                h.last_usable_lba
            ));
        }
        if array_end > h.first_usable_lba {
            return Err(format!(
                "entry array at LBA {} runs into the usable area (from LBA {})",
                h.entry_lba, h.first_usable_lba
            ));
        }
    } else {
        if h.alternate_lba != 1 {
            return Err(format!(
                "points to LBA {} for the primary header, not 1",
                h.alternate_lba
            ));
        }
        // A rewrite puts the primary's entries at LBA 2, before the usable area.
        if 2 + array_sectors > h.first_usable_lba {
            return Err(format!(
                "no room for the primary's entry array before the usable area (from LBA {})",
                h.first_usable_lba
            ));
        }
        if h.entry_lba <= h.last_usable_lba || array_end > at_lba {
            return Err(format!(
                "entry array at LBA {} is not between the usable area and the header",
                h.entry_lba
            ));
        }
    }
    Ok(h)
}

/// Read a header's entry array and check its CRC32.
fn check_entries<R: Read + Seek + ?Sized>(dev: &mut R, h: &Header) -> io::Result<Option<String>> {
    dev.seek(SeekFrom::Start(h.entry_lba * SECTOR))?;
    let mut array = vec![0u8; h.entry_array_bytes() as usize];
    dev.read_exact(&mut array)?;
    let computed = crc32fast::hash(&array);
    if computed != h.entries_crc {
        return Ok(Some(format!(
            "entry array hashes to {computed:#010x}, its header says {:#010x}",
            h.entries_crc
        )));
    }
    // Every used entry inside the usable area: gptman and the sizes computed later rely on it.
    for (i, e) in array.chunks_exact(h.entry_size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        if first < h.first_usable_lba || last < first || last > h.last_usable_lba {
            return Ok(Some(format!(
                "entry {} covers sectors {first}..={last}, outside the usable area {}..={}",
                i + 1,
                h.first_usable_lba,
                h.last_usable_lba
            )));
        }
    }
    Ok(None)
}

fn read_sector<R: Read + Seek + ?Sized>(dev: &mut R, lba: u64) -> io::Result<Vec<u8>> {
    dev.seek(SeekFrom::Start(lba * SECTOR))?;
    let mut buf = vec![0u8; SECTOR as usize];
    dev.read_exact(&mut buf)?;
    Ok(buf)
}

/// One copy: its header (if it passed) and what is wrong with it.
fn check_copy<R: Read + Seek + ?Sized>(
    dev: &mut R,
    lba: u64,
    disk_sectors: u64,
    header_part: GptPart,
    entries_part: GptPart,
    damaged: &mut Vec<Damage>,
) -> io::Result<Option<Header>> {
    let sector = read_sector(dev, lba)?;
    match parse_header(&sector, lba, disk_sectors) {
        Err(why) => {
            damaged.push(Damage {
                part: header_part,
                why,
            });
            Ok(None)
        }
        Ok(h) => {
            if let Some(why) = check_entries(dev, &h)? {
                damaged.push(Damage {
                    part: entries_part,
                    why,
                });
            }
            Ok(Some(h))
        }
    }
}

/// Check both copies of the table on `dev`. The backup is looked for where the primary header
/// says it is, or in the last sector when the primary header is unusable.
pub fn check<R: Read + Seek + ?Sized>(dev: &mut R) -> io::Result<GptHealth> {
    let len = dev.seek(SeekFrom::End(0))?;
    let disk_sectors = len / SECTOR;
    let mut damaged = Vec::new();
    if disk_sectors < 3 {
        for part in [GptPart::PrimaryHeader, GptPart::BackupHeader] {
            damaged.push(Damage {
                part,
                why: format!("the disk has only {len} bytes"),
            });
        }
        return Ok(GptHealth { damaged });
    }
    let primary = check_copy(
        dev,
        1,
        disk_sectors,
        GptPart::PrimaryHeader,
        GptPart::PrimaryEntries,
        &mut damaged,
    )?;
    let backup_lba = primary
        .as_ref()
        .map_or(disk_sectors - 1, |p| p.alternate_lba);
    let backup = check_copy(
        dev,
        backup_lba,
        disk_sectors,
        GptPart::BackupHeader,
        GptPart::BackupEntries,
        &mut damaged,
    )?;
    // Two copies that each passed must also agree; a damaged one is rewritten anyway.
    if let (Some(p), Some(b), true) = (&primary, &backup, damaged.is_empty()) {
        let mut differs = Vec::new();
        if b.alternate_lba != p.my_lba {
            differs.push(format!("points to LBA {} for the primary", b.alternate_lba));
        }
        if (b.first_usable_lba, b.last_usable_lba) != (p.first_usable_lba, p.last_usable_lba) {
            differs.push("a different usable area".into());
        }
        if b.disk_guid != p.disk_guid {
            differs.push("a different disk GUID".into());
        }
        if (b.entries, b.entry_size, b.entries_crc) != (p.entries, p.entry_size, p.entries_crc) {
            differs.push("different partition entries".into());
        }
        if !differs.is_empty() {
            damaged.push(Damage {
                part: GptPart::BackupHeader,
                why: format!("disagrees with the primary: {}", differs.join(", ")),
            });
        }
    }
    Ok(GptHealth { damaged })
}
