//! cloudconfig-vs-cloud-init: the same cloud-config (a hostname, a user with an ssh key, three
//! files, a unit) applied at first boot by Keel's keel-cloudinit and by Debian's cloud-init, in
//! the same TCG QEMU, from the same kind of NoCloud seed (a vfat `cidata` disk).
//!
//! * keel: the default image (boards/qemu-x86_64.yaml) built by `keel build`.
//! * cloud-init: the same board and rootfs definition with Debian's `cloud-init` package added
//!   and keel-cloudinit.service left out of `enable_units` (so only cloud-init applies the
//!   config), derived from the repository's definitions at run time, and a
//!   `/etc/cloud/cloud.cfg.d/` file limiting the datasources to NoCloud (and None) and leaving
//!   the network to the image's systemd-networkd, as keel-cloudinit does.
//!
//! Both images carry the e2e test driver (keel_testkit), which runs the script on /dev/vdb
//! after multi-user.target. The script waits for the boot to finish (`systemctl
//! is-system-running --wait`, so cloud-init's final stage is over), checks from inside the
//! guest that each of the four things is in place, and prints systemd's CLOCK_MONOTONIC
//! timestamps (microseconds since the kernel started) of the tool's units, the unit the config
//! defines and multi-user.target. Each boot is a first boot on a fresh overlay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use keel_bench::measure::median;
use keel_bench::{command, files, machine, seed, uki};
use keel_qemu::{Accel, BootOptions, NetOptions, Session};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDl818Je4Erm275M0NHIx4OJ0N4uuNQb/nWy/M8LXKy3 bench@keel";

const UNIT_NAME: &str = "bench-unit.service";
const UNIT: &str = "[Unit]
Description=cloud-config benchmark unit

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo ran > /run/bench-unit'

[Install]
WantedBy=multi-user.target
";

/// The three files, in both documents: (path, mode, content).
const FILES: [(&str, &str, &str); 3] = [
    ("/etc/bench/one.conf", "0644", "one"),
    ("/etc/bench/two.conf", "0600", "two"),
    ("/var/lib/bench/three.txt", "0644", "three"),
];

/// cloud-init's settings in the cloud-init image: NoCloud only (None is its fallback, which
/// probes nothing); no network configuration (keel-cloudinit leaves the network to the
/// image's systemd-networkd too, and the image has none of the renderers cloud-init looks for
/// first: ifupdown, netplan); locale C.UTF-8, which needs no generating (its default,
/// en_US.UTF-8, is not in the minbase image's /etc/locale.gen, so `locale-gen` makes nothing,
/// `update-locale` refuses it and cloud-config.service fails).
const CLOUD_CFG: &str = "# keel bench: NoCloud only, network left to systemd-networkd\n\
datasource_list: [ NoCloud, None ]\n\
network:\n  config: disabled\n\
locale: C.UTF-8\n";

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "cloud-config at first boot: keel-cloudinit against Debian's cloud-init")]
struct Args {
    /// Work directory (definitions, images, seeds, console logs)
    #[arg(long, default_value = "/var/tmp/keel-bench/cloudconfig")]
    work: PathBuf,
    /// Boots per tool
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds one boot may take, from QEMU's start to the guest's report
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The keel binary [default: $KEEL_BIN, else `keel` next to this benchmark's binary]
    #[arg(long)]
    keel: Option<PathBuf>,
    /// Build both images again even when the work directory has them
    #[arg(long)]
    rebuild: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Keel,
    CloudInit,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Keel => "keel-cloudinit",
            Tool::CloudInit => "cloud-init",
        }
    }

    /// The units that apply the config, in the order they run; the last one's end is "config
    /// applied".
    fn stages(self) -> &'static [&'static str] {
        match self {
            Tool::Keel => &["keel-cloudinit.service"],
            Tool::CloudInit => &[
                "cloud-init-local.service",
                "cloud-init.service",
                "cloud-config.service",
                "cloud-final.service",
            ],
        }
    }

    /// Journal lines timed in each boot: (name, pattern for `grep -e`, first or last match).
    fn journal_lines(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Tool::Keel => &[
                ("found", "keel-cloudinit: user-data from", true),
                ("written", "keel-cloudinit: /dev/vdc:user-data:", false),
                ("done", "keel-cloudinit: applied", true),
            ],
            Tool::CloudInit => &[("done", "Cloud-init v. .* finished at", true)],
        }
    }

    /// The user-data, each in its tool's language: coreos-cloudinit's `coreos.units` for
    /// Keel; for cloud-init (which has no units key) the unit as a fourth write_files entry
    /// and `runcmd` enabling and starting it, in its final stage.
    fn user_data(self) -> String {
        let mut s = format!(
            "#cloud-config\nhostname: bench-host\nusers:\n  - name: bench\n    ssh_authorized_keys:\n      - {KEY}\nwrite_files:\n"
        );
        for (path, mode, content) in FILES {
            s += &format!(
                "  - path: {path}\n    permissions: '{mode}'\n    content: |\n      {content}\n"
            );
        }
        let unit = indent(UNIT, 8);
        match self {
            Tool::Keel => {
                s += &format!(
                    "coreos:\n  units:\n    - name: {UNIT_NAME}\n      enable: true\n      command: start\n      content: |\n{unit}"
                );
            }
            Tool::CloudInit => {
                s += &format!(
                    "  - path: /etc/systemd/system/{UNIT_NAME}\n    permissions: '0644'\n    content: |\n{}runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, enable, --now, {UNIT_NAME}]\n",
                    indent(UNIT, 6)
                );
            }
        }
        s
    }
}

fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{}{l}\n", " ".repeat(n))
            }
        })
        .collect()
}

/// What one boot measured, in seconds since the kernel started.
#[derive(Clone, Debug)]
struct Marks {
    /// (unit, start, end) of each stage.
    stages: Vec<(String, f64, f64)>,
    /// The unit the config defines became active.
    unit_active: f64,
    multi_user: f64,
    /// Journal timestamps of [`Tool::journal_lines`] that were found, by name ("done": the
    /// tool's own last line, keel-cloudinit's `applied`, cloud-init's `finished at`).
    lines: BTreeMap<String, f64>,
    /// `systemd-analyze` and, for cloud-init, `cloud-init status` and `analyze blame`.
    notes: Vec<String>,
    host_wall: f64,
}

impl Marks {
    fn applied(&self) -> f64 {
        self.stages.last().map(|s| s.2).unwrap_or(f64::NAN)
    }
    /// The tools' own time: the sum of their stages' run times (not the waits between them).
    fn config_step(&self) -> f64 {
        self.stages.iter().map(|(_, a, b)| b - a).sum()
    }
    fn first_start(&self) -> f64 {
        self.stages.first().map(|s| s.1).unwrap_or(f64::NAN)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    command::require(&[
        "qemu-system-x86_64",
        "mkfs.vfat",
        "mcopy",
        "objcopy",
        "qemu-img",
    ])?;
    let keel = command::keel_binary(args.keel.as_deref())?;
    let work = &args.work;
    std::fs::create_dir_all(work.join("logs"))?;
    let repo = keel_testkit::repo_root();

    // The boot marker keeps Docker out of both boots: the demo container is not what is measured.
    let driver = keel_testkit::write_extra_files(
        &work.join("files/driver"),
        &[
            keel_testkit::boot_marker_files(),
            keel_testkit::driver_files(),
        ]
        .concat(),
    );
    let cloud_cfg = keel_testkit::write_extra_files(
        &work.join("files/cloud-cfg"),
        &[(
            "99-keel-bench.cfg",
            "/etc/cloud/cloud.cfg.d/99-keel-bench.cfg",
            CLOUD_CFG,
        )],
    );
    let keel_board = repo.join("boards/qemu-x86_64.yaml");
    let ci_board = cloud_init_definitions(&repo, &work.join("definitions"))?;

    let keel_image = build(
        &keel,
        &keel_board,
        &work.join("image-keel"),
        &driver,
        args.rebuild,
    )?;
    let ci_extra: Vec<String> = driver.iter().chain(&cloud_cfg).cloned().collect();
    let ci_image = build(
        &keel,
        &ci_board,
        &work.join("image-cloud-init"),
        &ci_extra,
        args.rebuild,
    )?;

    let k = uki::extract(&keel_image.join("disk.raw"), &work.join("uki-keel"))?;
    let c = uki::extract(&ci_image.join("disk.raw"), &work.join("uki-cloud-init"))?;
    let kernel_hash = files::sha256(&k.kernel)?;
    if kernel_hash != files::sha256(&c.kernel)? {
        bail!(
            "the two images' kernels differ ({} and {}): Debian published a new kernel between the builds; run again with --rebuild",
            k.kernel.display(),
            c.kernel.display()
        );
    }

    let seeds = [Tool::Keel, Tool::CloudInit].map(|t| {
        let p = work.join(format!("seed-{}.img", t.name()));
        seed::nocloud(&p, t.user_data().as_bytes(), "keel-bench-1").map(|_| p)
    });
    let [keel_seed, ci_seed] = seeds;
    let (keel_seed, ci_seed) = (keel_seed?, ci_seed?);

    println!("cloudconfig-vs-cloud-init");
    println!("machine: {}", machine::describe());
    println!(
        "same kernel (UKI .linux sha256 {}…), QEMU TCG, OVMF, 1 GiB, {} vCPU(s), virtio-net (user, restricted), NoCloud vfat seed on /dev/vdc; {} first boots per tool",
        &kernel_hash[..12],
        keel_qemu::default_smp(),
        args.runs
    );
    for (t, dir) in [(Tool::Keel, &keel_image), (Tool::CloudInit, &ci_image)] {
        println!(
            "{:<15} image {} (usr.img {:.1} MiB)",
            t.name(),
            dir.display(),
            std::fs::metadata(dir.join("usr.img"))?.len() as f64 / MIB
        );
    }

    let timeout = Duration::from_secs(args.timeout);
    let tools = [Tool::Keel, Tool::CloudInit];
    let mut marks: Vec<(Tool, Marks)> = Vec::new();
    for run in 0..args.runs {
        let mut order = tools.to_vec();
        order.rotate_left(run % tools.len());
        for t in order {
            let (image, seed) = match t {
                Tool::Keel => (&keel_image, &keel_seed),
                Tool::CloudInit => (&ci_image, &ci_seed),
            };
            let log = work.join("logs").join(format!("{}-{run}.log", t.name()));
            let m = boot(t, &image.join("disk.raw"), seed, work, &log, timeout)?;
            let stages: Vec<String> = m
                .stages
                .iter()
                .map(|(u, a, b)| format!("{} {a:.2}→{b:.2}", u.trim_end_matches(".service")))
                .collect();
            println!(
                "run {} {:<15} applied at {:6.2} s (own time {:5.2} s; {}), unit active {:6.2} s, multi-user {:6.2} s, host wall {:6.1} s [{}]",
                run + 1,
                t.name(),
                m.applied(),
                m.config_step(),
                stages.join(", "),
                m.unit_active,
                m.multi_user,
                m.host_wall,
                machine::load()
            );
            marks.push((t, m));
        }
    }

    report(&marks, args.runs);
    println!("console logs: {}", work.join("logs").display());
    Ok(())
}

fn report(marks: &[(Tool, Marks)], runs: usize) {
    let of = |t: Tool| -> Vec<&Marks> {
        marks
            .iter()
            .filter(|(w, _)| *w == t)
            .map(|(_, m)| m)
            .collect()
    };
    let med = |t: Tool, f: &dyn Fn(&Marks) -> f64| -> f64 {
        median(&of(t).iter().map(|m| f(m)).collect::<Vec<_>>())
    };
    println!();
    println!(
        "medians over {runs} boots (seconds since the kernel started; own time = the stages' run times summed)"
    );
    println!(
        "  {:<15} {:>10} {:>10} {:>9} {:>12} {:>11} {:>10}",
        "", "1st stage", "applied", "own time", "unit active", "multi-user", "done line"
    );
    for t in [Tool::Keel, Tool::CloudInit] {
        let done: Vec<f64> = of(t)
            .iter()
            .filter_map(|m| m.lines.get("done").copied())
            .collect();
        println!(
            "  {:<15} {:>10.2} {:>10.2} {:>9.2} {:>12.2} {:>11.2} {:>10}",
            t.name(),
            med(t, &|m| m.first_start()),
            med(t, &|m| m.applied()),
            med(t, &|m| m.config_step()),
            med(t, &|m| m.unit_active),
            med(t, &|m| m.multi_user),
            if done.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", median(&done))
            }
        );
    }
    println!("  per stage (start → end, run time):");
    for t in [Tool::Keel, Tool::CloudInit] {
        for (i, unit) in t.stages().iter().enumerate() {
            println!(
                "    {:<28} {:6.2} → {:6.2}  {:5.2} s",
                unit,
                med(t, &|m| m.stages[i].1),
                med(t, &|m| m.stages[i].2),
                med(t, &|m| m.stages[i].2 - m.stages[i].1)
            );
        }
    }
    // keel-cloudinit's one stage, split by its own journal lines.
    let keel = of(Tool::Keel);
    let split: Option<Vec<(f64, f64, f64)>> = keel
        .iter()
        .map(|m| {
            let l = |k: &str| m.lines.get(k).copied();
            Some((
                l("found")? - m.first_start(),
                l("written")? - l("found")?,
                m.applied() - l("written")?,
            ))
        })
        .collect();
    if let Some(split) = split {
        let col = |f: fn(&(f64, f64, f64)) -> f64| median(&split.iter().map(f).collect::<Vec<_>>());
        println!(
            "  keel-cloudinit.service: start → seed read {:.2} s (udevadm settle, blkid, mount), → last change {:.2} s (hostname, user, key, files, unit), → done {:.2} s (systemctl daemon-reload, start default.target, start the unit; --no-block)",
            col(|s| s.0),
            col(|s| s.1),
            col(|s| s.2)
        );
    }
    let ratio = |f: &dyn Fn(&Marks) -> f64| med(Tool::Keel, f) / med(Tool::CloudInit, f);
    let step = ratio(&|m| m.config_step());
    println!(
        "ratio keel : cloud-init — config step (own time) {:.3} (goal ≤ 0.2: {}), kernel start → config applied {:.3}, → unit active {:.3}, → multi-user.target {:.3}",
        step,
        if step <= 0.2 { "met" } else { "NOT met" },
        ratio(&|m| m.applied()),
        ratio(&|m| m.unit_active),
        ratio(&|m| m.multi_user)
    );
    // The last boot's own account of itself, for where the time goes.
    for t in [Tool::Keel, Tool::CloudInit] {
        if let Some(m) = of(t).last() {
            for n in &m.notes {
                println!("  {} (last boot): {n}", t.name());
            }
        }
    }
}

