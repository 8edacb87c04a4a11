//! A simulated fleet for the reboot manager's tests and benchmark: the real
//! `keel-reboot-manager` as host processes, one per machine. Each machine's root holds
//! update.conf and machine-id, its status command prints the update state kept here, and its
//! reboot command leaves a mark. [`Machine::tick`] then does what a reboot does: stops the
//! process, waits [`REBOOT_TIME`], brings the machine back on the new version (not yet marked
//! good), passes the health gate [`HEALTH_GATE_TIME`] later, and starts the manager again as
//! the new boot's unit would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a simulated reboot takes, and how long the new boot takes to pass its health gate.
pub const REBOOT_TIME: Duration = Duration::from_millis(400);
pub const HEALTH_GATE_TIME: Duration = Duration::from_millis(600);

pub struct Machine {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub id: String,
    child: Option<Child>,
    /// When each reboot command ran.
    pub reboots: Vec<Instant>,
    /// While "rebooting": when the new boot starts, and when its health gate passes.
    boot_at: Option<Instant>,
    good_at: Option<Instant>,
    /// The machine never comes back from its reboot (a dead holder).
    pub dies_on_reboot: bool,
    /// The update fails: the machine comes back on the old version with a failed verdict.
    pub update_fails: bool,
    /// This machine's reboot and health-gate times (default [`REBOOT_TIME`], [`HEALTH_GATE_TIME`]).
    pub reboot_time: Duration,
    pub gate_time: Duration,
}

impl Machine {
    /// A machine running `bin` (keel-reboot-manager) with this update.conf, on 1.0.0, good.
    pub fn new(bin: &Path, id: &str, conf: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["etc/keel", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/machine-id"), format!("{id}\n")).unwrap();
        std::fs::write(root.join("etc/keel/update.conf"), conf).unwrap();
        std::fs::write(root.join("run/utmp"), b"").unwrap();
        let m = Self {
            bin: bin.to_path_buf(),
            dir,
            id: id.into(),
            child: None,
            reboots: Vec::new(),
            boot_at: None,
            good_at: None,
            dies_on_reboot: false,
            update_fails: false,
            reboot_time: REBOOT_TIME,
            gate_time: HEALTH_GATE_TIME,
        };
        m.write_status("1.0.0", true, None);
        m
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_status(&self, version: &str, good: bool, failed: Option<&str>) {
        let verdict = match failed {
            Some(v) => format!(r#"{{"state":"failed","version":"{v}","slot":"USR-B"}}"#),
            None => "null".into(),
        };
        let json = format!(
            r#"{{"reboot_pending":false,"running":{{"attrs":{{"successful":{good}}},"version":"{version}"}},"verdict":{verdict}}}"#
        );
        let tmp = self.root().join("status.json.tmp");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(tmp, self.root().join("status.json")).unwrap();
    }

    pub fn stage_update(&self) {
        std::fs::write(self.root().join("run/reboot-required"), b"").unwrap();
    }

    pub fn start(&mut self, extra: &[&str]) {
        let root = self.root().to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("manager.log"))
            .unwrap();
        let child = crate::spawn_tied(
            Command::new(&self.bin)
                .arg("run")
                .arg("--root")
                .arg(&root)
                .arg("--status-command")
                .arg(format!("cat {}", root.join("status.json").display()))
                .arg("--reboot-command")
                .arg(format!("touch {}", root.join("rebooting").display()))
                .args([
                    "--poll-secs",
                    "1",
                    "--backoff-min-secs",
                    "1",
                    "--backoff-max-secs",
                    "2",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap();
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("manager.log")).unwrap_or_default()
    }

    pub fn state(&self) -> String {
        std::fs::read_to_string(self.root().join("run/keel/reboot-manager.json"))
            .unwrap_or_default()
    }

    pub fn in_flight(&self) -> bool {
        self.boot_at.is_some() || self.good_at.is_some()
    }

    /// One step of the harness: react to a reboot command, bring the machine back.
    pub fn tick(&mut self) {
        let mark = self.root().join("rebooting");
        if mark.exists() {
            std::fs::remove_file(&mark).unwrap();
            self.stop();
            self.reboots.push(Instant::now());
            let _ = std::fs::remove_file(self.root().join("run/reboot-required"));
            if !self.dies_on_reboot {
                self.boot_at = Some(Instant::now() + self.reboot_time);
            }
        }
        if self.boot_at.is_some_and(|t| Instant::now() >= t) {
            self.boot_at = None;
            if self.update_fails {
                // keel-init fell back: the old version runs (good), the new one failed.
                self.write_status("1.0.0", true, Some("2.0.0"));
            } else {
                self.write_status("2.0.0", false, None);
                self.good_at = Some(Instant::now() + self.gate_time);
            }
            self.start(&[]);
        }
        if self.good_at.is_some_and(|t| Instant::now() >= t) {
            self.good_at = None;
            self.write_status("2.0.0", true, None);
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn dump(machines: &[Machine]) -> String {
    machines
        .iter()
        .map(|m| format!("--- {} state {}\n{}", m.id, m.state(), m.log()))
        .collect()
}

/// Runs the harness until `done` or the limit; `on_tick` may act on the cluster.
pub fn drive(
    machines: &mut [Machine],
    limit: Duration,
    mut done: impl FnMut(&[Machine]) -> bool,
    mut on_tick: impl FnMut(&[Machine]),
) {
    let start = Instant::now();
    while !done(machines) {
        assert!(
            start.elapsed() < limit,
            "rollout not finished after {limit:?}\n{}",
            dump(machines)
        );
        for m in machines.iter_mut() {
            m.tick();
        }
        on_tick(machines);
        std::thread::sleep(Duration::from_millis(50));
    }
}
