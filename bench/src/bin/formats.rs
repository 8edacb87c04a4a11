//! formats: the time `keel build` takes to make each output form from the same disk.raw (and
//! usr.img, kernel and initramfs for PXE), and keel's VMDK writer side by side with
//! `qemu-img convert -O vmdk -o subformat=streamOptimized` on the same image.
//!
//! Input: an output directory of `keel build --format raw --format pxe` (disk.raw, usr.img,
//! pxe/). Each form is made by the very function `keel build` calls (keel_builder::qcow2,
//! vmdk, ova, pxe). For PXE the Keel initramfs is recovered from pxe/initramfs.img by cutting
//! off the payload archive that `pxe::initramfs` appends (checked: rebuilding gives the same
//! file). Every round writes into a fresh directory, the order rotated; the inputs are read
//! once first so both sides of the VMDK comparison read from the page cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use keel_bench::measure::median;
use keel_bench::{command, files, machine};
use keel_builder::{ova, pxe, qcow2, vmdk};

#[derive(Parser)]
#[command(about = "Time to make each output form from disk.raw; keel's VMDK against qemu-img's")]
struct Args {
    /// Output directory of `keel build --format raw --format pxe`
    #[arg(long, default_value = "/var/tmp/keel-bench/image")]
    image_dir: PathBuf,
    /// Scratch directory (disk-backed)
    #[arg(long, default_value = "/var/tmp/keel-bench/formats")]
    work: PathBuf,
    /// Rounds; each makes every form once, the order rotated
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Qcow2,
    KeelVmdk,
    QemuImgVmdk,
    Ova,
    Pxe,
}

impl Form {
    const ALL: [Form; 5] = [
        Form::Qcow2,
        Form::KeelVmdk,
        Form::QemuImgVmdk,
        Form::Ova,
        Form::Pxe,
    ];

    fn name(self) -> &'static str {
        match self {
            Form::Qcow2 => "qcow2 (qemu-img convert -c)",
            Form::KeelVmdk => "vmdk (keel)",
            Form::QemuImgVmdk => "vmdk (qemu-img streamOptimized)",
            Form::Ova => "ova (from keel's vmdk)",
            Form::Pxe => "pxe (kernel, initramfs+payload)",
        }
    }
}

