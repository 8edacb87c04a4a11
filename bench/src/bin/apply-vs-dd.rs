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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use keel_bench::measure::{median, secs};
use keel_bench::slot_image::{check_slot, fresh_disk, make_payload, Payload};
use keel_bench::{command, machine};
use keel_format::metadata::METADATA_SIZE;
use keel_update::progress::Progress;
use keel_update::{apply, ApplyOptions, PayloadSource, Target};

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
