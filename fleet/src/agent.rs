//! The agent on each machine: registers the machine under a lease, watches only its own
//! `schedule/<id>/` keys, makes systemd match them, and reports each unit's states under the same
//! lease (so a dead machine's registration and states vanish by themselves).
//!
//! Whatever goes wrong with etcd (a member down, the whole cluster away, the lease lost), the
//! agent keeps the units it runs, retries with a bounded backoff, and on return reads its keys
//! afresh: units assigned elsewhere meanwhile are stopped, new ones started.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::EventType;
use tokio::sync::watch;

use crate::model::{Assignment, MachineRecord, UnitStatus};
use crate::store::{FleetError, Result, Store};
use crate::systemd::Systemd;
use crate::unit::{content_hash, TargetState};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub machine_id: String,
    pub ip: String,
    pub metadata: BTreeMap<String, String>,
    /// The registration's lease (fleet's `agent_ttl`): how long a silent machine keeps its units.
    pub ttl: Duration,
    /// How often unit states are re-read from systemd and reported when they changed.
    pub refresh: Duration,
    /// Say on stderr what happens (off for the benchmark's thousand agents).
    pub verbose: bool,
}

impl AgentConfig {
    pub fn new(machine_id: &str) -> Self {
        Self {
            machine_id: machine_id.to_string(),
            ip: String::new(),
            metadata: BTreeMap::new(),
            ttl: Duration::from_secs(30),
            refresh: Duration::from_secs(5),
            verbose: true,
        }
    }
}

struct Applied {
    hash: String,
    target: TargetState,
}

pub struct Agent<S: Systemd> {
    store: Store,
    cfg: AgentConfig,
    systemd: S,
    applied: BTreeMap<String, Applied>,
    reported: BTreeMap<String, UnitStatus>,
}

/// Aborts a spawned task when dropped (the lease keeper must not outlive its session).
pub(crate) struct Abort<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pause before a session starts again after a failure: 0.5 s doubling to 5 s, back to
/// 0.5 s after a session that lasted a while.
pub(crate) struct Backoff {
    pub next: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_PAUSE }
    }
}

impl Backoff {
    /// Waits before the next session (the one that began at `began` failed); `true` when
    /// `stop` turned meanwhile.
    pub async fn pause(&mut self, began: Instant, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.next) => {}
            _ = stop.changed() => return true,
        }
        self.next = if began.elapsed() > MAX_PAUSE * 2 {
            FIRST_PAUSE
        } else {
            (self.next * 2).min(MAX_PAUSE)
        };
        false
    }
}