struct Inputs {
    raw: PathBuf,
    usr: PathBuf,
    kernel: PathBuf,
    keel_initramfs: Vec<u8>,
    cmdline: String,
    epoch: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        command::exists("qemu-img"),
        "qemu-img is not installed (qemu-utils)"
    );
    let inp = inputs(&args.image_dir)?;
    println!("machine: {}", machine::describe());
    let raw_len = std::fs::metadata(&inp.raw)?.len();
    println!(
        "input: {} ({} MiB, {} MiB allocated)",
        inp.raw.display(),
        raw_len >> 20,
        allocated(&inp.raw)? >> 20
    );
    files::warm_page_cache(&args.image_dir)?;

    let mut times: Vec<(Form, Vec<f64>, u64)> = Form::ALL.iter().map(|&f| (f, vec![], 0)).collect();
    for round in 0..args.rounds {
        let dir = args.work.join(format!("round-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // The OVA is made from keel's VMDK, as in `keel build`: make that first, untimed.
        let vmdk_for_ova = dir.join("for-ova.vmdk");
        let written = vmdk::write(&inp.raw, &vmdk_for_ova, "keel.vmdk", 1)?;
        let mut order = Form::ALL.to_vec();
        order.rotate_left(round % Form::ALL.len());
        for form in order {
            let start = Instant::now();
            let out = make(form, &inp, &dir, &vmdk_for_ova, &written)?;
            let secs = start.elapsed().as_secs_f64();
            let size = out_size(&out)?;
            let entry = times.iter_mut().find(|(f, _, _)| *f == form).unwrap();
            entry.1.push(secs);
            entry.2 = size;
            println!(
                "round {} {:<34} {:7.2} s  {:6} MiB out  [{}]",
                round + 1,
                form.name(),
                secs,
                size >> 20,
                machine::load()
            );
        }
        std::fs::remove_dir_all(&dir)?;
    }
    println!("medians over {} rounds:", args.rounds);
    for (form, samples, size) in &times {
        let m = median(samples);
        println!(
            "  {:<34} {:7.2} s  {:6.0} MiB/s of disk.raw  {:6} MiB out",
            form.name(),
            m,
            raw_len as f64 / 1048576.0 / m,
            size >> 20
        );
    }
    let med = |f: Form| median(&times.iter().find(|(x, _, _)| *x == f).unwrap().1);
    println!(
        "ratio keel vmdk / qemu-img vmdk (time): {:.3}",
        med(Form::KeelVmdk) / med(Form::QemuImgVmdk)
    );
    Ok(())
}

fn make(
    form: Form,
    inp: &Inputs,
    dir: &Path,
    vmdk_for_ova: &Path,
    written: &vmdk::Written,
) -> Result<PathBuf> {
    Ok(match form {
        Form::Qcow2 => {
            let out = dir.join("disk.qcow2");
            qcow2::convert(&inp.raw, &out)?;
            out
        }
        Form::KeelVmdk => {
            let out = dir.join("keel.vmdk");
            vmdk::write(&inp.raw, &out, "keel.vmdk", 1)?;
            out
        }
        Form::QemuImgVmdk => {
            let out = dir.join("qemu-img.vmdk");
            command::run(
                Command::new("qemu-img")
                    .args([
                        "convert",
                        "-q",
                        "-f",
                        "raw",
                        "-O",
                        "vmdk",
                        "-o",
                        "subformat=streamOptimized",
                    ])
                    .arg(&inp.raw)
                    .arg(&out),
            )?;
            out
        }
        Form::Ova => {
            let out = dir.join("keel.ova");
            let m = ova::Machine {
                name: "keel",
                cpus: ova::DEFAULT_CPUS,
                memory_mib: ova::DEFAULT_MEMORY_MIB,
            };
            ova::write(&m, vmdk_for_ova, written, &out, inp.epoch)?;
            out
        }
        Form::Pxe => {
            let out = dir.join("pxe");
            let payload = std::fs::read(&inp.usr)?;
            let live = pxe::initramfs(&inp.keel_initramfs, payload, inp.epoch);
            pxe::write(&out, &inp.kernel, &live, &inp.cmdline)?;
            out
        }
    })
}

fn inputs(dir: &Path) -> Result<Inputs> {
    let raw = dir.join("disk.raw");
    let usr = dir.join("usr.img");
    let pxe_dir = dir.join(pxe::DIR);
    for p in [&raw, &usr, &pxe_dir] {
        if !p.exists() {
            bail!(
                "{} missing: make {} with `keel build --format raw --format pxe --out {}`",
                p.display(),
                dir.display(),
                dir.display()
            );
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).context("manifest.json")?,
    )?;
    let epoch = manifest["image"]["source_date_epoch"]
        .as_u64()
        .context("manifest.json: image.source_date_epoch")?;
    let script = std::fs::read_to_string(pxe_dir.join(pxe::SCRIPT))?;
    let kernel_line = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .context("no kernel line in the iPXE script")?;
    let prefix = format!("kernel {} initrd={} ", pxe::KERNEL, pxe::INITRAMFS);
    let cmdline = kernel_line
        .strip_prefix(&prefix)
        .context("unexpected iPXE kernel line")?
        .to_string();
    let full = std::fs::read(pxe_dir.join(pxe::INITRAMFS))?;
    let payload = std::fs::read(&usr)?;
    let tail = pxe::initramfs(&[], payload.clone(), epoch).len();
    ensure!(
        full.len() > tail,
        "pxe/initramfs.img is shorter than its payload archive"
    );
    let keel_initramfs = full[..full.len() - tail].to_vec();
    ensure!(
        pxe::initramfs(&keel_initramfs, payload, epoch) == full,
        "could not recover the Keel initramfs from pxe/initramfs.img"
    );
    Ok(Inputs {
        raw,
        usr,
        kernel: pxe_dir.join(pxe::KERNEL),
        keel_initramfs,
        cmdline,
        epoch,
    })
}

fn out_size(p: &Path) -> Result<u64> {
    if p.is_dir() {
        return Ok(files::tree_size(p)?.0);
    }
    Ok(std::fs::metadata(p)?.len())
}

fn allocated(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)?.blocks() * 512)
}
