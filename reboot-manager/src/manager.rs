//! The reboot manager's loop, one run per boot (locksmithd's job):
//!
//! 1. After a reboot it took a lock for, wait until the new boot passed its health gate, keep
//!    the lock `REBOOT_DELAY` longer, then give it back. If the update failed (keel-init fell
//!    back), keep holding it: the rollout stops there until an operator runs `unlock`.
//! 2. Wait until an update is staged.
//! 3. `off`: nothing more. Otherwise wait for the reboot window, take the lock (backing off
//!    5 s doubling to 5 min, as locksmithd), warn logged-in users and give them `LOGIN_GRACE`,
//!    then reboot through `keel-update reboot`.
//!
//! What it is doing and why is always in the state file (`/run/keel/reboot-manager.json`),
//! which `keel-reboot-manager status` prints.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_coordination::{LocalTime, Strategy, Window};
use serde::Serialize;

use crate::lock::RebootLock;
use crate::logins;
use crate::settings::Settings;
use crate::system::System;

pub const STATE_FILE: &str = "run/keel/reboot-manager.json";
/// Written before a reboot this machine took the lock for; removed once the lock is given back.
pub const REBOOTED_MARKER: &str = "var/lib/keel/reboot-manager/locked-reboot";
pub const UTMP: &str = "run/utmp";

#[derive(Debug, Clone)]
pub struct Timing {
    /// How often the staged-update and health-gate state is read.
    pub poll: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(30),
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Wall-clock time, optionally shifted (tests start it at a chosen moment).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_secs: i64,
}

impl Clock {
    pub fn system() -> Self {
        Self { offset_secs: 0 }
    }

    /// A clock that reads `start` now and runs at the real pace from there.
    pub fn starting_at(start_unix: i64) -> Self {
        Self {
            offset_secs: start_unix - real_unix(),
        }
    }

    pub fn unix(&self) -> i64 {
        real_unix() + self.offset_secs
    }
}

fn real_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    WaitingForHealthGate,
    ReleasingLock {
        lock: String,
    },
    /// The update failed; the lock stays held so the rollout stops.
    HoldingAfterFailure {
        version: String,
        lock: String,
    },
    Idle,
    /// `REBOOT_STRATEGY=off` and an update is staged.
    Disabled,
    WaitingForWindow {
        opens_unix: i64,
        window: String,
    },
    WaitingForLock {
        lock: String,
        reason: String,
    },
    WaitingForLogout {
        sessions: Vec<String>,
        until_unix: i64,
    },
    Rebooting {
        lock: Option<String>,
    },
    /// Something the manager cannot act on (status unreadable).
    Error {
        reason: String,
    },
}

#[derive(Debug, Serialize)]
struct StateRecord<'a> {
    strategy: &'a str,
    #[serde(flatten)]
    phase: &'a Phase,
    since_unix: i64,
}

/// What a strategy comes to on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    Off,
    Reboot,
    EtcdLock,
    FleetLock,
}

/// `best-effort`: the etcd lock when an endpoint is configured or etcd answers at the default
/// one (this machine is part of a cluster), a plain reboot otherwise.
pub fn effective(settings: &Settings, etcd_answers: impl FnOnce() -> bool) -> Effective {
    match settings.strategy {
        Strategy::Off => Effective::Off,
        Strategy::Reboot => Effective::Reboot,
        Strategy::EtcdLock => Effective::EtcdLock,
        Strategy::FleetLock => Effective::FleetLock,
        Strategy::BestEffort if settings.etcd_configured || etcd_answers() => Effective::EtcdLock,
        Strategy::BestEffort => Effective::Reboot,
    }
}

/// How long until the window opens (`None`: inside it, or no window). UTC, as Keel images run.
pub fn until_window(window: Option<&Window>, now_unix: i64) -> Option<Duration> {
    let w = window?;
    let d = w.duration_to_start(LocalTime::utc(now_unix));
    (d.0 > 0).then(|| Duration::from_nanos(d.0 as u64))
}

pub struct Manager {
    pub settings: Settings,
    pub system: System,
    pub machine_id: String,
    pub timing: Timing,
    pub clock: Clock,
    effective: Effective,
    lock: Option<RebootLock>,
    phase: Option<Phase>,
    phase_since: i64,
}

