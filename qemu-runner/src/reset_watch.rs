//! A guest whose kernel restarted the machine (`reboot: machine restart`) and that then printed
//! nothing: the firmware never came back. Seen in CI under TCG with Debian 12's QEMU 7.2 and
//! OVMF: 600 s of silence after a `systemctl reboot`, QEMU answering, both vCPUs running.
//!
//! Nothing of the image's runs between the kernel's last line and OVMF's boot manager
//! (`BdsDxe: loading Boot0001 ...`), which OVMF prints within seconds of a reset even under TCG
//! on a loaded 2-core machine. A silence this long there is the emulator's or the firmware's,
//! so the session resets the machine again (at most [`MAX_RESETS`] times per boot) and says so
//! on stderr with the vCPUs' registers. A hang after the firmware printed (a bad boot entry,
//! a kernel that stops) is never retried: that is the image's and fails the wait as before.

use std::time::Duration;

/// The last lines Linux prints before it resets the machine (`kernel/reboot.c`).
const RESTART_MARKERS: &[&str] = &["reboot: machine restart", "reboot: Restarting system"];
/// Silence after a restart line that means the firmware is stuck (the default of
/// `BootOptions::restart_silence_limit`).
pub const FIRMWARE_SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// Resets a session may do for a stuck firmware before the wait fails as it would have.
pub const MAX_RESETS: u32 = 2;
/// How much of the console's end is enough to see its last line.
pub const TAIL_BYTES: usize = 512;

/// Is the console's last line a kernel restart, followed by `silent_for` of nothing (at least
/// `limit`)?
pub fn firmware_stuck(console_tail: &str, silent_for: Duration, limit: Duration) -> bool {
    if silent_for < limit {
        return false;
    }
    let last_line = console_tail.trim_end().lines().next_back().unwrap_or("");
    RESTART_MARKERS.iter().any(|m| last_line.contains(m))
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
