//! The duties of PID 1 while keel-init is it: never exit (the kernel panics), reap orphans,
//! turn SIGTERM/SIGINT/SIGPWR into an orderly shutdown, and end a failed boot in a rescue
//! shell or a delayed reboot.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub const FATAL_REBOOT_DELAY: Duration = Duration::from_secs(30);
const SHELLS: [&str; 3] = ["/bin/sh", "/usr/bin/sh", "/bin/busybox"];

/// Held around writes that must not be cut by a shutdown (GPT, filesystem resize).
static CRITICAL: Mutex<()> = Mutex::new(());
/// `keel.rescue`, for the fatal path.
static RESCUE: AtomicBool = AtomicBool::new(false);

pub fn set_rescue(rescue: bool) {
    RESCUE.store(rescue, Ordering::Relaxed);
}

pub fn critical() -> MutexGuard<'static, ()> {
    CRITICAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
    ] {
        s.add(sig);
    }
    s
}

/// What a signal to PID 1 asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    Reap,
    Reboot,
    PowerOff,
}

pub fn action_for(sig: Signal) -> Option<SignalAction> {
    match sig {
        Signal::SIGCHLD => Some(SignalAction::Reap),
        // SIGINT is Ctrl-Alt-Del once the kernel forwards it; SIGTERM asks init to stop.
        Signal::SIGINT | Signal::SIGTERM => Some(SignalAction::Reboot),
        Signal::SIGPWR => Some(SignalAction::PowerOff),
        _ => None,
    }
}

/// Block the signals in every thread and handle them in a dedicated one. Call before any other
/// thread starts so that all inherit the mask.
pub fn start_signal_thread() {
    let set = handled_signals();
    if let Err(e) = set.thread_block() {
        crate::warning!("cannot block signals: {e}");
        return;
    }
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
    let _ = set_cad_enabled(false);
    std::thread::spawn(move || loop {
        match set.wait() {
            Ok(sig) => match action_for(sig) {
                Some(SignalAction::Reap) => reap(),
                Some(SignalAction::Reboot) => shutdown(sig, RebootMode::RB_AUTOBOOT),
                Some(SignalAction::PowerOff) => shutdown(sig, RebootMode::RB_POWER_OFF),
                None => {}
            },
            Err(e) => {
                crate::warning!("sigwait: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
}

fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Undo the signal setup before exec: the mask and ignored dispositions survive execve.
pub fn reset_signals_for_exec() {
    keel_blockdev::signals::reset_for_exec();
}

/// Unmount what keel-init mounted (the dm device last), sync, and reboot or power off.
fn shutdown(sig: Signal, mode: RebootMode) -> ! {
    crate::info!(
        "{sig} received: {}",
        if mode == RebootMode::RB_POWER_OFF {
            "powering off"
        } else {
            "rebooting"
        }
    );
    let _guard = critical();
    tear_down_everything();
    final_reboot(mode)
}

/// Everything above the early mounts, then the verity device.
pub fn tear_down_everything() {
    for p in crate::mounts::unmount_above(crate::early::EARLY.len()) {
        crate::warning!("{p}");
    }
    let _ = crate::usr::close_verity();
    nix::unistd::sync();
}

fn final_reboot(mode: RebootMode) -> ! {
    nix::unistd::sync();
    let e = match reboot(mode) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    crate::error!("reboot failed: {e}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A boot that cannot go on: a rescue shell when asked for and present, else a reboot after a
/// delay that leaves the message readable.
pub fn fatal_end() -> ! {
    if RESCUE.load(Ordering::Relaxed) {
        match SHELLS.iter().find(|s| Path::new(s).exists()) {
            Some(shell) => {
                crate::error!("keel.rescue: starting {shell}; exit it to reboot");
                reset_signals_for_exec();
                let path = CString::new(*shell).expect("no NUL");
                let e = nix::unistd::execv(&path, &[c"sh"]).unwrap_err();
                crate::error!("executing {shell} failed: {e}");
            }
            None => crate::error!(
                "keel.rescue: no shell in the initramfs ({}); cannot rescue",
                SHELLS.join(", ")
            ),
        }
    }
    crate::error!("rebooting in {} s", FATAL_REBOOT_DELAY.as_secs());
    std::thread::sleep(FATAL_REBOOT_DELAY);
    // The failing thread may hold the lock itself (a panic mid-write): wait a little, no more.
    let mut guard = None;
    for _ in 0..100 {
        match CRITICAL.try_lock() {
            Ok(g) => guard = Some(g),
            Err(TryLockError::Poisoned(p)) => guard = Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        break;
    }
    tear_down_everything();
    drop(guard);
    final_reboot(RebootMode::RB_AUTOBOOT)
}

/// A panic must not end PID 1: log it and go through the fatal path.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::error!("keel-init panicked: {info}");
        fatal_end();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_meanings() {
        assert_eq!(action_for(Signal::SIGCHLD), Some(SignalAction::Reap));
        assert_eq!(action_for(Signal::SIGINT), Some(SignalAction::Reboot));
        assert_eq!(action_for(Signal::SIGTERM), Some(SignalAction::Reboot));
        assert_eq!(action_for(Signal::SIGPWR), Some(SignalAction::PowerOff));
        assert_eq!(action_for(Signal::SIGHUP), None);
    }
}
