//! init-vs-initramfs-tools: the init phase with keel-init against Debian's initramfs-tools, on
//! the same kernel in the same TCG QEMU (direct kernel boot, no firmware), and the initramfs
//! sizes.
//!
//! * keel: the kernel, initramfs and command line of a `keel build` image's UKI, booting that
//!   image (erofs /usr through dm-verity, ext4 ROOT). Measured on first boots (keel-init also
//!   populates ROOT) and on later boots (a copy of the disk booted once before).
//! * debian: an initramfs made by `mkinitramfs` inside a copy of the same Debian tree the image
//!   was built from (its own initramfs-tools configuration), booting that tree from an ext4
//!   partition with `root=/dev/vda1`.
//!
//! Markers, all kernel printk timestamps (seconds since the kernel started): "Run /init as init
//! process" (the kernel hands over to the initramfs) and the first line logged by `systemd[1]`
//! (systemd of the real root is running: the hand-off is done; systemd prints nothing earlier).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use keel_bench::direct_boot::{self, options, timestamp_of, BootSetup};
use keel_bench::measure::median;
use keel_bench::{command, files, machine, rootfs};
use keel_blockdev::loopdev::LoopDevice;
use keel_qemu::Session;

const RUN_INIT: &str = "Run /init as init process";
const SYSTEMD: &str = "systemd[1]: ";
/// Printed by systemd right after its first lines: the first line is complete by then.
const SYSTEMD_BANNER: &str = "running in system mode";
/// keel-init's line when it commits to a slot, right before the exec: `keel-init: [   2.809] booting USR-A ...`.
const KEEL_HANDOFF: &str = "] booting USR-";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "keel-init against Debian's initramfs-tools: time to systemd, initramfs size")]
struct Args {
    /// Output directory of `keel build` (holding disk.raw)
    #[arg(long, default_value = "/var/tmp/keel-bench/image")]
    image: PathBuf,
    /// Work directory (Debian tree copy, disks, console logs)
    #[arg(long, default_value = "/var/tmp/keel-bench/init")]
    work: PathBuf,
    /// Boots per variant
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Kernel parameters added to keel's command line (experiments)
    #[arg(long, default_value = "")]
    keel_append: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    KeelFirst,
    KeelLater,
    Debian,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::KeelFirst => "keel (first boot)",
            Variant::KeelLater => "keel (later boot)",
            Variant::Debian => "initramfs-tools",
        }
    }
}

/// Kernel timestamps of one boot, and the host's wall time from starting QEMU to the first
/// systemd line on the console.
#[derive(Clone, Copy)]
struct Marks {
    run_init: f64,
    systemd: f64,
    host_wall: f64,
    /// keel-init's own timestamp of its "booting USR-X" line, just before it execs systemd.
    keel_handoff: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    command::require(&[
        "qemu-system-x86_64",
        "mcopy",
        "objcopy",
        "sfdisk",
        "mkfs.ext4",
        "e2fsck",
        "chroot",
        "cpio",
    ])?;
    let disk = args.image.join("disk.raw");
    if !disk.is_file() {
        bail!(
            "{} is missing: build an image first (keel build --out {} --init PATH)",
            disk.display(),
            args.image.display()
        );
    }
    std::fs::create_dir_all(args.work.join("logs"))?;

    let mut keel = direct_boot::keel(&disk, &args.work)?;
    if !args.keel_append.is_empty() {
        keel.append = format!("{} {}", keel.append, args.keel_append);
    }
    let tree = rootfs::cached_tree_with_kernel(&keel.kernel)?;
    let debian = direct_boot::debian(&args.work, "debian", &tree, &keel.kernel, |_| Ok(()))?;
    let keel_later = BootSetup {
        disk: booted_once(&keel, &args.work)?,
        kernel: keel.kernel.clone(),
        initrd: keel.initrd.clone(),
        append: keel.append.clone(),
    };
    let init_size = keel_init_size(&keel.initrd)?;

