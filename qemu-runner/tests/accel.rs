//! The accelerator fallback on any machine: a KVM verdict that KVM cannot honour (here a
//! `/dev/kvm` masked by `/dev/null` in a private mount namespace, so QEMU's KVM set-up fails
//! even where real KVM works) ends in the same boot under TCG, said once on stderr and
//! remembered for the next boots. Needs root (unshare, mount).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use keel_qemu::{
    remember_accel_verdict, BootError, ResolvedAccel, Session, ACCEL_CACHE_ENV, ACCEL_ENV,
};

const INNER: &str = "KEEL_QEMU_TEST_INNER";

/// Runs the ignored test `name` of this binary in a private mount namespace where /dev/kvm
/// is /dev/null (or absent, if the machine has none), with the accelerator cache at `cache`. Returns (success, stderr).
fn run_with_masked_kvm(name: &str, cache: &Path) -> (bool, String) {
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(
            "mount --make-rprivate / && \
             { [ ! -e /dev/kvm ] || mount --bind /dev/null /dev/kvm; } && \
             exec \"$0\" --exact \"$1\" --ignored --nocapture --test-threads=1",
        )
        .arg(&me)
        .arg(name)
        .env(INNER, "1")
        .env(ACCEL_CACHE_ENV, cache)
        .env_remove(ACCEL_ENV)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), format!("{stdout}\n{stderr}"))
}

#[test]
fn a_kvm_that_cannot_run_the_guest_ends_in_a_tcg_boot_that_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("accel");
    // As if the probe had passed: the boot itself must find out.
    remember_accel_verdict(&cache, ResolvedAccel::Kvm, None);
    assert!(std::fs::read_to_string(&cache)
        .unwrap()
        .contains("accel=kvm"));

    let (ok, output) = run_with_masked_kvm("inner_boot_on_masked_kvm", &cache);
    assert!(ok, "inner test failed:\n{output}");
    assert!(
        output.contains("restarting the boot under TCG"),
        "the fallback was not announced:\n{output}"
    );
    assert_eq!(
        output.matches("keel-qemu: KVM cannot run").count(),
        1,
        "announced more than once:\n{output}"
    );
    let verdict = std::fs::read_to_string(&cache).unwrap();
    assert!(
        verdict.contains("accel=tcg") && verdict.contains("reason=") && verdict.contains("kvm"),
        "{verdict}"
    );
}

/// The inner half: run only by the test above, in its namespace.
#[test]
#[ignore = "run by a_kvm_that_cannot_run_the_guest_ends_in_a_tcg_boot_that_is_remembered"]
fn inner_boot_on_masked_kvm() {
    assert!(std::env::var_os(INNER).is_some(), "run by the outer test");
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);

    let mut vm = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    assert_eq!(vm.accel(), ResolvedAccel::Tcg);
    let reason = vm.fallback_reason().expect("the boot left KVM").to_string();
    assert!(reason.to_ascii_lowercase().contains("kvm"), "{reason}");
    vm.send_line("poweroff -f").unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());

    // The verdict is remembered: the next boot starts on TCG, nothing to fall back from.
    let mut again = Session::start(&shell_options(&image, &kernel, &initramfs)).unwrap();
    assert_eq!(again.accel(), ResolvedAccel::Tcg);
    assert_eq!(again.fallback_reason(), None);
    again.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    eprintln!("fell back from KVM: {reason}");
}

#[test]
fn a_guest_that_goes_silent_after_its_kernel_started_ends_the_wait_early() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let mut options = shell_options(&image, &kernel, &initramfs);
    // Not quiet: the banner shows that the kernel started.
    if let keel_qemu::Firmware::Direct { append, .. } = &mut options.firmware {
        *append = append.replace(" quiet", "");
    }
    options.silence_limit = Some(Duration::from_secs(8));
    let mut vm = Session::start(&options).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    // The shell now waits for input and prints nothing.
    let started = std::time::Instant::now();
    let error = vm
        .wait_for("text the guest never prints", Duration::from_secs(600))
        .unwrap_err();
    let waited = started.elapsed();
    match &error {
        BootError::Silent { silent_for, .. } => {
            assert!(*silent_for >= Duration::from_secs(8), "{error}")
        }
        other => panic!("expected Silent, got {other}"),
    }
    assert!(waited < Duration::from_secs(120), "silent after {waited:?}");
    assert!(error.to_string().contains("went silent"), "{error}");
}
