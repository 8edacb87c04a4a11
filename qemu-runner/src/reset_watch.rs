//! Two hangs of the emulator, not of the image, after which the session power-cycles the
//! machine (`Session::power_cycle`, at most [`MAX_RESETS`] times per boot) and says so on stderr
//! with the vCPUs' registers:
//!
//! - **Firmware stuck after a restart.** The guest's kernel restarted the machine
//!   (`reboot: machine restart`) and nothing followed. Seen in CI under TCG with Debian 12's
//!   QEMU 7.2 and OVMF: 600 s of silence after a `systemctl reboot`, QEMU answering, one vCPU
//!   halted and the other spinning in the firmware. Two warm resets (QMP `system_reset`) in a
//!   row wedged the same way; a warm reset keeps the memory, a power cycle clears it. Nothing of the image's runs between the kernel's last line and OVMF's boot
//!   manager (`BdsDxe: loading Boot0001 ...`), which OVMF prints within seconds of a reset even
//!   under TCG on a loaded 2-core machine.
//! - **Kernel stuck before init.** Seen in CI under TCG with OVMF: the kernel printed
//!   `clocksource: Switched to clocksource hpet` 1.24 s into its boot, then nothing for 600 s,
//!   both vCPUs at the same instruction with interrupts off and neither halted (a
//!   `stop_machine` rendezvous that never completed). Before the kernel runs init nothing of
//!   the image's runs either, and a kernel there prints every few milliseconds; one whose
//!   every vCPU is busy and that stays silent that long is the emulator's. A kernel waiting
//!   for something (a root device) idles with its vCPUs halted and is left alone.
//!
//! A hang anywhere else (a bad boot entry, an init that stops) is never retried: that is the
//! image's and fails the wait as before.

use std::time::Duration;

use crate::kvm_watch::KERNEL_BANNER;

/// The last lines Linux prints before it resets the machine (`kernel/reboot.c`).
const RESTART_MARKERS: &[&str] = &["reboot: machine restart", "reboot: Restarting system"];
/// Silence after a restart line that means the firmware is stuck (the default of
/// `BootOptions::restart_silence_limit`).
pub const FIRMWARE_SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// Power cycles a session may do for a hung emulator before the wait fails as it would have.
pub const MAX_RESETS: u32 = 2;
/// How much of the console's end is enough to see its last line.
pub const TAIL_BYTES: usize = 512;
/// A kernel line stamped later than this is no early boot (guest time under TCG follows the
/// host's clock; every kernel here reaches init within a few seconds).
const EARLY_KERNEL: f64 = 60.0;
/// What the kernel prints when it starts the first process (`Run /init as init process`).
const INIT_MARKER: &[u8] = b" as init process";

/// Is the console's last line a kernel restart, followed by `silent_for` of nothing (at least
/// `limit`)?
pub fn firmware_stuck(console_tail: &str, silent_for: Duration, limit: Duration) -> bool {
    if silent_for < limit {
        return false;
    }
    let last_line = console_tail.trim_end().lines().next_back().unwrap_or("");
    RESTART_MARKERS.iter().any(|m| last_line.contains(m))
}

/// Follows the console to know whether the guest is in its kernel before init: after the
/// latest kernel banner and before that kernel started init (or restarted the machine).
#[derive(Debug, Default)]
pub struct KernelStage {
    scanned: usize,
    before_init: bool,
}

impl KernelStage {
    /// Where the next [`KernelStage::read`] must start: an overlap with what was read, for
    /// markers split across reads.
    pub fn resume_at(&self) -> usize {
        let longest = [KERNEL_BANNER.len(), INIT_MARKER.len()]
            .into_iter()
            .chain(RESTART_MARKERS.iter().map(|m| m.len()))
            .max()
            .unwrap_or(0);
        self.scanned.saturating_sub(longest)
    }

    /// Reads the console's bytes from `from` (which [`KernelStage::resume_at`] gave) on.
    pub fn read(&mut self, from: usize, bytes: &[u8]) {
        let banner = rfind(bytes, KERNEL_BANNER);
        let left = std::iter::once(INIT_MARKER)
            .chain(RESTART_MARKERS.iter().map(|m| m.as_bytes()))
            .filter_map(|m| rfind(bytes, m))
            .max();
        match (banner, left) {
            (Some(b), Some(l)) => self.before_init = b > l,
            (Some(_), None) => self.before_init = true,
            (None, Some(_)) => self.before_init = false,
            (None, None) => {}
        }
        self.scanned = self.scanned.max(from + bytes.len());
    }

    pub fn before_init(&self) -> bool {
        self.before_init
    }
}

/// Is this a kernel stuck before init ([`KernelStage::before_init`]) whose last console line
/// is an early kernel line, and whose vCPUs (`info registers -a`) are all busy? The caller
/// has checked that the guest has been silent long enough.
pub fn kernel_stuck(before_init: bool, console_tail: &str, registers: &str) -> bool {
    if !before_init {
        return false;
    }
    let last_line = console_tail.trim_end().lines().next_back().unwrap_or("");
    let early = kernel_time(last_line).is_some_and(|t| t < EARLY_KERNEL);
    let states: Vec<&str> = registers.lines().filter(|l| l.contains("HLT=")).collect();
    let all_busy = !states.is_empty() && states.iter().all(|l| l.contains("HLT=0"));
    early && all_busy
}