impl Manager {
    pub fn new(
        settings: Settings,
        system: System,
        machine_id: String,
        timing: Timing,
        clock: Clock,
    ) -> Self {
        let effective = effective(&settings, || default_etcd_answers(&settings));
        let lock = match effective {
            Effective::EtcdLock => Some(RebootLock::etcd(
                settings.etcd.clone(),
                settings.group.as_deref(),
                settings.lock_ttl,
            )),
            Effective::FleetLock => Some(RebootLock::FleetLock {
                url: settings.fleetlock_url.clone().unwrap_or_default(),
                group: settings.fleetlock_group.clone(),
            }),
            Effective::Off | Effective::Reboot => None,
        };
        Self {
            settings,
            system,
            machine_id,
            timing,
            clock,
            effective,
            lock,
            phase: None,
            phase_since: 0,
        }
    }

    pub fn effective(&self) -> Effective {
        self.effective
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.system.root.join(rel)
    }

    fn enter(&mut self, phase: Phase) {
        if self.phase.as_ref() == Some(&phase) {
            return;
        }
        self.phase_since = self.clock.unix();
        eprintln!(
            "keel-reboot-manager: {}",
            serde_json::to_string(&phase).unwrap_or_default()
        );
        let record = StateRecord {
            strategy: self.settings.strategy.as_str(),
            phase: &phase,
            since_unix: self.phase_since,
        };
        let path = self.path(STATE_FILE);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        if std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            eprintln!("keel-reboot-manager: cannot write {}", path.display());
        }
        self.phase = Some(phase);
    }

    /// Runs until the reboot command has been run (returns) — on a real machine the reboot
    /// ends the process first.
    pub fn run(&mut self) {
        self.enter(Phase::Starting);
        self.settle_previous_reboot();
        self.wait_for_staged_update();
        if self.effective == Effective::Off {
            self.enter(Phase::Disabled);
            loop {
                std::thread::sleep(self.timing.poll);
            }
        }
        self.wait_for_window();
        if let Some(lock) = &self.lock {
            let desc = lock.describe();
            let mut backoff = self.timing.backoff_min;
            loop {
                let lock = self.lock.as_ref().expect("lock");
                match lock.acquire(&self.machine_id, self.clock.unix()) {
                    Ok(()) => break,
                    Err(reason) => {
                        self.enter(Phase::WaitingForLock {
                            lock: desc.clone(),
                            reason,
                        });
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(self.timing.backoff_max);
                        // locksmithd re-checks the window while it waits for the lock.
                        self.wait_for_window();
                    }
                }
            }
            let marker = self.path(REBOOTED_MARKER);
            if let Some(dir) = marker.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(&marker, &self.machine_id);
        }
        self.give_logged_in_users_time();
        let lock = self.lock.as_ref().map(|l| l.describe());
        self.enter(Phase::Rebooting { lock });
        if let Err(e) = self.system.reboot() {
            // Keep the lock: the machine is still going to reboot into the update, and a
            // reboot by hand then releases it after the health gate.
            self.enter(Phase::Error {
                reason: e.to_string(),
            });
        }
    }

    /// Step 1: give back a lock taken for the reboot that brought this boot up, once it is good.
    fn settle_previous_reboot(&mut self) {
        let Some(desc) = self.lock.as_ref().map(|l| l.describe()) else {
            return;
        };
        let marker = self.path(REBOOTED_MARKER);
        let rebooted_with_lock = marker.exists();
        let status = loop {
            match self.system.status() {
                Ok(s) if s.failed_version().is_some() || s.boot_is_good() => break s,
                Ok(_) => self.enter(Phase::WaitingForHealthGate),
                Err(e) => self.enter(Phase::Error {
                    reason: e.to_string(),
                }),
            }
            std::thread::sleep(self.timing.poll);
        };
        if let Some(v) = status.failed_version() {
            if rebooted_with_lock {
                self.enter(Phase::HoldingAfterFailure {
                    version: v.to_string(),
                    lock: desc,
                });
                return;
            }
        }
        if rebooted_with_lock && !self.settings.reboot_delay.is_zero() {
            std::thread::sleep(self.settings.reboot_delay);
        }
        self.enter(Phase::ReleasingLock { lock: desc.clone() });
        let mut backoff = self.timing.backoff_min;
        loop {
            let lock = self.lock.as_ref().expect("lock");
            match lock.release(&self.machine_id) {
                Ok(()) => break,
                Err(reason) => {
                    self.enter(Phase::WaitingForLock {
                        lock: desc.clone(),
                        reason: format!("releasing: {reason}"),
                    });
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.timing.backoff_max);
                }
            }
        }
        let _ = std::fs::remove_file(&marker);
    }

    fn wait_for_staged_update(&mut self) {
        loop {
            match self.system.status() {
                Ok(s) if self.system.reboot_needed(&s) => return,
                Ok(_) => {
                    if !matches!(self.phase, Some(Phase::HoldingAfterFailure { .. })) {
                        self.enter(Phase::Idle);
                    }
                }
                Err(e) => self.enter(Phase::Error {
                    reason: e.to_string(),
                }),
            }
            std::thread::sleep(self.timing.poll);
        }
    }

    fn wait_for_window(&mut self) {
        let Some(window) = self.settings.window else {
            return;
        };
        loop {
            let now = self.clock.unix();
            let Some(wait) = until_window(Some(&window), now) else {
                return;
            };
            self.enter(Phase::WaitingForWindow {
                opens_unix: now + wait.as_secs() as i64,
                window: format!(
                    "{}{:02}:{:02} for {}",
                    window
                        .day
                        .map(|d| format!(
                            "{} ",
                            ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][d as usize]
                        ))
                        .unwrap_or_default(),
                    window.hour,
                    window.minute,
                    window.length
                ),
            });
            std::thread::sleep(wait.min(self.timing.poll).max(Duration::from_millis(200)));
        }
    }

    /// locksmith: "System reboot in 5 minutes!" to every session, then wait. Keel waits less
    /// if everyone logs out, and never more than `LOGIN_GRACE`.
    fn give_logged_in_users_time(&mut self) {
        let utmp = self.path(UTMP);
        let grace = self.settings.login_grace;
        let sessions = match logins::read(&utmp) {
            logins::Logins::Nobody => return,
            logins::Logins::Sessions(s) => s,
            logins::Logins::Unknown(why) => vec![format!("unknown ({why})")],
        };
        if grace.is_zero() {
            return;
        }
        let minutes = grace.as_secs().div_ceil(60);
        let _ = std::process::Command::new("wall")
            .arg(format!(
                "Keel: an update is staged; this machine reboots in {minutes} minute(s)."
            ))
            .status();
        let until = Instant::now() + grace;
        self.enter(Phase::WaitingForLogout {
            sessions,
            until_unix: self.clock.unix() + grace.as_secs() as i64,
        });
        while Instant::now() < until {
            if !logins::read(&utmp).anyone() {
                return;
            }
            std::thread::sleep(self.timing.poll.min(until - Instant::now()));
        }
    }
}

