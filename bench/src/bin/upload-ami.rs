//! upload-ami: `keel-upload-ami` against AWS's own `coldsnap upload --omit-zero-blocks --wait`,
//! both uploading the same raw image to a fresh moto_server on loopback, side by side, the order
//! rotated; on the Keel image (sparse) and on a dense image of random bytes (every block sent).
//!
//! Both read the image, skip all-zero 512 KiB blocks (coldsnap 0.12 only with
//! `--omit-zero-blocks`; its default since 0.9 uploads them, for encrypted snapshots, which keel
//! detects instead), hash each block (SHA-256), upload the rest with PutSnapshotBlock, complete
//! the snapshot with the LINEAR checksum and wait for it to be `completed`. keel then also
//! registers the AMI (one RegisterImage call, a few ms against moto); coldsnap has no AMI step.
//! Throughput is given per MiB of image and per MiB of non-zero data actually sent. On loopback
//! moto (Python) is the bottleneck for both: these figures compare the tools, they do not
//! predict AWS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keel_bench::measure::median;
use keel_bench::moto::Moto;
use keel_bench::{command, files, machine};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "keel-upload-ami against coldsnap, uploading the same image to moto on loopback")]
struct Args {
    /// The raw image [default: /var/tmp/keel-bench/image/disk.raw, see bench/README.md]
    #[arg(long, default_value = "/var/tmp/keel-bench/image/disk.raw")]
    image: PathBuf,
    /// keel-upload-ami [default: beside this benchmark's binary]
    #[arg(long)]
    keel_upload_ami: Option<PathBuf>,
    /// The coldsnap CLI [default: coldsnap on PATH; without it only keel is measured]
    #[arg(long, default_value = "coldsnap")]
    coldsnap: PathBuf,
    /// Rounds; each runs every tool once, the order rotated
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of the dense (random) image in MiB; 0 skips it
    #[arg(long, default_value_t = 256)]
    dense_mib: u64,
    /// Where the dense image is written
    #[arg(long, default_value = "/var/tmp/keel-bench/upload-ami")]
    work: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Keel,
    Coldsnap,
    /// coldsnap without `--wait`: its waiter needs three `completed` answers 2 s apart, which
    /// costs it seconds keel does not spend; this variant is its upload alone (keel's time still
    /// includes its own wait and RegisterImage), the comparison least favourable to keel.
    ColdsnapNoWait,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Keel => "keel-upload-ami",
            Tool::Coldsnap => "coldsnap upload --omit-zero-blocks --wait",
            Tool::ColdsnapNoWait => "coldsnap upload --omit-zero-blocks",
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let keel = match &args.keel_upload_ami {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("keel-upload-ami"),
    };
    if !keel.is_file() {
        bail!(
            "{} not found: cargo build --release -p keel-ami",
            keel.display()
        );
    }
    if !args.image.is_file() {
        bail!(
            "{}: no such image (see bench/README.md, Preparing)",
            args.image.display()
        );
    }
    let coldsnap = resolve(&args.coldsnap);
    let mut tools = vec![Tool::Keel];
    match &coldsnap {
        Some(_) => tools.extend([Tool::Coldsnap, Tool::ColdsnapNoWait]),
        None => println!(
            "coldsnap not found ({}): measuring keel alone (cargo install coldsnap --locked)",
            args.coldsnap.display()
        ),
    }
    println!("machine: {}", machine::describe());
    measure(&args.image, &tools, &keel, coldsnap.as_deref(), args.rounds)?;
    if args.dense_mib > 0 {
        std::fs::create_dir_all(&args.work)?;
        let dense = args.work.join("dense.raw");
        files::incompressible_file(&dense, args.dense_mib << 20)?;
        measure(&dense, &tools, &keel, coldsnap.as_deref(), args.rounds)?;
        std::fs::remove_file(&dense)?;
    }
    Ok(())
}

