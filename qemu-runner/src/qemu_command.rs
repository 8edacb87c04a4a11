//! The qemu-system-x86_64 command line for one session, built from resolved inputs.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::disk::DiskFormat;
use crate::firmware::OvmfFiles;
use crate::options::NetOptions;
use crate::options::ResolvedAccel;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedFirmware {
    Uefi(OvmfFiles),
    /// SeaBIOS; the file holds the serial port SeaBIOS copies its screen output to.
    Bios {
        serial_console: PathBuf,
    },
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDisk {
    pub path: PathBuf,
    pub format: DiskFormat,
}

/// Every input of the command line, with files already prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub accel: ResolvedAccel,
    pub firmware: PlannedFirmware,
    pub mem_mb: u32,
    pub smp: u32,
    /// The first disk is the boot disk.
    pub disks: Vec<PlannedDisk>,
    pub cdrom: Option<PathBuf>,
    pub net: Option<NetOptions>,
    pub qmp_socket: PathBuf,
    /// `-fw_cfg name=NAME,file=FILE` entries.
    pub fw_cfg: Vec<(String, PathBuf)>,
    pub lan: Option<crate::LanPort>,
}

/// QEMU arguments selecting the accelerator and a CPU model suited to it.
pub fn accel_args(accel: ResolvedAccel) -> [&'static str; 4] {
    match accel {
        ResolvedAccel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        // "max" gives TCG guests every feature TCG can emulate (x86-64-v3 and more).
        ResolvedAccel::Tcg => ["-accel", "tcg", "-cpu", "max"],
    }
}

/// Boot order: an installer CD first, then the boot disk, then the network.
/// (Index 0 is taken by QEMU's own loader ROM when it loads a kernel directly.)
const CDROM_BOOTINDEX: u32 = 1;
const BOOT_DISK_BOOTINDEX: u32 = 2;
const NET_BOOTINDEX: u32 = 9;