/// The cloud-init variant of the default board and rootfs, written into `dir`: the rootfs
/// definition with `cloud-init` added to `packages`, keel-cloudinit.service out of
/// `enable_units` and its `files:` made absolute; the board naming it. Returns the board.
fn cloud_init_definitions(repo: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let rootfs_src = repo.join("rootfs/debian-bookworm.yaml");
    let text = std::fs::read_to_string(&rootfs_src)
        .with_context(|| format!("reading {}", rootfs_src.display()))?;
    let mut out = format!(
        "# Generated by bench cloudconfig-vs-cloud-init from {}:\n# + cloud-init, - keel-cloudinit.service\n",
        rootfs_src.display()
    );
    let (mut added, mut removed, mut files) = (false, false, false);
    for line in text.lines() {
        if line == "  - keel-cloudinit.service" {
            removed = true;
            continue;
        }
        if let Some(rel) = line.strip_prefix("files: ") {
            out += &format!(
                "files: {}\n",
                repo.join("rootfs").join(rel.trim()).display()
            );
            files = true;
            continue;
        }
        out += line;
        out.push('\n');
        if line == "packages:" {
            out += "  - cloud-init\n";
            added = true;
        }
    }
    if !(added && removed && files) {
        bail!(
            "{}: expected a `packages:` list, a `files:` line and `  - keel-cloudinit.service` in enable_units (the benchmark derives its cloud-init variant from them)",
            rootfs_src.display()
        );
    }
    let rootfs = dir.join("debian-bookworm-cloud-init.yaml");
    std::fs::write(&rootfs, out)?;

    let board_src = repo.join("boards/qemu-x86_64.yaml");
    let board_text = std::fs::read_to_string(&board_src)
        .with_context(|| format!("reading {}", board_src.display()))?;
    const ROOTFS_LINE: &str = "rootfs: ../rootfs/debian-bookworm.yaml";
    if !board_text.lines().any(|l| l == ROOTFS_LINE) {
        bail!("{}: no line {ROOTFS_LINE:?}", board_src.display());
    }
    let board = dir.join("qemu-x86_64-cloud-init.yaml");
    std::fs::write(
        &board,
        board_text.replace(ROOTFS_LINE, &format!("rootfs: {}", rootfs.display())),
    )?;
    Ok(board)
}

