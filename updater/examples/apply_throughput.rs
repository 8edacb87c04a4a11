//! Measure `apply` on a disk image: `cargo run --release -p keel-update --example
//! apply_throughput -- [BODY_MIB] [DIR]`. Builds a disk image with two USR slots and a signed
//! payload of BODY_MIB MiB of random data (plus its verity tree) in DIR (default: a temporary
//! directory), applies it and prints the time of each step.

use std::fs;
use std::io::Write;
use std::time::Instant;

use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, DISK_GUID, SECTOR};
use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo, METADATA_SIZE};
use keel_update::progress::Progress;
use keel_update::{apply, ApplyOptions, PayloadSource, Target};

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .map_or(256, |s| s.parse().expect("BODY_MIB"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(2)
        .map_or(tmp.path().to_path_buf(), Into::into);
    let key = keel_signing::Key::from_seed([9; 32]);

    let data_size = mib << 20;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data = vec![0u8; data_size as usize];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let salt = [1u8; 32];
    let vuuid = uuid::Uuid::from_u128(1);
    let tree = keel_format::verity::build(&mut &data[..], data_size, &salt, vuuid, |_| {}).unwrap();
    let body_len = data_size + tree.hash_area.len() as u64;
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(&data);
    hasher.update(&tree.hash_area);
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
        body_sha256: hex::encode(hasher.clone().finish()),
        key_id: key.key_id(),
    };
    let payload = dir.join("payload.img");
    {
        let mut f = fs::File::create(&payload).unwrap();
        f.write_all(&metadata::encode(&meta("2.0.0"), |m| key.sign(m)).unwrap())
            .unwrap();
        f.write_all(&data).unwrap();
        f.write_all(&tree.hash_area).unwrap();
    }
    drop(data);

    let align = layout::ALIGN;
    let usr = (body_len + METADATA_SIZE as u64).div_ceil(align) * align;
    let disk_size = align + 2 * usr + align;
    let disk = dir.join("disk.img");
    {
        let f = fs::File::create(&disk).unwrap();
        f.set_len(disk_size).unwrap();
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        let mut t = DiskTable::new(disk_size, DISK_GUID).unwrap();
        t.add(
            layout::USR_A,
            align / SECTOR,
            usr / SECTOR,
            SlotAttrs::new(1, 0, true).apply_to(0),
        )
        .unwrap();
        t.add(layout::USR_B, (align + usr) / SECTOR, usr / SECTOR, 0)
            .unwrap();
        DiskTable::write_protective_mbr(&mut f).unwrap();
        t.write(&mut f).unwrap();
        let a = t.partition(3).unwrap();
        let block = metadata::encode(&meta("1.0.0"), |m| key.sign(m)).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&block, a.offset() + a.size() - METADATA_SIZE as u64)
            .unwrap();
        f.sync_all().unwrap();
    }

    for (name, precheck) in [("with precheck", true), ("streaming only", false)] {
        let mut opts = ApplyOptions::new(vec![key.public()]);
        opts.precheck_file = precheck;
        opts.allow_downgrade = true;
        // Drop the payload from the page cache as far as we can, for a fair first read.
        let _ = fs::write("/proc/sys/vm/drop_caches", "1");
        let t0 = Instant::now();
        let a = apply(
            PayloadSource::File(payload.clone()),
            &Target::offline(&disk),
            &opts,
            &Timer::default(),
        )
        .unwrap();
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{name}: {} MiB body in {secs:.2} s = {:.0} MiB/s (direct I/O: {})",
            body_len >> 20,
            (body_len >> 20) as f64 / secs,
            a.direct_io
        );
        // Back to A running so the next round applies to B again.
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        let mut t = DiskTable::read(&mut f).unwrap();
        t.set_slot_attrs(3, SlotAttrs::new(1, 0, true)).unwrap();
        t.set_slot_attrs(4, SlotAttrs::new(0, 0, false)).unwrap();
        t.write(&mut f).unwrap();
    }
}

/// Prints how long each step took.
#[derive(Default)]
struct Timer(std::sync::Mutex<Option<(String, Instant)>>);

impl Progress for Timer {
    fn phase(&self, name: &str, _: u64) {
        self.finish();
        *self.0.lock().unwrap() = Some((name.to_string(), Instant::now()));
    }
    fn set(&self, _: u64) {}
    fn finish(&self) {
        if let Some((name, t)) = self.0.lock().unwrap().take() {
            println!("  {name}: {:.2} s", t.elapsed().as_secs_f64());
        }
    }
}