pub fn qemu_args(plan: &LaunchPlan) -> Vec<OsString> {
    let mut args = Args::default();
    args.push_all(["-machine", "q35", "-nodefaults", "-no-user-config"]);
    args.push_all(["-display", "none"]);
    args.push_all(accel_args(plan.accel));
    args.push_all([
        "-m",
        &plan.mem_mb.to_string(),
        "-smp",
        &plan.smp.to_string(),
    ]);
    // signal=off: the guest, not QEMU, gets a Ctrl-C typed into the console.
    args.push_all([
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    args.push("-qmp");
    args.push_joined(&[
        "unix:".as_ref(),
        &escape(plan.qmp_socket.as_os_str()),
        ",server=on,wait=off".as_ref(),
    ]);
    args.push_all([
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0",
    ]);

    match &plan.firmware {
        PlannedFirmware::Uefi(ovmf) => {
            args.push("-drive");
            args.push_joined(&[
                "if=pflash,format=raw,unit=0,readonly=on,file=".as_ref(),
                &escape(ovmf.code.as_os_str()),
            ]);
            args.push("-drive");
            args.push_joined(&[
                "if=pflash,format=raw,unit=1,file=".as_ref(),
                &escape(ovmf.vars.as_os_str()),
            ]);
        }
        PlannedFirmware::Bios { serial_console } => {
            // SeaBIOS's serial console: its own messages, option ROMs' (iPXE) and boot
            // loaders' (GRUB) screen output reach the console log (there is no display).
            args.push("-fw_cfg");
            args.push_joined(&[
                "name=etc/sercon-port,file=".as_ref(),
                &escape(serial_console.as_os_str()),
            ]);
        }
        PlannedFirmware::Direct {
            kernel,
            initrd,
            append,
        } => {
            args.push("-kernel");
            args.push(kernel.as_os_str());
            if let Some(initrd) = initrd {
                args.push("-initrd");
                args.push(initrd.as_os_str());
            }
            args.push_all(["-append", append]);
        }
    }

    for (name, file) in &plan.fw_cfg {
        args.push("-fw_cfg");
        args.push_joined(&[
            "name=".as_ref(),
            &escape(OsStr::new(name)),
            ",file=".as_ref(),
            &escape(file.as_os_str()),
        ]);
    }

    for (index, disk) in plan.disks.iter().enumerate() {
        let id = format!("disk{index}");
        args.push("-drive");
        args.push_joined(&[
            format!("if=none,id={id},format={},file=", disk.format.as_str()).as_ref(),
            &escape(disk.path.as_os_str()),
        ]);
        let bootindex = if index == 0 {
            format!(",bootindex={BOOT_DISK_BOOTINDEX}")
        } else {
            String::new()
        };
        args.push_all(["-device", &format!("virtio-blk-pci,drive={id}{bootindex}")]);
    }

    if let Some(iso) = &plan.cdrom {
        args.push("-drive");
        args.push_joined(&[
            "if=none,id=cdrom0,media=cdrom,readonly=on,format=raw,file=".as_ref(),
            &escape(iso.as_os_str()),
        ]);
        // virtio-scsi rather than q35's SATA: OVMF and SeaBIOS boot from it, and
        // kernels without AHCI (Debian's cloud kernel) still see the disc.
        args.push_all([
            "-device",
            "virtio-scsi-pci,id=scsi0",
            "-device",
            &format!("scsi-cd,bus=scsi0.0,drive=cdrom0,bootindex={CDROM_BOOTINDEX}"),
        ]);
    }

    if let Some(lan) = &plan.lan {
        args.push_all([
            "-netdev",
            &format!(
                "socket,id=lan0,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                lan.hub, lan.local
            ),
            "-device",
            &format!("virtio-net-pci,netdev=lan0,mac={}", lan.mac_string()),
        ]);
    }
    if let Some(net) = &plan.net {
        let mut netdev: Vec<OsString> = vec!["user,id=net0".into()];
        if net.restrict {
            netdev.push(",restrict=on".into());
        }
        if let Some(dir) = &net.tftp_dir {
            netdev.push(",tftp=".into());
            netdev.push(escape(dir.as_os_str()));
        }
        if let Some(bootfile) = &net.bootfile {
            netdev.push(",bootfile=".into());
            netdev.push(escape(OsStr::new(bootfile)));
        }
        for (host, guest) in &net.host_forwards {
            netdev.push(format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}").into());
        }
        for (addr, port, host) in &net.guest_forwards {
            // A program per connection (a tcp: chardev would carry one connection, ever).
            netdev.push(format!(",guestfwd=tcp:{addr}:{port}-cmd:nc 127.0.0.1 {host}").into());
        }
        args.push("-netdev");
        args.push_joined(&netdev.iter().map(OsString::as_os_str).collect::<Vec<_>>());
        args.push_all([
            "-device",
            &format!("virtio-net-pci,netdev=net0,bootindex={NET_BOOTINDEX}"),
        ]);
    }
    args.0
}

/// QEMU's option syntax separates key=value pairs with commas; a comma inside a
/// value is written twice.
fn escape(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &byte in value.as_bytes() {
        out.push(byte);
        if byte == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, arg: impl AsRef<OsStr>) {
        self.0.push(arg.as_ref().to_os_string());
    }

    fn push_all<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) {
        for arg in args {
            self.push(arg);
        }
    }

    fn push_joined(&mut self, parts: &[&OsStr]) {
        let mut joined = OsString::new();
        for part in parts {
            joined.push(part);
        }
        self.0.push(joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LaunchPlan {
        LaunchPlan {
            accel: ResolvedAccel::Tcg,
            firmware: PlannedFirmware::Bios {
                serial_console: "/tmp/s/sercon-port".into(),
            },
            mem_mb: 512,
            smp: 1,
            disks: vec![PlannedDisk {
                path: "/tmp/a,b/overlay.qcow2".into(),
                format: DiskFormat::Qcow2,
            }],
            cdrom: None,
            net: None,
            qmp_socket: "/tmp/s/qmp.sock".into(),
            fw_cfg: Vec::new(),
            lan: None,
        }
    }

    fn strings(plan: &LaunchPlan) -> Vec<String> {
        qemu_args(plan)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let args = strings(&plan());
        assert!(args
            .contains(&"if=none,id=disk0,format=qcow2,file=/tmp/a,,b/overlay.qcow2".to_string()));
        assert!(args.contains(&"virtio-blk-pci,drive=disk0,bootindex=2".to_string()));
    }

    #[test]
    fn network_is_restricted_with_tftp_and_bootfile() {
        let mut plan = plan();
        plan.net = Some(NetOptions {
            tftp_dir: Some("/srv/tftp".into()),
            bootfile: Some("keel.efi".into()),
            restrict: true,
            ..NetOptions::default()
        });
        let args = strings(&plan);
        assert!(
            args.contains(&"user,id=net0,restrict=on,tftp=/srv/tftp,bootfile=keel.efi".to_string())
        );
    }

    #[test]
    fn forwards_bind_the_host_loopback_only() {
        let mut plan = plan();
        plan.net = Some(NetOptions {
            host_forwards: vec![(2222, 22)],
            guest_forwards: vec![([10, 0, 2, 100].into(), 5000, 40000)],
            ..NetOptions::default()
        });
        let args = strings(&plan);
        assert!(args.contains(
            &"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,\
              guestfwd=tcp:10.0.2.100:5000-cmd:nc 127.0.0.1 40000"
                .to_string()
        ));
    }

    #[test]
    fn fw_cfg_entries_are_named_files() {
        let mut plan = plan();
        plan.fw_cfg = vec![("opt/org.keel/user-data".into(), "/tmp/a,b/cc.yml".into())];
        let args = strings(&plan);
        let at = args.iter().rposition(|a| a == "-fw_cfg").unwrap();
        assert_eq!(
            args[at + 1],
            "name=opt/org.keel/user-data,file=/tmp/a,,b/cc.yml"
        );
    }

    #[test]
    fn the_lan_nic_comes_before_the_user_network() {
        let mut plan = plan();
        plan.net = Some(NetOptions::default());
        plan.lan = Some(crate::LanPort {
            hub: 4000,
            local: 4001,
            mac: [0x52, 0x54, 0, 0x4b, 0, 2],
        });
        let args = strings(&plan);
        let lan = args
            .iter()
            .position(|a| a.starts_with("socket,id=lan0"))
            .unwrap();
        let user = args
            .iter()
            .position(|a| a.starts_with("user,id=net0"))
            .unwrap();
        assert!(lan < user, "{args:?}");
        assert_eq!(
            args[lan],
            "socket,id=lan0,udp=127.0.0.1:4000,localaddr=127.0.0.1:4001"
        );
        assert_eq!(
            args[lan + 2],
            "virtio-net-pci,netdev=lan0,mac=52:54:00:4b:00:02"
        );
    }
}
