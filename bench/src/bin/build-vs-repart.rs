//! build-vs-repart: the same disk image — ESP holding a UKI-sized file, BIOS-BOOT, USR-A with
//! its dm-verity tree and a signature, empty USR-B, OEM and ROOT (ext4) — assembled from the same
//! prepared /usr tree by keel's library and by systemd-repart, side by side in one run.
//!
//! Variants, each run once per round, the order rotated every round:
//! * keel/erofs: what `keel build` does (mkfs.erofs with the board default's compression and
//!   cluster size, `mkfs::vfat` and `mkfs::ext4` beside it on a second thread,
//!   `usr_slot::seal`, `disk::write`).
//! * keel/squashfs: the same, with the USR filesystem made by the very mksquashfs command repart
//!   252 runs (it has no erofs), so the filesystem kind does not decide the comparison.
//! * repart: `systemd-repart --empty=create` with repart.d definitions of the same partitions.
//!
//! Then: is each output bit-identical across rounds, and does each USR-A verify with veritysetup.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keel_bench::measure::{median, secs, Steps};
use keel_bench::{command, files, machine};
use keel_blockdev::loopdev::LoopDevice;
use keel_builder::definition::board::{PartitionSizes, UsrFilesystem};
use keel_builder::definition::{Board, Rootfs};
use keel_builder::{disk, mkfs, rootfs_cache, usr_slot};
use keel_cli_support::progress::Reporter;
use keel_format::layout;
use keel_format::metadata::{KernelInfo, VerityInfo};
use keel_signing::Key;

/// 2024-01-01T00:00:00Z, the epoch of Keel's default rootfs definition.
const EPOCH: u64 = 1_704_067_200;
/// The size of a UKI of the default image (kernel + Keel initramfs + stub).
const UKI_BYTES: u64 = 16 << 20;
/// Fixed so that repart derives the same partition and disk GUIDs every run.
const REPART_SEED: &str = "0e1d7bb4-5f4b-4b2a-9f77-2a3c1c0f4e11";
const MIB: u64 = 1 << 20;

#[derive(Parser)]
#[command(about = "keel's image assembly against systemd-repart on the same /usr tree")]
struct Args {
    /// The prepared /usr tree [default: a copy of the board's keel rootfs cache entry's /usr in
    /// WORK/usr-tree-<key>]
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Work directory; must be on a disk-backed filesystem (not tmpfs)
    #[arg(long, default_value = "/var/tmp/keel-bench/build-vs-repart")]
    work: PathBuf,
    /// Rounds; every variant runs once per round (2 at least, for the reproducibility check)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Board whose partition sizes both images get [default: boards/qemu-x86_64.yaml]
    #[arg(long)]
    board: Option<PathBuf>,
    /// Leave out keel/squashfs (it spends most of its time in mksquashfs)
    #[arg(long)]
    no_squashfs: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    KeelErofs,
    KeelSquashfs,
    Repart,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::KeelErofs => "keel/erofs",
            Variant::KeelSquashfs => "keel/squashfs",
            Variant::Repart => "repart",
        }
    }
}

struct Inputs {
    tree: PathBuf,
    uki: PathBuf,
    sizes: PartitionSizes,
    key: Key,
    repart_key: PathBuf,
    repart_cert: PathBuf,
}

/// One timed run and what it left behind.
struct Run {
    steps: Steps,
    /// Wall time: keel runs some steps beside each other, so it can be less than their sum.
    wall: f64,
    /// Seconds spent making the USR filesystem (for repart: its mksquashfs child, timed by a
    /// wrapper on its PATH).
    fs_secs: f64,
    disk: PathBuf,
    /// keel: the signed verity description of USR-A.
    verity: Option<VerityInfo>,
    /// sha256 of the disk image and of each partition (name, sha256).
    sha256: String,
    parts: Vec<(String, String)>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds < 2 {
        bail!("--rounds must be 2 or more: the reproducibility check compares two rounds");
    }
    for tool in [
        "systemd-repart",
        "mksquashfs",
        "mkfs.erofs",
        "mkfs.vfat",
        "mcopy",
        "mkfs.ext4",
        "veritysetup",
        "losetup",
        "sfdisk",
        "openssl",
    ] {
        if !command::exists(tool) {
            bail!("{tool} is not installed");
        }
    }
    std::fs::create_dir_all(&args.work)?;
    let inputs = prepare(&args)?;
    let (tree_bytes, tree_entries) = files::tree_size(&inputs.tree)?;
    let repart_version = command::stdout(Command::new("systemd-repart").arg("--version"))?;

