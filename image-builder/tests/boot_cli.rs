//! `keel boot` end to end: the default image boots under UEFI to the demo unit, and the exit
//! code tells a caller what happened.

mod support;

use std::process::Command;

#[test]
fn keel_boot_reaches_the_demo_unit_and_reports_timeouts() {
    let image = support::built_image();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let out = Command::new(support::keel_bin())
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
        Some(0),
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

    // A text that never appears: exit code 1 (timeout), and the image is left untouched.
    let before = std::fs::metadata(&image).unwrap().modified().unwrap();
    let out = Command::new(support::keel_bin())
        .args(["boot", "--expect", "no such text ever", "--timeout", "15"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&image).unwrap().modified().unwrap(),
        before
    );
}
