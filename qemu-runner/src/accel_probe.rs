//! Probes that tell whether KVM runs what Keel boots, before any real boot uses it.
//!
//! Two guests, cheapest first: a 64 KiB ROM whose reset vector writes to QEMU's debug-exit
//! port (catches a QEMU that aborts while setting up a KVM vCPU, as on machines where
//! `/dev/kvm` opens but KVM_SET_MSRS fails), then OVMF itself up to its boot manager's first
//! line, `BdsDxe` (catches nested KVM that runs the ROM but stops on firmware executing from
//! pflash or on the switch to long mode, with `KVM internal error` or silence). What neither
//! catches, e.g. a kernel that stops in its decompressor, the session's watch
//! ([`crate::kvm_watch`]) catches during the boot itself.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::firmware::{OVMF_CODE, OVMF_VARS_TEMPLATE};
use crate::kvm_watch::kvm_error_in;
use crate::options::ResolvedAccel;
use crate::qemu_command::accel_args;
use crate::tool::QEMU_SYSTEM;

/// `isa-debug-exit` turns a guest's write of V to its port into QEMU exit status
/// `(V << 1) | 1`.
const PROBE_PORT_VALUE: u8 = 0x31;
const PROBE_EXIT_CODE: i32 = ((PROBE_PORT_VALUE as i32) << 1) | 1;
const ROM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// OVMF under working KVM prints `BdsDxe` within a second or two; under TCG on a busy 2-core
/// machine about 10 s.
const OVMF_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const OVMF_PROBE_MARK: &[u8] = b"BdsDxe";

/// `Ok` when KVM ran both probe guests; otherwise why not, in one line.
pub fn probe_kvm() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    run_rom_probe(ResolvedAccel::Kvm)?;
    if Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS_TEMPLATE).is_file() {
        run_ovmf_probe(ResolvedAccel::Kvm)?;
    }
    Ok(())
}

/// A 64 KiB "BIOS" whose reset vector writes to the debug-exit port.
fn probe_firmware() -> Vec<u8> {
    let mut rom = vec![0xf4u8; 64 * 1024]; // hlt everywhere
    let code = [0xb0, PROBE_PORT_VALUE, 0xe6, 0xf4, 0xf4]; // mov al,V; out 0xf4,al; hlt
    rom[0xfff0..0xfff0 + code.len()].copy_from_slice(&code);
    rom
}

/// Boots the probe ROM; `Ok` when the guest's code ran to the exit port.
pub fn run_rom_probe(accel: ResolvedAccel) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("probe directory: {e}"))?;
    let rom = dir.path().join("probe.rom");
    std::fs::write(&rom, probe_firmware()).map_err(|e| format!("probe ROM: {e}"))?;
    let mut command = Command::new(QEMU_SYSTEM);
    command
        .args(["-machine", "q35", "-nodefaults", "-display", "none"])
        .args(accel_args(accel))
        .arg("-bios")
        .arg(&rom)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    let run = run_guest(command, ROM_PROBE_TIMEOUT, |_| false)?;
    match run.status {
        Some(code) if code == PROBE_EXIT_CODE => Ok(()),
        _ => Err(failure("a 64 KiB probe ROM", &run)),
    }
}

/// Boots OVMF with no disk; `Ok` when its boot manager printed its first line.
pub fn run_ovmf_probe(accel: ResolvedAccel) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("probe directory: {e}"))?;
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS_TEMPLATE, &vars).map_err(|e| format!("{OVMF_VARS_TEMPLATE}: {e}"))?;
    let mut code = std::ffi::OsString::from("if=pflash,format=raw,readonly=on,file=");
    code.push(OVMF_CODE);
    let mut vars_drive = std::ffi::OsString::from("if=pflash,format=raw,file=");
    vars_drive.push(&vars);
    let mut command = Command::new(QEMU_SYSTEM);
    command
        .args([
            "-machine",
            "q35",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "256",
        ])
        .args(accel_args(accel))
        .arg("-drive")
        .arg(code)
        .arg("-drive")
        .arg(vars_drive)
        .args(["-serial", "stdio"]);
    let run = run_guest(command, OVMF_PROBE_TIMEOUT, |out| {
        out.windows(OVMF_PROBE_MARK.len())
            .any(|w| w == OVMF_PROBE_MARK)
    })?;
    if run.reached && kvm_error_in(&run.stderr).is_none() {
        Ok(())
    } else {
        Err(failure("OVMF", &run))
    }
}

