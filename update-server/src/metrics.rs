//! Per-group counters since the server started (Prometheus counters; a restart resets them,
//! which Prometheus' `rate()` handles), and the text exposition of them with gauges read from
//! the store (nebraska#1474, #1567).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::store::{InstanceFilter, Store, StoreError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Update checks answered.
    pub checks: u64,
    /// Updates granted.
    pub granted: u64,
    /// Updates held back by the policy.
    pub held: u64,
    /// 3/2 reports with a previous version: the machine runs the new version.
    pub succeeded: u64,
    /// Reports with result 0.
    pub failed: u64,
}

/// The counters of every group, by name.
#[derive(Debug, Default)]
pub struct Metrics {
    groups: Mutex<BTreeMap<String, GroupCounters>>,
}

impl Metrics {
    pub fn add(&self, group: &str, f: impl FnOnce(&mut GroupCounters)) {
        let mut g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        f(g.entry(group.to_owned()).or_default());
    }

    /// Add every counter of `other` to these.
    pub fn merge(&self, other: &Metrics) {
        let other = other.groups.lock().unwrap_or_else(|p| p.into_inner());
        for (name, c) in other.iter() {
            self.add(name, |g| {
                g.checks += c.checks;
                g.granted += c.granted;
                g.held += c.held;
                g.succeeded += c.succeeded;
                g.failed += c.failed;
            });
        }
    }

    pub fn get(&self, group: &str) -> GroupCounters {
        let g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        g.get(group).copied().unwrap_or_default()
    }
}

/// A counter's name, help text and value.
type Counter = (&'static str, &'static str, fn(&GroupCounters) -> u64);

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text format: counters for every group, and gauges from the store (instances
/// by group and version, the rollout of each group's channel version).
pub fn render(metrics: &Metrics, store: &dyn Store, now: i64) -> Result<String, StoreError> {
    let mut out = String::new();
    let groups = store.groups()?;
    let counters: [Counter; 5] = [
        ("keel_update_checks_total", "Update checks answered.", |c| {
            c.checks
        }),
        ("keel_updates_granted_total", "Updates granted.", |c| {
            c.granted
        }),
        (
            "keel_updates_held_total",
            "Updates held back by the rollout policy.",
            |c| c.held,
        ),
        (
            "keel_updates_succeeded_total",
            "Machines reporting they run the new version.",
            |c| c.succeeded,
        ),
        (
            "keel_updates_failed_total",
            "Failure reports (event result 0).",
            |c| c.failed,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for g in &groups {
            let v = get(&metrics.get(&g.name));
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {v}", label(&g.name));
        }
    }
    let _ = writeln!(
        out,
        "# HELP keel_instances Machines (not hidden) by group and version.\n# TYPE keel_instances gauge"
    );
    let all = store.search(&InstanceFilter {
        limit: Some(u32::MAX),
        ..Default::default()
    })?;
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for i in &all {
        *by.entry((&i.group, &i.version)).or_default() += 1;
    }
    for ((g, v), n) in by {
        let _ = writeln!(
            out,
            "keel_instances{{group=\"{}\",version=\"{}\"}} {n}",
            label(g),
            label(v)
        );
    }
    let gauges: [(&str, &str); 4] = [
        (
            "keel_rollout_in_progress",
            "Machines updating to the group's version now.",
        ),
        ("keel_rollout_timed_out", "Machines whose update timed out."),
        (
            "keel_rollout_failed",
            "Machines that failed to update to the group's version.",
        ),
        (
            "keel_rollout_completed",
            "Machines running the group's version after an update.",
        ),
    ];
    let mut rows = Vec::new();
    for g in &groups {
        if let Some(p) = store.channel_package(keel_omaha::KEEL_APP_ID, &g.channel)? {
            rows.push((g, p.version.clone(), store.rollout(g, &p.version, now)?));
        }
    }
    for (i, (name, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (g, version, c) in &rows {
            let v = [c.in_progress, c.timed_out, c.failed, c.completed][i];
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\",version=\"{}\"}} {v}",
                label(&g.name),
                label(version)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP keel_group_paused 1 when the group grants no updates.\n# TYPE keel_group_paused gauge"
    );
    for g in &groups {
        let _ = writeln!(
            out,
            "keel_group_paused{{group=\"{}\"}} {}",
            label(&g.name),
            u8::from(g.policy.paused)
        );
    }
    Ok(out)
}
