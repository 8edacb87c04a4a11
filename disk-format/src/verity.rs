//! The dm-verity hash tree, format 1 (the one `veritysetup format` writes by default): SHA-256,
//! 4 KiB data and hash blocks, salt prepended to every hashed block, a 512-byte superblock in
//! the first hash block, and the tree stored top level first.
//!
//! [`build`] produces the hash area byte for byte as `veritysetup format` would; tests compare
//! the two. [`verify`] recomputes it and names the first block that does not match.

use std::io::{self, Read, Seek, SeekFrom};

use ring::digest::{Context, SHA256};
use uuid::Uuid;

pub const BLOCK: usize = 4096;
const DIGEST: usize = 32;
const HASHES_PER_BLOCK: u64 = (BLOCK / DIGEST) as u64;
/// How much data is read and hashed per step.
const CHUNK: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("I/O error while hashing: {0}")]
    Io(#[from] io::Error),
    #[error("data size {0} must be a multiple of 4096 and at least two blocks")]
    DataSize(u64),
    #[error("data block {block} (byte offset {offset}) does not match the hash tree")]
    DataBlock { block: u64, offset: u64 },
    #[error("hash area block {block} (byte offset {offset} of the partition) is corrupt")]
    HashBlock { block: u64, offset: u64 },
    #[error(
        "data bytes {at}..{} are not whole 4096-byte blocks inside the {data_size}-byte data area",
        at + len
    )]
    DataRange { at: u64, len: u64, data_size: u64 },
    #[error("only {hashed} of the data area's {data_size} bytes were hashed")]
    Unfinished { hashed: u64, data_size: u64 },
    #[error("verity parameters are malformed: {0}")]
    Params(String),
    #[error("the verity superblock does not match the signed parameters")]
    Superblock,
    #[error("root hash {actual} does not match the signed root hash {expected}")]
    RootHash { expected: String, actual: String },
}

/// The result of hashing a data area.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The whole hash area: superblock block followed by the levels, top first.
    pub hash_area: Vec<u8>,
    pub root_hash: [u8; 32],
}

/// Number of hash blocks per level, level 0 (hashes of data blocks) first.
pub fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = data_blocks;
    loop {
        let b = n.div_ceil(HASHES_PER_BLOCK);
        levels.push(b);
        if b <= 1 {
            break;
        }
        n = b;
    }
    levels
}

/// Bytes of the hash area (superblock block included) for `data_blocks` data blocks.
pub fn hash_area_size(data_blocks: u64) -> u64 {
    (1 + level_blocks(data_blocks).iter().sum::<u64>()) * BLOCK as u64
}

fn superblock(data_blocks: u64, salt: &[u8], uuid: Uuid) -> Vec<u8> {
    let mut sb = vec![0u8; BLOCK];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal (salt first)
    sb[16..32].copy_from_slice(uuid.as_bytes());
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

fn hash_block(salt: &[u8], block: &[u8], out: &mut [u8]) {
    let mut ctx = Context::new(&SHA256);
    ctx.update(salt);
    ctx.update(block);
    out.copy_from_slice(ctx.finish().as_ref());
}

/// Hash every block of `blocks` into `out` (32 bytes per block), on all cores.
fn hash_blocks(salt: &[u8], blocks: &[u8], out: &mut [u8]) {
    let n = blocks.len() / BLOCK;
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(8);
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (data, hashes) in blocks.chunks(per * BLOCK).zip(out.chunks_mut(per * DIGEST)) {
            s.spawn(move || {
                for (b, h) in data.chunks(BLOCK).zip(hashes.chunks_mut(DIGEST)) {
                    hash_block(salt, b, h);
                }
            });
        }
    });
}

/// Level 0 of a tree (the hashes of the data blocks), fed with the data in order, a whole number
/// of blocks at a time: from a reader by [`build`], or from chunks as they arrive.
#[derive(Clone, Debug)]
pub struct DataHashes {
    salt: Vec<u8>,
    data_size: u64,
    hashed: u64,
    level0: Vec<u8>,
}

impl DataHashes {
    pub fn new(data_size: u64, salt: &[u8]) -> Result<DataHashes, VerityError> {
        if !data_size.is_multiple_of(BLOCK as u64) || data_size < 2 * BLOCK as u64 {
            return Err(VerityError::DataSize(data_size));
        }
        let blocks = level_blocks(data_size / BLOCK as u64)[0];
        Ok(DataHashes {
            salt: salt.to_vec(),
            data_size,
            hashed: 0,
            // Padded with zeros to whole hash blocks.
            level0: vec![0u8; blocks as usize * BLOCK],
        })
    }

