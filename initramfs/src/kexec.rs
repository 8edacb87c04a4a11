//! Step 6: start the slot's own kernel when it is not the one running: `kexec_file_load`
//! (keel-blockdev), then reboot(RB_KEXEC).

pub use keel_blockdev::kexec::{load, running_kernel};

/// Jump into the loaded kernel. Returns only on failure.
pub fn execute() -> anyhow::Error {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Err(e) => anyhow::anyhow!("reboot(RB_KEXEC) failed: {e}"),
        Ok(never) => match never {},
    }
}