struct ProbeRun {
    /// QEMU's exit code, if it exited by itself.
    status: Option<i32>,
    /// `done` accepted the guest's serial output.
    reached: bool,
    stderr: String,
    elapsed: Duration,
    timeout: Duration,
}

fn failure(guest: &str, run: &ProbeRun) -> String {
    if let Some(error) = kvm_error_in(&run.stderr) {
        let error = error.strip_prefix("QEMU on KVM: ").unwrap_or(&error);
        return format!("{guest} under KVM: {error}");
    }
    let stderr = run.stderr.lines().find(|l| !l.trim().is_empty());
    match (run.status, stderr) {
        (_, Some(line)) => format!("{guest} under KVM: QEMU said {:?}", line.trim()),
        (Some(code), None) => format!("{guest} under KVM: QEMU exited with {code}"),
        (None, None) if run.elapsed >= run.timeout => {
            format!("{guest} under KVM printed nothing in {:?}", run.timeout)
        }
        (None, None) => format!("{guest} under KVM did not run"),
    }
}

/// Runs QEMU until it exits, `done` accepts its serial output, or the timeout; then kills it.
fn run_guest(
    mut command: Command,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Result<ProbeRun, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = keel_blockdev::tied::spawn(&mut command)
        .map_err(|e| format!("cannot run {QEMU_SYSTEM}: {e}"))?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let started = Instant::now();
    let (status, reached) = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break (
                status.code(),
                done(&stdout.0.lock().unwrap_or_else(|p| p.into_inner())),
            );
        }
        if done(&stdout.0.lock().unwrap_or_else(|p| p.into_inner())) {
            break (None, true);
        }
        if started.elapsed() >= timeout {
            break (None, false);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    for handle in [stdout.1, stderr.1].into_iter().flatten() {
        let _ = handle.join();
    }
    let stderr =
        String::from_utf8_lossy(&stderr.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    Ok(ProbeRun {
        status,
        reached,
        stderr,
        elapsed,
        timeout,
    })
}

type Collected = (Arc<Mutex<Vec<u8>>>, Option<std::thread::JoinHandle<()>>);

fn collect(stream: Option<impl Read + Send + 'static>) -> Collected {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let handle = stream.map(|mut stream| {
        let sink = sink.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        })
    });
    (sink, handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_probe_guests_run_under_tcg() {
        run_rom_probe(ResolvedAccel::Tcg).unwrap();
        if Path::new(OVMF_CODE).is_file() {
            run_ovmf_probe(ResolvedAccel::Tcg).unwrap();
        }
    }

    #[test]
    fn a_failed_probe_says_why() {
        let run = ProbeRun {
            status: None,
            reached: false,
            stderr: "KVM internal error. Suberror: 1\nemulation failure\nEAX=00000000\n".into(),
            elapsed: Duration::from_secs(1),
            timeout: OVMF_PROBE_TIMEOUT,
        };
        assert_eq!(
            failure("OVMF", &run),
            "OVMF under KVM: KVM internal error. Suberror: 1 (emulation failure)"
        );
        let silent = ProbeRun {
            stderr: String::new(),
            elapsed: OVMF_PROBE_TIMEOUT,
            ..run
        };
        assert_eq!(
            failure("OVMF", &silent),
            "OVMF under KVM printed nothing in 30s"
        );
    }
}