    /// Data bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// The data area's size.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Hash the next `data.len()` bytes of the data area (whole blocks, not past its end).
    pub fn push(&mut self, data: &[u8]) -> Result<(), VerityError> {
        let len = data.len() as u64;
        if !len.is_multiple_of(BLOCK as u64) || self.hashed + len > self.data_size {
            return Err(VerityError::DataRange {
                at: self.hashed,
                len,
                data_size: self.data_size,
            });
        }
        let first = (self.hashed / BLOCK as u64) as usize;
        let blocks = data.len() / BLOCK;
        hash_blocks(
            &self.salt,
            data,
            &mut self.level0[first * DIGEST..(first + blocks) * DIGEST],
        );
        self.hashed += len;
        Ok(())
    }

    /// The whole hash area and root hash, once every data block has been hashed.
    pub fn finish(self, uuid: Uuid) -> Result<Tree, VerityError> {
        if self.hashed != self.data_size {
            return Err(VerityError::Unfinished {
                hashed: self.hashed,
                data_size: self.data_size,
            });
        }
        let data_blocks = self.data_size / BLOCK as u64;
        let levels = level_blocks(data_blocks);
        let salt = &self.salt[..];
        let mut stored: Vec<Vec<u8>> = vec![self.level0];
        for &count in &levels[1..] {
            let below = stored.last().expect("level 0 exists");
            let mut level = vec![0u8; count as usize * BLOCK];
            let n = below.len() / BLOCK;
            hash_blocks(salt, below, &mut level[..n * DIGEST]);
            stored.push(level);
        }
        let mut root_hash = [0u8; 32];
        hash_block(salt, stored.last().expect("top level"), &mut root_hash);

        let mut hash_area = superblock(data_blocks, salt, uuid);
        for level in stored.iter().rev() {
            hash_area.extend_from_slice(level);
        }
        debug_assert_eq!(hash_area.len() as u64, hash_area_size(data_blocks));
        Ok(Tree {
            hash_area,
            root_hash,
        })
    }
}

/// Hash the first `data_size` bytes of `data` and build the hash area. `progress` is called
/// with the number of data bytes hashed so far.
pub fn build<R: Read + ?Sized>(
    data: &mut R,
    data_size: u64,
    salt: &[u8],
    uuid: Uuid,
    mut progress: impl FnMut(u64),
) -> Result<Tree, VerityError> {
    let mut hashes = DataHashes::new(data_size, salt)?;
    let mut buf = vec![0u8; CHUNK];
    while hashes.hashed() < data_size {
        let want = CHUNK.min((data_size - hashes.hashed()) as usize);
        data.read_exact(&mut buf[..want])?;
        hashes.push(&buf[..want])?;
        progress(hashes.hashed());
    }
    hashes.finish(uuid)
}

/// The signed verity parameters of a slot, decoded: what [`verify`] checks against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub data_size: u64,
    pub hash_offset: u64,
    pub salt: Vec<u8>,
    pub uuid: Uuid,
    pub root_hash: [u8; 32],
}

impl Params {
    pub fn from_info(v: &crate::metadata::VerityInfo) -> Result<Params, VerityError> {
        let bad = |what: &str| VerityError::Params(what.to_string());
        Ok(Params {
            data_size: v.data_size,
            hash_offset: v.hash_offset,
            salt: hex::decode(&v.salt)
                .ok()
                .filter(|s| s.len() <= 256)
                .ok_or_else(|| bad("salt is not hex of at most 256 bytes"))?,
            uuid: Uuid::parse_str(&v.uuid).map_err(|_| bad("uuid is not a UUID"))?,
            root_hash: hex::decode(&v.root_hash)
                .ok()
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| bad("root hash is not 32 bytes of hex"))?,
        })
    }
}

/// Recompute the tree over the data area of `dev` (a partition, or a payload body read at
/// `base`) and compare it with the stored hash area and the expected root hash.
pub fn verify<R: Read + Seek + ?Sized>(
    dev: &mut R,
    base: u64,
    p: &Params,
    progress: impl FnMut(u64),
) -> Result<(), VerityError> {
    dev.seek(SeekFrom::Start(base))?;
    let tree = build(&mut ReadLimit(dev), p.data_size, &p.salt, p.uuid, progress)?;
    check_stored_tree(dev, base, p, &tree)
}