/// `keel build --format raw` of `board` into `out`, unless `out` already holds a build of the
/// same inputs (the definitions, the extra files, the keel binary; `rebuild` forces it).
fn build(
    keel: &Path,
    board: &Path,
    out: &Path,
    extra: &[String],
    rebuild: bool,
) -> Result<PathBuf> {
    let mut inputs = std::fs::read(board)?;
    for a in extra {
        inputs.extend(a.as_bytes());
        if let Some((src, _)) = a.split_once('=') {
            inputs.extend(std::fs::read(src).unwrap_or_default());
        }
    }
    if let Some(rootfs) = std::fs::read_to_string(board)?
        .lines()
        .find_map(|l| l.strip_prefix("rootfs: "))
    {
        let p = board.parent().unwrap_or(Path::new(".")).join(rootfs.trim());
        inputs.extend(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
    }
    let stamp = format!("{}\n{}\n", files::sha256(keel)?, hex_sha256(&inputs));
    let stamp_file = out.join("bench-inputs");
    if !rebuild
        && out.join("manifest.json").is_file()
        && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
    {
        return Ok(out.to_path_buf());
    }
    let tmp = out.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cmd = Command::new(keel);
    cmd.args(["build", "--quiet", "--format", "raw", "--board"])
        .arg(board)
        .arg("--out")
        .arg(&tmp)
        .args(extra);
    eprintln!(
        "building {} (keel build --board {})",
        out.display(),
        board.display()
    );
    let started = Instant::now();
    command::run(&mut cmd)?;
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
    std::fs::write(tmp.join("bench-inputs"), &stamp)?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&tmp, out)?;
    Ok(out.to_path_buf())
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The guest's script (/dev/vdb, run by the e2e driver after multi-user.target): wait for the
/// boot to finish, print the timestamps and the checks, power off.
fn script(tool: Tool) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         systemctl stop hello.service\n\
         state=$(systemctl is-system-running --wait)\n\
         chk() { echo \"CHK $1=$2\"; }\n\
         mark() { echo \"MARK $1=$(systemctl show -P \"$2\" \"$3\")\"; }\n\
         chk system-state \"$state\"\n\
         mark multi-user ActiveEnterTimestampMonotonic multi-user.target\n",
    );
    s += &format!("mark unit ActiveEnterTimestampMonotonic {UNIT_NAME}\n");
    for u in tool.stages() {
        s += &format!(
            "mark {u}.start InactiveExitTimestampMonotonic {u}\nmark {u}.end ActiveEnterTimestampMonotonic {u}\n"
        );
    }
    s += "journalctl -b -o short-monotonic --no-pager > /run/bench-journal\n";
    for (name, pattern, first) in tool.journal_lines() {
        let pick = if *first { "head" } else { "tail" };
        s += &format!(
            "echo \"JLINE {name} $(grep -e '{pattern}' /run/bench-journal | {pick} -1)\"\n"
        );
    }
    s += "chk hostname \"$(hostname)\"\n\
          chk user \"$(getent passwd bench | cut -d: -f1,6)\"\n\
          chk key \"$(tr '\\n' '|' < /home/bench/.ssh/authorized_keys 2>&1)\"\n\
          chk key-owner \"$(stat -c '%U %a' /home/bench/.ssh/authorized_keys 2>&1)\"\n";
    for (i, (path, _, _)) in FILES.iter().enumerate() {
        s += &format!("chk file{i} \"$(cat {path} 2>&1) $(stat -c %a {path} 2>&1)\"\n");
    }
    s += &format!(
        "chk unit \"$(systemctl is-enabled {UNIT_NAME} 2>&1) $(systemctl is-active {UNIT_NAME}) $(cat /run/bench-unit 2>&1)\"\n"
    );
    s += "chk keel-cloudinit \"$(systemctl is-enabled keel-cloudinit.service 2>&1) $(systemctl show -P ActiveState keel-cloudinit.service)\"\n\
          chk cloud-init \"$(command -v cloud-init >/dev/null && cloud-init status --long 2>&1 | tr '\\n' '|' || echo absent)\"\n\
          systemd-analyze 2>&1 | sed 's/^/NOTE systemd-analyze: /'\n";
    if tool == Tool::CloudInit {
        s += "echo \"NOTE warnings in cloud-init.log: $(grep -c WARNING /var/log/cloud-init.log)\"\n\
              grep WARNING /var/log/cloud-init.log | cut -c1-200 | head -5 | sed 's/^/NOTE /'\n\
              cloud-init analyze blame -i /var/log/cloud-init.log 2>&1 | grep -v '^--' | head -12 | sed 's/^/NOTE blame: /'\n";
    }
    s += "echo @@DONE\nsystemctl poweroff\n";
    s
}

