//! The optional devices: a CD-ROM and user-mode networking with TFTP and a PXE
//! boot file, each used by a real guest.

mod common;

use std::time::Duration;

use common::*;
use keel_qemu::{BootOptions, NetOptions, Session};

#[test]
fn guest_reads_the_cdrom() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    // QEMU does not parse the disc: any 2048-byte-sector file serves.
    let iso = dir.path().join("disc.iso");
    let mut disc = vec![0u8; 64 * 2048];
    disc[..16].copy_from_slice(b"KEEL-CDROM-BYTES");
    std::fs::write(&iso, disc).unwrap();

    let mut vm = Session::start(&BootOptions {
        cdrom: Some(iso.clone()),
        ..shell_options(&image, &kernel, &initramfs)
    })
    .unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();

    let blocks = vm.qmp("query-block", None).unwrap();
    let cdrom = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["device"] == "cdrom0")
        .unwrap_or_else(|| panic!("no cdrom0 in {blocks}"));
    assert_eq!(cdrom["inserted"]["ro"], true, "{cdrom}");

    vm.send_line("for i in $(seq 50); do [ -b /dev/sr0 ] && break; sleep 0.1; done; head -c 16 /dev/sr0; echo").unwrap();
    vm.wait_for("\nKEEL-CDROM-BYTES", Duration::from_secs(60))
        .unwrap();
    vm.send_line("poweroff -f").unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}

#[test]
fn guest_gets_dhcp_bootfile_and_tftp_files() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let tftp = dir.path().join("tftp");
    std::fs::create_dir(&tftp).unwrap();
    std::fs::write(tftp.join("hello.txt"), "KEEL-TFTP-CONTENT\n").unwrap();

    let mut vm = Session::start(&BootOptions {
        net: Some(NetOptions {
            tftp_dir: Some(tftp),
            bootfile: Some("keel-pxe.efi".into()),
            ..NetOptions::default()
        }),
        ..shell_options(&image, &kernel, &initramfs)
    })
    .unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm.send_line("ifconfig eth0 up && udhcpc -i eth0 -n -q -s /bin/dhcp-report")
        .unwrap();
    vm.wait_for(
        "keel-test-dhcp: ip=10.0.2.15 boot_file=keel-pxe.efi",
        Duration::from_secs(60),
    )
    .unwrap();
    vm.send_line("ifconfig eth0 10.0.2.15 netmask 255.255.255.0 && tftp -g -r hello.txt -l /tmp/hello 10.0.2.2 && cat /tmp/hello").unwrap();
    vm.wait_for("\nKEEL-TFTP-CONTENT", Duration::from_secs(60))
        .unwrap();
    vm.send_line("poweroff -f").unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
}