    println!("init-vs-initramfs-tools");
    println!("machine: {}", machine::describe());
    println!(
        "same kernel ({}), QEMU TCG, direct kernel boot, 1 GiB, {} vCPU(s) ($KEEL_QEMU_SMP, else 2); {} boots per variant",
        rootfs::kernel_in(&tree).map(|(_, r)| r).unwrap_or_default(),
        keel_qemu::default_smp(),
        args.runs
    );
    println!("keel:   append {:?}", keel.append);
    println!("debian: append {:?}", debian.append);

    let variants = [Variant::KeelFirst, Variant::Debian, Variant::KeelLater];
    let mut marks: Vec<(Variant, Marks)> = Vec::new();
    for run in 0..args.runs {
        let mut order = variants.to_vec();
        order.rotate_left(run % variants.len());
        for v in order {
            let setup = match v {
                Variant::KeelFirst => &keel,
                Variant::KeelLater => &keel_later,
                Variant::Debian => &debian,
            };
            let log = args.work.join("logs").join(format!(
                "{}-{run}.log",
                v.name().replace([' ', '(', ')'], "")
            ));
            let m = boot(setup, &log)?;
            let keel_part = m
                .keel_handoff
                .map(|h| format!(" (keel-init exec at {h:.3} s)"))
                .unwrap_or_default();
            println!(
                "run {} {:<18} /init at {:6.3} s, systemd at {:6.3} s: init phase {:6.3} s{keel_part}, host wall {:6.2} s [{}]",
                run + 1,
                v.name(),
                m.run_init,
                m.systemd,
                m.systemd - m.run_init,
                m.host_wall,
                machine::load()
            );
            marks.push((v, m));
        }
    }

    println!();
    let med = |v: Variant, f: fn(&Marks) -> f64| -> f64 {
        let s: Vec<f64> = marks
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, m)| f(m))
            .collect();
        median(&s)
    };
    let init_phase = |m: &Marks| m.systemd - m.run_init;
    println!(
        "medians over {} boots      kernel→/init  kernel→systemd  init phase  host wall",
        args.runs
    );
    for v in variants {
        println!(
            "  {:<24} {:9.3} s  {:12.3} s  {:8.3} s  {:7.2} s",
            v.name(),
            med(v, |m| m.run_init),
            med(v, |m| m.systemd),
            med(v, init_phase),
            med(v, |m| m.host_wall)
        );
    }
    for v in [Variant::KeelFirst, Variant::KeelLater] {
        let own: Vec<f64> = marks
            .iter()
            .filter(|(w, _)| *w == v)
            .filter_map(|(_, m)| m.keel_handoff.map(|h| h - m.run_init))
            .collect();
        let startup: Vec<f64> = marks
            .iter()
            .filter(|(w, _)| *w == v)
            .filter_map(|(_, m)| m.keel_handoff.map(|h| m.systemd - h))
            .collect();
        if !own.is_empty() {
            println!(
                "  {:<24} of its init phase: keel-init's own steps {:.3} s, exec to systemd's first line {:.3} s",
                v.name(),
                median(&own),
                median(&startup)
            );
        }
    }
    let deb_init = med(Variant::Debian, init_phase);
    let deb_total = med(Variant::Debian, |m| m.systemd);
    for v in [Variant::KeelFirst, Variant::KeelLater] {
        println!(
            "ratio {} : initramfs-tools — init phase {:.3}, kernel start to systemd {:.3}",
            v.name(),
            med(v, init_phase) / deb_init,
            med(v, |m| m.systemd) / deb_total
        );
    }
    let keel_bytes = std::fs::metadata(&keel.initrd)?.len() as f64;
    let deb_bytes = std::fs::metadata(&debian.initrd)?.len() as f64;
    println!(
        "initramfs size: keel {:.2} MiB, Debian {:.2} MiB ({}), ratio {:.3} (target 0.1 or less)",
        keel_bytes / MIB,
        deb_bytes / MIB,
        compression_of(&debian.initrd),
        keel_bytes / deb_bytes
    );
    println!(
        "keel-init binary (the initramfs's /init): {:.2} MiB (target under 2 MiB)",
        init_size as f64 / MIB
    );
    println!("console logs: {}", args.work.join("logs").display());
    println!("{}", files::work_dir_note(&args.work));
    Ok(())
}