impl<S: Systemd> Agent<S> {
    pub fn new(store: Store, cfg: AgentConfig, systemd: S) -> Self {
        Self {
            store,
            cfg,
            systemd,
            applied: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    /// A call into systemd; a blocking one (systemctl: a daemon-reload took 17 s in a busy
    /// guest) leaves this worker thread to the runtime's other tasks meanwhile, so the lease
    /// keep-alive and the engine go on.
    fn sys<T>(&mut self, f: impl FnOnce(&mut S) -> T) -> T {
        if S::BLOCKING {
            tokio::task::block_in_place(|| f(&mut self.systemd))
        } else {
            f(&mut self.systemd)
        }
    }

    fn say(&self, what: std::fmt::Arguments) {
        if self.cfg.verbose {
            eprintln!("keel-fleet agent {}: {what}", short(&self.cfg.machine_id));
        }
    }

    /// Runs until `stop` turns true; then stops its units and gives up its lease, so the leader
    /// moves them at once.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        loop {
            let began = Instant::now();
            match self.session(&mut stop).await {
                Ok(()) => return,
                Err(e) => self.say(format_args!("{e}; retrying in {:?}", backoff.next)),
            }
            if backoff.pause(began, &mut stop).await {
                return;
            }
        }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let keys = self.store.keys.clone();
        let id = self.cfg.machine_id.clone();
        let lease = self.store.grant(self.cfg.ttl).await?;
        let record = MachineRecord {
            id: id.clone(),
            ip: self.cfg.ip.clone(),
            metadata: self.cfg.metadata.clone(),
        };
        self.store
            .put(&keys.machine(&id), &record, Some(lease))
            .await?;
        let keeper = {
            let (s, ttl) = (self.store.clone(), self.cfg.ttl);
            Abort(tokio::spawn(async move { s.keep_alive(lease, ttl).await }))
        };
        let mine = keys.schedule_of(&id);
        let (items, rev) = self
            .store
            .list::<Assignment>(&mine, "assignment", None)
            .await?;
        self.say(format_args!(
            "registered (lease {lease:x}); {} units assigned",
            items.len()
        ));
        self.reported.clear();
        let wanted: BTreeMap<String, Assignment> = items
            .into_iter()
            .map(|(_, a)| (a.name.clone(), a))
            .collect();
        let gone: Vec<String> = self
            .applied
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.unapply(&name).await?;
        }
        for a in wanted.values() {
            self.apply(a, lease).await?;
        }
        let mut events = self.store.watch(&mine, rev + 1).await?;
        let mut tick = tokio::time::interval(self.cfg.refresh);
        tick.tick().await;
        let mut keeper = keeper;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    self.leave(lease).await;
                    return Ok(());
                }
                why = &mut keeper.0 => {
                    return Err(FleetError::Lost(why.unwrap_or_else(|e| e.to_string())));
                }
                msg = events.message() => {
                    let resp = msg
                        .map_err(|e| FleetError::Lost(format!("watching {mine}: {e}")))?
                        .ok_or_else(|| FleetError::Lost(format!("watching {mine}: stream closed")))?;
                    if resp.canceled() {
                        return Err(FleetError::Lost(format!(
                            "watching {mine}: cancelled ({})", resp.cancel_reason()
                        )));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let Some(name) = key.strip_prefix(&mine) else { continue };
                        match ev.event_type() {
                            EventType::Put => {
                                let a: Assignment =
                                    crate::store::decode(&key, "assignment", kv.value())?;
                                self.apply(&a, lease).await?;
                            }
                            EventType::Delete => self.unapply(name).await?,
                        }
                    }
                }
                _ = tick.tick() => {
                    let names: Vec<String> = self.applied.keys().cloned().collect();
                    for n in names {
                        self.report(&n, lease).await?;
                    }
                }
            }
        }
    }

    async fn apply(&mut self, a: &Assignment, lease: i64) -> Result<()> {
        let hash = content_hash(&a.content);
        let before = self.applied.get(&a.name);
        let rewrite = before.is_none_or(|b| b.hash != hash);
        let was_launched = before.is_some_and(|b| b.target == TargetState::Launched);
        if rewrite {
            self.say(format_args!("writing {} ({})", a.name, a.target));
            if let Err(e) = self.sys(|s| s.write(&a.name, &a.content)) {
                self.say(format_args!("{}: {e}", a.name));
            }
        }
        match a.target {
            TargetState::Launched if rewrite || !was_launched => {
                self.say(format_args!("starting {}", a.name));
                if let Err(e) = self.sys(|s| s.start(&a.name)) {
                    self.say(format_args!("{e}"));
                }
            }
            TargetState::Loaded | TargetState::Inactive if was_launched => {
                self.say(format_args!("stopping {}", a.name));
                if let Err(e) = self.sys(|s| s.stop(&a.name)) {
                    self.say(format_args!("{e}"));
                }
            }
            _ => {}
        }
        self.applied.insert(
            a.name.clone(),
            Applied {
                hash,
                target: a.target,
            },
        );
        self.report(&a.name, lease).await
    }

    async fn unapply(&mut self, name: &str) -> Result<()> {
        if self.applied.remove(name).is_some() {
            self.say(format_args!("removing {name}"));
            if let Err(e) = self.sys(|s| s.remove(name)) {
                self.say(format_args!("{e}"));
            }
        }
        self.reported.remove(name);
        let key = self.store.keys.state(name, &self.cfg.machine_id);
        self.store.delete(&key).await?;
        Ok(())
    }

    /// Puts the unit's states when they differ from what was last reported.
    async fn report(&mut self, name: &str, lease: i64) -> Result<()> {
        let Some((hash, target)) = self.applied.get(name).map(|a| (a.hash.clone(), a.target))
        else {
            return Ok(());
        };
        let s = self.sys(|s| s.states(name));
        let status = UnitStatus {
            machine: self.cfg.machine_id.clone(),
            load: s.load,
            active: s.active,
            sub: s.sub,
            hash,
            target,
        };
        if self.reported.get(name) == Some(&status) {
            return Ok(());
        }
        let key = self.store.keys.state(name, &self.cfg.machine_id);
        self.store.put(&key, &status, Some(lease)).await?;
        self.reported.insert(name.to_string(), status);
        Ok(())
    }

    /// A clean exit: stop what runs here and give the lease back (bounded, best effort).
    async fn leave(&mut self, lease: i64) {
        let names: Vec<String> = self.applied.keys().cloned().collect();
        for n in names {
            let _ = self.sys(|s| s.remove(&n));
            self.applied.remove(&n);
        }
        if let Err(e) = self.store.revoke(lease).await {
            self.say(format_args!("giving the lease back: {e}"));
        }
        self.say(format_args!("left the cluster"));
    }
}

/// fleet's short machine id: the first 8 characters.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
