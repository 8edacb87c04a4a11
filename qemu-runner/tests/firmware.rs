//! Boots through real firmware: OVMF (UEFI, q35), the path every Keel image
//! takes, and SeaBIOS.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keel_qemu::{BootOptions, Firmware, Session};

#[test]
fn ovmf_reaches_the_uefi_shell_and_obeys_typed_commands() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing bootable: OVMF's boot manager falls through to its built-in shell.
    let image = blank_disk(dir.path(), "blank.raw", 16);
    let started = Instant::now();
    let mut vm = Session::start(&BootOptions {
        firmware: Firmware::Uefi,
        ..BootOptions::new(&image)
    })
    .unwrap();
    vm.wait_for("BdsDxe", BOOT_TIMEOUT).unwrap();
    vm.wait_for("UEFI Interactive Shell", BOOT_TIMEOUT).unwrap();
    let shell_at = started.elapsed();
    vm.wait_for("Shell>", Duration::from_secs(60)).unwrap();
    vm.send_line("reset -s").unwrap();
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}");
    eprintln!(
        "UEFI shell after {shell_at:?}, off after {:?}",
        started.elapsed()
    );
}

#[test]
fn ovmf_boots_a_unified_kernel_image_from_the_virtio_disk() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = uefi_disk(dir.path(), &kernel, &initramfs, "console=ttyS0 panic=-1");
    let started = Instant::now();
    let mut vm = Session::start(&BootOptions::new(&image)).unwrap();
    vm.wait_for("Linux version", BOOT_TIMEOUT).unwrap();
    let kernel_at = started.elapsed();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    let shell_at = started.elapsed();
    vm.send_line("cat /proc/cmdline").unwrap();
    vm.wait_for("\nconsole=ttyS0 panic=-1", Duration::from_secs(30))
        .unwrap();
    vm.send_line("poweroff -f").unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
    eprintln!("UKI: kernel after {kernel_at:?}, shell after {shell_at:?}");
}

#[test]
fn seabios_boots_the_disk_boot_sector() {
    let dir = tempfile::tempdir().unwrap();
    let image = bios_disk(dir.path());
    let started = Instant::now();
    let mut vm = Session::start(&BootOptions {
        firmware: Firmware::Bios,
        ..BootOptions::new(&image)
    })
    .unwrap();
    vm.wait_for("KEEL-BIOS-BOOT", BOOT_TIMEOUT).unwrap();
    eprintln!("boot sector ran after {:?}", started.elapsed());
}
