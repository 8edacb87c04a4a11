//! container-host: the default Keel image as a container host against the same Debian packages
//! booted the usual way (initramfs-tools, ext4 root, the packages' own units: Docker enabled at
//! boot), both running CoreOS's classic hello.service. Same kernel, same QEMU (TCG, direct kernel
//! boot, 2 GiB, 2 vCPUs unless $KEEL_QEMU_SMP says otherwise), same registry: busybox from Debian's docker-registry on the host's
//! loopback, reached as the mirror 10.0.2.100:5000 (a QEMU guest forward).
//!
//! Printed per boot: kernel start to the container's first `Hello World` (printk timestamps on
//! the console), and the memory in use (`free`'s "used") 30 s after the container runs. Then image sizes:
//! Keel's signed USR payload and disk against the Debian tree and its ext4 disk.
//!
//! Both machines get the same files: the mirror drop-in for docker.service and a unit that
//! prints `free -k` 30 s after `docker ps` first shows the container. Keel's are baked in with `keel build
//! --extra-file`; Debian's copied into its tree, with hello.service, Keel's DHCP .network
//! (systemd-networkd enabled: a minbase Debian configures no network) and an /etc/fstab for
//! the root (a minbase tree has none, and the root would stay read-only).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keel_bench::direct_boot::{self, timestamp_of, BootSetup};
use keel_bench::measure::median;
use keel_bench::{command, files, machine};
use keel_qemu::{NetOptions, Session};
use keel_testkit::registry::Registry;

const HELLO: &str = "]: Hello World";
const MEM_MARK: &str = "KEEL-BENCH-MEM used_kib=";
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const MIB: f64 = 1024.0 * 1024.0;
const MIRROR: ([u8; 4], u16) = ([10, 0, 2, 100], 5000);

const MIRROR_DROP_IN: &str = "[Service]\n\
    Environment=DOCKER_OPTS='--insecure-registry=\"10.0.2.0/24\" --registry-mirror=http://10.0.2.100:5000'\n";
const MEM_SCRIPT: &str = "#!/bin/sh\n\
    # 30 s after the container runs: the memory in use (free's \"used\").\n\
    until docker ps --format '{{.Names}}' | grep -qx busybox1; do sleep 1; done\n\
    sleep 30\n\
    echo \"KEEL-BENCH-MEM used_kib=$(free -k | awk '/^Mem:/ {print $3}')\"\n";
const MEM_UNIT: &str = "[Unit]\n\
    Description=keel-bench: memory in use 30 s after the demo container runs\n\
    After=hello.service\n\n\
    [Service]\n\
    ExecStart=/etc/keel-bench/mem.sh\n\
    StandardOutput=journal+console\n\n\
    [Install]\n\
    WantedBy=multi-user.target\n";

#[derive(Parser)]
#[command(
    about = "Keel's container host against Debian booted the usual way: time to the \
                   container's Hello World, memory in use, image size"
)]
struct Args {
    /// Work directory (images, Debian tree copy, disks, console logs)
    #[arg(long, default_value = "/var/tmp/keel-bench/container-host")]
    work: PathBuf,
    /// Boots per machine (each a first boot)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// keel binary [default: target/release/keel]
    #[arg(long)]
    keel: Option<PathBuf>,
}

struct Marks {
    hello: f64,
    used_kib: u64,
}

fn bench_files() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "50-registry-mirror.conf",
            "/etc/systemd/system/docker.service.d/50-registry-mirror.conf",
            MIRROR_DROP_IN,
        ),
        ("mem.sh", "/etc/keel-bench/mem.sh", MEM_SCRIPT),
        (
            "keel-bench-mem.service",
            "/etc/systemd/system/keel-bench-mem.service",
            MEM_UNIT,
        ),
        (
            "keel-bench-mem.wants",
            "/etc/systemd/system/multi-user.target.wants/keel-bench-mem.service",
            "symlink:../keel-bench-mem.service",
        ),
    ]
}