/// Compare `tree`, built from the data area as it was read, with the hash area stored in `dev`
/// and with the expected root hash, naming the first block that differs.
pub fn check_stored_tree<R: Read + Seek + ?Sized>(
    dev: &mut R,
    base: u64,
    p: &Params,
    tree: &Tree,
) -> Result<(), VerityError> {
    let (data_size, hash_offset, salt, root_hash) =
        (p.data_size, p.hash_offset, &p.salt[..], &p.root_hash);
    dev.seek(SeekFrom::Start(base + hash_offset))?;
    let mut stored = vec![0u8; tree.hash_area.len()];
    dev.read_exact(&mut stored)?;

    if stored[..BLOCK] != tree.hash_area[..BLOCK] {
        return Err(VerityError::Superblock);
    }
    let data_blocks = data_size / BLOCK as u64;
    let total = stored.len() / BLOCK;
    let level0_start = total - level_blocks(data_blocks)[0] as usize;
    let differs =
        |i: usize| stored[i * BLOCK..(i + 1) * BLOCK] != tree.hash_area[i * BLOCK..(i + 1) * BLOCK];
    // Level 0 first: a changed data block shows up there, and its parents differ only because of it.
    if let Some(i) = (level0_start..total).find(|&i| differs(i)) {
        if stored_parent_matches(&stored, i, salt) {
            let a = &stored[i * BLOCK..(i + 1) * BLOCK];
            let b = &tree.hash_area[i * BLOCK..(i + 1) * BLOCK];
            let j = (0..BLOCK / DIGEST)
                .find(|&j| a[j * DIGEST..(j + 1) * DIGEST] != b[j * DIGEST..(j + 1) * DIGEST])
                .unwrap_or(0);
            let block = ((i - level0_start) * (BLOCK / DIGEST) + j) as u64;
            return Err(VerityError::DataBlock {
                block,
                offset: block * BLOCK as u64,
            });
        }
        return Err(VerityError::HashBlock {
            block: i as u64,
            offset: hash_offset + (i * BLOCK) as u64,
        });
    }
    if let Some(i) = (1..level0_start).find(|&i| differs(i)) {
        return Err(VerityError::HashBlock {
            block: i as u64,
            offset: hash_offset + (i * BLOCK) as u64,
        });
    }
    if &tree.root_hash != root_hash {
        return Err(VerityError::RootHash {
            expected: hex::encode(root_hash),
            actual: hex::encode(tree.root_hash),
        });
    }
    Ok(())
}

/// Does some block of the level above contain the hash of stored block `i`?
fn stored_parent_matches(stored: &[u8], i: usize, salt: &[u8]) -> bool {
    let mut h = [0u8; 32];
    hash_block(salt, &stored[i * BLOCK..(i + 1) * BLOCK], &mut h);
    stored[BLOCK..i * BLOCK].chunks(DIGEST).any(|c| c == h)
}

/// The dm-verity table line for a slot whose data and hash area share `dev`.
pub fn kernel_table(
    dev: &str,
    data_size: u64,
    hash_offset: u64,
    root_hash: &str,
    salt: &str,
    extra: &[&str],
) -> String {
    let data_blocks = data_size / BLOCK as u64;
    let hash_start = hash_offset / BLOCK as u64 + 1; // skip the superblock block
    let mut t = format!(
        "0 {} verity 1 {dev} {dev} {BLOCK} {BLOCK} {data_blocks} {hash_start} sha256 {root_hash} {salt}",
        data_size / 512
    );
    if !extra.is_empty() {
        t.push_str(&format!(" {} {}", extra.len(), extra.join(" ")));
    }
    t
}