fn default_etcd_answers(settings: &Settings) -> bool {
    settings.etcd.endpoints.iter().any(|e| {
        let hostport = e
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        use std::net::ToSocketAddrs;
        hostport
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_format::update_conf::UpdateConf;

    fn settings(text: &str) -> Settings {
        let mut c = UpdateConf::default();
        c.merge(std::path::Path::new("u"), text).unwrap();
        Settings::from_conf(&c).unwrap()
    }

    #[test]
    fn best_effort_is_etcd_lock_only_in_a_cluster() {
        let s = settings("");
        assert_eq!(effective(&s, || false), Effective::Reboot);
        assert_eq!(effective(&s, || true), Effective::EtcdLock);
        let s = settings("LOCKSMITHD_ENDPOINT=http://10.0.0.1:2379\n");
        assert_eq!(effective(&s, || panic!("not probed")), Effective::EtcdLock);
        assert_eq!(
            effective(&settings("REBOOT_STRATEGY=off\n"), || true),
            Effective::Off
        );
    }

    #[test]
    fn window_wait_is_zero_inside_and_the_gap_outside() {
        let s = settings("REBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\n");
        let w = s.window.as_ref();
        // 2026-12-03 is a Thursday.
        let thu_0400 = 1_796_270_400;
        assert_eq!(until_window(w, thu_0400 + 1800), None);
        assert_eq!(until_window(w, thu_0400 - 5), Some(Duration::from_secs(5)));
        assert_eq!(
            until_window(w, thu_0400 + 3601),
            Some(Duration::from_secs(7 * 86_400 - 3601))
        );
        assert_eq!(until_window(None, 0), None);
    }
}
