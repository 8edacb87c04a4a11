//! Deciding, during a boot that `Auto` put on KVM, that KVM is not running it, so the session
//! restarts the same boot under TCG. The evidence, from what QEMU and the guest print:
//!
//! * QEMU's `KVM internal error` (QEMU then pauses the guest and prints nothing more);
//! * QEMU exiting with an error about KVM (an assertion in `kvm.c`, `failed to set MSR`,
//!   `Could not access KVM kernel module`);
//! * a guest that has not printed anything for [`FIRST_OUTPUT_LIMIT`] before its kernel's
//!   banner (`Linux version`): firmware and early kernel under KVM print within a second or
//!   two, and a nested KVM that stops in the kernel's decompressor leaves just that silence.
//!
//! The first two are hard evidence, remembered for the rest of the machine's boot. Silence is
//! soft: it could be the guest's own doing, so KVM is blamed only once the same boot, restarted
//! under TCG, gets further ([`crate::session`]).

use std::time::Duration;

/// How long a guest on KVM may stay silent before its kernel's banner.
pub const FIRST_OUTPUT_LIMIT: Duration = Duration::from_secs(20);
/// The line every Linux kernel prints first on its console: past it, KVM has done the hard
/// parts (firmware, long mode, decompression).
pub const KERNEL_BANNER: &[u8] = b"Linux version ";

/// What the session has seen of a KVM boot so far.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub qemu_stderr: &'a str,
    pub qemu_exited: bool,
    pub kernel_banner_seen: bool,
    /// Time since the guest last printed (since QEMU started, if it never did).
    pub silent_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing wrong so far.
    Running,
    /// The kernel is up: KVM runs this guest, stop watching.
    Proven,
    /// KVM failed this boot: restart it under TCG.
    Failed { reason: String, hard: bool },
}

pub fn judge(evidence: &Evidence) -> Judgement {
    if let Some(error) = kvm_error_in(evidence.qemu_stderr) {
        return Judgement::Failed {
            reason: error,
            hard: true,
        };
    }
    if evidence.qemu_exited {
        // Not about KVM: the guest powered off or QEMU failed for its own reasons.
        return Judgement::Proven;
    }
    if evidence.kernel_banner_seen {
        return Judgement::Proven;
    }
    if evidence.silent_for >= FIRST_OUTPUT_LIMIT {
        return Judgement::Failed {
            reason: format!(
                "the guest printed nothing for {} s under KVM before its kernel started",
                evidence.silent_for.as_secs()
            ),
            hard: false,
        };
    }
    Judgement::Running
}

/// The KVM failure QEMU reported on stderr, in one line, if any.
pub fn kvm_error_in(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.starts_with("KVM internal error"))
    {
        // QEMU prints the kind of failure on the next line ("emulation failure").
        return Some(
            match lines
                .get(i + 1)
                .filter(|l| !l.is_empty() && !l.contains('='))
            {
                Some(detail) => format!("{} ({detail})", lines[i]),
                None => lines[i].to_string(),
            },
        );
    }
    let about_kvm = |l: &str| {
        let lower = l.to_ascii_lowercase();
        lower.contains("kvm") || lower.contains("failed to set msr")
    };
    let related: Vec<&str> = lines.iter().copied().filter(|l| about_kvm(l)).collect();
    // The line that says what failed, rather than a preamble ("kvm version too old").
    let first = related
        .iter()
        .find(|l| l.contains("fail") || l.contains("error"))
        .or(related.first())?;
    // QEMU prefixes its errors with the program name.
    let message = first
        .strip_prefix("qemu-system-x86_64: ")
        .unwrap_or(first)
        .trim();
    Some(format!("QEMU on KVM: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(stderr: &str) -> Evidence<'_> {
        Evidence {
            qemu_stderr: stderr,
            qemu_exited: false,
            kernel_banner_seen: false,
            silent_for: Duration::from_secs(1),
        }
    }

    /// What QEMU 7.2 printed on the machine of the issue: nested KVM that fails in OVMF.
    const INTERNAL_ERROR: &str = "KVM internal error. Suberror: 1\n\
        emulation failure\n\
        EAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\n\
        ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000\n\
        EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n";

    /// What QEMU 7.2 prints on this project's machines, where KVM_SET_MSRS fails.
    const MSR_ABORT: &str = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
        qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion \
        `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";

    /// QEMU on a /dev/kvm that is not KVM (masked by /dev/null).
    const NOT_KVM: &str = "kvm version too old\n\
        qemu-system-x86_64: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device\n";

    #[test]
    fn qemus_kvm_errors_are_hard_evidence() {
        assert_eq!(
            judge(&evidence(INTERNAL_ERROR)),
            Judgement::Failed {
                reason: "KVM internal error. Suberror: 1 (emulation failure)".into(),
                hard: true
            }
        );
        let aborted = Evidence {
            qemu_exited: true,
            ..evidence(MSR_ABORT)
        };
        assert_eq!(
            judge(&aborted),
            Judgement::Failed {
                reason: "QEMU on KVM: error: failed to set MSR 0x10a to 0x69".into(),
                hard: true
            }
        );
        let not_kvm = Evidence {
            qemu_exited: true,
            ..evidence(NOT_KVM)
        };
        assert!(matches!(
            judge(&not_kvm),
            Judgement::Failed { reason, hard: true } if reason == "QEMU on KVM: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device"
        ));
    }

    #[test]
    fn silence_before_the_kernel_is_soft_evidence() {
        let quiet = Evidence {
            silent_for: FIRST_OUTPUT_LIMIT,
            ..evidence("")
        };
        assert!(matches!(
            judge(&quiet),
            Judgement::Failed { hard: false, .. }
        ));
        let booted = Evidence {
            kernel_banner_seen: true,
            ..quiet
        };
        assert_eq!(judge(&booted), Judgement::Proven);
        assert_eq!(judge(&evidence("")), Judgement::Running);
    }

    #[test]
    fn a_guest_that_powers_off_is_not_kvms_fault() {
        let off = Evidence {
            qemu_exited: true,
            ..evidence("qemu-system-x86_64: terminating on signal 15 from pid 6738\n")
        };
        assert_eq!(judge(&off), Judgement::Proven);
    }
}