    println!("build-vs-repart");
    println!("machine: {}", machine::describe());
    println!(
        "input: {} ({} MiB in {} entries), partitions ESP {} MiB, USR {} MiB, OEM {} MiB, ROOT {} MiB, UKI-sized file {} MiB",
        inputs.tree.display(),
        tree_bytes / MIB,
        tree_entries,
        inputs.sizes.esp_mib,
        inputs.sizes.usr_mib,
        inputs.sizes.oem_mib,
        inputs.sizes.root_mib,
        UKI_BYTES / MIB
    );
    println!(
        "peer: {}",
        repart_version.lines().next().unwrap_or("systemd-repart")
    );
    files::warm_page_cache(&inputs.tree)?;

    let mut variants = vec![Variant::KeelErofs, Variant::KeelSquashfs, Variant::Repart];
    if args.no_squashfs {
        variants.retain(|v| *v != Variant::KeelSquashfs);
    }
    let mut runs: Vec<(Variant, Run)> = Vec::new();
    for round in 0..args.rounds {
        let mut order = variants.clone();
        order.rotate_left(round % variants.len());
        for v in order {
            let dir = args
                .work
                .join(format!("{}-{round}", v.name().replace('/', "-")));
            let run = match v {
                Variant::KeelErofs => keel(&inputs, &dir, UsrFs::Erofs)?,
                Variant::KeelSquashfs => keel(&inputs, &dir, UsrFs::Squashfs)?,
                Variant::Repart => repart(&inputs, &dir)?,
            };
            let inside = if v == Variant::Repart {
                format!(", of which mksquashfs {:.2} s", run.fs_secs)
            } else {
                String::new()
            };
            println!(
                "round {} {:<14} {:>8}  ({}{inside}) [{}]",
                round + 1,
                v.name(),
                secs(std::time::Duration::from_secs_f64(run.wall)),
                run.steps.summary(),
                machine::load()
            );
            // The first round's images stay for the verity check; later ones are only hashed.
            if round > 0 {
                let _ = std::fs::remove_dir_all(&dir);
            }
            runs.push((v, run));
        }
    }

    println!();
    report(&args, &variants, &runs)?;
    println!();
    check_verity(&runs)?;
    for (_, r) in runs.iter() {
        if let Some(d) = r.disk.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    Ok(())
}

/// The tree, a UKI-sized file, the board's sizes, the signing keys of both tools.
fn prepare(args: &Args) -> Result<Inputs> {
    let board_path = match &args.board {
        Some(b) => b.clone(),
        None => keel_builder::keys::default_board()?,
    };
    let board = Board::load(&board_path)?;
    let tree = match &args.tree {
        Some(t) => t.clone(),
        None => {
            // The board's own cache entry (the cache may hold other boards' trees, newer), copied
            // once per entry.
            let rootfs = Rootfs::load(&board.rootfs)?;
            let key = rootfs_cache::cache_key(&rootfs, &board.kernel)?;
            let cached = Path::new(rootfs_cache::DEFAULT_CACHE).join(&key);
            if !cached.join("usr").is_dir() {
                bail!(
                    "no rootfs cache entry {} for {}: run `keel build --board {}` once",
                    cached.display(),
                    board_path.display(),
                    board_path.display()
                );
            }
            let t = args.work.join(format!("usr-tree-{}", &key[..12]));
            if !t.is_dir() {
                let tmp = args.work.join("usr-tree.tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                command::run(
                    Command::new("cp")
                        .arg("-a")
                        .arg(cached.join("usr"))
                        .arg(&tmp),
                )?;
                std::fs::rename(&tmp, &t)?;
            }
            t
        }
    };
    let uki = args.work.join("uki-sized.efi");
    if std::fs::metadata(&uki).map(|m| m.len()).ok() != Some(UKI_BYTES) {
        files::incompressible_file(&uki, UKI_BYTES)?;
    }
    let repart_key = args.work.join("repart-key.pem");
    let repart_cert = args.work.join("repart-cert.pem");
    if !repart_cert.is_file() {
        command::run(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                ])
                .args(["-subj", "/CN=keel-bench"])
                .arg("-keyout")
                .arg(&repart_key)
                .arg("-out")
                .arg(&repart_cert),
        )?;
    }
    Ok(Inputs {
        tree,
        uki,
        sizes: board.partitions,
        key: Key::from_seed([7; 32]),
        repart_key,
        repart_cert,
    })
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[derive(Clone, Copy)]
enum UsrFs {
    Erofs,
    Squashfs,
}

