//! Test fixtures: real disk images (GPT by keel_format, erofs by mkfs.erofs, verity by
//! keel_format::verity, metadata signed with keel_signing) in a temporary directory.
#![allow(dead_code)]

pub mod cdn;
pub mod server;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, DISK_GUID, SECTOR};
use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo, METADATA_SIZE};
use keel_format::verity;
use keel_signing::Key;
use uuid::Uuid;

pub const MIB: u64 = 1024 * 1024;
pub const USR_SIZE: u64 = 10 * MIB;

pub fn key() -> Key {
    Key::from_seed([42; 32])
}
pub fn other_key() -> Key {
    Key::from_seed([43; 32])
}

/// A slot body (erofs data area + verity area) and its signed metadata block.
pub struct Usr {
    pub body: Vec<u8>,
    pub block: Vec<u8>,
    pub metadata: SlotMetadata,
}

impl Usr {
    /// The payload file's bytes: metadata block first, then the body.
    pub fn payload(&self) -> Vec<u8> {
        let mut p = self.block.clone();
        p.extend_from_slice(&self.body);
        p
    }
}

/// Build a USR filesystem for `version` with mkfs.erofs: a release file and `filler` bytes of
/// incompressible data, so the body spans several copy chunks.
pub fn build_usr(version: &str, board: &str, signer: &Key, filler: usize) -> Usr {
    build_usr_with(version, board, signer, filler, &[])
}

/// As [`build_usr`], with `extra` files (path below /usr, contents) and the signer's public key
/// at share/keel/keys/keel.pem, where a running system's keel-update looks for it.
pub fn build_usr_with(
    version: &str,
    board: &str,
    signer: &Key,
    filler: usize,
    extra: &[(&str, &[u8])],
) -> Usr {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("usr");
    fs::create_dir_all(root.join("share/keel/keys")).unwrap();
    fs::write(root.join("share/keel/keys/keel.pem"), signer.public_pem()).unwrap();
    for (path, bytes) in extra {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    fs::write(
        root.join("share/keel/release"),
        format!(
            "KEEL_VERSION={version}\nKEEL_CHANNEL=stable\nKEEL_BOARD={board}\nKEEL_ARCH=x86_64\n"
        ),
    )
    .unwrap();
    let mut state = version
        .bytes()
        .fold(0x9e37_79b9u32, |a, b| a.rotate_left(5) ^ b as u32);
    let noise: Vec<u8> = (0..filler)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    fs::write(root.join("filler"), noise).unwrap();
    let img = dir.path().join("usr.erofs");
    let out = Command::new("mkfs.erofs")
        .args([
            "--quiet",
            "-T0",
            "-U",
            "00000000-0000-0000-0000-00000000abcd",
        ])
        .arg(&img)
        .arg(&root)
        .output()
        .expect("mkfs.erofs (erofs-utils) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut data = fs::read(&img).unwrap();
    data.resize(data.len().div_ceil(4096) * 4096, 0);

    let salt = [7u8; 32];
    let vuuid = Uuid::from_u128(0x1234);
    let tree = verity::build(&mut &data[..], data.len() as u64, &salt, vuuid, |_| {}).unwrap();
    let mut body = data.clone();
    body.extend_from_slice(&tree.hash_area);
    let metadata = SlotMetadata {
        version: version.into(),
        channel: "stable".into(),
        arch: "x86_64".into(),
        board: board.into(),
        build_time: 0,
        filesystem: "erofs".into(),
        kernel: KernelInfo {
            release: "6.1.0-test".into(),
            build: "#1".into(),
            image: "lib/modules/6.1.0-test/vmlinuz".into(),
            initramfs: "lib/modules/6.1.0-test/keel-initramfs.img".into(),
        },
        verity: VerityInfo {
            data_size: data.len() as u64,
            hash_offset: data.len() as u64,
            hash_size: tree.hash_area.len() as u64,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
            salt: hex::encode(salt),
            root_hash: hex::encode(tree.root_hash),
            uuid: vuuid.to_string(),
        },
        body_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &body)),
        key_id: signer.key_id(),
    };
    let block = sign(&metadata, signer);
    Usr {
        body,
        block,
        metadata,
    }
}

pub fn sign(meta: &SlotMetadata, signer: &Key) -> Vec<u8> {
    metadata::encode(meta, |m| signer.sign(m)).unwrap()
}

/// A Keel-like disk image: USR-A (holding `a`, priority 1, successful), USR-B (empty), ROOT.
pub fn build_disk(path: &Path, a: &Usr) {
    build_disk_sized(path, a, USR_SIZE)
}

/// As [`build_disk`] with USR partitions of `usr_size` bytes (a multiple of 2 MiB).
pub fn build_disk_sized(path: &Path, a: &Usr, usr_size: u64) {
    let disk_size = 2 * MIB + 2 * usr_size + 10 * MIB;
    let f = fs::File::create(path).unwrap();
    f.set_len(disk_size).unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut t = DiskTable::new(disk_size, DISK_GUID).unwrap();
    let mib = MIB / SECTOR;
    let usr = usr_size / SECTOR;
    let successful = SlotAttrs::new(1, 0, true).apply_to(0);
    t.add(layout::USR_A, 2 * mib, usr, successful).unwrap();
    t.add(layout::USR_B, 2 * mib + usr, usr, 0).unwrap();
    t.add(layout::ROOT, 2 * mib + 2 * usr, 8 * mib, 0).unwrap();
    DiskTable::write_protective_mbr(&mut f).unwrap();
    t.write(&mut f).unwrap();
    let usr_a = t.partition(3).unwrap();
    write_at(&mut f, usr_a.offset(), &a.body);
    write_at(
        &mut f,
        usr_a.offset() + usr_size - METADATA_SIZE as u64,
        &a.block,
    );
}

pub fn write_at(f: &mut fs::File, offset: u64, data: &[u8]) {
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).unwrap();
    v
}

pub fn table(path: &Path) -> DiskTable {
    DiskTable::read(&mut fs::File::open(path).unwrap()).unwrap()
}

pub fn attrs(path: &Path, number: u32) -> SlotAttrs {
    table(path).partition(number).unwrap().slot_attrs()
}

pub fn set_attrs(path: &Path, number: u32, a: SlotAttrs) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut t = DiskTable::read(&mut f).unwrap();
    t.set_slot_attrs(number, a).unwrap();
    t.write(&mut f).unwrap();
}

/// Bytes of partition `number`.
pub fn partition_bytes(path: &Path, number: u32) -> Vec<u8> {
    let p = table(path).partition(number).unwrap();
    read_at(path, p.offset(), p.size())
}

/// A scratch directory with a built disk (USR-A = 1.0.0) and the fixture payloads' home.
pub struct World {
    pub dir: tempfile::TempDir,
    pub disk: PathBuf,
    pub pubkey: PathBuf,
    pub v1: Usr,
}

pub fn world() -> World {
    world_in(None)
}

pub fn world_in(parent: Option<&Path>) -> World {
    let dir = match parent {
        Some(p) => tempfile::tempdir_in(p).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let v1 = build_usr("1.0.0", "qemu-x86_64", &key(), 3 << 20);
    let disk = dir.path().join("disk.img");
    build_disk(&disk, &v1);
    let pubkey = dir.path().join("keel-signing.pub");
    fs::write(&pubkey, key().public_pem()).unwrap();
    World {
        dir,
        disk,
        pubkey,
        v1,
    }
}

impl World {
    pub fn write_payload(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
