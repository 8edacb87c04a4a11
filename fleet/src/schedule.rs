//! Placement, as a pure function: machines, units with their [`Requirements`], and where each
//! unit ran before → where each runs now, or why it cannot run anywhere.
//!
//! The rules are fleet's: `MachineID`, `MachineMetadata` and `MachineOf` restrict the machines,
//! `Conflicts` (and `Replaces`) keep units apart in both directions, `Global` units go to every
//! matching machine, and among the eligible machines the least loaded wins (ties by id). A unit
//! stays where it is while that machine is alive and still satisfies it, so a change moves only
//! the units it has to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::unit::Requirements;

/// A machine as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    pub metadata: BTreeMap<String, String>,
}

/// A unit that should run (target state loaded or launched).
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub name: &'a str,
    pub req: &'a Requirements,
}

/// The result: every job is in exactly one of `placed`, `global` or `unplaced`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// unit → machine id.
    pub placed: BTreeMap<String, String>,
    /// Global unit → the machines it runs on (possibly none; then it is also in `unplaced`).
    pub global: BTreeMap<String, Vec<String>>,
    /// unit → why no machine can take it.
    pub unplaced: BTreeMap<String, String>,
}

/// Places `jobs` on `machines`, keeping each unit of `previous` (unit → machine) where it is
/// when that is still allowed.
pub fn plan(machines: &[Machine], jobs: &[Job], previous: &BTreeMap<String, String>) -> Plan {
    let mut s = State::new(machines, jobs);
    let mut out = Plan::default();

    let mut order: Vec<usize> = (0..jobs.len()).filter(|&j| !jobs[j].req.global).collect();
    // Units that push others away choose first; then by name, for a stable answer.
    order.sort_by(|&a, &b| {
        (jobs[a].req.replaces.is_empty(), jobs[a].name)
            .cmp(&(jobs[b].req.replaces.is_empty(), jobs[b].name))
    });

    // Phase 1: keep what still fits where it is.
    let mut undecided: Vec<usize> = Vec::new();
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    loop {
        let mut progress = false;
        for &j in &order {
            if kept.contains(&j) {
                continue;
            }
            let Some(&m) = previous
                .get(jobs[j].name)
                .and_then(|id| s.machine_index.get(id.as_str()))
            else {
                continue;
            };
            if jobs[j].req.machine_of.iter().any(|t| {
                s.job_index
                    .get(t.as_str())
                    .is_none_or(|&t| !kept.contains(&t))
            }) {
                continue;
            }
            if s.eligible(j, m).is_ok() {
                s.put(j, m);
                kept.insert(j);
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    undecided.extend(order.iter().copied().filter(|j| !kept.contains(j)));

    // Phase 2: place the rest, a MachineOf unit only once its targets are decided.
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    loop {
        let mut progress = false;
        let mut still = Vec::new();
        for &j in &undecided {
            match s.machine_of_state(j, &failed) {
                Targets::Waiting => {
                    still.push(j);
                    continue;
                }
                Targets::Failed(why) => {
                    failed.insert(j, why);
                }
                Targets::Ready => match s.best(j) {
                    Ok(m) => s.put(j, m),
                    Err(why) => {
                        failed.insert(j, why);
                    }
                },
            }
            progress = true;
        }
        undecided = still;
        if !progress || undecided.is_empty() {
            break;
        }
    }
    for j in undecided {
        failed.insert(
            j,
            format!(
                "MachineOf={} forms a cycle: each waits for the other",
                jobs[j].req.machine_of.join(" ")
            ),
        );
    }

    for (j, m) in s.placement.iter().enumerate() {
        if let Some(m) = m {
            out.placed
                .insert(jobs[j].name.to_string(), machines[*m].id.clone());
        }
    }
    for (j, why) in failed {
        out.unplaced.insert(jobs[j].name.to_string(), why);
    }

    for job in jobs.iter().filter(|j| j.req.global) {
        let on: Vec<String> = machines
            .iter()
            .filter(|m| metadata_matches(job.req, m))
            .map(|m| m.id.clone())
            .collect();
        if on.is_empty() {
            out.unplaced
                .insert(job.name.to_string(), no_metadata_reason(job.req, machines));
        }
        out.global.insert(job.name.to_string(), on);
    }
    out
}

enum Targets {
    Ready,
    Waiting,
    Failed(String),
}

struct State<'a> {
    machines: &'a [Machine],
    jobs: &'a [Job<'a>],
    machine_index: HashMap<&'a str, usize>,
    job_index: HashMap<&'a str, usize>,
    placement: Vec<Option<usize>>,
    on_machine: Vec<Vec<usize>>,
    /// (load, machine) for choosing the least loaded.
    by_load: BTreeSet<(usize, usize)>,
}

impl<'a> State<'a> {
    fn new(machines: &'a [Machine], jobs: &'a [Job<'a>]) -> Self {
        Self {
            machines,
            jobs,
            machine_index: machines
                .iter()
                .enumerate()
                .map(|(i, m)| (m.id.as_str(), i))
                .collect(),
            job_index: jobs.iter().enumerate().map(|(i, j)| (j.name, i)).collect(),
            placement: vec![None; jobs.len()],
            on_machine: vec![Vec::new(); machines.len()],
            by_load: (0..machines.len()).map(|m| (0, m)).collect(),
        }
    }

    fn put(&mut self, j: usize, m: usize) {
        let load = self.on_machine[m].len();
        self.by_load.remove(&(load, m));
        self.on_machine[m].push(j);
        self.by_load.insert((load + 1, m));
        self.placement[j] = Some(m);
    }

    fn machine_of_state(&self, j: usize, failed: &BTreeMap<usize, String>) -> Targets {
        for t in &self.jobs[j].req.machine_of {
            let Some(&ti) = self.job_index.get(t.as_str()) else {
                return Targets::Failed(format!("MachineOf={t}: {t} is not scheduled"));
            };
            if self.jobs[ti].req.global {
                return Targets::Failed(format!(
                    "MachineOf={t}: {t} is Global, so it has no one machine"
                ));
            }
            if failed.contains_key(&ti) {
                return Targets::Failed(format!("MachineOf={t}: {t} could not be placed"));
            }
            if self.placement[ti].is_none() {
                return Targets::Waiting;
            }
        }
        Targets::Ready
    }

    /// Whether job `j` may run on machine `m` given what is already placed; else why not.
    fn eligible(&self, j: usize, m: usize) -> Result<(), Refusal> {
        let job = self.jobs[j];
        let machine = &self.machines[m];
        if let Some(id) = &job.req.machine_id {
            // fleet's MatchID: the full id or its 8-character short form.
            let short = machine.id.get(..8).unwrap_or(&machine.id);
            if machine.id != *id && short != id {
                return Err(Refusal::MachineId);
            }
        }
        if !metadata_matches(job.req, machine) {
            return Err(Refusal::Metadata);
        }
        for t in &job.req.machine_of {
            let target = self
                .job_index
                .get(t.as_str())
                .and_then(|&t| self.placement[t]);
            if target != Some(m) {
                return Err(Refusal::MachineOf);
            }
        }
        for &other in &self.on_machine[m] {
            let o = self.jobs[other];
            if job.req.conflicts_with(job.name, o.name, o.req) {
                return Err(Refusal::Conflict(other));
            }
        }
        Ok(())
    }

    /// The least loaded eligible machine, or the reason none is.
    fn best(&self, j: usize) -> Result<usize, String> {
        let job = self.jobs[j];
        if self.machines.is_empty() {
            return Err("no machine is registered".into());
        }
        let mut refusals: Vec<Refusal> = Vec::new();
        for &(_, m) in &self.by_load {
            match self.eligible(j, m) {
                Ok(()) => return Ok(m),
                Err(r) => refusals.push(r),
            }
        }
        if refusals.iter().all(|r| *r == Refusal::MachineId) {
            return Err(format!(
                "MachineID={}: no registered machine has that id",
                job.req.machine_id.as_deref().unwrap_or("")
            ));
        }
        if refusals
            .iter()
            .all(|r| matches!(r, Refusal::MachineId | Refusal::Metadata))
        {
            return Err(no_metadata_reason(job.req, self.machines));
        }
        let conflict = refusals.iter().find_map(|r| match r {
            Refusal::Conflict(o) => Some(*o),
            _ => None,
        });
        match conflict {
            Some(o) => Err(format!(
                "every machine it may run on already runs a unit it conflicts with (e.g. {})",
                self.jobs[o].name
            )),
            None => Err(format!(
                "MachineOf={}: that machine cannot take it",
                job.req.machine_of.join(" ")
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    MachineId,
    Metadata,
    MachineOf,
    Conflict(usize),
}

fn metadata_matches(req: &Requirements, m: &Machine) -> bool {
    req.metadata
        .iter()
        .all(|(k, vals)| m.metadata.get(k).is_some_and(|v| vals.contains(v)))
}

fn no_metadata_reason(req: &Requirements, machines: &[Machine]) -> String {
    if machines.is_empty() {
        return "no machine is registered".into();
    }
    let wanted: Vec<String> = req
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={}", v.join("|")))
        .collect();
    match &req.machine_id {
        Some(id) if req.metadata.is_empty() => {
            format!("MachineID={id}: no registered machine has that id")
        }
        Some(id) => format!(
            "no registered machine has id {id} and metadata {}",
            wanted.join(",")
        ),
        None => format!("no registered machine has metadata {}", wanted.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, meta: &[(&str, &str)]) -> Machine {
        Machine {
            id: id.into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn req(x_fleet: &str) -> Requirements {
        Requirements::parse("x.service", &format!("[X-Fleet]\n{x_fleet}\n")).unwrap()
    }

    fn run(
        machines: &[Machine],
        units: &[(&str, Requirements)],
        previous: &[(&str, &str)],
    ) -> Plan {
        let jobs: Vec<Job> = units.iter().map(|(n, r)| Job { name: n, req: r }).collect();
        let prev = previous
            .iter()
            .map(|(u, m)| (u.to_string(), m.to_string()))
            .collect();
        plan(machines, &jobs, &prev)
    }

    fn three() -> Vec<Machine> {
        vec![
            machine("m1", &[]),
            machine("m2", &[("group", "hw_webservers")]),
            machine("m3", &[]),
        ]
    }

    #[test]
    fn conflicting_instances_land_apart_and_a_third_fits_nowhere_with_two_machines() {
        let c = req("Conflicts=hello_world@*");
        let units = [
            ("hello_world@1.service", c.clone()),
            ("hello_world@2.service", c.clone()),
        ];
        let p = run(&three()[..2], &units, &[]);
        assert_ne!(
            p.placed["hello_world@1.service"],
            p.placed["hello_world@2.service"]
        );
        let mut more = units.to_vec();
        more.push(("hello_world@3.service", c));
        let p = run(&three()[..2], &more, &[]);
        assert_eq!(p.placed.len(), 2);
        assert!(p.unplaced["hello_world@3.service"].contains("conflicts with"));
    }

    #[test]
    fn metadata_machine_id_machine_of_and_global() {
        let units = [
            ("web.service", req("MachineMetadata=group=hw_webservers")),
            ("pinned.service", req("MachineID=m3")),
            ("side.service", req("MachineOf=pinned.service")),
            ("everywhere.service", req("Global=true")),
            (
                "webs-only.service",
                req("Global=true\nMachineMetadata=group=hw_webservers"),
            ),
            ("nowhere.service", req("MachineMetadata=group=db")),
            ("lost.service", req("MachineID=m9")),
            ("orphan.service", req("MachineOf=missing.service")),
        ];
        let p = run(&three(), &units, &[]);
        assert_eq!(p.placed["web.service"], "m2");
        assert_eq!(p.placed["pinned.service"], "m3");
        assert_eq!(p.placed["side.service"], "m3");
        assert_eq!(p.global["everywhere.service"], ["m1", "m2", "m3"]);
        assert_eq!(p.global["webs-only.service"], ["m2"]);
        assert_eq!(
            p.unplaced["nowhere.service"],
            "no registered machine has metadata group=db"
        );
        assert!(p.unplaced["lost.service"].contains("MachineID=m9"));
        assert!(p.unplaced["orphan.service"].contains("not scheduled"));
    }

    #[test]
    fn units_stay_put_and_move_only_when_their_machine_goes() {
        let free = Requirements::default();
        let units: Vec<(String, Requirements)> = (0..9)
            .map(|i| (format!("u{i}.service"), free.clone()))
            .collect();
        let units: Vec<(&str, Requirements)> =
            units.iter().map(|(n, r)| (n.as_str(), r.clone())).collect();
        let first = run(&three(), &units, &[]);
        let loads: Vec<usize> = ["m1", "m2", "m3"]
            .iter()
            .map(|m| first.placed.values().filter(|v| v == m).count())
            .collect();
        assert_eq!(loads, [3, 3, 3]);
        let prev: Vec<(&str, &str)> = first
            .placed
            .iter()
            .map(|(u, m)| (u.as_str(), m.as_str()))
            .collect();
        let machines = vec![three()[0].clone(), three()[2].clone()];
        let second = run(&machines, &units, &prev);
        for (u, m) in &first.placed {
            if m != "m2" {
                assert_eq!(&second.placed[u], m, "{u} moved although its machine lives");
            } else {
                assert_ne!(second.placed[u], "m2");
            }
        }
        assert_eq!(second.placed.len(), 9);
    }

    #[test]
    fn replaces_keeps_units_apart_and_cycles_are_reported() {
        let units = [
            ("new.service", req("Replaces=old.service")),
            ("old.service", Requirements::default()),
        ];
        let p = run(&three()[..1], &units, &[("old.service", "m1")]);
        assert_eq!(p.placed["old.service"], "m1");
        assert!(p.unplaced.contains_key("new.service"));
        let cyc = [
            (
                "a.service",
                Requirements::parse("a.service", "[X-Fleet]\nMachineOf=b.service").unwrap(),
            ),
            (
                "b.service",
                Requirements::parse("b.service", "[X-Fleet]\nMachineOf=a.service").unwrap(),
            ),
        ];
        let p = run(&three(), &cyc, &[]);
        assert!(p.unplaced["a.service"].contains("cycle"), "{p:?}");
    }
}
