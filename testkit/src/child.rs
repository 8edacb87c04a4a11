//! A helper process a test starts (dnsmasq, a server) that must not outlive the test, also
//! when the test fails: killed and reaped on drop.

use std::process::Child;

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
