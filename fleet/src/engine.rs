//! The scheduling leader. Every agent may campaign (fleet's engine; `disable_engine` opts
//! out); etcd's election API makes one the leader at a time. The leader reads `units/` and
//! `machines/` once, then follows them with two watches, and after each burst of changes runs
//! [`crate::schedule::plan`] and writes only the difference to `schedule/` and `unplaced/`, in
//! transactions that hold only while its election key still exists. A deposed leader's write
//! therefore fails, and it starts over as a candidate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{EventType, ResignOptions};
use tokio::sync::watch;

use crate::agent::{short, Abort, Backoff};
use crate::model::{Assignment, MachineRecord, UnitRecord, Unplaced};
use crate::schedule::{self, Job, Machine};
use crate::store::{encode, FleetError, Op, Result, Store};
use crate::unit::{is_template, Requirements, TargetState};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub machine_id: String,
    /// The leader's lease: how long a dead leader blocks the next.
    pub ttl: Duration,
    /// How long to gather changes before scheduling (a burst of submissions is one pass).
    pub settle: Duration,
    pub verbose: bool,
}

impl EngineConfig {
    pub fn new(machine_id: &str) -> Self {
        Self {
            machine_id: machine_id.to_string(),
            ttl: Duration::from_secs(10),
            settle: Duration::from_millis(100),
            verbose: true,
        }
    }
}

/// One scheduling pass's outcome, for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub placed: usize,
    pub unplaced: usize,
    pub writes: usize,
}

/// What the leader knows.
#[derive(Default)]
struct World {
    units: BTreeMap<String, (UnitRecord, Result<Requirements, String>)>,
    machines: BTreeMap<String, MachineRecord>,
    /// `schedule/…` and `unplaced/…` keys as they are in etcd.
    written: BTreeMap<String, Vec<u8>>,
}

pub async fn run(store: Store, cfg: EngineConfig, mut stop: watch::Receiver<bool>) {
    run_reporting(store, cfg, &mut stop, |_| {}).await
}

/// [`run`], calling `on_pass` after each pass that wrote something (the benchmark times them).
pub async fn run_reporting(
    store: Store,
    cfg: EngineConfig,
    stop: &mut watch::Receiver<bool>,
    mut on_pass: impl FnMut(Pass),
) {
    let mut backoff = Backoff::default();
    loop {
        let began = Instant::now();
        match session(&store, &cfg, stop, &mut on_pass).await {
            Ok(()) => return,
            Err(e) => say(
                &cfg,
                format_args!("{e}; campaigning again in {:?}", backoff.next),
            ),
        }
        if backoff.pause(began, stop).await {
            return;
        }
    }
}

fn say(cfg: &EngineConfig, what: std::fmt::Arguments) {
    if cfg.verbose {
        eprintln!("keel-fleet engine {}: {what}", short(&cfg.machine_id));
    }
}

async fn session(
    store: &Store,
    cfg: &EngineConfig,
    stop: &mut watch::Receiver<bool>,
    on_pass: &mut impl FnMut(Pass),
) -> Result<()> {
    let keys = store.keys.clone();
    let lease = store.grant(cfg.ttl).await?;
    let mut keeper = {
        let (s, ttl) = (store.clone(), cfg.ttl);
        Abort(tokio::spawn(async move { s.keep_alive(lease, ttl).await }))
    };
    let mut client = store.patient_client().await?;
    let election = keys.election();
    let won = tokio::select! {
        r = client.campaign(election.as_str(), cfg.machine_id.as_str(), lease) => {
            r.map_err(|e| FleetError::Lost(format!("campaigning on {election}: {e}")))?
        }
        why = &mut keeper.0 => {
            return Err(FleetError::Lost(why.unwrap_or_else(|e| e.to_string())));
        }
        _ = stop.changed() => {
            let _ = store.revoke(lease).await;
            return Ok(());
        }
    };
    let leader = won
        .leader()
        .cloned()
        .ok_or_else(|| FleetError::Lost("the election answered without a leader key".into()))?;
    let guard = (
        String::from_utf8_lossy(leader.key()).into_owned(),
        leader.rev(),
    );
    say(cfg, format_args!("elected scheduling leader"));

    let (units, rev) = store
        .list::<UnitRecord>(&keys.units(), "unit", None)
        .await?;
    let (machines, _) = store
        .list::<MachineRecord>(&keys.machines(), "machine", Some(rev))
        .await?;
    let mut world = World::default();
    for (_, u) in units {
        world.add_unit(u);
    }
    for (_, m) in machines {
        world.machines.insert(m.id.clone(), m);
    }
    for dir in [keys.schedule(), keys.unplaced()] {
        let mut c = store.client();
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_revision(rev);
        let resp = c
            .get(dir.as_str(), Some(opts))
            .await
            .map_err(|e| FleetError::Lost(format!("reading {dir}: {e}")))?;
        for kv in resp.kvs() {
            world.written.insert(
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            );
        }
    }
    let mut unit_events = store.watch(&keys.units(), rev + 1).await?;
    let mut machine_events = store.watch(&keys.machines(), rev + 1).await?;

    loop {
        let pass = world.reconcile(store, &guard).await?;
        if pass.writes > 0 {
            say(
                cfg,
                format_args!(
                    "{} units placed, {} unplaced ({} keys written)",
                    pass.placed, pass.unplaced, pass.writes
                ),
            );
            on_pass(pass);
        }
        // Wait for a change, then gather the rest of its burst.
        tokio::select! {
            r = unit_events.message() => world.unit_event(&keys, r, "units")?,
            r = machine_events.message() => world.machine_event(&keys, r)?,
            why = &mut keeper.0 => {
                return Err(FleetError::Lost(why.unwrap_or_else(|e| e.to_string())));
            }
            _ = stop.changed() => {
                let resign = client.resign(Some(ResignOptions::new().with_leader(leader)));
                let _ = tokio::time::timeout(store.timeout(), resign).await;
                let _ = store.revoke(lease).await;
                return Ok(());
            }
        }
        let settle = tokio::time::sleep(cfg.settle);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                r = unit_events.message() => world.unit_event(&keys, r, "units")?,
                r = machine_events.message() => world.machine_event(&keys, r)?,
                _ = &mut settle => break,
            }
        }
    }
}

