//! apply-vs-dd: `keel_update::apply` of a 1 GiB payload (data area + dm-verity tree + signed
//! metadata) to the passive slot of a disk image, against a plain
//! `dd oflag=direct conv=fsync` of the same body bytes to the same offset of an identical image
//! on the same filesystem, side by side in one run.
//!
//! keel's time includes all it does for safety: the signature check, the body hash before the
//! disk is touched (for a file payload; also measured without it), invalidating the slot, the
//! write with its SHA-256, reading the slot back from the disk through a verity recomputation,
//! and the GPT update. dd only writes and syncs.
//!
//! Every run writes into a fresh sparse image (both pay for block allocation alike); the payload
//! file is read from the page cache by both (it is read once before the first run).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use keel_bench::measure::{median, secs};
use keel_bench::{command, machine};
use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, DISK_GUID, SECTOR};
use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo, METADATA_SIZE};
use keel_signing::Key;
use keel_update::progress::Progress;
use keel_update::{apply, ApplyOptions, PayloadSource, Target};
use ring::digest::{Context as Sha, SHA256};

const MIB: u64 = 1 << 20;

#[derive(Parser)]
#[command(about = "keel-update's apply against dd oflag=direct conv=fsync of the same bytes")]
struct Args {
    /// Work directory; the filesystem both write to (not tmpfs: O_DIRECT)
    #[arg(long, default_value = "/var/tmp/keel-bench/apply")]
    work: PathBuf,
    /// Size of the payload's data area in MiB
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Rounds; each runs every variant once, the order rotated
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Keel,
    KeelNoPrecheck,
    Dd,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Keel => "keel apply",
            Variant::KeelNoPrecheck => "keel apply --no-precheck",
            Variant::Dd => "dd oflag=direct conv=fsync",
        }
    }
}

struct Payload {
    path: PathBuf,
    key: Key,
    /// The running slot's metadata block (version 1.0.0) that every fresh image gets.
    running_block: Vec<u8>,
    body_len: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !command::exists("dd") {
        bail!("dd is not installed");
    }
    std::fs::create_dir_all(&args.work)?;
    let payload = make_payload(&args.work, args.mib << 20)?;
    // Both read the payload from the page cache.
    let mut f = File::open(&payload.path)?;
    std::io::copy(&mut f, &mut std::io::sink())?;

    println!("apply-vs-dd");
    println!("machine: {}", machine::describe());
    println!(
        "payload {}: {} MiB data area, body {:.1} MiB (data + verity), signed metadata 4 KiB; work dir {} ({})",
        payload.path.display(),
        args.mib,
        payload.body_len as f64 / MIB as f64,
        args.work.display(),
        filesystem_of(&args.work)
    );

    let variants = [Variant::Keel, Variant::Dd, Variant::KeelNoPrecheck];
    let mut results: Vec<(Variant, f64)> = Vec::new();
    for round in 0..args.rounds {
        let mut order = variants.to_vec();
        order.rotate_left(round % variants.len());
        for v in order {
            let disk = args.work.join("disk.img");
            let usr_b = fresh_disk(&disk, &payload)?;
            let (wall, detail) = match v {
                Variant::Keel => keel(&disk, &payload, true)?,
                Variant::KeelNoPrecheck => keel(&disk, &payload, false)?,
                Variant::Dd => dd(&disk, &payload, usr_b)?,
            };
            check_slot(&disk, &payload, usr_b)?;
            std::fs::remove_file(&disk)?;
            println!(
                "round {} {:<27} {:>8}  {:6.0} MiB/s  {detail} [{}]",
                round + 1,
                v.name(),
                secs(wall),
                payload.body_len as f64 / MIB as f64 / wall.as_secs_f64(),
                machine::load()
            );
            results.push((v, wall.as_secs_f64()));
        }
    }

    println!();
    let med = |v: Variant| {
        median(
            &results
                .iter()
                .filter(|(w, _)| *w == v)
                .map(|(_, t)| *t)
                .collect::<Vec<_>>(),
        )
    };
    let mibs = |t: f64| payload.body_len as f64 / MIB as f64 / t;
    println!("medians over {} rounds:", args.rounds);
    for v in variants {
        println!(
            "  {:<27} {:6.2} s  {:6.0} MiB/s",
            v.name(),
            med(v),
            mibs(med(v))
        );
    }
    let dd = med(Variant::Dd);
    println!(
        "ratio of throughput keel apply : dd = {:.3} (target 0.9 or more; verification included)",
        dd / med(Variant::Keel)
    );
    println!(
        "ratio of throughput keel apply --no-precheck : dd = {:.3}",
        dd / med(Variant::KeelNoPrecheck)
    );
    let _ = std::fs::remove_file(&payload.path);
    Ok(())
}

/// A payload the way updater/tests build theirs: pseudo-random data (incompressible, no zero
/// blocks a sparse write could skip), its verity tree, the signed metadata block in front.
fn make_payload(work: &Path, data_size: u64) -> Result<Payload> {
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
fn fresh_disk(path: &Path, p: &Payload) -> Result<u64> {
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

fn keel(disk: &Path, p: &Payload, precheck: bool) -> Result<(Duration, String)> {
    let mut opts = ApplyOptions::new(vec![p.key.public()]);
    opts.precheck_file = precheck;
    let phases = Phases::default();
    let t0 = Instant::now();
    let applied = apply(
        PayloadSource::File(p.path.clone()),
        &Target::offline(disk),
        &opts,
        &phases,
    )
    .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
    let wall = t0.elapsed();
    phases.finish();
    if applied.slot != "USR-B" {
        bail!("apply wrote {}, not USR-B", applied.slot);
    }
    let detail = phases
        .done
        .lock()
        .expect("no panics while locked")
        .iter()
        .filter(|(_, d)| d.as_secs_f64() >= 0.005)
        .map(|(n, d)| format!("{n} {:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((
        wall,
        format!("(direct I/O {}; {detail})", applied.direct_io),
    ))
}

fn dd(disk: &Path, p: &Payload, usr_b: u64) -> Result<(Duration, String)> {
    let t0 = Instant::now();
    command::run(
        Command::new("dd")
            .arg(format!("if={}", p.path.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=4M",
                "iflag=skip_bytes,count_bytes",
                "oflag=direct,seek_bytes",
            ])
            .args(["conv=fsync,notrunc", "status=none"])
            .arg(format!("skip={METADATA_SIZE}"))
            .arg(format!("count={}", p.body_len))
            .arg(format!("seek={usr_b}")),
    )?;
    Ok((t0.elapsed(), String::new()))
}

/// The passive slot of the image holds the body: both variants really wrote what they claim.
fn check_slot(disk: &Path, p: &Payload, usr_b: u64) -> Result<()> {
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

fn filesystem_of(dir: &Path) -> String {
    command::stdout(Command::new("stat").args(["-f", "-c", "%T"]).arg(dir))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Records how long each of apply's steps took.
#[derive(Default)]
struct Phases {
    current: Mutex<Option<(String, Instant)>>,
    done: Mutex<Vec<(String, Duration)>>,
}

impl Progress for Phases {
    fn phase(&self, name: &str, _: u64) {
        self.finish();
        *self.current.lock().expect("no panics while locked") =
            Some((name.to_string(), Instant::now()));
    }
    fn set(&self, _: u64) {}
    fn finish(&self) {
        if let Some((name, t)) = self.current.lock().expect("no panics while locked").take() {
            self.done
                .lock()
                .expect("no panics while locked")
                .push((name, t.elapsed()));
        }
    }
}
