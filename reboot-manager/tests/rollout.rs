//! The real `keel-reboot-manager` as host processes on a real etcd cluster (Debian's etcd 3.4,
//! three members on loopback). Each process is one machine: its root holds update.conf and
//! machine-id, its status command prints the update state this harness keeps, and its reboot
//! command leaves a mark. The harness then does what a reboot does: stops the process, waits,
//! brings the machine back on the new version (not yet marked good), passes the health gate a
//! moment later, and starts the manager again as the new boot's unit would.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::holders_history;
use keel_testkit::etcd::{free_port, Cluster};
use keel_testkit::reboot_sim::{drive, dump, Machine};

const BIN: &str = env!("CARGO_BIN_EXE_keel-reboot-manager");
fn conf(endpoints: &str, group: &str, extra: &str) -> String {
    format!(
        "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT={endpoints}\nLOCKSMITHD_GROUP={group}\n{extra}"
    )
}

fn lockctl(endpoints: &str, group: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["lock", "--endpoint", endpoints, "--group", group])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lock {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all_rebooted_and_released(machines: &[Machine]) -> bool {
    machines
        .iter()
        .all(|m| m.reboots.len() == 1 && m.state().contains("\"idle\""))
}

fn rollout(max: i64, kill_a_member: bool) {
    let mut cluster = Cluster::start(3);
    let eps = cluster.client_urls();
    let group = format!("max{max}");
    assert_eq!(
        lockctl(&eps, &group, &["set-max", &max.to_string()]),
        format!("Old-Max: 1\nMax: {max}\n")
    );
    let mut machines: Vec<Machine> = (0..8)
        .map(|i| {
            Machine::new(
                Path::new(BIN),
                &format!("machine-{max}-{i}"),
                &conf(&eps, &group, ""),
            )
        })
        .collect();
    for m in &mut machines {
        m.start(&[]);
    }
    for m in &machines {
        m.stage_update();
    }
    let mut killed = !kill_a_member;
    let mut most_in_flight = 0;
    drive(
        &mut machines,
        Duration::from_secs(240),
        all_rebooted_and_released,
        |ms| {
            // What the machines do, not only what etcd says: rebooting or not yet through the
            // health gate means holding the lock, so never more than max at once.
            let in_flight = ms.iter().filter(|m| m.in_flight()).count();
            assert!(
                in_flight as i64 <= max,
                "{in_flight} machines rebooting at once\n{}",
                dump(ms)
            );
            most_in_flight = most_in_flight.max(in_flight);
            let rebooted = ms.iter().filter(|m| !m.reboots.is_empty()).count();
            if !killed && rebooted >= 3 {
                cluster.kill(0);
                killed = true;
            }
        },
    );
    assert!(killed);
    assert_eq!(
        most_in_flight as i64, max,
        "never {max} machines rebooting at once"
    );
    let live = (1..3)
        .map(|i| cluster.client_url(i))
        .collect::<Vec<_>>()
        .join(",");
    let history = holders_history(&live, Some(&group));
    let most = history.iter().map(|s| s.holders().len()).max().unwrap();
    for s in &history {
        assert!(s.holders().len() as i64 <= max, "{s:?} in {history:?}");
    }
    assert_eq!(most as i64, max, "never {max} holders at once: {history:?}");
    let last = history.last().unwrap();
    assert!(last.holders().is_empty(), "{last:?}");
    // Every machine appears as a holder at some point, and reboots happened while it held.
    for m in &machines {
        assert!(
            history.iter().any(|s| s.holds(&m.id)),
            "{} never held",
            m.id
        );
    }
    let status = lockctl(&live, &group, &["status"]);
    assert_eq!(status, format!("Available: {max}\nMax: {max}\n"));
}

#[test]
fn eight_machines_reboot_one_at_a_time_with_max_1() {
    rollout(1, false);
}

#[test]
fn eight_machines_reboot_two_at_a_time_with_max_2_while_an_etcd_member_dies() {
    rollout(2, true);
}

/// A holder that never comes back blocks the rollout (the lock is not taken from it), until
/// an operator runs `unlock ID`; with `LOCK_TTL` the hold expires by itself instead.
#[test]
fn a_dead_holder_blocks_until_unlock_or_its_expiry() {
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    for (group, extra) in [("dead-unlock", ""), ("dead-ttl", "LOCK_TTL=4s\n")] {
        let mut machines: Vec<Machine> = (0..3)
            .map(|i| {
                Machine::new(
                    Path::new(BIN),
                    &format!("{group}-{i}"),
                    &conf(&eps, group, extra),
                )
            })
            .collect();
        machines[0].dies_on_reboot = true;
        machines[0].start(&[]);
        machines[0].stage_update();
        drive(
            &mut machines,
            Duration::from_secs(30),
            |ms| !ms[0].reboots.is_empty(),
            |_| {},
        );
        for m in &mut machines[1..] {
            m.start(&[]);
            m.stage_update();
        }
        // The others wait on the lock, and say so.
        let waited = Instant::now();
        drive(
            &mut machines,
            Duration::from_secs(30),
            |ms| {
                ms[1..]
                    .iter()
                    .all(|m| m.state().contains("semaphore is at 0"))
            },
            |_| {},
        );
        if extra.is_empty() {
            std::thread::sleep(Duration::from_secs(3));
            for m in &mut machines[1..] {
                m.tick();
                assert!(m.reboots.is_empty(), "{} rebooted past a held lock", m.id);
            }
            assert!(lockctl(&eps, group, &["status"]).contains(&machines[0].id));
            lockctl(&eps, group, &["unlock", &machines[0].id.clone()]);
        }
        drive(
            &mut machines,
            Duration::from_secs(60),
            |ms| {
                ms[1..]
                    .iter()
                    .all(|m| m.reboots.len() == 1 && m.state().contains("\"idle\""))
            },
            |_| {},
        );
        if !extra.is_empty() {
            assert!(
                waited.elapsed() >= Duration::from_secs(2),
                "the expiry let others go too early"
            );
        }
        let history = holders_history(&eps, Some(group));
        assert!(
            history.iter().all(|s| s.holders().len() <= 1),
            "{history:?}"
        );
    }
}

/// A machine whose update failed (it came back on the old version) keeps the lock, so the
/// rollout stops there; its state says why.
#[test]
fn a_failed_update_keeps_the_lock_and_stops_the_rollout() {
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    let group = "failed";
    let mut machines: Vec<Machine> = (0..2)
        .map(|i| {
            Machine::new(
                Path::new(BIN),
                &format!("failing-{i}"),
                &conf(&eps, group, ""),
            )
        })
        .collect();
    machines[0].update_fails = true;
    machines[0].start(&[]);
    machines[0].stage_update();
    drive(
        &mut machines,
        Duration::from_secs(30),
        |ms| ms[0].state().contains("holding-after-failure"),
        |_| {},
    );
    machines[1].start(&[]);
    machines[1].stage_update();
    drive(
        &mut machines,
        Duration::from_secs(30),
        |ms| ms[1].state().contains("semaphore is at 0"),
        |_| {},
    );
    std::thread::sleep(Duration::from_secs(2));
    machines[1].tick();
    assert!(machines[1].reboots.is_empty());
    let state = machines[0].state();
    assert!(state.contains("\"version\": \"2.0.0\""), "{state}");
    assert!(lockctl(&eps, group, &["status"]).contains("failing-0"));
}

/// etcd-lock with etcd unreachable: no reboot, and the state names the endpoint.
#[test]
fn unreachable_etcd_means_no_reboot_and_says_why() {
    let port = free_port();
    let mut m = Machine::new(
        Path::new(BIN),
        "lonely",
        &conf(&format!("http://127.0.0.1:{port}"), "x", ""),
    );
    m.start(&[]);
    m.stage_update();
    let start = Instant::now();
    while !m.state().contains("waiting-for-lock") {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", m.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    m.tick();
    assert!(m.reboots.is_empty());
    let state = m.state();
    assert!(state.contains(&format!("127.0.0.1:{port}")), "{state}");
}

/// The reboot window with an injected clock: just before Thursday 04:00 the reboot waits for
/// the window to open, then happens; after 05:00 it waits for next week.
#[test]
fn the_reboot_window_is_honoured() {
    let thu_0400: i64 = 1_796_270_400; // 2026-12-03 04:00 UTC, a Thursday
    let conf = "REBOOT_STRATEGY=reboot\nREBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\n";
    let mut early = Machine::new(Path::new(BIN), "early", conf);
    let mut late = Machine::new(Path::new(BIN), "late", conf);
    early.start(&["--clock-start", &(thu_0400 - 3).to_string()]);
    late.start(&["--clock-start", &(thu_0400 + 3600 + 60).to_string()]);
    let staged = Instant::now();
    early.stage_update();
    late.stage_update();
    let mut ms = [early, late];
    drive(
        &mut ms,
        Duration::from_secs(30),
        |ms| !ms[0].reboots.is_empty(),
        |_| {},
    );
    let [early, late] = &mut ms;
    assert!(
        early.reboots[0] - staged >= Duration::from_secs(2),
        "rebooted before the window opened"
    );
    std::thread::sleep(Duration::from_secs(1));
    late.tick();
    assert!(late.reboots.is_empty());
    let state = late.state();
    assert!(state.contains("waiting-for-window"), "{state}");
    assert!(
        state.contains(&format!("\"opens_unix\": {}", thu_0400 + 7 * 86_400)),
        "{state}"
    );
}

/// Bad settings: the manager exits with the file, line and key, and never reboots.
#[test]
fn a_bad_setting_is_named_and_nothing_reboots() {
    for (text, expect) in [
        (
            "REBOOT_STRATEGY=etcd_lock\n",
            "update.conf:1: REBOOT_STRATEGY",
        ),
        (
            "REBOOT_STRATEGY=reboot\nREBOOT_WINDOW_START=Thu 4pm\nREBOOT_WINDOW_LENGTH=1h\n",
            "update.conf:2: REBOOT_WINDOW_START",
        ),
        (
            "REBOOT_STRATEGY=fleetlock\nFLEETLOCK_URL=lock.example:8080\n",
            "update.conf:2: FLEETLOCK_URL",
        ),
    ] {
        let m = Machine::new(Path::new(BIN), "bad", text);
        m.stage_update();
        let out = Command::new(BIN)
            .arg("run")
            .arg("--root")
            .arg(m.root())
            .arg("--reboot-command")
            .arg(format!("touch {}", m.root().join("rebooting").display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}"); // USAGE
        assert!(err.contains(expect), "{err}");
        assert!(err.contains(&m.root().join("etc/keel/update.conf").display().to_string()));
        assert!(!m.root().join("rebooting").exists());
    }
}

/// A logged-in user gets the grace period before the reboot.
#[test]
fn a_logged_in_user_delays_the_reboot_by_the_grace_period() {
    let mut m = Machine::new(
        Path::new(BIN),
        "busy",
        "REBOOT_STRATEGY=reboot\nLOGIN_GRACE=3s\n",
    );
    let mut rec = vec![0u8; 384];
    rec[0] = 7; // USER_PROCESS
    rec[8..13].copy_from_slice(b"pts/0");
    rec[44..48].copy_from_slice(b"core");
    std::fs::write(m.root().join("run/utmp"), rec).unwrap();
    m.start(&[]);
    let staged = Instant::now();
    m.stage_update();
    let mut ms = [m];
    drive(
        &mut ms,
        Duration::from_secs(30),
        |ms| !ms[0].reboots.is_empty(),
        |_| {},
    );
    let waited = ms[0].reboots[0] - staged;
    assert!(
        waited >= Duration::from_secs(3),
        "{waited:?}\n{}",
        ms[0].log()
    );
    assert!(ms[0].log().contains("core@pts/0"), "{}", ms[0].log());
}

/// `keel lockd` serving FleetLock over the etcd semaphore.
struct Lockd {
    child: Child,
    url: String,
}

impl Lockd {
    fn start(endpoints: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let child = keel_testkit::spawn_tied(
            Command::new(BIN)
                .args([
                    "lockd",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--endpoint",
                    endpoints,
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "lockd did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, path: &str, header: bool, body: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.post(&format!("{}{path}", self.url));
        if header {
            req = req.header("fleet-lock-protocol", "true");
        }
        let mut resp = req.send(body.as_bytes()).unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }
}

impl Drop for Lockd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn params(id: &str, group: &str) -> String {
    format!(r#"{{"client_params":{{"id":"{id}","group":"{group}"}}}}"#)
}

/// The server's answers over HTTP (locksmith.md §5's matrix as Keel answers it), and the
/// default group sharing locksmith's default semaphore with `etcd-lock` machines.
#[test]
fn lockd_answers_fleetlock_over_the_etcd_semaphore() {
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    let lockd = Lockd::start(&eps, &[]);
    let (s, body) = lockd.post("/v1/pre-reboot", false, &params("a", "default"));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("missing_header"), "{body}");
    let (s, body) = lockd.post("/v1/pre-reboot", true, "{not json");
    assert_eq!((s, body.contains("decode_error")), (400, true), "{body}");
    let (s, body) = lockd.post("/v1/pre-reboot", true, &params("a", "bad group!"));
    assert_eq!(
        (s, body.contains("invalid_client_identity")),
        (400, true),
        "{body}"
    );

    assert_eq!(
        lockd
            .post("/v1/pre-reboot", true, &params("a", "default"))
            .0,
        200
    );
    // Recursive for the holder; full for anyone else.
    assert_eq!(
        lockd
            .post("/v1/pre-reboot", true, &params("a", "default"))
            .0,
        200
    );
    let (s, body) = lockd.post("/v1/pre-reboot", true, &params("b", "default"));
    assert_eq!((s, body.contains("lock_held")), (423, true), "{body}");
    // The default group is locksmith's default key: locksmithctl's view agrees.
    let status = Command::new(BIN)
        .args(["lock", "--endpoint", &eps, "status"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status, "Available: 0\nMax: 1\n\nMACHINE ID\na\n");
    // A non-holder's steady-state is fine and changes nothing; the holder's frees the slot.
    assert_eq!(
        lockd
            .post("/v1/steady-state", true, &params("b", "default"))
            .0,
        200
    );
    assert_eq!(
        lockd
            .post("/v1/steady-state", true, &params("a", "default"))
            .0,
        200
    );
    assert_eq!(
        lockd
            .post("/v1/pre-reboot", true, &params("b", "default"))
            .0,
        200
    );
    assert_eq!(
        lockd
            .post("/v1/steady-state", true, &params("b", "default"))
            .0,
        200
    );

    // Machines with REBOOT_STRATEGY=fleetlock roll through it one at a time.
    let conf = format!(
        "REBOOT_STRATEGY=fleetlock\nFLEETLOCK_URL={}\nFLEETLOCK_GROUP=workers\n",
        lockd.url
    );
    let mut machines: Vec<Machine> = (0..4)
        .map(|i| Machine::new(Path::new(BIN), &format!("fl-{i}"), &conf))
        .collect();
    for m in &mut machines {
        m.start(&[]);
        m.stage_update();
    }
    let mut most = 0;
    drive(
        &mut machines,
        Duration::from_secs(120),
        |ms| {
            ms.iter()
                .all(|m| m.reboots.len() == 1 && m.state().contains("\"idle\""))
        },
        |ms| {
            let n = ms.iter().filter(|m| m.in_flight()).count();
            assert!(n <= 1, "{n} rebooting at once\n{}", dump(ms));
            most = most.max(n);
        },
    );
    assert_eq!(most, 1);
    let history = holders_history(&eps, Some("workers"));
    assert!(
        history.iter().all(|s| s.holders().len() <= 1),
        "{history:?}"
    );
    for m in &machines {
        assert!(
            history.iter().any(|s| s.holds(&m.id)),
            "{} never held",
            m.id
        );
    }
}
