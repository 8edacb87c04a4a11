//! Boots Debian's cloud kernel directly (no firmware) to prove the console
//! capture, waiting, panic detection, typing and disk handling against a real guest.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use keel_qemu::{BootError, Firmware, Session};

#[test]
fn kernel_banner_is_seen_then_its_panic_is_reported() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let started = Instant::now();
    let mut vm = Session::start(&panicking_kernel_options(&image, &kernel)).unwrap();
    vm.wait_for("Linux version", BOOT_TIMEOUT).unwrap();
    let banner_at = started.elapsed();
    assert!(vm.output_since(0).contains("Linux version"));

    // No root file system: the kernel panics well before this (minute-long) wait ends.
    let error = vm
        .wait_for("text the guest never prints", Duration::from_secs(60))
        .unwrap_err();
    let panic_at = started.elapsed();
    match &error {
        BootError::KernelPanic { tail, log_path, .. } => {
            assert!(
                tail.contains("VFS: Unable to mount root fs"),
                "tail:\n{tail}"
            );
            assert_eq!(log_path, vm.log_path());
        }
        other => panic!("expected KernelPanic, got {other}"),
    }
    assert!(
        panic_at < Duration::from_secs(40),
        "panic reported after {panic_at:?}"
    );
    let log = std::fs::read_to_string(vm.log_path()).unwrap();
    assert!(
        log.contains("Kernel panic - not syncing"),
        "log file lacks the panic"
    );
    eprintln!("banner after {banner_at:?}, panic reported after {panic_at:?}");
}

#[test]
fn shell_runs_typed_commands_and_powers_off() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let started = Instant::now();
    let mut vm = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    let ready_at = started.elapsed();

    // The typed line is echoed back; only running it prints "42-ok".
    vm.send_line("echo $((6*7))-ok").unwrap();
    vm.wait_for("42-ok", Duration::from_secs(30)).unwrap();
    // The cursor moved past the match: the same text is not found twice.
    let again = vm.wait_for("42-ok", Duration::from_secs(2)).unwrap_err();
    assert!(matches!(again, BootError::Timeout { .. }), "{again}");

    vm.send_line("poweroff -f").unwrap();
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    assert!(!vm.is_running());
    eprintln!(
        "shell ready after {ready_at:?}, powered off after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_pattern_that_never_appears_times_out_with_the_tail() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let mut vm = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();

    let started = Instant::now();
    let error = vm
        .wait_for("never printed", Duration::from_secs(3))
        .unwrap_err();
    let waited = started.elapsed();
    match &error {
        BootError::Timeout {
            tail,
            timeout,
            cpus,
            ..
        } => {
            assert_eq!(*timeout, Duration::from_secs(3));
            assert!(tail.contains(SHELL_READY), "tail:\n{tail}");
            // Where the guest's vCPUs were, from QEMU itself.
            assert!(cpus.contains("CPU #0"), "info cpus:\n{cpus}");
            assert!(error.to_string().contains("info cpus"), "{error}");
        }
        other => panic!("expected Timeout, got {other}"),
    }
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert!(error
        .to_string()
        .contains(&vm.log_path().display().to_string()));
}

#[test]
fn power_off_before_the_pattern_is_reported_as_exited() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let mut vm = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm.send_line("poweroff -f").unwrap();
    let error = vm
        .wait_for("never printed", Duration::from_secs(60))
        .unwrap_err();
    match error {
        BootError::Exited { status, .. } => assert!(status.unwrap().success()),
        other => panic!("expected Exited, got {other}"),
    }
}

#[test]
fn kill_cuts_power_at_once() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let mut vm = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    let started = Instant::now();
    let status = vm.kill().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!vm.is_running());
    assert!(vm.send_line("echo too late").is_err());
    let error = vm.wait_for("anything", Duration::from_secs(5)).unwrap_err();
    assert!(matches!(error, BootError::Exited { .. }), "{error}");
}

#[test]
fn shutdown_presses_the_power_button_and_kills_a_guest_that_ignores_it() {
    let kernel = test_kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let options = shell_options(&image, &kernel, &initramfs);

    // The guest's acpid powers off on the ACPI power button.
    let mut vm = Session::start(&options).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm.send_line("pidof acpid && ls /dev/input && echo acpid-$((2*3))-up")
        .unwrap();
    vm.wait_for("acpid-6-up", Duration::from_secs(30)).unwrap();
    let status = vm.shutdown(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", vm.log());
    assert!(vm.log().contains("keel-test-shell: power button"));

    // Without acpid nothing handles the button: killed after the grace period.
    let mut vm = Session::start(&options).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm.send_line("killall acpid; echo acpid-$((2*2))-gone")
        .unwrap();
    vm.wait_for("acpid-4-gone", Duration::from_secs(30))
        .unwrap();
    let started = Instant::now();
    let status = vm.shutdown(Duration::from_secs(3)).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(!vm.log().contains("keel-test-shell: power button"));
}

/// A shell guest, booted with `watchdog`, that has printed Linux's reset line and gone quiet, as
/// firmware that hangs after a reset does. Late kernel messages are kept off the console
/// (`dmesg -n 1`) and the kernel is not `quiet`: after a real reset it speaks at once, as OVMF
/// does.
fn quiet_after_a_reset(dir: &Path, watchdog: Option<Duration>) -> Session {
    let kernel = test_kernel();
    let initramfs = shell_initramfs(dir, &kernel);
    let image = blank_disk(dir, "disk.raw", 8);
    let mut opts = shell_options(&image, &kernel, &initramfs);
    opts.reset_watchdog = watchdog;
    if let Firmware::Direct { append, .. } = &mut opts.firmware {
        *append = append.replace(" quiet", "");
    }
    let mut vm = Session::start(&opts).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm.send_line("busybox dmesg -n 1; echo 'reboot: machine restart'; sleep 600")
        .unwrap();
    vm
}

#[test]
fn a_machine_silent_after_a_reset_is_reset_again_by_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = quiet_after_a_reset(dir.path(), Some(Duration::from_secs(4)));
    // Only a reset brings the shell back: the kernel boots again from the start.
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("the watchdog did not reset the machine: {e}"));
    assert_eq!(vm.watchdog_resets(), 1);
}

#[test]
fn without_the_watchdog_a_silent_machine_stays_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = quiet_after_a_reset(dir.path(), None);
    let error = vm
        .wait_for(SHELL_READY, Duration::from_secs(12))
        .unwrap_err();
    assert!(matches!(error, BootError::Timeout { .. }), "{error}");
    assert_eq!(vm.watchdog_resets(), 0);
}
