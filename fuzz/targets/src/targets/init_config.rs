//! keel-init's configuration: `/etc/keel/init.json` and the kernel command line, resolved
//! into its settings. Input: the JSON, a NUL byte, the command line.

use keel_format::initramfs::InitConfig;

use crate::disk::split_nul;
use crate::{cmdline, settings};

pub fn run(data: &[u8]) {
    let (json, line) = split_nul(data);
    let config = serde_json::from_slice::<InitConfig>(json).ok();
    let line = String::from_utf8_lossy(line);
    let parsed = cmdline::parse(&line);
    let _ = cmdline::words(&line);
    let (s, _problems) = settings::resolve(config.as_ref(), &parsed);
    if let Some(n) = s.forced_slot {
        let _ = cmdline::slot_label(n);
    }
    let _ = cmdline::second_stage(&line, "USR-B");
}
