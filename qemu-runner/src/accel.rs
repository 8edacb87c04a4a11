//! Choosing the accelerator. `/dev/kvm` existing (or even opening) does not mean
//! QEMU can run a guest with it: nested KVM in some sandboxes opens fine and then
//! fails on the first vCPU set-up. So `Auto` runs a tiny probe guest under KVM.

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::options::Accel;
use crate::tool::QEMU_SYSTEM;

/// The accelerator a session really uses (never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

pub fn resolve(accel: Accel) -> ResolvedAccel {
    match accel {
        Accel::Kvm => ResolvedAccel::Kvm,
        Accel::Tcg => ResolvedAccel::Tcg,
        Accel::Auto => {
            static PROBED: OnceLock<ResolvedAccel> = OnceLock::new();
            *PROBED.get_or_init(|| {
                if kvm_runs_a_guest() {
                    ResolvedAccel::Kvm
                } else {
                    ResolvedAccel::Tcg
                }
            })
        }
    }
}

/// `isa-debug-exit` turns a guest's write of V to its port into QEMU exit status
/// `(V << 1) | 1`.
const PROBE_PORT_VALUE: u8 = 0x31;
const PROBE_EXIT_CODE: i32 = ((PROBE_PORT_VALUE as i32) << 1) | 1;
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A 64 KiB "BIOS" whose reset vector writes to the debug-exit port.
fn probe_firmware() -> Vec<u8> {
    let mut rom = vec![0xf4u8; 64 * 1024]; // hlt everywhere
    let code = [0xb0, PROBE_PORT_VALUE, 0xe6, 0xf4, 0xf4]; // mov al,V; out 0xf4,al; hlt
    rom[0xfff0..0xfff0 + code.len()].copy_from_slice(&code);
    rom
}

fn kvm_runs_a_guest() -> bool {
    if OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    run_probe(ResolvedAccel::Kvm).unwrap_or(false)
}

/// Boots the probe firmware; true when the guest's code ran to the exit port.
pub fn run_probe(accel: ResolvedAccel) -> std::io::Result<bool> {
    let dir = tempfile::tempdir()?;
    let rom = dir.path().join("probe.rom");
    std::fs::write(&rom, probe_firmware())?;
    let mut command = Command::new(QEMU_SYSTEM);
    command
        .args(["-machine", "q35", "-nodefaults", "-display", "none"])
        .args(accel_args(accel))
        .arg("-bios")
        .arg(&rom)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code() == Some(PROBE_EXIT_CODE));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// QEMU arguments selecting the accelerator and a CPU model suited to it.
pub fn accel_args(accel: ResolvedAccel) -> [&'static str; 4] {
    match accel {
        ResolvedAccel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        // "max" gives TCG guests every feature TCG can emulate (x86-64-v3 and more).
        ResolvedAccel::Tcg => ["-accel", "tcg", "-cpu", "max"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_guest_runs_under_tcg() {
        assert!(run_probe(ResolvedAccel::Tcg).unwrap());
    }

    #[test]
    fn auto_matches_a_kvm_probe() {
        let kvm_works = run_probe(ResolvedAccel::Kvm).unwrap_or(false);
        let expected = if kvm_works {
            ResolvedAccel::Kvm
        } else {
            ResolvedAccel::Tcg
        };
        assert_eq!(resolve(Accel::Auto), expected);
    }
}
