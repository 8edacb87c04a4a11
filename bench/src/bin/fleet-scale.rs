//! fleet-scale (issue 16): keel-fleet at ten times fleet's documented ceiling. fleet's README
//! says "it is not recommended to run fleet clusters larger than 100 nodes or with more than
//! 1000 services"; this runs 1,000 machines and 10,000 units on a real 3-member etcd (Debian's
//! 3.4, loopback).
//!
//! Each machine is the real agent (`keel_fleet::agent::Agent`) as a task of one tokio runtime,
//! with the recording systemd stand-in (`keel_fleet::systemd::Recorder`); three of them are
//! also engine candidates (`keel_fleet::engine`), the rest run as with fleet's
//! `disable_engine`. The agents share a few etcd clients (`--clients`). Units are written as
//! `fleetctl start` leaves them (target `launched`), in transactions of `--batch` records, with
//! a mix of `[X-Fleet]` constraints: plain, `MachineMetadata` (group, region, disk),
//! `app@N.service` instances with `Conflicts=app@*`, `MachineOf`, `Conflicts` with one named
//! unit, and three `Global=true` units.
//!
//! Printed: the time from the first unit write until every (unit, machine) placement runs
//! (what the recorders were told), split into the writes, the leader's last write, the agents
//! and their state reports; the time until the units of `--lost` crashed machines (tasks
//! aborted, leases left to expire) run elsewhere, from the crash and from the lease expiry
//! (observed by a watch on `machines/`); etcd requests and bytes per placement and per moved
//! unit, counted by fleet's stores and by etcd itself (`/metrics`); CPU time of the process
//! and of etcd; peak RSS. No assertion on timing: the goals are printed as met or not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use etcd_client::{EventType, GetOptions, Txn, TxnOp, WatchOptions};
use keel_bench::machine;
use keel_coordination::EtcdConfig;
use keel_fleet::agent::{Agent, AgentConfig};
use keel_fleet::engine::{self, EngineConfig, Pass};
use keel_fleet::model::{Assignment, UnitRecord};
use keel_fleet::schedule;
use keel_fleet::store::encode;
use keel_fleet::systemd::Recorder;
use keel_fleet::unit::{Requirements, TargetState};
use keel_fleet::Store;
use keel_testkit::etcd::Cluster;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PREFIX: &str = "/keel/fleet-bench/";
/// fleet's README: "not recommended to run fleet clusters larger than 100 nodes or with more
/// than 1000 services".
const FLEET_MACHINES: usize = 100;
const FLEET_UNITS: usize = 1000;
const GOAL_PLACED: f64 = 60.0;
const GOAL_RESCHEDULED: f64 = 10.0;
const WARMUP: &str = "warmup.service";

#[derive(Parser)]
#[command(
    about = "keel-fleet at scale: 1,000 in-process agents (recording systemd) and 10,000 \
             constrained units on a real 3-member etcd; time to place, time to reschedule the \
             units of crashed machines, etcd requests and bytes per placement"
)]
struct Args {
    /// Simulated machines (agents)
    #[arg(long, default_value_t = 1000)]
    machines: usize,
    /// Units submitted and started
    #[arg(long, default_value_t = 10_000)]
    units: usize,
    /// Machines crashed in the rescheduling phase
    #[arg(long, default_value_t = 10)]
    lost: usize,
    /// The agents' and engines' lease TTL, seconds (fleet's agent_ttl)
    #[arg(long, default_value_t = 5)]
    ttl_secs: u64,
    /// How often an agent re-reads systemd's states, seconds (long: not part of what is measured)
    #[arg(long, default_value_t = 60)]
    refresh_secs: u64,
    /// etcd clients the agents share (agent i uses client i mod N)
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Engine candidates (the first machines); the rest run with fleet's disable_engine
    #[arg(long, default_value_t = 3)]
    engines: usize,
    /// Unit records per etcd transaction when submitting (etcd's --max-txn-ops is 128)
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Worker threads of the runtime the agents and engines run on
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Bound of every wait, seconds
    #[arg(long, default_value_t = 300)]
    limit_secs: u64,
    /// Bound of each etcd request, seconds
    #[arg(long, default_value_t = 10)]
    etcd_timeout_secs: u64,
    /// Make the scheduling leader's machine one of the lost machines
    #[arg(long)]
    lose_leader: bool,
    /// Print the figures as one JSON object on stdout (progress goes to stderr)
    #[arg(long)]
    json: bool,
}

/// Progress lines: stdout, or stderr when stdout carries the JSON.
struct Out {
    json: bool,
}

