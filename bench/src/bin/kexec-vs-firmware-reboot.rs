//! kexec-vs-firmware-reboot: how long the reboot into a freshly staged update takes with
//! `keel-update reboot --kexec` against `keel-update reboot --firmware`, in the same TCG QEMU
//! with OVMF (UEFI).
//!
//! Two images are built with `keel build` (1.0.0 and 2.0.0) carrying a small test driver: a
//! unit that runs the shell script found on /dev/vdb at every boot (the way the updater's
//! end-to-end tests drive a guest). On 1.0.0 the script waits for the boot to settle, applies
//! the 2.0.0 payload from /dev/vdc, prints `@@REBOOT` and reboots; on 2.0.0 it prints
//! `@@READY 2.0.0` once systemd reports the boot finished.
//!
//! Measured on the host's clock from `@@REBOOT`: the old kernel's last line (kexec_core's
//! "Starting new kernel" / "reboot: machine restart"), the new kernel's first line ("Linux
//! version"), keel-init's `booting USR-B version 2.0.0` line (the new version's first console
//! line), systemd's first line, and `@@READY 2.0.0`. (The kexec'd kernel's own printk clock is
//! not usable for this: it jumps by seconds early in boot.)
//! Both paths include systemd's shutdown of 1.0.0; the firmware path adds OVMF and the UKI's
//! stub, the kexec path skips them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use keel_bench::measure::median;
use keel_bench::{command, files, machine};
use keel_qemu::{Accel, BootOptions, Session};

const BOOT: Duration = Duration::from_secs(400);

