//! `keel inspect`: what a disk image or a payload holds: partitions with their slot attributes,
//! and per USR slot the signed metadata, the verity parameters and whether the signature holds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_format::gpt::DiskTable;
use keel_format::gpt_health::GptHealth;
use keel_format::metadata::{self, SlotMetadata, METADATA_SIZE};
use serde::Serialize;

use crate::error::{io_at, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Disk,
    Payload,
}

/// Where a slot sits in the file.
#[derive(Clone, Debug, Serialize)]
pub struct SlotPlace {
    pub name: String,
    pub partition: Option<u32>,
    /// Byte offset of the slot body (the filesystem) in the file.
    pub body_offset: u64,
    /// Bytes of the partition; `None` for a payload.
    pub partition_size: Option<u64>,
    pub metadata_offset: u64,
}

pub struct Opened {
    pub path: PathBuf,
    pub kind: Kind,
    pub file: File,
    pub len: u64,
    pub table: Option<DiskTable>,
    pub slots: Vec<SlotPlace>,
}

/// Open a disk image (GPT) or a payload (KEELMETA first), telling them apart by magic.
pub fn open(path: &Path) -> Result<Opened> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(format!("{}: no such file", path.display())),
        _ => io_at(path)(e),
    })?;
    let len = file.metadata().map_err(io_at(path))?.len();
    let mut head = vec![0u8; 1024];
    let n = file.read(&mut head).map_err(io_at(path))?;
    head.truncate(n);
    if head.starts_with(metadata::MAGIC) {
        return Ok(Opened {
            path: path.to_path_buf(),
            kind: Kind::Payload,
            file,
            len,
            table: None,
            slots: vec![SlotPlace {
                name: "payload".into(),
                partition: None,
                body_offset: METADATA_SIZE as u64,
                partition_size: None,
                metadata_offset: 0,
            }],
        });
    }
    if head.len() >= 520 && &head[512..520] == b"EFI PART" {
        let table = DiskTable::read(&mut file)
            .map_err(|e| Error::Verification(format!("{}: {e}", path.display())))?;
        let slots = table
            .usr_slots()
            .iter()
            .map(|p| SlotPlace {
                name: p.label.clone(),
                partition: Some(p.number),
                body_offset: p.offset(),
                partition_size: Some(p.size()),
                metadata_offset: p.offset() + keel_format::slot::metadata_offset(p.size()),
            })
            .collect();
        return Ok(Opened {
            path: path.to_path_buf(),
            kind: Kind::Disk,
            file,
            len,
            table: Some(table),
            slots,
        });
    }
    Err(Error::input(format!(
        "{}: neither a Keel disk image (no GPT) nor a payload (no KEELMETA block)",
        path.display()
    )))
}

impl Opened {
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_at(&self.path))?;
        self.file.read_exact(&mut buf).map_err(io_at(&self.path))?;
        Ok(buf)
    }
}

#[derive(Debug, Serialize)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub start: u64,
    pub size: u64,
    pub attribute_bits: String,
    /// Decoded for USR partitions.
    pub priority: Option<u8>,
    pub tries: Option<u8>,
    pub successful: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    Valid,
    Invalid,
    UnknownKey,
    Unchecked,
}

#[derive(Debug, Serialize)]
pub struct SlotInfo {
    #[serde(flatten)]
    pub place: SlotPlace,
    /// `empty`, `present` or `unreadable`.
    pub state: String,
    pub error: Option<String>,
    pub signature: Option<Signature>,
    pub signature_detail: Option<String>,
    pub metadata: Option<SlotMetadata>,
    /// How to check this slot with cryptsetup's tool, the partition (or extracted body) as DEV.
    pub veritysetup: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub disk_guid: Option<String>,
    /// Both copies of the partition table: which parts, if any, failed their checks.
    pub partition_table: Option<GptHealth>,
    pub partitions: Vec<PartitionInfo>,
    pub slots: Vec<SlotInfo>,
    /// Which key signatures were checked against.
    pub checked_with: Option<String>,
}

/// The trusted keys and where they came from.
pub struct Trust {
    pub keys: Vec<VerifyingKey>,
    pub source: String,
}