impl Out {
    fn line(&self, s: impl std::fmt::Display) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

struct Node {
    id: String,
    meta: BTreeMap<String, String>,
    recorder: Recorder,
    tasks: Vec<JoinHandle<()>>,
    candidate: bool,
}

impl Node {
    /// A crash: the tasks vanish without giving anything back (the lease runs out).
    fn crash(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// What a unit asks for, as the checks after placement need it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Plain,
    Meta(&'static str, String),
    App,
    MachineOf(String),
    Avoid(String),
    Global(Option<(&'static str, String)>),
}

struct UnitPlan {
    name: String,
    kind: Kind,
}

impl UnitPlan {
    fn content(&self) -> String {
        let x_fleet = match &self.kind {
            Kind::Plain => String::new(),
            Kind::Meta(k, v) => format!("MachineMetadata={k}={v}\n"),
            Kind::App => "Conflicts=app@*\n".into(),
            Kind::MachineOf(t) => format!("MachineOf={t}\n"),
            Kind::Avoid(t) => format!("Conflicts={t}\n"),
            Kind::Global(None) => "Global=true\n".into(),
            Kind::Global(Some((k, v))) => format!("Global=true\nMachineMetadata={k}={v}\n"),
        };
        format!(
            "[Unit]\nDescription=fleet-scale {}\n\n[Service]\nExecStart=/usr/bin/sleep infinity\n{}",
            self.name,
            if x_fleet.is_empty() {
                String::new()
            } else {
                format!("\n[X-Fleet]\n{x_fleet}")
            }
        )
    }

    fn fits(&self, meta: &BTreeMap<String, String>) -> bool {
        match &self.kind {
            Kind::Meta(k, v) | Kind::Global(Some((k, v))) => meta.get(*k) == Some(v),
            _ => true,
        }
    }
}

/// Machine `k`'s metadata: half `group=web`, a third `disk=ssd`, four regions across both.
fn metadata(k: usize) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "group".into(),
        if k.is_multiple_of(2) { "web" } else { "worker" }.into(),
    );
    m.insert(
        "disk".into(),
        if k.is_multiple_of(3) { "ssd" } else { "hdd" }.into(),
    );
    m.insert("region".into(), format!("r{}", (k / 2) % 4));
    m
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A machine id like systemd's: 32 hex digits, the first 8 unique.
fn machine_id(k: usize) -> String {
    format!(
        "{:08x}{:024x}",
        (splitmix(k as u64) as u32 & 0x0fff_ffff) | ((k as u32 & 0xf) << 28),
        splitmix(!(k as u64)) as u128 & ((1u128 << 96) - 1)
    )
}

/// The unit mix: 5 % each of app instances (at most half the machines, so all fit), region,
/// disk, MachineOf a plain unit, Conflicts with a plain unit; 15 % group=web; 3 Global units;
/// the rest (about 60 %) plain.
fn plan_units(units: usize, machines: usize) -> Result<Vec<UnitPlan>> {
    let pct = |p: usize| units * p / 100;
    let apps = pct(5).min(machines / 2);
    let (web, region, ssd, machine_of, avoid, globals) =
        (pct(15), pct(5), pct(5), pct(5), pct(5), 3);
    let fixed = apps + web + region + ssd + machine_of + avoid + globals;
    if units < fixed || units - fixed < machine_of.max(avoid) {
        bail!("--units {units}: too few for the mix (at least 100)");
    }
    let plain = units - fixed;
    let mut out = Vec::with_capacity(units);
    let mut add = |name: String, kind| out.push(UnitPlan { name, kind });
    for i in 0..plain {
        add(format!("plain-{i}.service"), Kind::Plain);
    }
    for i in 0..web {
        add(
            format!("web-{i}.service"),
            Kind::Meta("group", "web".into()),
        );
    }
    for i in 0..apps {
        add(format!("app@{i}.service"), Kind::App);
    }
    for i in 0..region {
        add(
            format!("regional-{i}.service"),
            Kind::Meta("region", format!("r{}", i % 4)),
        );
    }
    for i in 0..ssd {
        add(format!("ssd-{i}.service"), Kind::Meta("disk", "ssd".into()));
    }
    for i in 0..machine_of {
        add(
            format!("sidecar-{i}.service"),
            Kind::MachineOf(format!("plain-{i}.service")),
        );
    }
    for i in 0..avoid {
        add(
            format!("apart-{i}.service"),
            Kind::Avoid(format!("plain-{}.service", plain - 1 - i)),
        );
    }
    add("global-0.service".into(), Kind::Global(None));
    add("global-1.service".into(), Kind::Global(None));
    add(
        "global-web.service".into(),
        Kind::Global(Some(("group", "web".into()))),
    );
    Ok(out)
}

/// Requests and bytes sent, as a store counts them; keep-alives among them.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    requests: u64,
    bytes: u64,
    keepalives: u64,
}

impl Sent {
    fn of(stores: &[Store]) -> Self {
        let mut s = Sent::default();
        for st in stores {
            s.requests += st.traffic.requests.load(Ordering::Relaxed);
            s.bytes += st.traffic.bytes.load(Ordering::Relaxed);
            s.keepalives += st.traffic.keepalives.load(Ordering::Relaxed);
        }
        s
    }

    fn minus(self, o: Sent) -> Sent {
        Sent {
            requests: self.requests.saturating_sub(o.requests),
            bytes: self.bytes.saturating_sub(o.bytes),
            keepalives: self.keepalives.saturating_sub(o.keepalives),
        }
    }

    /// Without the lease keep-alives (each counted as one 8-byte request).
    fn scheduling(self) -> Sent {
        Sent {
            requests: self.requests.saturating_sub(self.keepalives),
            bytes: self.bytes.saturating_sub(8 * self.keepalives),
            keepalives: 0,
        }
    }
}

/// etcd's own counters, summed over the members.
#[derive(Debug, Clone, Default)]
struct Metrics {
    /// gRPC messages received, by method (a unary call is one; a stream counts each message).
    received: BTreeMap<String, f64>,
    /// gRPC messages sent, by method (Watch: the responses carrying events).
    sent: BTreeMap<String, f64>,
    bytes_in: f64,
    bytes_out: f64,
    peer_bytes: f64,
    cpu_secs: f64,
    rss: f64,
}

impl Metrics {
    fn scrape(cluster: &Cluster) -> Result<Self> {
        let mut m = Metrics::default();
        for i in 0..cluster.len() {
            let url = format!("{}/metrics", cluster.client_url(i));
            let text = ureq::get(&url)
                .call()
                .with_context(|| format!("GET {url}"))?
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()?;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some((name, value)) = line.rsplit_once(' ') else {
                    continue;
                };
                let Ok(v) = value.parse::<f64>() else {
                    continue;
                };
                let method = || {
                    name.split_once("grpc_method=\"")
                        .and_then(|(_, r)| r.split_once('"'))
                        .map(|(m, _)| m.to_string())
                        .unwrap_or_default()
                };
                if name.starts_with("grpc_server_msg_received_total{") {
                    *m.received.entry(method()).or_default() += v;
                } else if name.starts_with("grpc_server_msg_sent_total{") {
                    *m.sent.entry(method()).or_default() += v;
                } else if name == "etcd_network_client_grpc_received_bytes_total" {
                    m.bytes_in += v;
                } else if name == "etcd_network_client_grpc_sent_bytes_total" {
                    m.bytes_out += v;
                } else if name.starts_with("etcd_network_peer_sent_bytes_total") {
                    m.peer_bytes += v;
                } else if name == "process_cpu_seconds_total" {
                    m.cpu_secs += v;
                } else if name == "process_resident_memory_bytes" {
                    m.rss += v;
                }
            }
        }
        Ok(m)
    }

    fn minus(&self, o: &Metrics) -> Metrics {
        let sub = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v > 0.0)
                .collect()
        };
        Metrics {
            received: sub(&self.received, &o.received),
            sent: sub(&self.sent, &o.sent),
            bytes_in: self.bytes_in - o.bytes_in,
            bytes_out: self.bytes_out - o.bytes_out,
            peer_bytes: self.peer_bytes - o.peer_bytes,
            cpu_secs: self.cpu_secs - o.cpu_secs,
            rss: self.rss,
        }
    }

