//! `keel boot` end to end: the default image boots under UEFI to the demo unit, and the exit
//! code tells a caller what happened. The boot runs on a KVM that cannot work (a `/dev/kvm`
//! masked by `/dev/null` in a private mount namespace) that the accelerator cache claims
//! works: it must end in a TCG boot of the same image that reaches the demo unit.

use std::process::Command;

use keel_cli_support::exit;
use keel_qemu::{remember_accel_verdict, ResolvedAccel, ACCEL_CACHE_ENV, ACCEL_ENV};

/// `sh -c` script: a private mount namespace whose /dev/kvm (if any) is /dev/null, then
/// exec the command in "$@".
const MASKED_KVM: &str = "mount --make-rprivate / && \
    { [ ! -e /dev/kvm ] || mount --bind /dev/null /dev/kvm; } && exec \"$@\"";

#[test]
fn keel_boot_reaches_the_demo_unit_and_reports_timeouts() {
    let image = keel_testkit::built_image();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let cache = dir.path().join("accel");
    remember_accel_verdict(&cache, ResolvedAccel::Kvm, None);
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", MASKED_KVM, "sh"])
        .arg(keel_testkit::keel_bin())
        .env(ACCEL_CACHE_ENV, &cache)
        .env_remove(ACCEL_ENV)
        .args([
            "boot",
            "--expect",
            "Hello World",
            "--timeout",
            "240",
            "--log",
        ])
        .arg(&log)
        .arg(&image)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(exit::OK),
        "keel boot failed: {}\n--- console tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        console
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(console.contains("keel-init: ") && console.contains("Hello World"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("restarting the boot under TCG") && stderr.contains("QEMU started (Tcg)"),
        "no fallback from the broken KVM said on stderr:\n{stderr}"
    );
    let verdict = std::fs::read_to_string(&cache).unwrap();
    assert!(verdict.contains("accel=tcg"), "{verdict}");

    // A bad KEEL_QEMU_ACCEL: a usage error, the variable and the allowed values named, nothing run.
    let out = Command::new(keel_testkit::keel_bin())
        .env(ACCEL_ENV, "warp")
        .arg("boot")
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{stderr}");
    assert!(
        stderr.contains("KEEL_QEMU_ACCEL=\"warp\"") && stderr.contains("auto, kvm, tcg"),
        "{stderr}"
    );

    // A text that never appears: a timeout, and the image is left untouched.
    let before = std::fs::metadata(&image).unwrap().modified().unwrap();
    let out = Command::new(keel_testkit::keel_bin())
        .args(["boot", "--expect", "no such text ever", "--timeout", "15"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit::TIMEOUT),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&image).unwrap().modified().unwrap(),
        before
    );
}