/// keel's assembly through its library, the steps of `keel build` after the USR tree.
fn keel(inp: &Inputs, dir: &Path, fs: UsrFs) -> Result<Run> {
    fresh_dir(dir)?;
    let body = dir.join("usr.body");
    let esp = dir.join("esp.img");
    let oem = dir.join("oem.img");
    let root = dir.join("root.img");
    let disk_path = dir.join("disk.raw");
    let started = std::time::Instant::now();
    let mut s = Steps::default();
    // As keel build: the ESP and the ext4 filesystems on a second thread beside the USR
    // filesystem, whose tool uses one core.
    let (usr_fs, beside) = std::thread::scope(|scope| {
        let beside = scope.spawn(|| -> Result<Steps> {
            let mut t = Steps::default();
            t.run("vfat", || esp_image(inp, &esp))?;
            t.run("ext4", || -> keel_builder::Result<()> {
                for (img, label, mib) in [
                    (&oem, "OEM", inp.sizes.oem_mib),
                    (&root, "ROOT", inp.sizes.root_mib),
                ] {
                    mkfs::ext4(
                        img,
                        mib * MIB,
                        label,
                        mkfs::derived_uuid(&format!("{label}-fs"), "bench"),
                        mkfs::derived_uuid(&format!("{label}-hash-seed"), "bench"),
                        EPOCH,
                    )?;
                }
                Ok(())
            })?;
            Ok(t)
        });
        let usr_fs = match fs {
            UsrFs::Erofs => s.run("mkfs.erofs", || {
                mkfs::erofs(
                    &inp.tree,
                    &body,
                    EPOCH,
                    mkfs::derived_uuid("usr-fs", "bench"),
                    &UsrFilesystem::default(),
                )
                .map_err(anyhow::Error::from)
            }),
            UsrFs::Squashfs => s.run("mksquashfs", || mksquashfs(&inp.tree, &body)),
        };
        (usr_fs, beside.join().expect("the ESP/ext4 thread panicked"))
    });
    usr_fs?;
    for (name, took) in beside?.0 {
        s.0.push((format!("{name} (beside)"), took));
    }
    let slot = s.run("verity+sign", || {
        usr_slot::seal(&body, describe(), &inp.key, &Reporter::hidden())
    })?;
    s.run("disk", || {
        disk::write(
            &disk_path,
            &disk::plan(&inp.sizes),
            &disk::Contents {
                esp: &esp,
                usr_a_body: &slot.body,
                usr_a_metadata: &slot.block,
                oem: &oem,
                root: &root,
            },
            &Reporter::hidden(),
        )
    })?;
    // Only the disk image is the output; the pieces go before it is hashed.
    for p in [&body, &esp, &oem, &root] {
        std::fs::remove_file(p)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let fs_secs = s.0[0].1.as_secs_f64();
    finish(s, wall, fs_secs, disk_path, Some(slot.metadata.verity))
}

/// The command systemd-repart 252 runs for `Format=squashfs` (there onto the partition's loop
/// device), so keel/squashfs and repart make the same filesystem.
fn mksquashfs(tree: &Path, out: &Path) -> Result<()> {
    command::run(
        Command::new("mksquashfs")
            .arg(tree)
            .arg(out)
            .args(["-quiet", "-noappend"])
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string()),
    )?;
    Ok(())
}

fn describe() -> usr_slot::Describe {
    usr_slot::Describe {
        version: "1.0.0".into(),
        channel: "stable".into(),
        arch: "x86_64".into(),
        board: "bench".into(),
        build_time: EPOCH,
        kernel: KernelInfo {
            release: "bench".into(),
            build: "bench".into(),
            image: "lib/modules/bench/vmlinuz".into(),
            initramfs: "lib/modules/bench/keel-initramfs.img".into(),
        },
    }
}