#[derive(Parser)]
#[command(about = "reboot into a staged update: kexec against a firmware reboot")]
struct Args {
    /// Work directory (images, script disks, console logs)
    #[arg(long, default_value = "/var/tmp/keel-bench/kexec")]
    work: PathBuf,
    /// Updates per reboot kind
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The keel binary [default: $KEEL_BIN, else `keel` next to this benchmark's binary]
    #[arg(long)]
    keel: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reboot {
    Kexec,
    Firmware,
}

impl Reboot {
    fn flag(self) -> &'static str {
        match self {
            Reboot::Kexec => "--kexec",
            Reboot::Firmware => "--firmware",
        }
    }
}

/// Host seconds from `@@REBOOT` to each marker of the new version.
#[derive(Clone, Copy)]
struct Timing {
    /// The old system's last line: systemd's shutdown is over, the kernel jumps.
    old_kernel_gone: f64,
    /// The new kernel's first line: kexec's purgatory, or OVMF and the UKI's stub, are over.
    new_kernel: f64,
    keel_init: f64,
    systemd: f64,
    ready: f64,
}

const DRIVER: &str = "#!/bin/sh\n\
# Keel benchmark TEST IMAGE ONLY: runs the script on /dev/vdb as root at every boot.\n\
[ \"$(head -c 2 /dev/vdb 2>/dev/null)\" = '#!' ] || exit 0\n\
tr -d '\\000' < /dev/vdb > /run/keel-bench.sh\n\
exec /bin/sh /run/keel-bench.sh\n";

const DRIVER_UNIT: &str = "[Unit]\n\
Description=Keel benchmark driver (TEST IMAGE ONLY)\n\
After=multi-user.target\n\n\
[Service]\n\
Type=simple\n\
ExecStart=/usr/lib/keel-bench/driver\n\
StandardOutput=tty\n\
StandardError=tty\n\
TTYPath=/dev/ttyS0\n";

fn main() -> Result<()> {
    let args = Args::parse();
    let keel = command::keel_binary(args.keel.as_deref())?;
    std::fs::create_dir_all(args.work.join("logs"))?;
    let files = driver_files(&args.work)?;
    let v1 = build(&keel, &args.work, "1.0.0", &files)?;
    let v2 = build(&keel, &args.work, "2.0.0", &files)?;
    let payload = v2.join("usr.img");

    println!("kexec-vs-firmware-reboot");
    println!("machine: {}", machine::describe());
    println!(
        "images {} and {} (keel build), QEMU TCG with OVMF, 1 GiB, {} vCPU(s) ($KEEL_QEMU_SMP, else 2); {} updates per reboot kind",
        v1.display(),
        v2.display(),
        keel_qemu::default_smp(),
        args.runs
    );

    let kinds = [Reboot::Kexec, Reboot::Firmware];
    let mut timings: Vec<(Reboot, Timing)> = Vec::new();
    let mut failures: Vec<(Reboot, String)> = Vec::new();
    for run in 0..args.runs {
        let mut order = kinds.to_vec();
        order.rotate_left(run % kinds.len());
        for kind in order {
            let t = match update_and_reboot(&args.work, &v1.join("disk.raw"), &payload, kind, run) {
                Ok(t) => t,
                Err(e) => {
                    // A hung or failed reboot is a result too: counted, not fatal.
                    let first = format!("{e:#}");
                    println!(
                        "run {} reboot {:<10} FAILED: {}",
                        run + 1,
                        kind.flag(),
                        first.lines().next().unwrap_or("")
                    );
                    failures.push((kind, first.lines().next().unwrap_or("").to_string()));
                    continue;
                }
            };
            println!(
                "run {} reboot {:<10} old kernel gone {:6.2} s, new kernel {:6.2} s, new version's keel-init line {:6.2} s, systemd {:6.2} s, boot finished {:6.2} s [{}]",
                run + 1,
                kind.flag(),
                t.old_kernel_gone,
                t.new_kernel,
                t.keel_init,
                t.systemd,
                t.ready,
                machine::load()
            );
            timings.push((kind, t));
        }
    }

    println!();
    for k in kinds {
        if !timings.iter().any(|(w, _)| *w == k) {
            bail!("every reboot {} failed", k.flag());
        }
    }
    let med = |k: Reboot, f: fn(&Timing) -> f64| {
        median(
            &timings
                .iter()
                .filter(|(w, _)| *w == k)
                .map(|(_, t)| f(t))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "medians over {} updates, seconds after @@REBOOT: old kernel gone / new kernel / keel-init line / systemd / boot finished",
        args.runs
    );
    for k in kinds {
        println!(
            "  reboot {:<10} {:6.2} s  {:6.2} s  {:6.2} s  {:6.2} s  {:6.2} s",
            k.flag(),
            med(k, |t| t.old_kernel_gone),
            med(k, |t| t.new_kernel),
            med(k, |t| t.keel_init),
            med(k, |t| t.systemd),
            med(k, |t| t.ready)
        );
    }
    println!(
        "ratio kexec : firmware — to the new version's keel-init line {:.3}, to boot finished {:.3}",
        med(Reboot::Kexec, |t| t.keel_init) / med(Reboot::Firmware, |t| t.keel_init),
        med(Reboot::Kexec, |t| t.ready) / med(Reboot::Firmware, |t| t.ready)
    );
    for k in kinds {
        let n = failures.iter().filter(|(w, _)| *w == k).count();
        if n > 0 {
            println!(
                "reboot {}: {n} of {} updates failed and are left out of the medians",
                k.flag(),
                args.runs
            );
        }
    }
    println!("console logs: {}", args.work.join("logs").display());
    println!("{}", files::work_dir_note(&args.work));
    Ok(())
}

/// The driver and its unit, enabled by a symlink, as `--extra-file` arguments.
fn driver_files(work: &Path) -> Result<Vec<String>> {
    let dir = work.join("files");
    std::fs::create_dir_all(&dir)?;
    let driver = dir.join("driver");
    std::fs::write(&driver, DRIVER)?;
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o755))?;
    let unit = dir.join("keel-bench-driver.service");
    std::fs::write(&unit, DRIVER_UNIT)?;
    let link = dir.join("keel-bench-driver.service.wants");
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink("../keel-bench-driver.service", &link)?;
    }
    Ok(vec![
        format!("{}=/usr/lib/keel-bench/driver", driver.display()),
        format!(
            "{}=/usr/lib/systemd/system/keel-bench-driver.service",
            unit.display()
        ),
        format!(
            "{}=/usr/lib/systemd/system/multi-user.target.wants/keel-bench-driver.service",
            link.display()
        ),
    ])
}

