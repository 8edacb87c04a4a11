//! What the agent asks of the machine's systemd: write a unit file, start, stop, remove, and
//! read its states. [`Systemctl`] does it with `systemctl` and files under /run/systemd/system;
//! [`Recorder`] only remembers what it was told (the benchmark's thousand machines, and the
//! tests of the agent's logic, use it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// systemd's three states of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct States {
    pub load: String,
    pub active: String,
    pub sub: String,
}

pub trait Systemd: Send + 'static {
    /// Whether calls block the thread (they then run beside the async runtime's workers,
    /// which needs a multi-thread runtime).
    const BLOCKING: bool;

    /// Writes the unit file and makes systemd read it.
    fn write(&mut self, name: &str, content: &str) -> Result<(), String>;
    fn start(&mut self, name: &str) -> Result<(), String>;
    fn stop(&mut self, name: &str) -> Result<(), String>;
    /// Stops the unit and removes its file.
    fn remove(&mut self, name: &str) -> Result<(), String>;
    fn states(&mut self, name: &str) -> States;
}

/// The real machine: files in `unit_dir` (/run/systemd/system: gone at reboot, as fleet's
/// were), `systemctl` for the rest.
pub struct Systemctl {
    pub unit_dir: PathBuf,
}

impl Default for Systemctl {
    fn default() -> Self {
        Self {
            unit_dir: PathBuf::from("/run/systemd/system"),
        }
    }
}

fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "systemctl {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Systemd for Systemctl {
    const BLOCKING: bool = true;

    fn write(&mut self, name: &str, content: &str) -> Result<(), String> {
        std::fs::create_dir_all(&self.unit_dir)
            .map_err(|e| format!("{}: {e}", self.unit_dir.display()))?;
        let path = self.unit_dir.join(name);
        let tmp = self.unit_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        systemctl(&["daemon-reload"]).map(drop)
    }

    fn start(&mut self, name: &str) -> Result<(), String> {
        systemctl(&["start", "--no-block", name]).map(drop)
    }

    fn stop(&mut self, name: &str) -> Result<(), String> {
        systemctl(&["stop", "--no-block", name]).map(drop)
    }

    fn remove(&mut self, name: &str) -> Result<(), String> {
        let stopped = systemctl(&["stop", name]);
        let path = self.unit_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        systemctl(&["daemon-reload"])?;
        stopped.map(drop)
    }

    fn states(&mut self, name: &str) -> States {
        let out = systemctl(&["show", "--property=LoadState,ActiveState,SubState", name])
            .unwrap_or_default();
        let mut s = States::default();
        for line in out.lines() {
            match line.split_once('=') {
                Some(("LoadState", v)) => s.load = v.into(),
                Some(("ActiveState", v)) => s.active = v.into(),
                Some(("SubState", v)) => s.sub = v.into(),
                _ => {}
            }
        }
        s
    }
}

/// A stand-in that records each call and reports `active`/`running` for started units.
#[derive(Clone, Default)]
pub struct Recorder {
    pub log: Arc<Mutex<Vec<String>>>,
    units: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Recorder {
    /// The units it was told to run right now.
    pub fn running(&self) -> Vec<String> {
        let u = self.units.lock().expect("recorder lock");
        u.iter()
            .filter(|(_, on)| **on)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The units whose files it holds, started or not.
    pub fn loaded(&self) -> Vec<String> {
        self.units
            .lock()
            .expect("recorder lock")
            .keys()
            .cloned()
            .collect()
    }

    fn record(&self, what: String) {
        self.log.lock().expect("recorder lock").push(what);
    }
}

impl Systemd for Recorder {
    const BLOCKING: bool = false;

    fn write(&mut self, name: &str, _content: &str) -> Result<(), String> {
        self.record(format!("write {name}"));
        self.units
            .lock()
            .expect("recorder lock")
            .entry(name.to_string())
            .or_insert(false);
        Ok(())
    }
    fn start(&mut self, name: &str) -> Result<(), String> {
        self.record(format!("start {name}"));
        self.units
            .lock()
            .expect("recorder lock")
            .insert(name.into(), true);
        Ok(())
    }
    fn stop(&mut self, name: &str) -> Result<(), String> {
        self.record(format!("stop {name}"));
        self.units
            .lock()
            .expect("recorder lock")
            .insert(name.into(), false);
        Ok(())
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        self.record(format!("remove {name}"));
        self.units.lock().expect("recorder lock").remove(name);
        Ok(())
    }
    fn states(&mut self, name: &str) -> States {
        match self.units.lock().expect("recorder lock").get(name) {
            Some(true) => States {
                load: "loaded".into(),
                active: "active".into(),
                sub: "running".into(),
            },
            Some(false) => States {
                load: "loaded".into(),
                active: "inactive".into(),
                sub: "dead".into(),
            },
            None => States {
                load: "not-found".into(),
                active: "inactive".into(),
                sub: "dead".into(),
            },
        }
    }
}