/// systemd-repart building the same partitions from repart.d definitions.
fn repart(inp: &Inputs, dir: &Path) -> Result<Run> {
    fresh_dir(dir)?;
    let defs = dir.join("repart.d");
    let esp = dir.join("esp.img");
    let disk_path = dir.join("disk.raw");
    write_definitions(&defs, inp, &esp)?;
    let times = dir.join("mksquashfs.times");
    let path = mksquashfs_timer(dir, &times)?;
    let mut s = Steps::default();
    // repart 252 fills a vfat partition by mounting it, and this host's kernel has no vfat:
    // the ESP is made by the same call keel uses and handed to repart with CopyBlocks=.
    s.run("vfat", || esp_image(inp, &esp))?;
    s.run("systemd-repart", || -> Result<()> {
        command::run(
            Command::new("systemd-repart")
                .args([
                    "--empty=create",
                    "--size=auto",
                    "--dry-run=no",
                    "--no-pager",
                ])
                .arg(format!("--seed={REPART_SEED}"))
                .arg(format!("--definitions={}", defs.display()))
                .arg(format!("--private-key={}", inp.repart_key.display()))
                .arg(format!("--certificate={}", inp.repart_cert.display()))
                .arg(&disk_path)
                .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
                .env("PATH", &path),
        )?;
        // keel's disk::write ends with fsync; make sure repart's image is on disk too.
        File::open(&disk_path)?.sync_all()?;
        Ok(())
    })?;
    std::fs::remove_file(&esp)?;
    let fs_secs = std::fs::read_to_string(&times)
        .ok()
        .and_then(|t| {
            let v: Vec<f64> = t
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| v[1] - v[0])
        })
        .context("repart did not run mksquashfs through the timing wrapper")?;
    let wall = s.total().as_secs_f64();
    finish(s, wall, fs_secs, disk_path, None)
}

/// A `mksquashfs` first on repart's PATH that runs the real one and notes when it started and
/// ended: what repart spends outside the filesystem becomes visible. Returns the PATH to use.
fn mksquashfs_timer(dir: &Path, times: &Path) -> Result<String> {
    let real = command::stdout(Command::new("sh").args(["-c", "command -v mksquashfs"]))?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let wrapper = bin.join("mksquashfs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
s=$(date +%s.%N)
{} \"$@\"
rc=$?
echo \"$s $(date +%s.%N)\" > '{}'
exit $rc
",
            real.trim(),
            times.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    Ok(format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    ))
}

