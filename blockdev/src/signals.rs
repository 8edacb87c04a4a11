//! The signal state an exec'd program inherits: the mask and ignored dispositions survive
//! execve (Rust's runtime ignores SIGPIPE), so a PID 1 resets both before it execs another.

use nix::sys::signal::{pthread_sigmask, signal, SigHandler, SigSet, SigmaskHow, Signal};

/// Unblock every signal and restore every disposition to its default.
pub fn reset_for_exec() {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: restoring the default disposition installs no handler.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }
}
