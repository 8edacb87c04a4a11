//! Two Keel guests in QEMU take turns rebooting into an update, coordinated by the
//! keel-reboot-manager each image ships, on a real 3-member etcd cluster (Debian's 3.4) on host
//! loopback that the guests reach through QEMU's user network (10.0.2.2). Each guest applies the same 2.0.0
//! payload; its manager takes locksmith's semaphore (max 1), reboots through the firmware, and
//! on the new boot releases the lock once the health gate marked the slot good; only then does
//! the other guest reboot. etcd's revision history is the witness: never two holders, each
//! machine held it once, and it ends empty.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu::{BootOptions, NetOptions, ScriptedGuest};
use keel_testkit::etcd::Cluster;

const BOOT: Duration = Duration::from_secs(300);
/// Both guests applying, then each reboot in turn, under TCG on two shared cores.
const ROLLOUT: Duration = Duration::from_secs(900);
const RESTART: &str = "reboot: machine restart";

/// The guest's script: on 1.0.0 point the manager at etcd (a persistent drop-in makes it poll
/// every 2 s), stage 2.0.0 from /dev/vdc and leave the rest to the manager; on 2.0.0 report
/// the manager's state once this boot is marked good.
fn script(dir: &Path, endpoints: &str) -> PathBuf {
    let text = format!(
        "#!/bin/sh\n\
         systemctl stop hello.service\n\
         V=$(sed -n 's/^KEEL_VERSION=//p' /usr/share/keel/release)\n\
         case $V in\n\
         1.0.0)\n\
         mkdir -p /etc/keel /etc/systemd/system/keel-reboot-manager.service.d\n\
         printf 'REBOOT_STRATEGY=etcd-lock\\nLOCKSMITHD_ENDPOINT={endpoints}\\nLOGIN_GRACE=0s\\n' > /etc/keel/update.conf\n\
         printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/keel-reboot-manager run --poll-secs 2 --backoff-max-secs 10\\n' \
           > /etc/systemd/system/keel-reboot-manager.service.d/poll.conf\n\
         systemctl daemon-reload\n\
         systemctl restart keel-reboot-manager.service\n\
         echo \"@@READY $V $(cat /etc/machine-id)\"\n\
         {{ keel-update apply /dev/vdc; echo \"@@APPLIED $?\"; }} 2>&1 | cat\n\
         ;;\n\
         2.0.0)\n\
         systemctl is-system-running --wait >/dev/null\n\
         echo \"@@READY $V $(cat /etc/machine-id)\"\n\
         for i in $(seq 60); do keel-reboot-manager status | grep -q idle && break; sleep 2; done\n\
         echo \"@@MANAGER $(keel-reboot-manager status | tr '\\n' ' ')\"\n\
         ;;\n\
         esac\n"
    );
    let p = dir.join("script.img");
    keel_qemu::write_script_disk(&p, &text).unwrap();
    p
}

struct Machine {
    guest: ScriptedGuest,
    id: String,
}

fn start(dir: &Path, disk: &Path, payload: &Path, endpoints: &str) -> ScriptedGuest {
    let mut opts = BootOptions::new(disk);
    opts.mem_mb = 1024;
    opts.extra_disks = vec![script(dir, endpoints), payload.to_path_buf()];
    opts.net = Some(NetOptions {
        restrict: false,
        ..NetOptions::default()
    });
    opts.log_path = Some(dir.join("console.log"));
    ScriptedGuest::start(opts, BOOT).unwrap()
}

/// READY's version and machine id.
fn ready(g: &mut ScriptedGuest) -> (String, String) {
    let line = g.value("READY").unwrap();
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or_default().to_string();
    let id = words.next().unwrap_or_default().to_string();
    (version, id)
}