type Message = std::result::Result<Option<etcd_client::WatchResponse>, etcd_client::Error>;

fn events(r: Message, what: &str) -> Result<etcd_client::WatchResponse> {
    let resp = r
        .map_err(|e| FleetError::Lost(format!("watching {what}: {e}")))?
        .ok_or_else(|| FleetError::Lost(format!("watching {what}: stream closed")))?;
    if resp.canceled() {
        return Err(FleetError::Lost(format!(
            "watching {what}: cancelled ({})",
            resp.cancel_reason()
        )));
    }
    Ok(resp)
}

impl World {
    fn add_unit(&mut self, u: UnitRecord) {
        let req = Requirements::parse(&u.name, &u.content).map_err(|e| e.to_string());
        self.units.insert(u.name.clone(), (u, req));
    }

    fn unit_event(&mut self, keys: &crate::model::Keys, r: Message, what: &str) -> Result<()> {
        let dir = keys.units();
        for ev in events(r, what)?.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(name) = key.strip_prefix(&dir) else {
                continue;
            };
            match ev.event_type() {
                EventType::Put => {
                    let u: UnitRecord = crate::store::decode(&key, "unit", kv.value())?;
                    self.add_unit(u);
                }
                EventType::Delete => {
                    self.units.remove(name);
                }
            }
        }
        Ok(())
    }

    fn machine_event(&mut self, keys: &crate::model::Keys, r: Message) -> Result<()> {
        let dir = keys.machines();
        for ev in events(r, "machines")?.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(id) = key.strip_prefix(&dir) else {
                continue;
            };
            match ev.event_type() {
                EventType::Put => {
                    let m: MachineRecord = crate::store::decode(&key, "machine", kv.value())?;
                    self.machines.insert(id.to_string(), m);
                }
                EventType::Delete => {
                    self.machines.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Plans and writes the difference; `written` follows what is in etcd.
    async fn reconcile(&mut self, store: &Store, guard: &(String, i64)) -> Result<Pass> {
        let keys = &store.keys;
        let (wanted, pass) = self.desired(keys);
        let mut ops = Vec::new();
        for (k, v) in &wanted {
            if self.written.get(k) != Some(v) {
                ops.push(Op::Put(k.clone(), v.clone()));
            }
        }
        for k in self.written.keys() {
            if !wanted.contains_key(k) {
                ops.push(Op::Delete(k.clone()));
            }
        }
        let writes = ops.len();
        if writes > 0 {
            store.write_guarded(guard, ops).await?;
            self.written = wanted;
        }
        Ok(Pass { writes, ..pass })
    }

    /// Every `schedule/` and `unplaced/` key as the plan wants it.
    fn desired(&self, keys: &crate::model::Keys) -> (BTreeMap<String, Vec<u8>>, Pass) {
        let schedule_dir = keys.schedule();
        let mut previous = BTreeMap::new();
        for k in self.written.keys() {
            if let Some((m, u)) = k
                .strip_prefix(&schedule_dir)
                .and_then(|r| r.split_once('/'))
            {
                previous.insert(u.to_string(), m.to_string());
            }
        }
        let machines: Vec<Machine> = self
            .machines
            .values()
            .map(|m| Machine {
                id: m.id.clone(),
                metadata: m.metadata.clone(),
            })
            .collect();
        let mut out = BTreeMap::new();
        let mut jobs = Vec::new();
        for (name, (u, req)) in &self.units {
            if u.target == TargetState::Inactive || is_template(name) {
                continue;
            }
            match req {
                Ok(r) => jobs.push(Job { name, req: r }),
                Err(why) => {
                    out.insert(
                        keys.unplaced_unit(name),
                        encode(&Unplaced {
                            reason: why.clone(),
                        }),
                    );
                }
            }
        }
        let plan = schedule::plan(&machines, &jobs, &previous);
        let assignment = |name: &str| {
            let (u, _) = &self.units[name];
            encode(&Assignment {
                name: name.to_string(),
                content: u.content.clone(),
                target: u.target,
            })
        };
        for (unit, machine) in &plan.placed {
            out.insert(keys.assignment(machine, unit), assignment(unit));
        }
        for (unit, on) in &plan.global {
            for machine in on {
                out.insert(keys.assignment(machine, unit), assignment(unit));
            }
        }
        let unplaced =
            out.len() - plan.placed.len() - plan.global.values().map(Vec::len).sum::<usize>();
        for (unit, reason) in &plan.unplaced {
            out.insert(
                keys.unplaced_unit(unit),
                encode(&Unplaced {
                    reason: reason.clone(),
                }),
            );
        }
        let pass = Pass {
            placed: plan.placed.len() + plan.global.len(),
            unplaced: unplaced + plan.unplaced.len(),
            writes: 0,
        };
        (out, pass)
    }
}