fn main() -> Result<()> {
    let args = Args::parse();
    command::require(&[
        "qemu-system-x86_64",
        "mkfs.ext4",
        "chroot",
        "nc",
        "skopeo",
        "umoci",
    ])?;
    let work = &args.work;
    std::fs::create_dir_all(work.join("logs"))?;
    let keel_bin = command::keel_binary(args.keel.as_deref())?;
    let extra = keel_testkit::write_extra_files(&work.join("files"), &bench_files());
    let image = work.join("image");
    if !image.join("disk.raw").is_file() {
        eprintln!(
            "building {} (the default board, keel build)",
            image.display()
        );
        let mut cmd = std::process::Command::new(&keel_bin);
        cmd.args(["build", "--quiet", "--format", "raw", "--out"])
            .arg(&image)
            .args(&extra);
        command::run(&mut cmd)?;
    }
    let keel = direct_boot::keel(&image.join("disk.raw"), &work.join("uki"))?;
    let repo = keel_testkit::repo_root();
    let tree = direct_boot::tree_of_image(&image)?;
    let debian = direct_boot::debian(work, "debian-docker", &tree, &keel.kernel, |tree| {
        let rootfs_files = repo.join("rootfs/debian-bookworm/files");
        for rel in [
            "usr/lib/systemd/system/hello.service",
            "usr/lib/systemd/network/99-keel-default-dhcp.network",
        ] {
            let to = tree.join(rel);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::copy(rootfs_files.join(rel), &to)?;
        }
        keel_testkit::write_extra_files(&work.join("debian-files"), &bench_files());
        for (name, dest, _) in bench_files() {
            let to = tree.join(dest.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap())?;
            let from = work.join("debian-files").join(name);
            let _ = std::fs::remove_file(&to);
            if from.symlink_metadata()?.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                // fs::copy keeps the mode: the script stays executable.
                std::fs::copy(&from, &to)?;
            }
        }
        // As Debian's installer writes it; without it the root stays read-only.
        std::fs::write(
            tree.join("etc/fstab"),
            "LABEL=root / ext4 errors=remount-ro 0 1\n",
        )?;
        let wants = tree.join("etc/systemd/system/multi-user.target.wants");
        for (unit, dir) in [
            ("hello.service", "/usr/lib/systemd/system"),
            ("systemd-networkd.service", "/lib/systemd/system"),
        ] {
            let link = wants.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("{dir}/{unit}"), &link)?;
        }
        Ok(())
    })?;

    let registry = Registry::start();
    registry.push_busybox();

    println!("container-host");
    println!("machine: {}", machine::describe());
    println!(
        "same kernel, QEMU TCG, direct kernel boot, 2 GiB, {} vCPU(s); {} first boots per machine; \
         busybox from a docker-registry on the host's loopback",
        keel_qemu::default_smp(),
        args.runs
    );
    let mut keel_marks = Vec::new();
    let mut debian_marks = Vec::new();
    for run in 0..args.runs {
        for (name, setup, marks) in [
            ("keel", &keel, &mut keel_marks),
            ("debian", &debian, &mut debian_marks),
        ] {
            let log = work.join("logs").join(format!("{name}-{run}.log"));
            let m = boot(setup, &log, registry.port)
                .with_context(|| format!("{name} boot {}: console {}", run + 1, log.display()))?;
            println!(
                "run {} {name:<7} container's Hello World at {:7.2} s, {:6.1} MiB in use 30 s later [{}]",
                run + 1,
                m.hello,
                m.used_kib as f64 / 1024.0,
                machine::load()
            );
            marks.push(m);
        }
    }
    let med = |m: &[Marks], f: fn(&Marks) -> f64| median(&m.iter().map(f).collect::<Vec<_>>());
    let hello = |m: &Marks| m.hello;
    let used = |m: &Marks| m.used_kib as f64 / 1024.0;
    println!();
    println!("medians              kernel start → Hello World   memory in use");
    for (name, m) in [("keel", &keel_marks), ("debian", &debian_marks)] {
        println!(
            "  {name:<18} {:10.2} s {:23.1} MiB",
            med(m, hello),
            med(m, used)
        );
    }
    println!(
        "ratio keel : debian — time to Hello World {:.3}, memory in use {:.3}",
        med(&keel_marks, hello) / med(&debian_marks, hello),
        med(&keel_marks, used) / med(&debian_marks, used)
    );

    let usr = std::fs::metadata(image.join("usr.img"))?.len() as f64;
    let (tree_usr, _) = files::tree_size(&work.join("debian-docker-root/usr"))?;
    let keel_disk = allocated(&image.join("disk.raw"))?;
    let debian_disk = allocated(&debian.disk)?;
    println!(
        "size: Keel USR payload (erofs lz4hc + verity, signed) {:.1} MiB against Debian's /usr {:.1} MiB (ratio {:.3}); \
         disks as allocated: Keel {:.1} MiB (both USR slots, ESP, OEM, ROOT) against Debian {:.1} MiB",
        usr / MIB,
        tree_usr as f64 / MIB,
        usr / tree_usr as f64,
        keel_disk / MIB,
        debian_disk / MIB
    );
    println!("console logs: {}", work.join("logs").display());
    Ok(())
}

/// Bytes a sparse file really holds.
fn allocated(path: &Path) -> Result<f64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() as f64 * 512.0)
}

fn boot(s: &BootSetup, log: &Path, registry_port: u16) -> Result<Marks> {
    let mut o = direct_boot::options(s, log);
    o.mem_mb = 2048;
    o.net = Some(NetOptions {
        guest_forwards: vec![(MIRROR.0.into(), MIRROR.1, registry_port)],
        ..NetOptions::default()
    });
    let mut vm = Session::start(&o)?;
    vm.wait_for(HELLO, BOOT_TIMEOUT)?;
    vm.wait_for(MEM_MARK, BOOT_TIMEOUT)?;
    std::thread::sleep(Duration::from_millis(300));
    let text = vm.log();
    vm.kill()?;
    let hello = timestamp_of(&text, HELLO).context("no Hello World line")?;
    let used_kib = text
        .lines()
        .find_map(|l| l.split(MEM_MARK).nth(1))
        .and_then(|v| v.trim().parse().ok())
        .context("no memory line")?;
    Ok(Marks { hello, used_kib })
}