/// Which machine shows `RESTART` first (after each one's current cursor), waiting up to
/// `ROLLOUT`.
fn first_to_restart(ms: &[Machine]) -> usize {
    let started = Instant::now();
    loop {
        if let Some(i) = ms.iter().position(|m| {
            let s = &m.guest.session;
            s.output_since(s.cursor()).contains(RESTART)
        }) {
            return i;
        }
        assert!(
            started.elapsed() < ROLLOUT,
            "no guest rebooted within {ROLLOUT:?}; consoles: {}",
            ms.iter()
                .map(|m| m.guest.session.log_path().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier runs the semaphore on real etcd in rollout.rs (eight managers, an etcd member dying) and the manager's firmware reboot in a guest in updater/tests/qemu_update.rs"]
fn two_guests_reboot_into_an_update_one_at_a_time_under_the_etcd_lock() {
    let v1 = keel_testkit::build_image(&keel_testkit::e2e_opts("e2e-v1", "1.0.0"));
    let v2 = keel_testkit::build_image(&keel_testkit::e2e_opts("e2e-v2", "2.0.0"));
    let etcd = Cluster::start(3);
    let endpoints = etcd.client_urls();
    // The same members as the guests see them.
    let guest_endpoints = endpoints.replace("127.0.0.1", "10.0.2.2");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ms: Vec<Machine> = dirs
        .iter()
        .map(|d| {
            let disk = d.path().join("disk.raw");
            keel_testkit::sparse_copy_to(&v1.disk, &disk);
            let payload = d.path().join("v2.img");
            keel_testkit::sparse_copy_to(&v2.payload, &payload);
            let mut guest = start(d.path(), &disk, &payload, &guest_endpoints);
            assert_eq!(guest.booted().unwrap(), ("USR-A".into(), "1.0.0".into()));
            Machine {
                guest,
                id: String::new(),
            }
        })
        .collect();
    for m in &mut ms {
        let (version, id) = ready(&mut m.guest);
        assert_eq!(version, "1.0.0");
        m.id = id;
        let out = m.guest.until("@@APPLIED ").unwrap();
        assert_eq!(m.guest.rest_of_line().unwrap(), "0", "apply failed:\n{out}");
    }
    assert_ne!(ms[0].id, ms[1].id, "both guests have the same machine id");

    let first = first_to_restart(&ms);
    let second = 1 - first;
    eprintln!("{} reboots first", ms[first].id);
    // Its lock is held until its new boot passed the gate: the other must not reboot meanwhile.
    ms[first].guest.power_cycle_on_reset().unwrap();
    assert_eq!(
        ms[first].guest.booted().unwrap(),
        ("USR-B".into(), "2.0.0".into())
    );
    assert_eq!(ready(&mut ms[first].guest).0, "2.0.0");
    let manager = ms[first].guest.value("MANAGER").unwrap();
    assert!(manager.contains("idle"), "after its reboot: {manager}");
    let s = &ms[second].guest.session;
    assert!(
        !s.output_since(s.cursor()).contains(RESTART),
        "the second guest rebooted while the first held the lock; console {}",
        s.log_path().display()
    );

    ms[second].guest.power_cycle_on_reset().unwrap();
    assert_eq!(
        ms[second].guest.booted().unwrap(),
        ("USR-B".into(), "2.0.0".into())
    );
    assert_eq!(ready(&mut ms[second].guest).0, "2.0.0");
    let manager = ms[second].guest.value("MANAGER").unwrap();
    assert!(manager.contains("idle"), "after its reboot: {manager}");

    let history = common::holders_history(&endpoints, None);
    let holders: Vec<Vec<String>> = history.iter().map(|s| s.holders().to_vec()).collect();
    eprintln!("semaphore holders over time: {holders:?}");
    assert!(holders.iter().all(|h| h.len() <= 1), "{holders:?}");
    let order: Vec<&String> =
        holders
            .iter()
            .filter_map(|h| h.first())
            .fold(Vec::new(), |mut seen, id| {
                if seen.last() != Some(&id) {
                    seen.push(id);
                }
                seen
            });
    assert_eq!(
        order,
        vec![&ms[first].id, &ms[second].id],
        "each machine holds the lock once, in reboot order: {holders:?}"
    );
    assert!(
        holders.last().is_some_and(Vec::is_empty),
        "the lock was not released at the end: {holders:?}"
    );
}