    fn got(&self, method: &str) -> f64 {
        self.received.get(method).copied().unwrap_or(0.0)
    }

    fn by_method(&self) -> String {
        self.received
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// CPU seconds (user + system) of this process: the agents, the engines, the benchmark.
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf reads a constant of the system; no memory is handed over.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 and 15 of stat (utime, stime); `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / ticks
}

/// Peak resident set of this process (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Polls `f` every `every` until it breaks with a value; past `limit`, fails with `what` and
/// the last state `f` described.
fn until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<ControlFlow<T, String>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        match f()? {
            ControlFlow::Break(v) => return Ok(v),
            ControlFlow::Continue(state) => {
                if Instant::now() > deadline {
                    bail!("not within {} s: {what} ({state})", limit.as_secs());
                }
            }
        }
        std::thread::sleep(every);
    }
}

/// The observer's etcd calls (the benchmark's own polling), counted to be taken out of etcd's
/// totals.
struct Observer {
    store: Store,
    ranges: u64,
}

impl Observer {
    fn count(&mut self, rt: &Runtime, dir: &str) -> Result<(i64, i64)> {
        self.ranges += 1;
        let mut c = self.store.client();
        let opts = GetOptions::new().with_prefix().with_count_only();
        let resp = rt
            .block_on(async {
                tokio::time::timeout(self.store.timeout(), c.get(dir, Some(opts))).await
            })
            .with_context(|| format!("counting {dir}: no answer"))?
            .with_context(|| format!("counting {dir}"))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.count(), rev))
    }
}

type Passes = Arc<Mutex<Vec<(Instant, usize, Pass)>>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let out = Out { json: args.json };
    anyhow::ensure!(
        args.machines > args.engines + args.lost && args.clients >= 1 && args.batch >= 1,
        "need more machines than engine candidates plus lost machines, and a client and batch"
    );
    let limit = Duration::from_secs(args.limit_secs);
    let tick = Duration::from_millis(100);
    let ttl = Duration::from_secs(args.ttl_secs);
    let n = args.machines;
    let plans = plan_units(args.units, n)?;
    let metas: Vec<BTreeMap<String, String>> = (0..n).map(metadata).collect();
    let expected: usize = plans
        .iter()
        .map(|p| match p.kind {
            Kind::Global(_) => metas.iter().filter(|m| p.fits(m)).count(),
            _ => 1,
        })
        .sum();
    let kinds: HashMap<&str, &Kind> = plans.iter().map(|p| (p.name.as_str(), &p.kind)).collect();

    out.line(format!("machine: {}", machine::describe()));
    out.line(format!(
        "{n} machines ({} engine candidates, {} shared etcd clients, lease {} s), {} units \
         ({expected} placements), {} worker threads",
        args.engines, args.clients, args.ttl_secs, args.units, args.workers
    ));
    let compute = leader_compute(&plans, &metas, args.lost)?;
    let cluster = Cluster::start(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    let mut etcd = EtcdConfig::with_endpoints(&cluster.client_urls());
    etcd.timeout = Duration::from_secs(args.etcd_timeout_secs);
    let connect = |what: &str| {
        rt.block_on(Store::connect(&etcd, PREFIX))
            .with_context(|| format!("connecting the {what}"))
    };
    let agent_stores: Vec<Store> = (0..args.clients)
        .map(|_| connect("agents' client"))
        .collect::<Result<_>>()?;
    let engine_stores: Vec<Store> = (0..args.engines)
        .map(|_| connect("engine's client"))
        .collect::<Result<_>>()?;
    let fleetctl = connect("fleetctl client")?;
    let mut observer = Observer {
        store: connect("observer")?,
        ranges: 0,
    };
    let keys = fleetctl.keys.clone();

    // The machines.
    let passes: Passes = Arc::default();
    let (_stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for (k, meta) in metas.iter().enumerate() {
        let id = machine_id(k);
        let recorder = Recorder::default();
        let mut acfg = AgentConfig::new(&id);
        acfg.ip = format!("10.{}.{}.{}", k >> 16, (k >> 8) & 255, k & 255);
        acfg.metadata = meta.clone();
        acfg.ttl = ttl;
        acfg.refresh = Duration::from_secs(args.refresh_secs);
        acfg.verbose = false;
        let store = agent_stores[k % args.clients].clone();
        let mut tasks =
            vec![rt.spawn(Agent::new(store, acfg, recorder.clone()).run(stop_rx.clone()))];
        let candidate = k < args.engines;
        if candidate {
            let mut ecfg = EngineConfig::new(&id);
            ecfg.ttl = ttl;
            ecfg.verbose = false;
            let (store, passes, mut rx) =
                (engine_stores[k].clone(), passes.clone(), stop_rx.clone());
            tasks.push(rt.spawn(async move {
                engine::run_reporting(store, ecfg, &mut rx, move |p| {
                    passes.lock().expect("passes").push((Instant::now(), k, p));
                })
                .await
            }));
        }
        nodes.push(Node {
            id,
            meta: meta.clone(),
            recorder,
            tasks,
            candidate,
        });
    }
    let machines_dir = keys.machines();
    until(
        "every agent registers",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let (c, _) = observer.count(&rt, &machines_dir)?;
            Ok(if c as usize == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{c} of {n} registered"))
            })
        },
    )?;
    let registered = started.elapsed();

    // Warm-up: a Global unit every agent must run proves the leader sees every machine and
    // every agent watches its keys before the clock starts. It stays; it is not counted.
    let write_units = |records: &[UnitRecord]| -> Result<Sent> {
        let mut sent = Sent::default();
        for chunk in records.chunks(args.batch) {
            let mut ops = Vec::with_capacity(chunk.len());
            for r in chunk {
                let key = keys.unit(&r.name);
                let value = serde_json::to_vec(r)?;
                sent.bytes += (key.len() + value.len()) as u64;
                ops.push(TxnOp::put(key, value, None));
            }
            sent.requests += 1;
            let mut c = fleetctl.client();
            rt.block_on(async {
                tokio::time::timeout(fleetctl.timeout(), c.txn(Txn::new().and_then(ops))).await
            })
            .context("writing units: no answer")?
            .context("writing units")?;
        }
        Ok(sent)
    };
    write_units(&[UnitRecord {
        name: WARMUP.into(),
        content: "[Service]\nExecStart=/usr/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n".into(),
        target: TargetState::Launched,
    }])?;
    let running_total = |nodes: &[Node]| -> usize {
        nodes
            .iter()
            .filter(|m| !m.tasks.is_empty())
            .map(|m| m.recorder.running().len())
            .sum()
    };
    until(
        "every agent runs the warm-up unit",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let r = running_total(&nodes);
            Ok(if r == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{r} of {n}"))
            })
        },
    )?;
    let states_dir = keys.states();
    until(
        "every agent reports the warm-up unit",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let (c, _) = observer.count(&rt, &states_dir)?;
            Ok(if c as usize == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{c} of {n} states"))
            })
        },
    )?;
    let ready = started.elapsed();
    out.line(format!(
        "{n} agents registered in {:.1} s; all watching, warm-up unit running, {:.1} s after start",
        registered.as_secs_f64(),
        ready.as_secs_f64()
    ));

    // Phase 1: 10,000 units started at once.
    let all_stores: Vec<Store> = agent_stores
        .iter()
        .chain(engine_stores.iter())
        .cloned()
        .collect();
    let records: Vec<UnitRecord> = plans
        .iter()
        .map(|p| UnitRecord {
            name: p.name.clone(),
            content: p.content(),
            target: TargetState::Launched,
        })
        .collect();
    let m0 = Metrics::scrape(&cluster)?;
    let (s0, l0, cpu0, obs0) = (
        Sent::of(&all_stores),
        Sent::of(&engine_stores),
        own_cpu_secs(),
        observer.ranges,
    );
    let passes_before = passes.lock().expect("passes").len();
    let t0 = Instant::now();
    let submitted = write_units(&records)?;
    let written = t0.elapsed();
    let want = n + expected;
    until(
        "every placement runs",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let r = running_total(&nodes);
            Ok(if r == want {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{} of {expected} running", r as i64 - n as i64))
            })
        },
    )
    .map_err(|e| describe_stall(e, &rt, &fleetctl, &passes))?;
    let placed = t0.elapsed();
    until(
        "every state is reported",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let (c, _) = observer.count(&rt, &states_dir)?;
            Ok(if c as usize == want {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{c} of {want} states"))
            })
        },
    )?;
    let reported = t0.elapsed();
    let m1 = Metrics::scrape(&cluster)?;
    let (s1, l1, cpu1, obs1) = (
        Sent::of(&all_stores),
        Sent::of(&engine_stores),
        own_cpu_secs(),
        observer.ranges,
    );
    let phase1: Vec<(Instant, usize, Pass)> =
        passes.lock().expect("passes")[passes_before..].to_vec();
    let leader_done = phase1
        .iter()
        .map(|(t, _, _)| t.duration_since(t0))
        .filter(|d| *d <= placed)
        .max()
        .unwrap_or_default();
    let leader = phase1.last().map(|(_, k, _)| *k);
    let writes: usize = phase1.iter().map(|(_, _, p)| p.writes).sum();
    // Each pass: when its writes were done (s after the first unit write), keys written.
    let timeline = |passes: &[(Instant, usize, Pass)], from: Instant| -> Vec<(f64, usize)> {
        passes
            .iter()
            .map(|(t, _, p)| (t.duration_since(from).as_secs_f64(), p.writes))
            .collect()
    };
    let timeline1 = timeline(&phase1, t0);

    // Where every unit landed, as the recorders were told.
    let check = check_placement(&nodes, &plans, &kinds)?;
    let unplaced = rt
        .block_on(keel_fleet::registry::Registry::new(fleetctl.clone()).unplaced())
        .context("reading unplaced/")?;
    if !unplaced.is_empty() {
        bail!(
            "units left unplaced: {:?}",
            unplaced.iter().take(5).collect::<Vec<_>>()
        );
    }
    out.line(format!("placement checked: {check}"));

    // Phase 2: machines crash.
    let mut victims: Vec<usize> = Vec::new();
    if args.lose_leader {
        victims.extend(leader);
    }
    let others: Vec<usize> = (0..n).filter(|&k| !nodes[k].candidate).collect();
    let step = (others.len() / args.lost.max(1)).max(1);
    for &k in others.iter().step_by(step) {
        if victims.len() >= args.lost {
            break;
        }
        victims.push(k);
    }
    let moved: Vec<String> = victims
        .iter()
        .flat_map(|&k| nodes[k].recorder.running())
        .filter(|u| !matches!(kinds.get(u.as_str()), Some(Kind::Global(_)) | None))
        .collect();
    let victim_keys: HashSet<String> = victims
        .iter()
        .map(|&k| keys.machine(&nodes[k].id))
        .collect();
    let expiries: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (_, rev) = observer.count(&rt, &machines_dir)?;
    let mut machine_watch = {
        let mut c = observer.store.client();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        rt.block_on(c.watch(machines_dir.as_str(), Some(opts)))
            .context("watching machines/")?
    };
    {
        let expiries = expiries.clone();
        let victim_keys = victim_keys.clone();
        rt.spawn(async move {
            while let Ok(Some(resp)) = machine_watch.message().await {
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    if ev.event_type() == EventType::Delete && victim_keys.contains(&key) {
                        expiries
                            .lock()
                            .expect("expiries")
                            .entry(key)
                            .or_insert_with(Instant::now);
                    }
                }
            }
        });
    }
    let m2 = Metrics::scrape(&cluster)?;
    let (s2, l2, cpu2, obs2) = (
        Sent::of(&all_stores),
        Sent::of(&engine_stores),
        own_cpu_secs(),
        observer.ranges,
    );
    let passes_before = passes.lock().expect("passes").len();
    let crash = Instant::now();
    for &k in &victims {
        nodes[k].crash();
    }
    let live = |nodes: &[Node]| -> HashMap<String, usize> {
        let mut on: HashMap<String, usize> = HashMap::new();
        for m in nodes.iter().filter(|m| !m.tasks.is_empty()) {
            for u in m.recorder.running() {
                *on.entry(u).or_default() += 1;
            }
        }
        on
    };
    until(
        "the lost machines' units run elsewhere",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let on = live(&nodes);
            let missing = moved.iter().filter(|u| !on.contains_key(*u)).count();
            Ok(if missing == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{missing} of {} not yet moved", moved.len()))
            })
        },
    )
    .map_err(|e| describe_stall(e, &rt, &fleetctl, &passes))?;
    let rescheduled = crash.elapsed();
    let live_pairs: usize = running_total(&nodes);
    until(
        "the lost machines' leases expire and the moved units' states are reported",
        limit,
        tick,
        || -> Result<ControlFlow<(), String>> {
            let (c, _) = observer.count(&rt, &states_dir)?;
            let expired = expiries.lock().expect("expiries").len();
            Ok(if c as usize == live_pairs && expired == victims.len() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!(
                    "{c} of {live_pairs} states, {expired} of {} leases expired",
                    victims.len()
                ))
            })
        },
    )?;
    let reported2 = crash.elapsed();
    let m3 = Metrics::scrape(&cluster)?;
    let (s3, l3, cpu3, obs3) = (
        Sent::of(&all_stores),
        Sent::of(&engine_stores),
        own_cpu_secs(),
        observer.ranges,
    );
    let expired = expiries
        .lock()
        .expect("expiries")
        .values()
        .map(|t| t.duration_since(crash))
        .max()
        .unwrap_or_default();
    let phase2: Vec<(Instant, usize, Pass)> =
        passes.lock().expect("passes")[passes_before..].to_vec();
    let timeline2 = timeline(&phase2, crash);
    let leader2_done = phase2
        .iter()
        .map(|(t, _, _)| t.duration_since(crash))
        .filter(|d| *d <= rescheduled)
        .max()
        .unwrap_or_default();
    let on = live(&nodes);
    let twice: Vec<&String> = on
        .iter()
        .filter(|(u, c)| **c > 1 && !matches!(kinds.get(u.as_str()), Some(Kind::Global(_)) | None))
        .map(|(u, _)| u)
        .collect();
    if !twice.is_empty() {
        bail!("units running twice after the move: {twice:?}");
    }
    let check2 = check_placement(
        &nodes
            .iter()
            .filter(|m| !m.tasks.is_empty())
            .collect::<Vec<_>>()[..],
        &plans,
        &kinds,
    )
    .map(|s| s.to_string());
    let check2 = match check2 {
        Ok(s) => s,
        Err(e) => format!("FAILED: {e}"),
    };

    // Figures.
    let d1 = m1.minus(&m0);
    let d2 = m3.minus(&m2);
    let fleet1 = s1.minus(s0).scheduling();
    let fleet2 = s3.minus(s2).scheduling();
    let etcd_requests = |d: &Metrics, observer: u64, fleetctl: u64| {
        d.received.values().sum::<f64>()
            - d.got("LeaseKeepAlive")
            - observer as f64
            - fleetctl as f64
    };
    let e1 = etcd_requests(&d1, obs1 - obs0, submitted.requests);
    let e2 = etcd_requests(&d2, obs3 - obs2, 0);
    let per = |x: f64, by: usize| x / by.max(1) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let secs = |d: Duration| d.as_secs_f64();
    let placed_ok = secs(placed) < GOAL_PLACED;
    let moved_ok = secs(rescheduled) < GOAL_RESCHEDULED;
    let leader_id = |k: Option<usize>| k.map(|k| nodes[k].id[..8].to_string());
    let report = json!({
        "machine": machine::describe(),
        "machines": n,
        "units": args.units,
        "placements": expected,
        "engine_candidates": args.engines,
        "etcd_clients": args.clients,
        "lease_ttl_secs": args.ttl_secs,
        "workers": args.workers,
        "agents_registered_secs": secs(registered),
        "place": {
            "all_running_secs": secs(placed),
            "units_written_secs": secs(written),
            "leader_last_write_secs": secs(leader_done),
            "states_reported_secs": secs(reported),
            "leader": leader_id(leader),
            "leader_passes": phase1.len(),
            "leader_keys_written": writes,
            "leader_passes_done_secs_keys": timeline1,
            "fleet_requests": fleet1.requests,
            "fleet_bytes_sent": fleet1.bytes,
            "leader_requests": l1.minus(l0).requests,
            "leader_bytes_sent": l1.minus(l0).bytes,
            "fleet_requests_per_placement": per(fleet1.requests as f64, expected),
            "fleet_bytes_per_placement": per(fleet1.bytes as f64, expected),
            "fleetctl_txns": submitted.requests,
            "fleetctl_bytes": submitted.bytes,
            "etcd_requests_per_placement": per(e1, expected),
            "etcd_grpc_bytes_in_per_placement": per(d1.bytes_in, expected),
            "etcd_grpc_bytes_out_per_placement": per(d1.bytes_out, expected),
            "etcd_peer_bytes_per_placement": per(d1.peer_bytes, expected),
            "etcd_messages_received": d1.received,
            "etcd_messages_sent": d1.sent,
            "etcd_cpu_secs": d1.cpu_secs,
            "process_cpu_secs": cpu1 - cpu0,
            "check": check,
        },
        "reschedule": {
            "lost_machines": victims.len(),
            "leader_lost": args.lose_leader,
            "moved_units": moved.len(),
            "from_crash_secs": secs(rescheduled),
            "lease_expired_secs": secs(expired),
            "after_expiry_secs": secs(rescheduled.saturating_sub(expired)),
            "leader_last_write_secs": secs(leader2_done),
            "states_reported_secs": secs(reported2),
            "leader": leader_id(phase2.last().map(|(_, k, _)| *k)),
            "fleet_requests": fleet2.requests,
            "fleet_bytes_sent": fleet2.bytes,
            "leader_requests": l3.minus(l2).requests,
            "leader_passes_done_secs_keys": timeline2,
            "fleet_requests_per_moved_unit": per(fleet2.requests as f64, moved.len()),
            "fleet_bytes_per_moved_unit": per(fleet2.bytes as f64, moved.len()),
            "etcd_requests_per_moved_unit": per(e2, moved.len()),
            "etcd_messages_received": d2.received,
            "etcd_cpu_secs": d2.cpu_secs,
            "process_cpu_secs": cpu3 - cpu2,
            "check": check2,
        },
        "leader_compute_offline_ms": {
            "parse_every_unit": ms(compute.parse),
            "plan_from_nothing": ms(compute.plan_fresh),
            "plan_after_losing_machines": ms(compute.plan_after_loss),
            "units_moved_by_that_plan": compute.moved,
            "encode_every_assignment": ms(compute.encode),
        },
        "peak_rss_mib": peak_rss_mib(),
        "etcd_rss_mib": m3.rss / (1 << 20) as f64,
        "fleet_ceiling": {"machines": FLEET_MACHINES, "units": FLEET_UNITS},
        "scale_vs_fleet_ceiling": {
            "machines": n as f64 / FLEET_MACHINES as f64,
            "units": args.units as f64 / FLEET_UNITS as f64,
        },
        "goals": {
            "placed_under_60_secs": placed_ok,
            "rescheduled_under_10_secs": moved_ok,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!();
        println!(
            "{:<52} {:>14}  {:<28} goal",
            "figure", "Keel", "fleet's documented ceiling"
        );
        let row = |f: &str, k: String, c: &str, g: String| {
            println!("{f:<52} {k:>14}  {c:<28} {g}");
        };
        row("machines", n.to_string(), "100", "1,000 (10x)".into());
        row(
            "units",
            args.units.to_string(),
            "1,000",
            "10,000 (10x)".into(),
        );
        row(
            "(unit, machine) placements (3 Global units)",
            expected.to_string(),
            "-",
            String::new(),
        );
        row(
            "all placed and running, from the first unit write",
            format!("{:.2} s", secs(placed)),
            "not documented",
            format!("< {GOAL_PLACED:.0} s: {}", met(placed_ok)),
        );
        row(
            "  units written (fleetctl, txns of 128)",
            format!("{:.2} s", secs(written)),
            "",
            String::new(),
        );
        row(
            "  leader's last write",
            format!("{:.2} s", secs(leader_done)),
            "",
            format!("passes {}, keys written {writes}", phase1.len()),
        );
        row(
            "  every state reported",
            format!("{:.2} s", secs(reported)),
            "",
            String::new(),
        );
        row(
            &format!("units of {} lost machines run elsewhere", victims.len()),
            format!("{:.2} s", secs(rescheduled)),
            "not documented",
            format!("< {GOAL_RESCHEDULED:.0} s: {}", met(moved_ok)),
        );
        row(
            &format!("  lease expiry seen (TTL {} s)", args.ttl_secs),
            format!("{:.2} s", secs(expired)),
            "",
            format!("{} units moved", moved.len()),
        );
        row(
            "  after the lease expiry",
            format!("{:.2} s", secs(rescheduled.saturating_sub(expired))),
            "",
            String::new(),
        );
        row(
            "etcd requests per placement (leader + agents)",
            format!("{:.2}", per(fleet1.requests as f64, expected)),
            "-",
            String::new(),
        );
        row(
            "bytes sent per placement (leader + agents)",
            format!("{:.0} B", per(fleet1.bytes as f64, expected)),
            "-",
            String::new(),
        );
        row(
            "etcd requests per moved unit (leader + agents)",
            format!("{:.2}", per(fleet2.requests as f64, moved.len())),
            "-",
            String::new(),
        );
        row(
            &format!("peak RSS of the {n} agents + engines + bench"),
            format!("{:.0} MiB", peak_rss_mib()),
            "-",
            String::new(),
        );
        println!(
            "\nscale: {:.1}x fleet's ceiling in machines, {:.1}x in units",
            n as f64 / FLEET_MACHINES as f64,
            args.units as f64 / FLEET_UNITS as f64
        );
        println!(
            "placing: units written {:.2} s, leader's last write {:.2} s ({} passes by {}), \
             agents running {:.2} s, states {:.2} s",
            secs(written),
            secs(leader_done),
            phase1.len(),
            leader_id(leader).unwrap_or_default(),
            secs(placed),
            secs(reported)
        );
        println!(
            "  fleet's stores (keep-alives excluded): {} requests, {:.1} MiB sent; of it the \
             leader {} requests, {:.1} MiB",
            fleet1.requests,
            fleet1.bytes as f64 / (1 << 20) as f64,
            l1.minus(l0).requests,
            l1.minus(l0).bytes as f64 / (1 << 20) as f64
        );
        println!(
            "  etcd's count (all members): {:.2} requests per placement without keep-alives, \
             fleetctl's {} txns and the benchmark's polls; gRPC {:.0} B in, {:.0} B out, \
             raft {:.0} B per placement",
            per(e1, expected),
            submitted.requests,
            per(d1.bytes_in, expected),
            per(d1.bytes_out, expected),
            per(d1.peer_bytes, expected)
        );
        println!(
            "  leader's passes (done at s, keys written): {}",
            show(&timeline1)
        );
        println!("  etcd messages received: {}", d1.by_method());
        println!(
            "  lease keep-alives meanwhile: {} ({} machines every {:.1} s); watch responses \
             sent: {:.0}; CPU: etcd {:.1} s, this process {:.1} s",
            s1.minus(s0).keepalives,
            n,
            args.ttl_secs as f64 / 3.0,
            d1.sent.get("Watch").copied().unwrap_or(0.0),
            d1.cpu_secs,
            cpu1 - cpu0
        );
        println!(
            "rescheduling: lease expiry seen {:.2} s after the crash, leader's last write {:.2} s, \
             units running {:.2} s, states {:.2} s; {} units moved{}",
            secs(expired),
            secs(leader2_done),
            secs(rescheduled),
            secs(reported2),
            moved.len(),
            if args.lose_leader {
                " (the leader was among the lost)"
            } else {
                ""
            }
        );
        println!(
            "  fleet's stores: {} requests, {:.0} KiB; etcd's count {:.2} requests per moved \
             unit; messages received: {}",
            fleet2.requests,
            fleet2.bytes as f64 / 1024.0,
            per(e2, moved.len()),
            d2.by_method()
        );
        println!(
            "  CPU: etcd {:.1} s, this process {:.1} s",
            d2.cpu_secs,
            cpu3 - cpu2
        );
        println!(
            "  leader's passes (done at s after the crash, keys written): {}",
            show(&timeline2)
        );
        println!("  placement after the move: {check2}");
        println!(
            "the leader's computation alone (this process, before the cluster started): parsing \
             every unit {:.0} ms, a plan from nothing {:.0} ms, a plan after losing {} machines \
             {:.0} ms ({} units moved), encoding every assignment {:.0} ms",
            ms(compute.parse),
            ms(compute.plan_fresh),
            args.lost,
            ms(compute.plan_after_loss),
            compute.moved,
            ms(compute.encode)
        );
        println!(
            "memory: this process peak {:.0} MiB, etcd members {:.0} MiB (sum, at the end)",
            peak_rss_mib(),
            m3.rss / (1 << 20) as f64
        );
        println!("load at the end: {}", machine::load());
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(cluster);
    Ok(())
}

fn show(timeline: &[(f64, usize)]) -> String {
    timeline
        .iter()
        .map(|(t, w)| format!("{t:.2} s {w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The leader's own work in one pass, without etcd: what `engine::World::desired` does.
struct Compute {
    parse: Duration,
    plan_fresh: Duration,
    plan_after_loss: Duration,
    encode: Duration,
    moved: usize,
}

/// Times, in this process alone: parsing every unit's `[X-Fleet]` section (once per unit
/// event in the leader), a plan from nothing, a plan after `lost` machines went (everything
/// else stays put), and encoding every assignment with its unit file (every pass).
fn leader_compute(
    plans: &[UnitPlan],
    metas: &[BTreeMap<String, String>],
    lost: usize,
) -> Result<Compute> {
    let t = Instant::now();
    let parsed: Vec<(String, String, Requirements)> = plans
        .iter()
        .map(|p| {
            let content = p.content();
            let req = Requirements::parse(&p.name, &content)?;
            Ok((p.name.clone(), content, req))
        })
        .collect::<Result<_>>()?;
    let parse = t.elapsed();
    let machines: Vec<schedule::Machine> = metas
        .iter()
        .enumerate()
        .map(|(k, m)| schedule::Machine {
            id: machine_id(k),
            metadata: m.clone(),
        })
        .collect();
    let jobs: Vec<schedule::Job> = parsed
        .iter()
        .map(|(name, _, req)| schedule::Job { name, req })
        .collect();
    let t = Instant::now();
    let first = schedule::plan(&machines, &jobs, &BTreeMap::new());
    let plan_fresh = t.elapsed();
    if !first.unplaced.is_empty() {
        bail!(
            "the plan leaves units unplaced: {:?}",
            first.unplaced.iter().next()
        );
    }
    let step = (machines.len() / lost.max(1)).max(1);
    let rest: Vec<schedule::Machine> = machines
        .iter()
        .enumerate()
        .filter(|(k, _)| k % step != 1 || k / step >= lost)
        .map(|(_, m)| m.clone())
        .collect();
    let t = Instant::now();
    let again = schedule::plan(&rest, &jobs, &first.placed);
    let plan_after_loss = t.elapsed();
    let moved = again
        .placed
        .iter()
        .filter(|(u, m)| first.placed.get(*u) != Some(*m))
        .count();
    let contents: HashMap<&str, &str> = parsed
        .iter()
        .map(|(n, c, _)| (n.as_str(), c.as_str()))
        .collect();
    let t = Instant::now();
    let mut encoded: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let pairs = first.placed.iter().chain(
        first
            .global
            .iter()
            .flat_map(|(u, ms)| ms.iter().map(move |m| (u, m))),
    );
    for (unit, m) in pairs {
        let a = Assignment {
            name: unit.clone(),
            content: contents[unit.as_str()].to_string(),
            target: TargetState::Launched,
        };
        encoded.insert(format!("{PREFIX}schedule/{m}/{unit}"), encode(&a));
    }
    let encode = t.elapsed();
    Ok(Compute {
        parse,
        plan_fresh,
        plan_after_loss,
        encode,
        moved,
    })
}

/// Adds to a timeout what the leader did and what it could not place.
fn describe_stall(e: anyhow::Error, rt: &Runtime, store: &Store, passes: &Passes) -> anyhow::Error {
    let last: Vec<String> = passes
        .lock()
        .expect("passes")
        .iter()
        .rev()
        .take(3)
        .map(|(t, k, p)| format!("{:.1} s ago by #{k}: {p:?}", t.elapsed().as_secs_f64()))
        .collect();
    let unplaced = rt
        .block_on(keel_fleet::registry::Registry::new(store.clone()).unplaced())
        .map(|u| format!("{} unplaced, e.g. {:?}", u.len(), u.iter().next()))
        .unwrap_or_else(|e| e.to_string());
    e.context(format!("leader's last passes: {last:?}; {unplaced}"))
}

/// Checks every unit's placement against its constraints, from what the recorders run.
fn check_placement<N: std::borrow::Borrow<Node>>(
    nodes: &[N],
    plans: &[UnitPlan],
    kinds: &HashMap<&str, &Kind>,
) -> Result<String> {
    let mut on: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, m) in nodes.iter().enumerate() {
        for u in m.borrow().recorder.running() {
            on.entry(u).or_default().push(i);
        }
    }
    let mut apps_per_machine: HashMap<usize, usize> = HashMap::new();
    for p in plans {
        let at = on.get(&p.name).map(Vec::as_slice).unwrap_or(&[]);
        let meta = |i: usize| &nodes[i].borrow().meta;
        match &p.kind {
            Kind::Global(_) => {
                let want = (0..nodes.len()).filter(|&i| p.fits(meta(i))).count();
                if at.len() != want || at.iter().any(|&i| !p.fits(meta(i))) {
                    bail!("{}: on {} machines, {want} match", p.name, at.len());
                }
                continue;
            }
            _ if at.len() != 1 => bail!("{} runs on {} machines", p.name, at.len()),
            _ => {}
        }
        let m = at[0];
        if !p.fits(meta(m)) {
            bail!(
                "{} on {}: metadata does not match",
                p.name,
                nodes[m].borrow().id
            );
        }
        match &p.kind {
            Kind::App => *apps_per_machine.entry(m).or_default() += 1,
            Kind::MachineOf(t) if on.get(t).map(Vec::as_slice) != Some(&[m][..]) => {
                bail!("{}: not beside {t}", p.name)
            }
            Kind::Avoid(t) if on.get(t).is_some_and(|v| v.contains(&m)) => {
                bail!("{}: beside {t}, which it conflicts with", p.name)
            }
            _ => {}
        }
    }
    if let Some((m, c)) = apps_per_machine.iter().find(|(_, c)| **c > 1) {
        bail!(
            "{c} app@ instances on {} (Conflicts=app@*)",
            nodes[*m].borrow().id
        );
    }
    let stray = on
        .keys()
        .filter(|u| u.as_str() != WARMUP && !kinds.contains_key(u.as_str()))
        .count();
    if stray > 0 {
        bail!("{stray} units run that were never submitted");
    }
    let loads: Vec<usize> = nodes
        .iter()
        .map(|m| m.borrow().recorder.running().len())
        .collect();
    Ok(format!(
        "every unit once, constraints hold; units per machine {}..{}",
        loads.iter().min().unwrap_or(&0),
        loads.iter().max().unwrap_or(&0)
    ))
}
