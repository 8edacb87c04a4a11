//! keel-init's log. Every line reads `keel-init: [   1.234] message` (milliseconds since boot,
//! from CLOCK_BOOTTIME) and goes to the console (stdout is /dev/console) and to the kernel log.
//!
//! The kernel-log copy is written at debug level so that the kernel does not echo it to the
//! console a second time; when the console log level is raised far enough that it would
//! (`debug`, `loglevel=8`), the direct console write is skipped instead. Either way each line
//! appears on the console exactly once.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::time::{clock_gettime, ClockId};

/// `<15>`: facility user, level debug.
const KMSG_PRIORITY: &str = "<15>";
const KMSG_DEBUG_LEVEL: u32 = 7;

static KERNEL_ECHOES: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// One log line, exactly as it appears on the console.
pub fn format_line(ms_since_boot: u64, level: Level, msg: &str) -> String {
    let tag = match level {
        Level::Debug | Level::Info => "",
        Level::Warning => "WARNING: ",
        Level::Error => "ERROR: ",
    };
    format!(
        "keel-init: [{:4}.{:03}] {tag}{msg}",
        ms_since_boot / 1000,
        ms_since_boot % 1000
    )
}

pub fn ms_since_boot() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Read the console log level once /proc is mounted (first field of /proc/sys/kernel/printk).
pub fn configure(debug: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/printk") {
        if let Some(level) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
            KERNEL_ECHOES.store(console_gets_debug(level), Ordering::Relaxed);
        }
    }
}

/// Does a console log level of `console_loglevel` print our debug-level kernel-log lines?
pub fn console_gets_debug(console_loglevel: u32) -> bool {
    console_loglevel > KMSG_DEBUG_LEVEL
}

pub fn write(level: Level, msg: &str) {
    if level == Level::Debug && !DEBUG.load(Ordering::Relaxed) {
        return;
    }
    let ms = ms_since_boot();
    for part in msg.lines() {
        let line = format_line(ms, level, part);
        if !KERNEL_ECHOES.load(Ordering::Relaxed) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        // A fresh open per line: the kernel rate-limits writes per open file (10 per 5 s).
        // Only as PID 1: host tests must not write into the host's kernel log.
        if std::process::id() != 1 {
            continue;
        }
        if let Ok(mut kmsg) = OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = kmsg.write_all(format!("{KMSG_PRIORITY}{line}\n").as_bytes());
        }
    }
}

#[macro_export]
macro_rules! info {
    ($($a:tt)*) => { $crate::log::write($crate::log::Level::Info, &format!($($a)*)) };
}
#[macro_export]
macro_rules! warning {
    ($($a:tt)*) => { $crate::log::write($crate::log::Level::Warning, &format!($($a)*)) };
}
#[macro_export]
macro_rules! error {
    ($($a:tt)*) => { $crate::log::write($crate::log::Level::Error, &format!($($a)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($a:tt)*) => { $crate::log::write($crate::log::Level::Debug, &format!($($a)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(1234, Level::Info, "mounted /proc"),
            "keel-init: [   1.234] mounted /proc"
        );
        assert_eq!(format_line(5, Level::Info, "x"), "keel-init: [   0.005] x");
        assert_eq!(
            format_line(12_345_678, Level::Error, "slot USR-B failed"),
            "keel-init: [12345.678] ERROR: slot USR-B failed"
        );
        assert_eq!(
            format_line(30_000, Level::Warning, "w"),
            "keel-init: [  30.000] WARNING: w"
        );
    }

    #[test]
    fn kernel_echo_threshold() {
        assert!(!console_gets_debug(7)); // the default
        assert!(!console_gets_debug(4)); // quiet
        assert!(console_gets_debug(8));
        assert!(console_gets_debug(15)); // ignore_loglevel / debug
    }

    #[test]
    fn boottime_advances() {
        let a = ms_since_boot();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(ms_since_boot() >= a + 20);
    }
}
