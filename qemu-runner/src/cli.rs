//! `keel boot`: boot an image in QEMU and watch its serial console.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use keel_format::initramfs::{live_min_ram_mib, LiveLoader};

use keel_cli_support::exit;

use crate::error::BootError;
use crate::options::{Accel, BootOptions, Firmware, NetOptions};
use crate::session::{ConsoleInput, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    Uefi,
    Bios,
    /// QEMU loads --kernel (and --initrd) itself.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

/// Boot a disk image in QEMU, show and save its serial console.
#[derive(Debug, Clone, Args)]
pub struct BootArgs {
    /// Disk image (raw, qcow2 or VMDK); booted through a throwaway overlay unless --persist.
    /// With --pxe or --iso it may be left out: the machine then has a blank disk.
    #[arg(required_unless_present_any = ["pxe", "iso"])]
    pub image: Option<PathBuf>,
    /// Network boot of `keel build --format pxe`: DIR (or DIR/pxe) holds keel.ipxe, vmlinuz
    /// and initramfs.img. QEMU's user network serves DIR over TFTP and announces keel.ipxe;
    /// the NIC's iPXE ROM (Debian's ipxe-qemu) fetches and runs it (SeaBIOS or OVMF).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "iso", "tftp", "bootfile"])]
    pub pxe: Option<PathBuf>,
    /// Boot an ISO (`keel build --format iso`) from a CD-ROM drive, under --firmware uefi
    /// or bios.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "cdrom"])]
    pub iso: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "uefi")]
    pub firmware: FirmwareArg,
    /// Kernel for --firmware direct.
    #[arg(long, required_if_eq("firmware", "direct"))]
    pub kernel: Option<PathBuf>,
    /// Initramfs for --firmware direct.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for --firmware direct.
    #[arg(long, default_value = "console=ttyS0", requires = "kernel")]
    pub append: String,
    /// Succeed as soon as this text appears on the console, then stop QEMU.
    #[arg(long)]
    pub expect: Option<String>,
    /// Give up after this many seconds [default: 300 with --expect, none without].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Guest memory in MiB [default: 1024, or what a --pxe / --iso live boot needs: its
    /// initramfs, the kernel's unpacked copy and ROOT in RAM].
    #[arg(long, value_name = "MB")]
    pub mem: Option<u32>,
    /// Number of guest CPUs [default: $KEEL_QEMU_SMP, else 2].
    #[arg(long)]
    pub smp: Option<u32>,
    /// Let the guest write to IMAGE itself instead of an overlay.
    #[arg(long)]
    pub persist: bool,
    /// Save the console here [default: a new file in $KEEL_QEMU_LOG_DIR or
    /// $TMPDIR/keel-qemu-logs].
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Stream the console to stdout (the default when stdout is a terminal).
    #[arg(long)]
    pub console: bool,
    /// Accelerator [default: $KEEL_QEMU_ACCEL, else auto: KVM when probe guests (OVMF
    /// included) run under it, else TCG; a boot that fails on KVM restarts under TCG].
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// With --expect: stop when the guest's kernel has started and then printed nothing for
    /// this many seconds (a hung guest), instead of waiting out --timeout; 0 turns it off.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub silence_timeout: u64,
    /// Attach another disk (raw or qcow2, written in place); repeatable.
    #[arg(long = "disk", value_name = "FILE")]
    pub extra_disks: Vec<PathBuf>,
    /// Attach an ISO image as a CD-ROM (booted first).
    #[arg(long, value_name = "ISO")]
    pub cdrom: Option<PathBuf>,
    /// Add a user-mode network card (isolated: no connections leave it).
    #[arg(long)]
    pub net: bool,
    /// Serve this directory over the network's TFTP server (implies --net).
    #[arg(long, value_name = "DIR")]
    pub tftp: Option<PathBuf>,
    /// Boot file announced by DHCP for PXE (implies --net).
    #[arg(long, value_name = "NAME")]
    pub bootfile: Option<String>,
    /// Hand the guest this cloud-config through QEMU's fw_cfg (`opt/org.keel/user-data`, the
    /// source keel-cloudinit reads first among the local ones).
    #[arg(long, value_name = "FILE")]
    pub cloud_config: Option<PathBuf>,
    /// Forward TCP port HOST of the host's loopback to the guest's port GUEST (e.g. 2222:22
    /// for `ssh -p 2222 core@127.0.0.1`); repeatable, implies --net.
    #[arg(long = "forward", value_name = "HOST:GUEST", value_parser = parse_host_forward)]
    pub host_forwards: Vec<(u16, u16)>,
    /// Let the guest reach the host's loopback port PORT at ADDR:GUESTPORT inside its network
    /// (e.g. 10.0.2.100:5000=5000 for a registry on the host), the one way out of the isolated
    /// network; repeatable, implies --net.
    #[arg(long = "guest-forward", value_name = "ADDR:GUESTPORT=PORT", value_parser = parse_guest_forward)]
    pub guest_forwards: Vec<(std::net::Ipv4Addr, u16, u16)>,
}