/// The seconds of a kernel line's `[    1.244878]` stamp.
fn kernel_time(line: &str) -> Option<f64> {
    let stamp = line.trim_start().strip_prefix('[')?.split(']').next()?;
    stamp.trim().parse().ok()
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The lines of `info registers -a` that say where each vCPU is (instruction pointer, mode).
pub fn where_the_cpus_are(registers: &str) -> String {
    registers
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CPU#") || l.starts_with("RIP=") || l.starts_with("EIP="))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER_REBOOT: &str = "[  108.975413] systemd-shutdown[1]: Syncing filesystems and \
        block devices.\r\n[  108.983216] systemd-shutdown[1]: Rebooting.\r\n[  108.997122] \
        reboot: Restarting system\r\n[  108.997441] reboot: machine restart\r\n";

    #[test]
    fn a_restart_followed_by_long_silence_is_stuck_firmware() {
        assert!(firmware_stuck(
            AFTER_REBOOT,
            FIRMWARE_SILENCE_LIMIT,
            FIRMWARE_SILENCE_LIMIT
        ));
        assert!(!firmware_stuck(
            AFTER_REBOOT,
            FIRMWARE_SILENCE_LIMIT - Duration::from_secs(1),
            FIRMWARE_SILENCE_LIMIT
        ));
    }

    #[test]
    fn firmware_output_after_the_restart_is_not_retried() {
        let then_firmware =
            format!("{AFTER_REBOOT}BdsDxe: loading Boot0001 \"UEFI Misc Device\"\r\n");
        assert!(!firmware_stuck(
            &then_firmware,
            Duration::from_secs(600),
            FIRMWARE_SILENCE_LIMIT
        ));
        let a_silent_kernel = "[    2.1] Run /init as init process\r\n";
        assert!(!firmware_stuck(
            a_silent_kernel,
            Duration::from_secs(600),
            FIRMWARE_SILENCE_LIMIT
        ));
    }

    /// The end of the console of CI's hung boot (2026-12-02), and its registers.
    const HUNG_KERNEL: &str =
        "[    0.000000] Linux version 6.1.0-41-cloud-amd64 (debian-kernel@lists.debian.org)\r\n\
        [    1.241805] hpet0: 3 comparators, 64-bit 100.000000 MHz counter\r\n\
        [    1.244878] clocksource: Switched to clocksource hpet\r\n";
    const BOTH_BUSY: &str =
        "CPU#0\nRIP=ffffffffa1b46755 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n\
        CPU#1\nRIP=ffffffffa1b46755 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n";

    fn stage_after(chunks: &[&str]) -> KernelStage {
        let mut stage = KernelStage::default();
        let mut console = String::new();
        for chunk in chunks {
            console.push_str(chunk);
            let from = stage.resume_at();
            stage.read(from, &console.as_bytes()[from..]);
        }
        stage
    }

    #[test]
    fn a_silent_early_kernel_with_every_vcpu_busy_is_stuck() {
        let stage = stage_after(&[HUNG_KERNEL]);
        assert!(stage.before_init());
        assert!(kernel_stuck(stage.before_init(), HUNG_KERNEL, BOTH_BUSY));
    }

    #[test]
    fn an_idle_or_late_or_started_kernel_is_not_stuck() {
        // A vCPU halted: the kernel waits for something (a root device); that is the image's.
        let one_idle = BOTH_BUSY.replacen("HLT=0", "HLT=1", 1);
        assert!(!kernel_stuck(true, HUNG_KERNEL, &one_idle));
        // No registers: no evidence.
        assert!(!kernel_stuck(true, HUNG_KERNEL, ""));
        // Long after boot: not the early kernel.
        let late = "[  612.5] clocksource: Switched to clocksource hpet\r\n";
        assert!(!kernel_stuck(true, late, BOTH_BUSY));
        // Userspace's own line last.
        assert!(!kernel_stuck(true, "keel-init: waiting\r\n", BOTH_BUSY));
        // Init started: whatever hangs now is the image's.
        let started = stage_after(&[HUNG_KERNEL, "[    2.1] Run /init as init process\r\n"]);
        assert!(!started.before_init());
        assert!(!kernel_stuck(started.before_init(), HUNG_KERNEL, BOTH_BUSY));
    }

    #[test]
    fn the_stage_follows_restarts_and_markers_split_across_reads() {
        let stage = stage_after(&[HUNG_KERNEL, "[    2.1] Run /in", "it as init process\r\n"]);
        assert!(!stage.before_init());
        // The next kernel after a restart is before init again, its banner split too.
        let stage = stage_after(&[
            HUNG_KERNEL,
            "[    2.1] Run /init as init process\r\n",
            AFTER_REBOOT,
            "BdsDxe: loading Boot0001\r\n[    0.000000] Linux ver",
            "sion 6.1.0\r\n",
        ]);
        assert!(stage.before_init());
        let stage = stage_after(&[HUNG_KERNEL, AFTER_REBOOT]);
        assert!(!stage.before_init());
    }

    #[test]
    fn registers_are_cut_to_where_each_cpu_is() {
        let info = "CPU#0\nRAX=0000000000000000 RBX=0000000000000000\n\
                    RIP=00000000fffffff0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n\
                    ES =0000 00000000 0000ffff 00009300\nCPU#1\n\
                    RIP=0000000000000000 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\n";
        assert_eq!(
            where_the_cpus_are(info),
            "CPU#0; RIP=00000000fffffff0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0; \
             CPU#1; RIP=0000000000000000 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1"
        );
    }
}
