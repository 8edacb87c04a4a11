//! Sealing a USR filesystem into a slot: the dm-verity hash area appended after the filesystem,
//! and the signed 4 KiB metadata block that describes both.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo};
use keel_format::verity;
use keel_signing::Key;

use crate::digest;
use crate::error::{io_at, Error, Result};
use keel_cli_support::progress::Reporter;

const BLOCK: u64 = verity::BLOCK as u64;

pub struct Describe {
    pub version: String,
    pub channel: String,
    pub arch: String,
    pub board: String,
    pub build_time: u64,
    pub kernel: KernelInfo,
}

pub struct Slot {
    /// The body: filesystem then verity area (what goes at the start of the partition).
    pub body: PathBuf,
    pub metadata: SlotMetadata,
    /// The signed block.
    pub block: Vec<u8>,
}

/// Turn the filesystem image at `body` into a slot body in place (pad, append the hash area)
/// and sign its description with `key`.
pub fn seal(body: &Path, d: Describe, key: &Key, reporter: &Reporter) -> Result<Slot> {
    let fs_len = std::fs::metadata(body).map_err(io_at(body))?.len();
    let data_size = fs_len.div_ceil(BLOCK).max(2) * BLOCK;
    {
        let f = OpenOptions::new()
            .write(true)
            .open(body)
            .map_err(io_at(body))?;
        f.set_len(data_size).map_err(io_at(body))?;
    }
    // Two passes over the filesystem: its SHA-256 (which the salt and UUID derive from, and
    // which, continued over the hash area, is the body's), then the hash tree.
    let bar = reporter.bytes("sha256 and dm-verity hash tree", 2 * data_size);
    let fs_state = digest::file_sha256_state(body, |n| bar.set(n))?;
    let fs_sha = hex::encode(fs_state.clone().finish().as_ref());
    let salt = digest::sha256(format!("keel-verity-salt:{fs_sha}").as_bytes());
    let uuid = crate::mkfs::derived_uuid("verity-uuid", &fs_sha);

    let mut reader = BufReader::new(File::open(body).map_err(io_at(body))?);
    let tree = verity::build(&mut reader, data_size, &salt, uuid, |n| {
        bar.set(data_size + n)
    })
    .map_err(|e| Error::Format(format!("{}: {e}", body.display())))?;
    let mut f = OpenOptions::new()
        .append(true)
        .open(body)
        .map_err(io_at(body))?;
    f.write_all(&tree.hash_area).map_err(io_at(body))?;
    f.sync_all().map_err(io_at(body))?;
    drop(f);
    let mut body_state = fs_state;
    body_state.update(&tree.hash_area);
    let body_sha256 = hex::encode(body_state.finish().as_ref());
    bar.done(&format!("root {}", hex::encode(tree.root_hash)));
    let meta = SlotMetadata {
        version: d.version,
        channel: d.channel,
        arch: d.arch,
        board: d.board,
        build_time: d.build_time,
        filesystem: "erofs".into(),
        kernel: d.kernel,
        verity: VerityInfo {
            data_size,
            hash_offset: data_size,
            hash_size: tree.hash_area.len() as u64,
            data_block_size: BLOCK as u32,
            hash_block_size: BLOCK as u32,
            algorithm: "sha256".into(),
            salt: hex::encode(salt),
            root_hash: hex::encode(tree.root_hash),
            uuid: uuid.to_string(),
        },
        body_sha256,
        key_id: key.key_id(),
    };
    let block = metadata::encode(&meta, |m| key.sign(m))
        .map_err(|e| Error::Format(format!("slot metadata: {e}")))?;
    Ok(Slot {
        body: body.to_path_buf(),
        metadata: meta,
        block,
    })
}

/// Write the payload file: the metadata block, then the body.
pub fn write_payload(slot: &Slot, out: &Path) -> Result<()> {
    let mut o = File::create(out).map_err(io_at(out))?;
    o.write_all(&slot.block).map_err(io_at(out))?;
    let mut b = File::open(&slot.body).map_err(io_at(&slot.body))?;
    std::io::copy(&mut b, &mut o).map_err(io_at(out))?;
    o.sync_all().map_err(io_at(out))?;
    Ok(())
}