fn parse_host_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:GUEST, two port numbers"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number"))
    };
    Ok((port(h)?, port(g)?))
}

fn parse_guest_forward(s: &str) -> Result<(std::net::Ipv4Addr, u16, u16), String> {
    let bad = || format!("{s:?}: expected ADDR:GUESTPORT=PORT, like 10.0.2.100:5000=5000");
    let (inside, host) = s.split_once('=').ok_or_else(bad)?;
    let (addr, guest) = inside.split_once(':').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if addr.octets()[..3] != [10, 0, 2] {
        return Err(format!(
            "{s:?}: {addr} is outside the guest's network 10.0.2.0/24"
        ));
    }
    Ok((
        addr,
        guest.parse().map_err(|_| bad())?,
        host.parse().map_err(|_| bad())?,
    ))
}

const DEFAULT_MEM_MB: u32 = 1024;
/// The fw_cfg name keel-cloudinit reads a user-data from.
pub const FW_CFG_USER_DATA: &str = "opt/org.keel/user-data";
const DEFAULT_EXPECT_TIMEOUT: Duration = Duration::from_secs(300);
/// After the expected text with --persist, how long the guest may take to power
/// off cleanly before QEMU is killed.
const PERSIST_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

impl BootArgs {
    /// `image` is the disk to attach (the caller supplies a blank one when IMAGE is absent).
    pub fn boot_options_for(&self, image: &std::path::Path) -> anyhow::Result<BootOptions> {
        let mut options = BootOptions {
            image: image.to_path_buf(),
            mem_mb: self.memory()?,
            ..self.boot_options()
        };
        if self.pxe.is_some() || self.iso.is_some() {
            if let Firmware::Direct { .. } = options.firmware {
                anyhow::bail!("--pxe and --iso boot through firmware: use --firmware uefi or bios");
            }
        }
        if let Some(dir) = &self.pxe {
            options.net = Some(pxe_network(dir)?);
        }
        if let Some(cc) = &self.cloud_config {
            if !cc.is_file() {
                anyhow::bail!("--cloud-config {}: no such file", cc.display());
            }
            options.fw_cfg.push((FW_CFG_USER_DATA.into(), cc.clone()));
        }
        if let Some(iso) = &self.iso {
            if !iso.is_file() {
                anyhow::bail!("--iso {}: no such file", iso.display());
            }
        }
        Ok(options)
    }

    pub fn boot_options(&self) -> BootOptions {
        let firmware = match self.firmware {
            FirmwareArg::Uefi => Firmware::Uefi,
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Direct => Firmware::Direct {
                kernel: self.kernel.clone().unwrap_or_default(),
                initrd: self.initrd.clone(),
                append: self.append.clone(),
            },
        };
        let wants_net = self.net
            || self.tftp.is_some()
            || self.bootfile.is_some()
            || !self.host_forwards.is_empty()
            || !self.guest_forwards.is_empty();
        let net = wants_net.then(|| NetOptions {
            tftp_dir: self.tftp.clone(),
            bootfile: self.bootfile.clone(),
            host_forwards: self.host_forwards.clone(),
            guest_forwards: self.guest_forwards.clone(),
            ..NetOptions::default()
        });
        BootOptions {
            firmware,
            mem_mb: self.mem.unwrap_or(DEFAULT_MEM_MB),
            smp: self.smp.unwrap_or_else(crate::options::default_smp),
            persist: self.persist,
            extra_disks: self.extra_disks.clone(),
            log_path: self.log.clone(),
            accel: match self.accel {
                None | Some(AccelArg::Auto) => Accel::Auto,
                Some(AccelArg::Kvm) => Accel::Kvm,
                Some(AccelArg::Tcg) => Accel::Tcg,
            },
            silence_limit: (self.expect.is_some() && self.silence_timeout > 0)
                .then(|| Duration::from_secs(self.silence_timeout)),
            net,
            cdrom: self.iso.clone().or_else(|| self.cdrom.clone()),
            echo_console: self.console || std::io::stdout().is_terminal(),
            ..BootOptions::new(self.image.clone().unwrap_or_default())
        }
    }

