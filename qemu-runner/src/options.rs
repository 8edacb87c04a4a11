//! What to boot and how: the plain description of one QEMU virtual machine.

use std::path::PathBuf;

/// How the virtual machine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF (Debian's `ovmf` package) on a q35 machine, with a private copy of the
    /// UEFI variable store per session.
    Uefi,
    /// SeaBIOS, QEMU's default firmware.
    Bios,
    /// QEMU loads a kernel (and optionally an initramfs) itself, skipping firmware
    /// boot loaders; the disk is still attached.
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
}

/// Which QEMU accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// `KEEL_QEMU_ACCEL` when set (auto, kvm or tcg); otherwise KVM when probe guests
    /// really run under it (firmware included), TCG otherwise. A boot that fails on KVM
    /// anyway (QEMU's `KVM internal error`, silence before the kernel) restarts under TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator a session really uses (never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

/// The environment variable that overrides [`Accel::Auto`] for scripts and CI.
pub const ACCEL_ENV: &str = "KEEL_QEMU_ACCEL";
pub const ACCEL_ENV_VALUES: &str = "auto, kvm, tcg";

/// QEMU user-mode networking on a virtio-net NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// Directory served by QEMU's built-in TFTP server.
    pub tftp_dir: Option<PathBuf>,
    /// File name that QEMU's DHCP server announces as the boot file (PXE).
    pub bootfile: Option<String>,
    /// Isolate the guest: no connections out of the user-mode network
    /// (DHCP, DNS and TFTP inside it still work, and so do the forwards below).
    pub restrict: bool,
    /// TCP ports of the host's loopback (127.0.0.1) forwarded to the guest: (host, guest).
    pub host_forwards: Vec<(u16, u16)>,
    /// TCP addresses inside the user network forwarded to the host's loopback:
    /// (guest address in 10.0.2.0/24, guest port, host port on 127.0.0.1). The only way out
    /// of a restricted network. Each connection runs `nc 127.0.0.1 PORT` (netcat-openbsd).
    pub guest_forwards: Vec<(std::net::Ipv4Addr, u16, u16)>,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            tftp_dir: None,
            bootfile: None,
            restrict: true,
            host_forwards: Vec::new(),
            guest_forwards: Vec::new(),
        }
    }
}

/// Everything [`crate::Session::start`] needs to boot one virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// Disk image (raw or qcow2), attached as the first virtio-blk disk.
    pub image: PathBuf,
    pub firmware: Firmware,
    pub mem_mb: u32,
    /// Guest CPUs; [`default_smp`] unless set.
    pub smp: u32,
    /// Boot the image itself, so the guest's writes land in it. When false the
    /// guest writes to a throwaway qcow2 overlay and the image stays pristine.
    pub persist: bool,
    /// More disks (raw or qcow2), attached after the image as virtio-blk disks.
    /// They are used directly: the guest's writes land in them.
    pub extra_disks: Vec<PathBuf>,
    /// Where the serial console is saved. `None`: a new file in
    /// [`default_log_dir`], kept after the session ends.
    pub log_path: Option<PathBuf>,
    pub accel: Accel,
    pub net: Option<NetOptions>,
    /// ISO image attached read-only as a CD-ROM (virtio-scsi), first in boot order.
    pub cdrom: Option<PathBuf>,
    /// Copy every console byte to this process's stdout as it arrives.
    pub echo_console: bool,
    /// End a wait with [`crate::BootError::Silent`] when the guest's kernel has started and
    /// then printed nothing for this long (a hung guest, e.g. one out of memory, instead of
    /// the whole timeout). `None`: waits only end on their timeout.
    pub silence_limit: Option<std::time::Duration>,
    /// A guest the emulator hung is power-cycled after this long of silence, at most twice per
    /// session (`reset_watch`, both seen under TCG: OVMF silent after a restart; a kernel
    /// silent before init with every vCPU busy).
    pub restart_silence_limit: std::time::Duration,
    /// QEMU fw_cfg entries the guest reads (`-fw_cfg name=NAME,file=FILE`): (NAME, FILE).
    /// Names of user entries start with `opt/` (e.g. `opt/org.keel/user-data`).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// A second NIC on a private segment between guests ([`crate::Lan`]); it comes before the
    /// user-network NIC, so it is the guest's first Ethernet link.
    pub lan: Option<crate::LanPort>,
}

impl BootOptions {
    /// Defaults: UEFI, 1024 MiB, [`default_smp`] CPUs, overlay, no network.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            firmware: Firmware::Uefi,
            mem_mb: 1024,
            smp: default_smp(),
            persist: false,
            extra_disks: Vec::new(),
            log_path: None,
            accel: Accel::Auto,
            net: None,
            cdrom: None,
            echo_console: false,
            silence_limit: None,
            restart_silence_limit: crate::reset_watch::FIRMWARE_SILENCE_LIMIT,
            fw_cfg: Vec::new(),
            lan: None,
        }
    }
}

/// Guest CPUs when nobody said: `$KEEL_QEMU_SMP`, else 2. Under TCG each vCPU is a host
/// thread that runs flat out: a suite that boots two guests at a time on 2 cores sets 1 (two
/// 2-vCPU guests reached multi-user.target in 76 s there, two 1-vCPU guests in 53 s; one guest
/// alone took 37 s with 2 vCPUs and 54 s with 1).
pub fn default_smp() -> u32 {
    std::env::var("KEEL_QEMU_SMP")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(2)
}

/// Directory for console logs that nobody named: `$KEEL_QEMU_LOG_DIR`, or
/// `keel-qemu-logs` in the system temp directory.
pub fn default_log_dir() -> PathBuf {
    match std::env::var_os("KEEL_QEMU_LOG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("keel-qemu-logs"),
    }
}
