//! One line about the machine a benchmark ran on, printed with every report: results from a
//! loaded 2-core box are not comparable with a quiet 16-core one.

use std::process::Command;

/// `2025-11-25 06:10 UTC, 2 cores (AMD EPYC ...), 24 GiB, Linux 6.1.0, load 1.23 0.98 0.50`
pub fn describe() -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb.div_ceil(1 << 20))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "{date}, {cores} cores ({cpu}), {mem_gib} GiB, Linux {kernel}, {}",
        load()
    )
}

/// `load 1.23 0.98 0.50` from /proc/loadavg: other work on the machine skews timings.
pub fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("load {}", three.join(" "))
}