    /// Guest memory: `--mem`, or for a live boot (--pxe, --iso) what it needs when that is
    /// more than the default. A `--mem` below a live boot's minimum is refused.
    pub fn memory(&self) -> Result<u32, MemoryTooSmall> {
        let live = self.live_initramfs_bytes();
        let loader = if self.pxe.is_some() {
            LiveLoader::Pxe
        } else {
            LiveLoader::Iso
        };
        let minimum = live.map(|bytes| live_min_ram_mib(bytes, loader));
        match (self.mem, minimum) {
            (Some(mem), Some(minimum)) if mem < minimum => Err(MemoryTooSmall {
                mem,
                minimum,
                initramfs_mib: live.unwrap_or(0) >> 20,
            }),
            (Some(mem), _) => Ok(mem),
            (None, minimum) => Ok(minimum.unwrap_or(0).max(DEFAULT_MEM_MB)),
        }
    }

    /// The size of what a live boot loads into RAM: the initramfs `keel.ipxe` names, or for
    /// an ISO the whole image (an upper bound: the initramfs is nearly all of it).
    fn live_initramfs_bytes(&self) -> Option<u64> {
        if let Some(dir) = &self.pxe {
            let dir = pxe_script_dir(dir);
            let script = std::fs::read_to_string(dir.join(PXE_SCRIPT)).ok()?;
            let initrd = script.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("initrd")).then(|| words.next())?
            })?;
            return std::fs::metadata(dir.join(initrd)).ok().map(|m| m.len());
        }
        let iso = self.iso.as_ref()?;
        std::fs::metadata(iso).ok().map(|m| m.len())
    }

    fn timeout(&self) -> Duration {
        match (self.timeout, &self.expect) {
            (Some(seconds), _) => Duration::from_secs(seconds),
            (None, Some(_)) => DEFAULT_EXPECT_TIMEOUT,
            (None, None) => Duration::MAX,
        }
    }
}

/// A `--mem` that cannot boot what `keel boot` was asked to boot.
#[derive(Debug, thiserror::Error)]
#[error(
    "--mem {mem} is too small for this live boot: Linux unpacks its {initramfs_mib} MiB \
     initramfs into a tmpfs capped at half the memory left beside the loaded copies, and the \
     system runs from it; it needs at least {minimum} MiB (leave --mem out to get that)"
)]
pub struct MemoryTooSmall {
    pub mem: u32,
    pub minimum: u32,
    pub initramfs_mib: u64,
}

/// The directory holding `keel.ipxe`: `dir` itself or `dir/pxe`.
fn pxe_script_dir(dir: &std::path::Path) -> PathBuf {
    if dir.join(PXE_SCRIPT).is_file() {
        dir.to_path_buf()
    } else {
        dir.join("pxe")
    }
}

/// The script iPXE runs, announced as the DHCP boot file.
pub const PXE_SCRIPT: &str = "keel.ipxe";