struct ReadLimit<'a, R: ?Sized>(&'a mut R);
impl<R: Read + ?Sized> Read for ReadLimit<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn level_geometry() {
        assert_eq!(level_blocks(2), vec![1]);
        assert_eq!(level_blocks(128), vec![1]);
        assert_eq!(level_blocks(129), vec![2, 1]);
        assert_eq!(level_blocks(128 * 128 + 1), vec![129, 2, 1]);
        assert_eq!(hash_area_size(129), 4 * 4096);
    }

    #[test]
    fn data_hashes_fed_in_pieces_build_the_same_tree() {
        let salt = [9u8; 32];
        let d = data(300);
        let whole = build(
            &mut Cursor::new(&d),
            d.len() as u64,
            &salt,
            Uuid::nil(),
            |_| {},
        )
        .unwrap();
        let mut hashes = DataHashes::new(d.len() as u64, &salt).unwrap();
        for piece in [1usize, 7, 128, 100, 63] {
            let at = hashes.hashed() as usize;
            hashes.push(&d[at..at + piece * BLOCK]).unwrap();
        }
        assert!(matches!(
            hashes.clone().finish(Uuid::nil()),
            Err(VerityError::Unfinished { .. })
        ));
        assert!(matches!(
            hashes.push(&d[..BLOCK + 1]),
            Err(VerityError::DataRange { .. })
        ));
        assert!(matches!(
            hashes.push(&d[..2 * BLOCK]),
            Err(VerityError::DataRange { .. })
        ));
        hashes.push(&d[299 * BLOCK..]).unwrap();
        let pieces = hashes.finish(Uuid::nil()).unwrap();
        assert_eq!(pieces.hash_area, whole.hash_area);
        assert_eq!(pieces.root_hash, whole.root_hash);
    }

    #[test]
    fn verify_catches_data_and_hash_tampering() {
        let salt = [5u8; 32];
        let uuid = Uuid::nil();
        let d = data(300);
        let tree = build(&mut Cursor::new(&d), d.len() as u64, &salt, uuid, |_| {}).unwrap();
        let mut dev = d.clone();
        dev.extend_from_slice(&tree.hash_area);
        let hash_offset = d.len() as u64;
        let params = |root_hash| Params {
            data_size: d.len() as u64,
            hash_offset,
            salt: salt.to_vec(),
            uuid,
            root_hash,
        };
        let check =
            |dev: &Vec<u8>| verify(&mut Cursor::new(dev), 0, &params(tree.root_hash), |_| {});
        check(&dev).unwrap();

        let mut t = dev.clone();
        t[200 * BLOCK + 17] ^= 1;
        assert!(
            matches!(check(&t), Err(VerityError::DataBlock { block: 200, .. })),
            "{:?}",
            check(&t)
        );

        let mut t = dev.clone();
        t[d.len() + BLOCK + 3] ^= 1; // top level of the tree
        assert!(matches!(check(&t), Err(VerityError::HashBlock { .. })));

        let mut t = dev.clone();
        let last = t.len() - 1;
        t[last - 100] ^= 1; // inside level 0's stored hashes
        assert!(
            matches!(check(&t), Err(VerityError::HashBlock { .. })),
            "{:?}",
            check(&t)
        );

        let other_root = [0u8; 32];
        assert!(matches!(
            verify(&mut Cursor::new(&dev), 0, &params(other_root), |_| {}),
            Err(VerityError::RootHash { .. })
        ));
    }
}

/// The independent check: `veritysetup` (cryptsetup) must produce the same hash area and accept
/// ours.
#[cfg(test)]
mod veritysetup_tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn identical_to_veritysetup_format_and_accepted_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let data_path = dir.path().join("data");
        let blocks = 40_000usize; // three levels
        let data: Vec<u8> = (0..blocks * BLOCK)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        std::fs::write(&data_path, &data).unwrap();
        let salt = [0xabu8; 32];
        let uuid = Uuid::parse_str("12345678-1234-5678-9abc-def012345678").unwrap();
        let tree = build(&mut &data[..], data.len() as u64, &salt, uuid, |_| {}).unwrap();

        let theirs = dir.path().join("hash.vs");
        let out = Command::new("veritysetup")
            .args([
                "format",
                "--hash=sha256",
                "--data-block-size=4096",
                "--hash-block-size=4096",
            ])
            .arg(format!("--salt={}", hex::encode(salt)))
            .arg(format!("--uuid={uuid}"))
            .arg(&data_path)
            .arg(&theirs)
            .output()
            .expect("veritysetup (cryptsetup-bin) must be installed: ci/install-deps.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&hex::encode(tree.root_hash)),
            "veritysetup said:\n{stdout}"
        );
        assert_eq!(std::fs::read(&theirs).unwrap(), tree.hash_area);

        let ours = dir.path().join("hash.keel");
        std::fs::write(&ours, &tree.hash_area).unwrap();
        let st = Command::new("veritysetup")
            .arg("verify")
            .arg(&data_path)
            .arg(&ours)
            .arg(hex::encode(tree.root_hash))
            .status()
            .unwrap();
        assert!(st.success());
    }
}
