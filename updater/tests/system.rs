//! Pieces that touch the running system, as far as the host allows: /usr's backing device via
//! sysfs (a loop-mounted erofs; the dm-verity path is exercised in QEMU), and the systemd units
//! with the generator's drop-ins checked by systemd-analyze.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use keel_update::health;

#[test]
fn backing_device_of_a_mount_that_is_not_a_partition() {
    let w = world();
    let img = w.write_payload(
        "usr.erofs",
        &w.v1.body[..w.v1.metadata.verity.data_size as usize],
    );
    let (code, out, err) = run(Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&img));
    assert_eq!(code, 0, "losetup: {err}");
    let dev = out.trim().to_string();
    let mnt = w.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro", &dev])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    let result = mounted.then(|| {
        assert!(mnt.join("share/keel/release").exists());
        keel_update::Target::running_from(&mnt, &mnt.join("share/keel/release"))
    });
    if mounted {
        let _ = Command::new("umount").arg(&mnt).status();
    }
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(mounted, "mount -t erofs failed");
    let err = result.unwrap().unwrap_err().to_string();
    let name = dev.trim_start_matches("/dev/");
    assert!(
        err.contains(&format!("block device {name}, which is not a partition")),
        "{err}"
    );
}

/// The units as shipped plus the generator's drop-ins pass `systemd-analyze verify`.
#[test]
fn units_and_generated_dropins_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let dir = tempfile::tempdir().unwrap();
    let unit_dir = dir.path().join("system");
    std::fs::create_dir(&unit_dir).unwrap();
    for e in std::fs::read_dir(&units).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap();
        // systemd-analyze checks that ExecStart exists: point it at the test binary.
        let text = text.replace("/usr/bin/keel-update", env!("CARGO_BIN_EXE_keel-update"));
        std::fs::write(unit_dir.join(e.file_name()), text).unwrap();
    }
    // Enabled as the builder enables it (WantedBy=multi-user.target): this is what would
    // reveal an ordering cycle with the gate.
    let wants = unit_dir.join("multi-user.target.wants");
    std::fs::create_dir(&wants).unwrap();
    for unit in ["keel-update-mark-good.service", "keel-update-agent.service"] {
        std::os::unix::fs::symlink(format!("../{unit}"), wants.join(unit)).unwrap();
    }
    let req = dir.path().join("required-units");
    std::fs::write(&req, "systemd-journald.service\n").unwrap();
    let listed = health::required_units(&[req]).unwrap();
    let written = health::generate(&unit_dir, &listed, true).unwrap();
    assert_eq!(written.len(), 3);
    let dropin = std::fs::read_to_string(
        unit_dir.join("keel-health-check.service.d/50-required-units.conf"),
    )
    .unwrap();
    assert!(
        dropin.contains("Wants=systemd-journald.service"),
        "{dropin}"
    );
    assert!(
        dropin.contains("After=systemd-journald.service"),
        "{dropin}"
    );

    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
        .args(["verify", "--man=no"])
        .arg(unit_dir.join("keel-update-mark-good.service"))
        .arg(unit_dir.join("keel-health.target"))
        .arg(unit_dir.join("keel-health-check.service"))
        .arg(unit_dir.join("keel-update-agent.service"))
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even on ordering cycles and unknown keys; read what it says.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("keel") || l.contains("cycle") || l.contains("Unknown"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}