fn measure(
    image: &Path,
    tools: &[Tool],
    keel: &Path,
    coldsnap: Option<&Path>,
    rounds: usize,
) -> Result<()> {
    let image_len = std::fs::metadata(image)?.len() as f64;
    println!("image: {} ({:.0} MiB)", image.display(), image_len / MIB);
    let mut times: Vec<(Tool, Vec<f64>)> = tools.iter().map(|&t| (t, Vec::new())).collect();
    let mut nonzero_bytes = None;
    for round in 0..rounds {
        let mut order = tools.to_vec();
        let n = order.len();
        order.rotate_left(round % n);
        for tool in order {
            let moto = Moto::start()?;
            let start = Instant::now();
            let blocks = match tool {
                Tool::Keel => run_keel(keel, image, &moto.url(), round)?,
                Tool::Coldsnap | Tool::ColdsnapNoWait => {
                    let wait = tool == Tool::Coldsnap;
                    run_coldsnap(coldsnap.expect("coldsnap"), image, &moto.url(), wait)?;
                    None
                }
            };
            let secs = start.elapsed().as_secs_f64();
            if let Some(b) = blocks {
                nonzero_bytes = Some(b as f64 * 512.0 * 1024.0);
            }
            times
                .iter_mut()
                .find(|(t, _)| *t == tool)
                .unwrap()
                .1
                .push(secs);
            println!(
                "round {} {:<40} {:7.2} s  {:7.1} MiB/s of image  [{}]",
                round + 1,
                tool.name(),
                secs,
                image_len / MIB / secs,
                machine::load()
            );
        }
    }
    let nonzero = nonzero_bytes.context("keel reported no block count")?;
    println!(
        "non-zero data: {:.0} MiB in {:.0} blocks of 512 KiB",
        nonzero / MIB,
        nonzero / 524288.0
    );
    println!("medians over {rounds} rounds:");
    let mut medians = Vec::new();
    for (tool, samples) in &times {
        let m = median(samples);
        medians.push(m);
        println!(
            "  {:<40} {:7.2} s  {:7.1} MiB/s of image  {:6.1} MiB/s of non-zero data",
            tool.name(),
            m,
            image_len / MIB / m,
            nonzero / MIB / m
        );
    }
    if medians.len() == 3 {
        println!(
            "ratio keel/coldsnap (time): {:.3} against coldsnap --wait, {:.3} against its upload alone",
            medians[0] / medians[1],
            medians[0] / medians[2]
        );
    }
    Ok(())
}

fn resolve(tool: &Path) -> Option<PathBuf> {
    if tool.components().count() > 1 {
        return tool.is_file().then(|| tool.to_path_buf());
    }
    let name = tool.to_str()?;
    command::exists(name).then(|| tool.to_path_buf())
}

fn fake_credentials(c: &mut Command) -> &mut Command {
    c.env("AWS_ACCESS_KEY_ID", "AKIAKEELBENCH0000000")
        .env("AWS_SECRET_ACCESS_KEY", "keel-bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
}

/// Returns the number of blocks keel uploaded.
fn run_keel(keel: &Path, image: &Path, url: &str, round: usize) -> Result<Option<u64>> {
    let mut c = Command::new(keel);
    fake_credentials(&mut c)
        .arg("--image")
        .arg(image)
        .args([
            "--name",
            &format!("keel-bench-{round}"),
            "--region",
            "us-east-1",
        ])
        .args(["--endpoint-url", url, "--json", "--quiet"]);
    let out = command::run(&mut c)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["blocks_uploaded"].as_u64())
}

fn run_coldsnap(coldsnap: &Path, image: &Path, url: &str, wait: bool) -> Result<()> {
    let mut c = Command::new(coldsnap);
    fake_credentials(&mut c)
        .args(["--region", "us-east-1", "--endpoint", url, "upload"])
        .args(["--no-progress", "--omit-zero-blocks"]);
    if wait {
        c.arg("--wait");
    }
    c.arg(image);
    command::run(&mut c)?;
    Ok(())
}
