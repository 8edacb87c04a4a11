//! keel-update inside a real Linux guest (QEMU, TCG): /usr mounted from USR-A through
//! dm-verity, `status`, `apply` from a file onto /dev/vda4, the busy check against a dm-held
//! slot, and `reboot --kexec` into the running kernel and initramfs. Afterwards the host checks
//! the disk the guest wrote.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use keel_format::attrs::SlotAttrs;
use keel_format::metadata::METADATA_SIZE;
use keel_qemu::{BootOptions, Firmware, Session};
use keel_testkit::{debian, initramfs};

const USR: u64 = 64 * MIB;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /usr /run /var
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m.ko; done
for i in $(seq 100); do [ -b /dev/vda4 ] && break; sleep 0.1; done
. /etc/guest.env
for arg in $(cat /proc/cmdline); do
  case $arg in test.a_off=*) A_OFF=${arg#*=};; test.a_root=*) A_ROOT=${arg#*=};; esac
done
export DM_DISABLE_UDEV=1
veritysetup open --hash-offset=$A_OFF /dev/vda3 usr /dev/vda3 $A_ROOT || echo "GUEST-ERROR veritysetup"
mount -t erofs -o ro /dev/mapper/usr /usr || echo "GUEST-ERROR mount"
step() { name=$1; shift; echo "STEP-BEGIN $name"; "$@" 2>&1; echo "STEP-END $name rc=$?"; }
if grep -q keel.slot= /proc/cmdline; then
  step status-before keel-update status --json
  step apply keel-update apply /payload.img
  step status-after keel-update status --json
  veritysetup open --hash-offset=$B_OFF /dev/vda4 usrb /dev/vda4 $B_ROOT || echo "GUEST-ERROR veritysetup B"
  step apply-busy keel-update apply /payload.img
  veritysetup close usrb
  step kexec keel-update reboot --kexec
  echo "GUEST-ERROR kexec returned"
  poweroff -f
else
  echo "GUEST-CMDLINE: $(cat /proc/cmdline)"
  step status-kexec keel-update status --json
  echo GUEST-DONE
  poweroff -f
fi
"#;

fn updater_binary(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_UPDATE_BIN") {
        return PathBuf::from(p);
    }
    let out = dir.join("keel-update");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_keel-update"))
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn step_output<'a>(log: &'a str, name: &str) -> (i32, &'a str) {
    let begin = format!("STEP-BEGIN {name}");
    let start = log
        .find(&begin)
        .unwrap_or_else(|| panic!("no step {name} in:\n{log}"))
        + begin.len();
    let end_marker = format!("STEP-END {name} rc=");
    let end = start
        + log[start..]
            .find(&end_marker)
            .unwrap_or_else(|| panic!("step {name} did not end:\n{log}"));
    let rc: i32 = log[end + end_marker.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (rc, log[start..end].trim())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: not JSON:\n{text}"))
}

#[test]
fn apply_status_busy_and_kexec_in_a_guest() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = v2.payload();

    // The initramfs: busybox, the modules, veritysetup and keel-update with their libraries,
    // the v2 payload and v2's verity parameters.
    let mut cpio = initramfs::Newc::default();
    for d in [
        "dev", "proc", "sys", "tmp", "run", "usr", "var", "etc", "lib64",
    ] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1);
    let busybox = debian::package("busybox-static").join("bin/busybox");
    cpio.file("bin/busybox", 0o755, &std::fs::read(&busybox).unwrap());
    cpio.file("init", 0o755, INIT.as_bytes());
    let updater = updater_binary(dir.path());
    let veritysetup = PathBuf::from("/usr/sbin/veritysetup");
    let mut libs = initramfs::shared_libraries(&veritysetup);
    libs.extend(initramfs::shared_libraries(&updater));
    libs.sort();
    libs.dedup();
    for lib in &libs {
        let rel = lib.to_str().unwrap().trim_start_matches('/');
        cpio.file(rel, 0o755, &std::fs::read(lib).unwrap());
    }
    cpio.file(
        "bin/veritysetup",
        0o755,
        &std::fs::read(&veritysetup).unwrap(),
    );
    cpio.file("bin/keel-update", 0o755, &std::fs::read(&updater).unwrap());
    let mut order = String::new();
    for (name, path) in
        initramfs::modules(&kernel, &["virtio_pci", "virtio_blk", "dm_verity", "erofs"])
    {
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &std::fs::read(path).unwrap(),
        );
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("lib/modules/load-order", 0o644, order.as_bytes());
    cpio.file("payload.img", 0o644, &payload);
    cpio.file(
        "etc/guest.env",
        0o644,
        format!(
            "B_OFF={}\nB_ROOT={}\n",
            v2.metadata.verity.hash_offset, v2.metadata.verity.root_hash
        )
        .as_bytes(),
    );
    let initramfs = cpio.finish();
    let initramfs_path = dir.path().join("initramfs.cpio");
    std::fs::write(&initramfs_path, &initramfs).unwrap();

    // USR-A (1.0.0) carries the running kernel and that initramfs, as a Keel slot does.
    let vmlinuz = std::fs::read(&kernel.vmlinuz).unwrap();
    let kdir = format!("lib/modules/{}", kernel.release);
    let v1 = build_usr_with(
        "1.0.0",
        "qemu-x86_64",
        &key(),
        4096,
        &[
            (&format!("{kdir}/vmlinuz"), &vmlinuz),
            (&format!("{kdir}/keel-initramfs.img"), &initramfs),
        ],
    );
    let disk = dir.path().join("disk.img");
    build_disk_sized(&disk, &v1, USR);
    let usr_a = partition_bytes(&disk, 3);

    let append = format!(
        "console=ttyS0 panic=-1 quiet keel.slot=USR-A test.a_off={} test.a_root={}",
        v1.metadata.verity.hash_offset, v1.metadata.verity.root_hash
    );
    let opts = BootOptions {
        firmware: Firmware::Direct {
            kernel: kernel.vmlinuz.clone(),
            initrd: Some(initramfs_path),
            append,
        },
        persist: true,
        log_path: Some(dir.path().join("console.log")),
        ..BootOptions::new(&disk)
    };
    let mut vm = Session::start(&opts).unwrap();
    let waited = vm.wait_for("GUEST-DONE", Duration::from_secs(900));
    let _ = vm.wait_exit(Duration::from_secs(60));
    let log = vm.log().replace('\r', "");
    if let Err(e) = waited {
        panic!("guest did not finish: {e}\n{log}");
    }
    assert!(!log.contains("GUEST-ERROR"), "{log}");

    let (rc, out) = step_output(&log, "status-before");
    assert_eq!(rc, 0, "{out}");
    let s = json(out);
    assert_eq!(s["disk"], "/dev/vda");
    assert_eq!(s["running"]["label"], "USR-A");
    assert_eq!(s["running"]["version"], "1.0.0");
    assert_eq!(s["running"]["verified"], true);
    assert_eq!(s["passive"]["version"], serde_json::Value::Null);

    let (rc, out) = step_output(&log, "apply");
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("Version 2.0.0 is written to USR-B"), "{out}");

    let s = json(step_output(&log, "status-after").1);
    assert_eq!(s["reboot_pending"], true);
    assert_eq!(s["passive"]["version"], "2.0.0");
    assert_eq!(s["passive"]["verified"], true);
    assert_eq!(s["verdict"]["state"], "reboot-pending");

    // USR-B held by a dm-verity device: refused as busy, exit 7.
    let (rc, out) = step_output(&log, "apply-busy");
    assert_eq!(rc, 7, "{out}");
    assert!(out.contains("/dev/vda4") && out.contains("in use"), "{out}");

    // kexec: the same kernel and initramfs came up without keel.slot=.
    let cmdline = log
        .split("GUEST-CMDLINE: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(!cmdline.contains("keel.slot="), "{cmdline}");
    assert!(cmdline.contains("test.a_root="), "{cmdline}");
    let (rc, out) = step_output(&log, "status-kexec");
    assert_eq!(rc, 0, "{out}");
    assert_eq!(json(out)["reboot_pending"], true);

    // What the guest left on the disk.
    assert_eq!(attrs(&disk, 3), SlotAttrs::new(1, 0, true));
    assert_eq!(attrs(&disk, 4), SlotAttrs::new(2, 1, false));
    let usr_b = partition_bytes(&disk, 4);
    assert_eq!(&usr_b[..v2.body.len()], &v2.body[..]);
    assert_eq!(&usr_b[usr_b.len() - METADATA_SIZE..], &v2.block[..]);
    assert!(partition_bytes(&disk, 3) == usr_a, "USR-A changed");
}
