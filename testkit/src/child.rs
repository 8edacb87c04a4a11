//! A helper process a test starts (dnsmasq, a server) that must not outlive the test, also
//! when the test fails: killed and reaped on drop.

use std::process::Child;

/// Spawns a helper that also dies when the test binary is killed outright, before any drop
/// can run ([`keel_blockdev::tied`]).
pub use keel_blockdev::tied::spawn as spawn_tied;

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