pub fn inspect(path: &Path, trust: Option<&Trust>) -> Result<Inspection> {
    let mut img = open(path)?;
    let mut partitions = Vec::new();
    if let Some(t) = &img.table {
        for p in t.partitions() {
            let a = p.slot_attrs();
            let usr = p.is_usr();
            partitions.push(PartitionInfo {
                number: p.number,
                label: p.label.clone(),
                type_guid: p.type_guid.to_string(),
                unique_guid: p.unique_guid.to_string(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                start: p.offset(),
                size: p.size(),
                attribute_bits: format!("{:#018x}", p.attribute_bits),
                priority: usr.then_some(a.priority),
                tries: usr.then_some(a.tries),
                successful: usr.then_some(a.successful),
            });
        }
    }
    let mut slots = Vec::new();
    for place in img.slots.clone() {
        let block = img.read_at(place.metadata_offset, METADATA_SIZE)?;
        slots.push(slot_info(place, &block, trust));
    }
    Ok(Inspection {
        path: path.to_path_buf(),
        kind: img.kind,
        size: img.len,
        disk_guid: img.table.as_ref().map(|t| t.disk_guid().to_string()),
        partition_table: img.table.as_ref().map(|t| t.health().clone()),
        partitions,
        slots,
        checked_with: trust.map(|t| t.source.clone()),
    })
}

fn slot_info(place: SlotPlace, block: &[u8], trust: Option<&Trust>) -> SlotInfo {
    let mut info = SlotInfo {
        place,
        state: "empty".into(),
        error: None,
        signature: None,
        signature_detail: None,
        metadata: None,
        veritysetup: None,
    };
    if block.iter().all(|&b| b == 0) {
        return info;
    }
    let unverified = match metadata::decode(block) {
        Ok(u) => u,
        Err(metadata::MetadataError::NoMagic) => {
            info.state = "unreadable".into();
            info.error = Some("no KEELMETA block where the slot metadata belongs".into());
            return info;
        }
        Err(e) => {
            info.state = "unreadable".into();
            info.error = Some(e.to_string());
            return info;
        }
    };
    info.state = "present".into();
    let meta = unverified.claimed().clone();
    let v = &meta.verity;
    info.veritysetup = Some(format!(
        "veritysetup verify --hash-offset={} --data-blocks={} --salt={} DEV DEV {}",
        v.hash_offset,
        v.data_size / v.data_block_size as u64,
        v.salt,
        v.root_hash
    ));
    match trust {
        None => info.signature = Some(Signature::Unchecked),
        Some(t) => match unverified.verify(&t.keys) {
            Ok(_) => info.signature = Some(Signature::Valid),
            Err(e @ metadata::MetadataError::UnknownKey(_)) => {
                info.signature = Some(Signature::UnknownKey);
                info.signature_detail = Some(e.to_string());
            }
            Err(e) => {
                info.signature = Some(Signature::Invalid);
                info.signature_detail = Some(e.to_string());
            }
        },
    }
    info.metadata = Some(meta);
    info
}

/// Human-readable rendering of an inspection.
pub fn render(i: &Inspection) -> String {
    let mut s = format!("{} ({:?}, {} bytes)\n", i.path.display(), i.kind, i.size);
    if let Some(g) = &i.disk_guid {
        s.push_str(&format!("disk GUID {g}\n"));
    }
    if let Some(h) = &i.partition_table {
        if h.is_clean() {
            s.push_str("partition table: primary and backup copies intact\n");
        }
        for d in &h.damaged {
            s.push_str(&format!(
                "partition table: {d}; read from the {} copy\n",
                h.good_copy().unwrap_or("other")
            ));
        }
    }
    if !i.partitions.is_empty() {
        s.push_str(&format!(
            "\n{:>3} {:<11} {:>12} {:>10}  {:<36}  {:<36}  attrs\n",
            "#", "label", "start", "size MiB", "type", "unique GUID"
        ));
        for p in &i.partitions {
            let attrs = match (p.priority, p.tries, p.successful) {
                (Some(pr), Some(t), Some(ok)) => {
                    format!("priority={pr} tries={t} successful={}", ok as u8)
                }
                _ => p.attribute_bits.clone(),
            };
            s.push_str(&format!(
                "{:>3} {:<11} {:>12} {:>10}  {:<36}  {:<36}  {attrs}\n",
                p.number,
                p.label,
                p.start,
                p.size >> 20,
                p.type_guid,
                p.unique_guid
            ));
        }
    }
    for slot in &i.slots {
        s.push_str(&format!("\n{}: {}\n", slot.place.name, slot.state));
        if let Some(e) = &slot.error {
            s.push_str(&format!("  error: {e}\n"));
        }
        if let Some(m) = &slot.metadata {
            s.push_str(&format!("  version   {} ({})\n", m.version, m.channel));
            s.push_str(&format!("  board     {} ({})\n", m.board, m.arch));
            s.push_str(&format!(
                "  kernel    {} {}\n",
                m.kernel.release, m.kernel.build
            ));
            s.push_str(&format!(
                "  built     {} (SOURCE_DATE_EPOCH)\n",
                m.build_time
            ));
            let v = &m.verity;
            s.push_str(&format!(
                "  verity    data {} bytes, hash offset {}, hash size {}, blocks {}/{} {}\n",
                v.data_size,
                v.hash_offset,
                v.hash_size,
                v.data_block_size,
                v.hash_block_size,
                v.algorithm
            ));
            s.push_str(&format!(
                "  root hash {}\n  salt      {}\n  uuid      {}\n",
                v.root_hash, v.salt, v.uuid
            ));
            s.push_str(&format!(
                "  body sha256 {}\n  key id    {}\n",
                m.body_sha256, m.key_id
            ));
        }
        if let Some(sig) = slot.signature {
            let text = match sig {
                Signature::Valid => "valid".to_string(),
                Signature::Unchecked => {
                    "unchecked (no --pubkey and no development key)".to_string()
                }
                _ => format!(
                    "{:?}: {}",
                    sig,
                    slot.signature_detail.clone().unwrap_or_default()
                ),
            };
            s.push_str(&format!("  signature {text}\n"));
        }
        if let Some(cmd) = &slot.veritysetup {
            s.push_str(&format!("  check     {cmd}\n"));
        }
    }
    if let Some(k) = &i.checked_with {
        s.push_str(&format!("\nsignatures checked with {k}\n"));
    }
    s
}