fn write_definitions(defs: &Path, inp: &Inputs, esp: &Path) -> Result<()> {
    std::fs::create_dir_all(defs)?;
    let z = &inp.sizes;
    let fixed = |mib: u64| format!("SizeMinBytes={mib}M\nSizeMaxBytes={mib}M\n");
    // dm-verity in repart 252 hashes 512-byte blocks of the whole data partition: about 66
    // MiB of tree per GiB, and a little more for the upper levels.
    let hash_mib = (z.usr_mib * 66).div_ceil(1024) + 4;
    let files = [
        (
            "10-esp.conf",
            format!(
                "[Partition]\nType=esp\nLabel=EFI-SYSTEM\nCopyBlocks={}\n{}",
                esp.display(),
                fixed(z.esp_mib)
            ),
        ),
        (
            "20-bios-boot.conf",
            format!(
                "[Partition]\nType={}\nLabel=BIOS-BOOT\n{}",
                layout::BIOS_BOOT.type_guid,
                fixed(z.bios_boot_mib)
            ),
        ),
        (
            "30-usr-a.conf",
            format!(
                "[Partition]\nType=usr\nLabel=USR-A\nFormat=squashfs\nCopyFiles={}:/\nVerity=data\nVerityMatchKey=usr\n{}",
                inp.tree.display(),
                fixed(z.usr_mib)
            ),
        ),
        (
            "31-usr-a-verity.conf",
            format!(
                "[Partition]\nType=usr-verity\nLabel=USR-A-verity\nVerity=hash\nVerityMatchKey=usr\n{}",
                fixed(hash_mib)
            ),
        ),
        (
            "32-usr-a-signature.conf",
            "[Partition]\nType=usr-verity-sig\nLabel=USR-A-signature\nVerity=signature\nVerityMatchKey=usr\n".to_string(),
        ),
        (
            "40-usr-b.conf",
            format!("[Partition]\nType=usr\nLabel=USR-B\n{}", fixed(z.usr_mib)),
        ),
        (
            "60-oem.conf",
            format!(
                "[Partition]\nType=linux-generic\nLabel=OEM\nFormat=ext4\n{}",
                fixed(z.oem_mib)
            ),
        ),
        (
            "90-root.conf",
            format!(
                "[Partition]\nType=root\nLabel=ROOT\nFormat=ext4\n{}",
                fixed(z.root_mib)
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(defs.join(name), text)?;
    }
    Ok(())
}

/// Hash the disk and each partition (outside the timing).
fn finish(
    steps: Steps,
    wall: f64,
    fs_secs: f64,
    disk: PathBuf,
    verity: Option<VerityInfo>,
) -> Result<Run> {
    let sha256 = files::sha256(&disk)?;
    let mut parts = Vec::new();
    // The GPT header and entries at both ends.
    let len = std::fs::metadata(&disk)?.len();
    parts.push((
        "GPT (primary)".to_string(),
        files::range_sha256(&disk, 0, MIB)?,
    ));
    parts.push((
        "GPT (backup)".to_string(),
        files::range_sha256(&disk, len - 33 * 512, 33 * 512)?,
    ));
    for p in files::partitions(&disk)? {
        parts.push((
            p.label.clone(),
            files::range_sha256(&disk, p.offset(), p.size())?,
        ));
    }
    Ok(Run {
        steps,
        wall,
        fs_secs,
        disk,
        verity,
        sha256,
        parts,
    })
}

fn report(args: &Args, variants: &[Variant], runs: &[(Variant, Run)]) -> Result<()> {
    let totals = |v: Variant| -> Vec<f64> {
        runs.iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, r)| r.wall)
            .collect()
    };
    println!("median wall time over {} rounds:", args.rounds);
    let repart = median(&totals(Variant::Repart));
    for v in variants {
        let m = median(&totals(*v));
        let what = match v {
            Variant::KeelErofs => "keel, erofs (the board default)",
            Variant::KeelSquashfs => "keel, squashfs gzip (repart's mksquashfs command)",
            Variant::Repart => "systemd-repart, squashfs gzip, 512-byte verity blocks",
        };
        println!("  {:<14} {:>8.2} s   {what}", v.name(), m);
    }
    let erofs = median(&totals(Variant::KeelErofs));
    println!(
        "ratio keel/erofs : repart = {:.3}  (repart takes {:.1}x as long; target 0.25 or less)",
        erofs / repart,
        repart / erofs
    );
    if variants.contains(&Variant::KeelSquashfs) {
        let sq = median(&totals(Variant::KeelSquashfs));
        println!(
            "ratio keel/squashfs : repart = {:.3}  (the same mksquashfs command on both sides; it dominates and varies with the load)",
            sq / repart
        );
    }
    let fs = |v: Variant| {
        median(
            &runs
                .iter()
                .filter(|(w, _)| *w == v)
                .map(|(_, r)| r.fs_secs)
                .collect::<Vec<_>>(),
        )
    };
    let rest = |v: Variant| {
        median(
            &runs
                .iter()
                .filter(|(w, _)| *w == v)
                .map(|(_, r)| r.wall - r.fs_secs)
                .collect::<Vec<_>>(),
        )
    };
    println!("the USR filesystem alone (median):");
    let usr = UsrFilesystem::default();
    println!(
        "  mkfs.erofs {:?}, {} KiB clusters (keel) {:6.2} s",
        usr.compression,
        usr.physical_cluster_kib,
        fs(Variant::KeelErofs)
    );
    if variants.contains(&Variant::KeelSquashfs) {
        println!(
            "  mksquashfs (keel/squashfs)         {:6.2} s",
            fs(Variant::KeelSquashfs)
        );
    }
    println!(
        "  mksquashfs (inside repart)         {:6.2} s",
        fs(Variant::Repart)
    );
    println!("everything but the filesystem (verity, signature, ESP, ext4, GPT, copying; keel makes the ESP and ext4 beside it; median):");
    for v in variants {
        println!("  {:<14} {:6.2} s", v.name(), rest(*v));
    }
    println!(
        "ratio keel : repart without the filesystem = {:.3}",
        rest(Variant::KeelErofs) / rest(Variant::Repart)
    );

    println!();
    println!("bit-reproducible across rounds:");
    for v in variants {
        let these: Vec<&Run> = runs
            .iter()
            .filter(|(w, _)| w == v)
            .map(|(_, r)| r)
            .collect();
        let first = these[0];
        let same = these.iter().all(|r| r.sha256 == first.sha256);
        if same {
            println!(
                "  {:<14} yes: {} identical images, sha256 {}",
                v.name(),
                these.len(),
                first.sha256
            );
        } else {
            let mut differ = String::new();
            for (i, (name, sha)) in first.parts.iter().enumerate() {
                if these
                    .iter()
                    .any(|r| r.parts.get(i).map(|p| &p.1) != Some(sha))
                {
                    let _ = write!(
                        differ,
                        "{}{name}",
                        if differ.is_empty() { "" } else { ", " }
                    );
                }
            }
            println!(
                "  {:<14} NO: the images differ in: {}",
                v.name(),
                if differ.is_empty() {
                    "(no single region; sizes differ)".to_string()
                } else {
                    differ
                }
            );
        }
    }
    Ok(())
}