/// What the checks must say, per tool.
fn expected(tool: Tool) -> Vec<(String, String)> {
    let mut e = vec![
        ("system-state".to_string(), "running".to_string()),
        ("hostname".into(), "bench-host".into()),
        ("user".into(), "bench:/home/bench".into()),
        ("key-owner".into(), "bench 600".into()),
        ("unit".into(), "enabled active ran".into()),
    ];
    for (i, (_, mode, content)) in FILES.iter().enumerate() {
        e.push((format!("file{i}"), format!("{content} {}", &mode[1..])));
    }
    match tool {
        Tool::Keel => {
            e.push(("keel-cloudinit".into(), "enabled active".into()));
            e.push(("cloud-init".into(), "absent".into()));
        }
        Tool::CloudInit => {
            e.push(("keel-cloudinit".into(), "disabled inactive".into()));
        }
    }
    e
}

fn boot(
    tool: Tool,
    disk: &Path,
    seed: &Path,
    work: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Marks> {
    let script_disk = work.join(format!("script-{}.img", tool.name()));
    let mut bytes = script(tool).into_bytes();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    std::fs::write(&script_disk, bytes)?;
    // The seed is used directly by QEMU: give each boot an untouched copy.
    let seed_copy = work.join(format!("seed-{}-boot.img", tool.name()));
    std::fs::copy(seed, &seed_copy)?;

    let mut o = BootOptions::new(disk);
    o.accel = Accel::Tcg;
    o.extra_disks = vec![script_disk, seed_copy];
    o.net = Some(NetOptions::default());
    o.log_path = Some(log.to_path_buf());
    let started = Instant::now();
    let mut vm = Session::start(&o)?;
    vm.wait_for("@@DONE", timeout).with_context(|| {
        format!(
            "{} boot: waiting for the guest's report (log {})",
            tool.name(),
            log.display()
        )
    })?;
    let host_wall = started.elapsed().as_secs_f64();
    let _ = vm.wait_exit(Duration::from_secs(60));
    let text = vm.log().replace('\r', "");
    let _ = vm.kill();
    parse(tool, &text, host_wall)
        .with_context(|| format!("{} boot (log {})", tool.name(), log.display()))
}

fn parse(tool: Tool, console: &str, host_wall: f64) -> Result<Marks> {
    let mut chk = BTreeMap::new();
    let mut mark = BTreeMap::new();
    let mut notes = Vec::new();
    let mut lines = BTreeMap::new();
    for line in console.lines() {
        if let Some((_, kv)) = line.split_once("CHK ") {
            if let Some((k, v)) = kv.split_once('=') {
                chk.insert(k.to_string(), v.to_string());
            }
        } else if let Some((_, kv)) = line.split_once("MARK ") {
            if let Some((k, v)) = kv.split_once('=') {
                mark.insert(k.to_string(), v.trim().to_string());
            }
        } else if let Some((_, n)) = line.split_once("NOTE ") {
            notes.push(n.trim().to_string());
        } else if let Some((_, l)) = line.split_once("JLINE ") {
            // `done [    5.123456] host keel-cloudinit[231]: keel-cloudinit: applied ...`
            let (name, rest) = l.split_once(' ').unwrap_or((l, ""));
            if let Some(t) = rest
                .trim()
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(t, _)| t.trim().parse::<f64>().ok())
            {
                lines.insert(name.to_string(), t);
            }
        }
    }
    let mut wrong = Vec::new();
    for (k, want) in expected(tool) {
        match chk.get(&k) {
            Some(v) if *v == want => {}
            other => wrong.push(format!("{k}: {other:?}, want {want:?}")),
        }
    }
    match chk.get("key") {
        Some(v) if v.contains(KEY) => {}
        other => wrong.push(format!("key: {other:?}, want it to hold {KEY:?}")),
    }
    if !wrong.is_empty() {
        bail!(
            "the config was not applied as written:\n  {}",
            wrong.join("\n  ")
        );
    }
    if let Some(s) = chk.get("cloud-init") {
        if tool == Tool::CloudInit {
            notes.insert(0, format!("cloud-init status: {s}"));
        }
    }
    let secs = |key: &str| -> Result<f64> {
        let v = mark
            .get(key)
            .with_context(|| format!("no timestamp {key}"))?;
        let us: u64 = v
            .parse()
            .with_context(|| format!("timestamp {key}: {v:?} is not a number"))?;
        if us == 0 {
            bail!("timestamp {key} is 0: the unit never ran");
        }
        Ok(us as f64 / 1e6)
    };
    let mut stages = Vec::new();
    for u in tool.stages() {
        stages.push((
            u.to_string(),
            secs(&format!("{u}.start"))?,
            secs(&format!("{u}.end"))?,
        ));
    }
    Ok(Marks {
        stages,
        unit_active: secs("unit")?,
        multi_user: secs("multi-user")?,
        lines,
        notes,
        host_wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_yaml_with_the_four_things() {
        for t in [Tool::Keel, Tool::CloudInit] {
            let u = t.user_data();
            assert!(
                u.starts_with("#cloud-config\nhostname: bench-host\n"),
                "{u}"
            );
            assert!(u.contains(KEY));
            for (path, mode, _) in FILES {
                assert!(u.contains(&format!("  - path: {path}\n    permissions: '{mode}'")));
            }
            assert!(
                u.contains("        ExecStart=/bin/sh -c 'echo ran > /run/bench-unit'\n")
                    || u.contains("      ExecStart=/bin/sh -c 'echo ran > /run/bench-unit'\n"),
                "{u}"
            );
        }
    }

    #[test]
    fn a_report_with_a_failed_check_is_refused() {
        let mut console = String::new();
        for (k, v) in expected(Tool::Keel) {
            console += &format!("[  1.0] x: CHK {k}={v}\n");
        }
        console += &format!("CHK key={KEY}|\n");
        for (k, v) in [
            ("multi-user", "9000000"),
            ("unit", "8000000"),
            ("keel-cloudinit.service.start", "4000000"),
            ("keel-cloudinit.service.end", "4250000"),
        ] {
            console += &format!("MARK {k}={v}\n");
        }
        console += "[ 9.1] driver[3]: JLINE done [    4.240000] bench-host keel-cloudinit[200]: keel-cloudinit: applied\n";
        console += "JLINE found \n";
        let m = parse(Tool::Keel, &console, 1.0).unwrap();
        assert_eq!(m.applied(), 4.25);
        assert!((m.config_step() - 0.25).abs() < 1e-9);
        assert_eq!(m.lines.get("done"), Some(&4.24));
        assert_eq!(m.lines.get("found"), None);
        assert_eq!(m.multi_user, 9.0);
        let bad = console.replace("CHK hostname=bench-host", "CHK hostname=localhost");
        let e = parse(Tool::Keel, &bad, 1.0).unwrap_err().to_string();
        assert!(e.contains("hostname"), "{e}");
        let never = console.replace("unit=8000000", "unit=0");
        assert!(parse(Tool::Keel, &never, 1.0).is_err());
    }
}
