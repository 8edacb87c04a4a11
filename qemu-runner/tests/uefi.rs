//! Boots OVMF (UEFI) on a q35 machine, the path every Keel image takes.

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