/// veritysetup (userspace, no device-mapper) checks USR-A of the first round of each variant
/// against the root hash the tool recorded.
fn check_verity(runs: &[(Variant, Run)]) -> Result<()> {
    println!("veritysetup verify of USR-A (first round):");
    let mut seen = Vec::new();
    for (v, r) in runs {
        if seen.contains(v) {
            continue;
        }
        seen.push(*v);
        let parts = files::partitions(&r.disk)?;
        let find = |name: &str| {
            parts
                .iter()
                .find(|p| p.label == name)
                .cloned()
                .with_context(|| format!("{}: no partition {name}", r.disk.display()))
        };
        let usr = find("USR-A")?;
        let out = match &r.verity {
            Some(vi) => {
                let dev = LoopDevice::attach(&r.disk, usr.offset(), usr.size(), false)?;
                command::run(
                    Command::new("veritysetup")
                        .arg("verify")
                        .arg(dev.path())
                        .arg(dev.path())
                        .arg(&vi.root_hash)
                        .arg(format!("--hash-offset={}", vi.hash_offset)),
                )
                .map(|_| format!("root hash {} OK (signed metadata block)", vi.root_hash))
            }
            None => {
                let hash = find("USR-A-verity")?;
                let sig = find("USR-A-signature")?;
                let raw = read_range(&r.disk, sig.offset(), sig.size())
                    .context("reading the signature partition")?;
                let text = String::from_utf8_lossy(&raw);
                let json: serde_json::Value =
                    serde_json::from_str(text.trim_end_matches('\0').trim())
                        .context("signature partition is not JSON")?;
                let root = json["rootHash"]
                    .as_str()
                    .context("signature partition has no rootHash")?
                    .to_string();
                let data_dev = LoopDevice::attach(&r.disk, usr.offset(), usr.size(), false)?;
                let hash_dev = LoopDevice::attach(&r.disk, hash.offset(), hash.size(), false)?;
                command::run(
                    Command::new("veritysetup")
                        .arg("verify")
                        .arg(data_dev.path())
                        .arg(hash_dev.path())
                        .arg(&root),
                )
                .map(|_| format!("root hash {root} OK (signature partition)"))
            }
        };
        match out {
            Ok(s) => println!("  {:<14} {s}", v.name()),
            Err(e) => println!("  {:<14} FAILED: {e:#}", v.name()),
        }
    }
    Ok(())
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// The ESP with the UKI, made the way keel build makes it (both runs use it: repart 252 would
/// mount a vfat, which this host's kernel lacks).
fn esp_image(inp: &Inputs, esp: &Path) -> keel_builder::Result<()> {
    mkfs::vfat(
        esp,
        inp.sizes.esp_mib * MIB,
        "EFI-SYSTEM",
        EPOCH,
        &[(&inp.uki, "EFI/BOOT/BOOTX64.EFI")],
    )
}