fn build(keel: &Path, work: &Path, version: &str, files: &[String]) -> Result<PathBuf> {
    let out = work.join(format!("v{version}"));
    let mut cmd = Command::new(keel);
    cmd.args(["build", "--quiet", "--format", "raw", "--version", version])
        .arg("--out")
        .arg(&out);
    for f in files {
        cmd.arg("--extra-file").arg(f);
    }
    command::run(&mut cmd)?;
    Ok(out)
}

/// The script for /dev/vdb, padded to whole 4 KiB blocks. It reopens the console once the boot
/// has settled: the serial getty's vhangup() leaves the unit's own console descriptor dead.
fn script_disk(path: &Path, kind: Reboot) -> Result<()> {
    let text = format!(
        "#!/bin/sh\n\
         systemctl stop hello.service\n\
         systemctl is-system-running --wait >/dev/null\n\
         exec >/dev/ttyS0 2>&1\n\
         V=$(sed -n 's/^KEEL_VERSION=//p' /usr/share/keel/release)\n\
         case $V in\n\
         1.0.0)\n\
           keel-update apply /dev/vdc >/dev/null 2>&1; echo \"@@APPLIED $?\"\n\
           echo @@REBOOT\n\
           keel-update reboot {};;\n\
         *) echo \"@@READY $V\";;\n\
         esac\n",
        kind.flag()
    );
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    std::fs::write(path, bytes)?;
    Ok(())
}

fn update_and_reboot(
    work: &Path,
    disk: &Path,
    payload: &Path,
    kind: Reboot,
    run: usize,
) -> Result<Timing> {
    let script = work.join("script.img");
    script_disk(&script, kind)?;
    let mut opts = BootOptions::new(disk);
    opts.accel = Accel::Tcg;
    opts.extra_disks = vec![script, payload.to_path_buf()];
    opts.log_path = Some(
        work.join("logs")
            .join(format!("{}-{run}.log", kind.flag().trim_start_matches('-'))),
    );
    let mut vm = Session::start(&opts)?;
    vm.wait_for("] booting USR-A version 1.0.0", BOOT)?;
    vm.wait_for("@@APPLIED ", BOOT)?;
    let from = vm.cursor();
    vm.wait_for("\n", BOOT)?;
    let rest = vm.output_since(from);
    let code = rest.lines().next().unwrap_or("");
    if code.trim() != "0" {
        bail!(
            "keel-update apply in the guest exited {} (log {})",
            code.trim(),
            vm.log_path().display()
        );
    }
    vm.wait_for("@@REBOOT", BOOT)?;
    let t0 = Instant::now();
    let reboot_at = vm.cursor();
    vm.wait_for(
        match kind {
            Reboot::Kexec => "kexec_core: Starting new kernel",
            Reboot::Firmware => "reboot: machine restart",
        },
        BOOT,
    )?;
    let old_kernel_gone = t0.elapsed().as_secs_f64();
    vm.wait_for("Linux version", BOOT)?;
    let new_kernel = t0.elapsed().as_secs_f64();
    vm.wait_for("] booting USR-B version 2.0.0", BOOT)?;
    let keel_init = t0.elapsed().as_secs_f64();
    // OVMF's boot manager announces itself on the serial console: proof of the path taken.
    let through_firmware = vm.output_since(reboot_at).contains("BdsDxe");
    if through_firmware != (kind == Reboot::Firmware) {
        bail!(
            "reboot {} {} the firmware (log {})",
            kind.flag(),
            if through_firmware {
                "went through"
            } else {
                "skipped"
            },
            vm.log_path().display()
        );
    }
    vm.wait_for("systemd[1]: ", BOOT)?;
    let systemd = t0.elapsed().as_secs_f64();
    vm.wait_for("@@READY 2.0.0", BOOT)?;
    let ready = t0.elapsed().as_secs_f64();
    vm.kill()?;
    Ok(Timing {
        old_kernel_gone,
        new_kernel,
        keel_init,
        systemd,
        ready,
    })
}
