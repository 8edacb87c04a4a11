//! A payload and a disk image to apply it to, the way updater/tests build theirs, for the
//! benchmarks that write a slot (apply-vs-dd, agent-vs-curl).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, DISK_GUID, SECTOR};
use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo, METADATA_SIZE};
use keel_signing::Key;
use ring::digest::{Context as Sha, SHA256};

pub struct Payload {
    pub path: PathBuf,
    pub key: Key,
    /// The running slot's metadata block (version 1.0.0) that every fresh image gets.
    pub running_block: Vec<u8>,
    pub body_len: u64,
}

/// A payload the way updater/tests build theirs: pseudo-random data (incompressible, no zero
/// blocks a sparse write could skip), its verity tree, the signed metadata block in front.
pub fn make_payload(work: &Path, data_size: u64) -> Result<Payload> {
    let key = Key::from_seed([9; 32]);
    let path = work.join("payload.img");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.seek(SeekFrom::Start(METADATA_SIZE as u64))?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut chunk = vec![0u8; 4 << 20];
    let mut written = 0;
    while written < data_size {
        let n = (chunk.len() as u64).min(data_size - written) as usize;
        for w in chunk[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes()[..w.len()]);
        }
        f.write_all(&chunk[..n])?;
        written += n as u64;
    }
    let salt = [1u8; 32];
    let vuuid = keel_builder::mkfs::derived_uuid("bench-verity", "apply");
    f.seek(SeekFrom::Start(METADATA_SIZE as u64))?;
    let mut data = std::io::BufReader::with_capacity(4 << 20, (&f).take(data_size));
    let tree = keel_format::verity::build(&mut data, data_size, &salt, vuuid, |_| {})
        .map_err(|e| anyhow::anyhow!("verity tree: {e}"))?;
    drop(data);
    f.seek(SeekFrom::Start(METADATA_SIZE as u64 + data_size))?;
    f.write_all(&tree.hash_area)?;
    let body_len = data_size + tree.hash_area.len() as u64;

    let mut sha = Sha::new(&SHA256);
    f.seek(SeekFrom::Start(METADATA_SIZE as u64))?;
    let mut left = body_len;
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        f.read_exact(&mut chunk[..n])?;
        sha.update(&chunk[..n]);
        left -= n as u64;
    }
    let meta = |version: &str| SlotMetadata {
        version: version.into(),
        channel: "stable".into(),
        arch: "x86_64".into(),
        board: "bench".into(),
        build_time: 0,
        filesystem: "erofs".into(),
        kernel: KernelInfo {
            release: "x".into(),
            build: "x".into(),
            image: "x".into(),
            initramfs: "x".into(),
        },
        verity: VerityInfo {
            data_size,
            hash_offset: data_size,
            hash_size: tree.hash_area.len() as u64,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
            salt: hex::encode(salt),
            root_hash: hex::encode(tree.root_hash),
            uuid: vuuid.to_string(),
        },
        body_sha256: hex::encode(sha.clone().finish().as_ref()),
        key_id: key.key_id(),
    };
    let sign = |v: &str| {
        metadata::encode(&meta(v), |m| key.sign(m))
            .map_err(|e| anyhow::anyhow!("metadata {v}: {e}"))
    };
    f.write_all_at(&sign("2.0.0")?, 0)?;
    f.sync_all()?;
    Ok(Payload {
        path,
        running_block: sign("1.0.0")?,
        key,
        body_len,
    })
}

/// A new sparse image: GPT with USR-A (running, good, metadata 1.0.0) and an empty USR-B, each
/// just big enough for the body and its metadata block. Returns USR-B's byte offset.
pub fn fresh_disk(path: &Path, p: &Payload) -> Result<u64> {
    let _ = std::fs::remove_file(path);
    let align = layout::ALIGN;
    let usr = (p.body_len + METADATA_SIZE as u64).div_ceil(align) * align;
    let size = align + 2 * usr + align;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    let mut t = DiskTable::new(size, DISK_GUID).map_err(|e| anyhow::anyhow!("GPT: {e}"))?;
    t.add(
        layout::USR_A,
        align / SECTOR,
        usr / SECTOR,
        SlotAttrs::new(1, 0, true).apply_to(0),
    )
    .map_err(|e| anyhow::anyhow!("GPT: {e}"))?;
    t.add(layout::USR_B, (align + usr) / SECTOR, usr / SECTOR, 0)
        .map_err(|e| anyhow::anyhow!("GPT: {e}"))?;
    DiskTable::write_protective_mbr(&mut f).map_err(|e| anyhow::anyhow!("MBR: {e}"))?;
    t.write(&mut f).map_err(|e| anyhow::anyhow!("GPT: {e}"))?;
    f.write_all_at(&p.running_block, align + usr - METADATA_SIZE as u64)?;
    f.sync_all()?;
    Ok(align + usr)
}

/// The passive slot of the image holds the body: both variants really wrote what they claim.
pub fn check_slot(disk: &Path, p: &Payload, usr_b: u64) -> Result<()> {
    let mut a = File::open(disk)?;
    let mut b = File::open(&p.path)?;
    a.seek(SeekFrom::Start(usr_b))?;
    b.seek(SeekFrom::Start(METADATA_SIZE as u64))?;
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut left = p.body_len;
    while left > 0 {
        let n = (x.len() as u64).min(left) as usize;
        a.read_exact(&mut x[..n])?;
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            bail!(
                "{}: USR-B differs from the payload body at {}",
                disk.display(),
                p.body_len - left
            );
        }
        left -= n as u64;
    }
    Ok(())
}
