//! The unit as the image ships it, enabled beside the updater's health gate, passes
//! `systemd-analyze verify` without an ordering cycle (ordering it after the gate's
//! mark-good made one: the gate comes after multi-user.target, which wants the manager).

use std::path::Path;
use std::process::Command;

#[test]
fn unit_enabled_beside_the_health_gate_has_no_ordering_cycle() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let unit_dir = dir.path().join("system");
    let wants = unit_dir.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    for from in ["updater/units", "reboot-manager/units"] {
        for e in std::fs::read_dir(repo.join(from)).unwrap() {
            let e = e.unwrap();
            // systemd-analyze checks that ExecStart exists: point it at real binaries.
            let text = std::fs::read_to_string(e.path())
                .unwrap()
                .replace(
                    "/usr/bin/keel-reboot-manager",
                    env!("CARGO_BIN_EXE_keel-reboot-manager"),
                )
                .replace("/usr/bin/keel-update", "/bin/true");
            std::fs::write(unit_dir.join(e.file_name()), text).unwrap();
        }
    }
    for unit in [
        "keel-update-mark-good.service",
        "keel-reboot-manager.service",
    ] {
        std::os::unix::fs::symlink(format!("../{unit}"), wants.join(unit)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
        .args(["verify", "--man=no"])
        .arg(unit_dir.join("keel-reboot-manager.service"))
        .arg(unit_dir.join("keel-update-mark-good.service"))
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

/// A unit that multi-user.target waits for must not wait for network-online.target: on a
/// machine without a configured link, systemd-networkd-wait-online gives up only after two
/// minutes, and every boot (and every unit ordered after multi-user.target) waited that long
/// while the manager's unit did so. The manager retries its lock servers instead.
#[test]
fn no_unit_enabled_at_boot_waits_for_network_online() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = [
        "updater/units",
        "reboot-manager/units",
        "rootfs/debian-bookworm/files/usr/lib/systemd/system",
    ];
    // The demo pulls its image, so it waits for the network as Debian's docker.service does;
    // a machine without Ethernet skips that wait (checked below).
    const NEEDS_THE_NETWORK: &[&str] = &["hello.service"];
    // Off in the image; a cloud-config that starts it wants etcd on the network (as Flatcar's
    // etcd-member.service does), so it is checked to stay out of the image's enable_units.
    const STARTED_ON_REQUEST: &[&str] = &["etcd-member.service"];
    let definition = std::fs::read_to_string(repo.join("rootfs/debian-bookworm.yaml")).unwrap();
    let enabled_by_image: Vec<&str> = definition
        .split("\nenable_units:\n")
        .nth(1)
        .expect("rootfs/debian-bookworm.yaml has enable_units")
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().strip_prefix("- "))
        .collect();
    assert!(
        enabled_by_image.contains(&"hello.service"),
        "enable_units not read: {enabled_by_image:?}"
    );
    for unit in STARTED_ON_REQUEST {
        assert!(
            !enabled_by_image.contains(unit),
            "rootfs/debian-bookworm.yaml enables {unit}, which waits for network-online.target"
        );
    }
    let mut checked = 0;
    for from in dirs {
        for e in std::fs::read_dir(repo.join(from)).unwrap() {
            let path = e.unwrap().path();
            // An alias (etcd2.service) is judged as the unit it names.
            let real = std::fs::canonicalize(&path).unwrap();
            let name = real.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir()
                || NEEDS_THE_NETWORK.contains(&name.as_str())
                || STARTED_ON_REQUEST.contains(&name.as_str())
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let enabled = text
                .lines()
                .any(|l| l.starts_with("WantedBy=") && l.contains("multi-user.target"));
            if !enabled {
                continue;
            }
            checked += 1;
            for (n, line) in text.lines().enumerate() {
                let dep = ["After=", "Wants=", "Requires="]
                    .iter()
                    .any(|k| line.starts_with(k));
                assert!(
                    !(dep && line.contains("network-online.target")),
                    "{}:{}: {line}: enabled for multi-user.target, so every boot would wait \
                     for the network to come online (two minutes without a link)",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(
        checked >= 3,
        "only {checked} enabled units found: wrong directories?"
    );
    let skip = std::fs::read_to_string(repo.join(
        "rootfs/debian-bookworm/files/usr/lib/systemd/system/\
         systemd-networkd-wait-online.service.d/keel-no-ethernet.conf",
    ))
    .unwrap();
    assert!(skip.contains("\nExecCondition="), "{skip}");
}
