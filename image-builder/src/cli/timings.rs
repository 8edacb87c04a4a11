//! `keel build --timings`: each step's start and duration, as a table on stderr and as JSON
//! beside the manifest (`--json`). Steps of the two branches that run at once (the USR
//! filesystem, the boot images) overlap; the table says how much, and how much of the wall
//! time no step covers (checks, key, kernel lookup, moving the outputs into place).

use std::fmt::Write as _;
use std::time::Duration;

use keel_cli_support::progress::StepTime;
use serde_json::{json, Value};

/// Wall time covered by at least one step.
fn covered(steps: &[StepTime]) -> Duration {
    let mut spans: Vec<(Duration, Duration)> =
        steps.iter().map(|s| (s.start, s.start + s.took)).collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Duration, Duration)> = None;
    for (a, b) in spans {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((a, b)) = current {
        total += b - a;
    }
    total
}

/// The table printed on stderr: one row per step, then the total.
pub fn table(steps: &[StepTime], wall: Duration) -> String {
    let width = steps
        .iter()
        .map(|s| s.name.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = format!("{:<width$}  {:>8}  {:>8}\n", "step", "start", "time");
    for s in steps {
        let _ = writeln!(
            out,
            "{:<width$}  {:>7.2}s  {:>7.2}s",
            s.name,
            s.start.as_secs_f64(),
            s.took.as_secs_f64()
        );
    }
    let sum: Duration = steps.iter().map(|s| s.took).sum();
    let covered = covered(steps);
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>7.2}s  (steps ran beside each other for {:.2}s; outside any step {:.2}s)",
        "total",
        "",
        wall.as_secs_f64(),
        sum.saturating_sub(covered).as_secs_f64(),
        wall.saturating_sub(covered).as_secs_f64()
    );
    out
}

/// The `timings` member of `--json`'s object (seconds as numbers).
pub fn json(steps: &[StepTime], wall: Duration) -> Value {
    let round = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    json!({
        "steps": steps
            .iter()
            .map(|s| json!({
                "step": s.name,
                "start_seconds": round(s.start),
                "seconds": round(s.took),
            }))
            .collect::<Vec<_>>(),
        "total_seconds": round(wall),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, start_ms: u64, took_ms: u64) -> StepTime {
        StepTime {
            name: name.into(),
            start: Duration::from_millis(start_ms),
            took: Duration::from_millis(took_ms),
        }
    }

    #[test]
    fn table_shows_steps_overlap_and_the_rest() {
        let steps = [
            step("initramfs", 0, 500),
            step("mkfs.erofs", 500, 10_000),
            step("UKI and ESP", 600, 400),
            step("writing disk.raw", 11_000, 1_000),
        ];
        let t = table(&steps, Duration::from_millis(12_500));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert!(
            lines[2].starts_with("mkfs.erofs ") && lines[2].ends_with("10.00s"),
            "{t}"
        );
        assert!(lines[3].contains("   0.60s     0.40s"), "{t}");
        assert!(
            lines[5].contains("12.50s")
                && lines[5].contains("beside each other for 0.40s")
                && lines[5].contains("outside any step 1.00s"),
            "{t}"
        );
    }

    #[test]
    fn json_lists_steps_in_seconds() {
        let v = json(&[step("qcow2", 1_250, 15_000)], Duration::from_secs(20));
        assert_eq!(v["steps"][0]["step"], "qcow2");
        assert_eq!(v["steps"][0]["start_seconds"], 1.25);
        assert_eq!(v["steps"][0]["seconds"], 15.0);
        assert_eq!(v["total_seconds"], 20.0);
    }

    #[test]
    fn covered_time_merges_overlaps_and_gaps() {
        let steps = [step("a", 0, 100), step("b", 50, 100), step("c", 300, 50)];
        assert_eq!(covered(&steps), Duration::from_millis(200));
        assert_eq!(covered(&[]), Duration::ZERO);
    }
}