/// The user network for `--pxe DIR`: TFTP serves the directory holding keel.ipxe (`dir` or
/// `dir/pxe`), and DHCP names keel.ipxe as the boot file. Every file the script names must
/// be there.
pub fn pxe_network(dir: &std::path::Path) -> anyhow::Result<NetOptions> {
    use anyhow::Context;
    let dir = pxe_script_dir(dir);
    let script_path = dir.join(PXE_SCRIPT);
    let script = std::fs::read_to_string(&script_path)
        .with_context(|| format!("--pxe: reading {}", script_path.display()))?;
    for line in script.lines() {
        let mut words = line.split_whitespace();
        if let Some("kernel" | "initrd") = words.next() {
            let file = words
                .next()
                .with_context(|| format!("{}: {line:?} names no file", script_path.display()))?;
            anyhow::ensure!(
                dir.join(file).is_file(),
                "{}: {line:?}: {} is missing",
                script_path.display(),
                dir.join(file).display()
            );
        }
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--pxe {}", dir.display()))?;
    Ok(NetOptions {
        tftp_dir: Some(dir),
        bootfile: Some(PXE_SCRIPT.into()),
        ..NetOptions::default()
    })
}

/// Runs `keel boot`; prints an error that stopped it and returns the exit code: 0 found (or
/// powered off), [`exit::TIMEOUT`], [`exit::GUEST_FAILED`], [`exit::USAGE`] for a bad
/// argument or variable (nothing started), [`exit::ENVIRONMENT`] when QEMU cannot start.
pub fn run(args: &BootArgs) -> i32 {
    boot_command(args).unwrap_or_else(|e| {
        eprintln!("keel boot: error: {e:#}");
        exit::FAILED
    })
}

/// [`run`] without printing the errors it cannot map to an exit code.
pub fn boot_command(args: &BootArgs) -> anyhow::Result<i32> {
    // A diskless machine still gets a (blank) disk: the runner always attaches one.
    let blank_dir = tempfile::tempdir()?;
    let image = match &args.image {
        Some(image) => image.clone(),
        None => {
            let blank = blank_dir.path().join("blank.raw");
            std::fs::File::create(&blank)?.set_len(64 << 20)?;
            blank
        }
    };
    if let Err(e) = crate::accel::apply_env(Accel::Auto) {
        eprintln!("keel boot: {e}");
        return Ok(exit::USAGE);
    }
    if let Err(e) = args.memory() {
        eprintln!("keel boot: {e}");
        return Ok(exit::USAGE);
    }
    let options = match args.boot_options_for(&image) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("keel boot: {e:#}");
            return Ok(exit::ENVIRONMENT);
        }
    };
    if options.mem_mb != DEFAULT_MEM_MB && args.mem.is_none() {
        eprintln!(
            "keel boot: {} MiB of guest memory for this live boot (its minimum; --mem to choose)",
            options.mem_mb
        );
    }
    let mut session = match Session::start(&options) {
        Ok(session) => session,
        Err(e) => {
            eprintln!("keel boot: cannot start QEMU: {e}");
            return Ok(exit::ENVIRONMENT);
        }
    };
    eprintln!(
        "keel boot: QEMU started ({:?}), console log {}",
        session.accel(),
        session.log_path().display()
    );
    if options.echo_console && std::io::stdin().is_terminal() {
        forward_terminal_input(session.console_input())?;
    }

    let outcome = match &args.expect {
        Some(text) => session.wait_for(text, args.timeout()),
        None => session.wait_exit(args.timeout()).and_then(|status| {
            if status.success() {
                Ok(())
            } else {
                Err(BootError::Exited {
                    pattern: None,
                    status: Some(status),
                    log_path: session.log_path().to_path_buf(),
                    tail: String::new(),
                    qemu_stderr: session.qemu_stderr(),
                })
            }
        }),
    };
    let code = match &outcome {
        Ok(()) => {
            match &args.expect {
                Some(text) => eprintln!("\nkeel boot: found {text:?}"),
                None => eprintln!("\nkeel boot: guest powered off"),
            }
            exit::OK
        }
        Err(error) => {
            eprintln!("\nkeel boot: {error}");
            match error {
                BootError::Timeout { .. } | BootError::Silent { .. } => exit::TIMEOUT,
                BootError::KernelPanic { .. } | BootError::Exited { .. } => exit::GUEST_FAILED,
                BootError::FallbackFailed { .. } | BootError::HostIoError { .. } => {
                    exit::ENVIRONMENT
                }
            }
        }
    };
    if args.persist {
        session.shutdown(PERSIST_SHUTDOWN_GRACE)?;
    } else {
        session.kill()?;
    }
    eprintln!(
        "keel boot: console log saved to {}",
        session.log_path().display()
    );
    Ok(code)
}

/// Forwards what the user types, line by line, to the guest's serial console.
/// The thread ends with the process; reading the terminal cannot be interrupted.
fn forward_terminal_input(input: ConsoleInput) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if input.send_line(&line).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}