/// A copy of the keel disk as it is after its first boot (ROOT populated): boot it to the login
/// prompt, cut the power, replay the ext4 journals on the host.
fn booted_once(keel: &BootSetup, work: &Path) -> Result<PathBuf> {
    let out = work.join("keel-booted-once.raw");
    if out.is_file() {
        return Ok(out);
    }
    let mut vm = Session::start(&options(keel, &work.join("logs/keel-first-boot-prep.log")))?;
    // The login prompt: the demo container would need a registry.
    vm.wait_for(" login: ", BOOT_TIMEOUT)?;
    std::thread::sleep(Duration::from_secs(3));
    vm.kill()?;
    let tmp = work.join("keel-booted-once.tmp");
    vm.export_disk_raw(&tmp)?;
    for p in files::partitions(&tmp)? {
        if p.label == "ROOT" || p.label == "OEM" {
            // Exit 1 means "errors corrected" (the journal replay): fine; 4 and up are not.
            let dev = LoopDevice::attach(&tmp, p.offset(), p.size(), true)?;
            let st = Command::new("e2fsck").arg("-fy").arg(dev.path()).output()?;
            if st.status.code().unwrap_or(8) >= 4 {
                bail!(
                    "e2fsck of {} in {}: {}",
                    p.label,
                    tmp.display(),
                    String::from_utf8_lossy(&st.stdout)
                );
            }
        }
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

fn boot(s: &BootSetup, log: &Path) -> Result<Marks> {
    let started = Instant::now();
    let mut vm = Session::start(&options(s, log))?;
    vm.wait_for(SYSTEMD, BOOT_TIMEOUT)?;
    let host_wall = started.elapsed().as_secs_f64();
    vm.wait_for(SYSTEMD_BANNER, BOOT_TIMEOUT)?;
    let text = vm.log();
    vm.kill()?;
    let run_init = timestamp_of(&text, RUN_INIT)
        .with_context(|| format!("no {RUN_INIT:?} in {}", log.display()))?;
    let systemd = timestamp_of(&text, SYSTEMD)
        .with_context(|| format!("no {SYSTEMD:?} line in {}", log.display()))?;
    Ok(Marks {
        run_init,
        systemd,
        host_wall,
        keel_handoff: timestamp_of(&text, KEEL_HANDOFF),
    })
}

/// The size of /init in the Keel initramfs (gzip'd cpio newc).
fn keel_init_size(initrd: &Path) -> Result<u64> {
    let listing = command::stdout(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | cpio -itv --quiet",
        initrd.display()
    )))?;
    // `-rwxr-xr-x   1 root     root      1677216 Jan  1  2024 init`
    listing
        .lines()
        .find(|l| l.split_whitespace().last() == Some("init"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|s| s.parse().ok())
        .context("no /init in the Keel initramfs")
}

fn compression_of(path: &Path) -> &'static str {
    let head = std::fs::read(path)
        .map(|b| b.into_iter().take(4).collect::<Vec<u8>>())
        .unwrap_or_default();
    match head.as_slice() {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
        [0xfd, b'7', b'z', b'X'] => "xz",
        [b'0', b'7', b'0', b'7'] => {
            "uncompressed cpio first (early microcode/firmware) then compressed"
        }
        _ => "unknown compression",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_printk_timestamps() {
        let c = "x\n[    2.131014] Run /init as init process\n[   10.5] systemd[1]: hi\n";
        assert_eq!(timestamp_of(c, RUN_INIT), Some(2.131014));
        assert_eq!(timestamp_of(c, SYSTEMD), Some(10.5));
        assert_eq!(timestamp_of(c, "absent"), None);
    }
}
