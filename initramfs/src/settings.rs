//! What this boot does: the builder's [`InitConfig`] with the command line laid over it.

use std::time::Duration;

use keel_format::initramfs::InitConfig;
use keel_format::layout;
use uuid::Uuid;

use crate::cmdline::{CmdLine, VerifyPolicy};

pub const DEFAULT_HAND_OFF: &str = "/usr/lib/systemd/systemd";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub disk_guid: Uuid,
    /// `keel.slot=`: the partition number to boot without choosing or spending a try.
    pub forced_slot: Option<u32>,
    pub kexec: bool,
    pub verify: VerifyPolicy,
    pub hand_off: String,
    /// The hand-off path came from `keel.init=`: if it is missing, that is the command line's
    /// fault, not the slot's.
    pub hand_off_from_cmdline: bool,
    pub rescue: bool,
    pub disk_timeout: Duration,
    pub debug: bool,
    /// Kernel release the initramfs modules are for, and the modules in load order.
    pub kernel_release: Option<String>,
    pub modules: Vec<String>,
    /// What each module needs loaded first ([`InitConfig::module_needs`]).
    pub module_needs: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// The board's modules and the devices each drives ([`InitConfig::board_modules`]).
    pub board_modules: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// Combine the two sources; returns the settings and messages about unusable values.
pub fn resolve(config: Option<&InitConfig>, cmdline: &CmdLine) -> (Settings, Vec<String>) {
    let mut problems = cmdline.problems.clone();
    let config_disk = config.and_then(|c| match Uuid::parse_str(&c.disk_guid) {
        Ok(u) => Some(u),
        Err(_) => {
            problems.push(format!(
                "init.json: disk_guid {:?} is not a GUID; using the default",
                c.disk_guid
            ));
            None
        }
    });
    let config_hand_off = config
        .map(|c| c.hand_off.clone())
        .filter(|h| h.starts_with('/'));
    let settings = Settings {
        disk_guid: cmdline.disk.or(config_disk).unwrap_or(layout::DISK_GUID),
        forced_slot: cmdline.slot,
        kexec: cmdline.kexec,
        verify: cmdline.verify,
        hand_off_from_cmdline: cmdline.init.is_some(),
        hand_off: cmdline
            .init
            .clone()
            .or(config_hand_off)
            .unwrap_or_else(|| DEFAULT_HAND_OFF.to_string()),
        rescue: cmdline.rescue,
        disk_timeout: cmdline.timeout,
        debug: cmdline.debug,
        kernel_release: config.map(|c| c.kernel_release.clone()),
        modules: config.map(|c| c.modules.clone()).unwrap_or_default(),
        module_needs: config.and_then(|c| c.module_needs.clone()),
        board_modules: config.and_then(|c| c.board_modules.clone()),
    };
    (settings, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    fn config() -> InitConfig {
        InitConfig {
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            modules: vec!["kernel/drivers/md/dm-mod.ko".into()],
            module_needs: None,
            board_modules: None,
            disk_guid: "11111111-2222-3333-4444-555555555555".into(),
            hand_off: "/usr/lib/systemd/systemd".into(),
            keel_version: "1.0.0".into(),
        }
    }

    #[test]
    fn command_line_overrides_config() {
        let c = config();
        let (s, p) = resolve(Some(&c), &parse(""));
        assert!(p.is_empty());
        assert_eq!(s.disk_guid.to_string(), c.disk_guid);
        assert_eq!(s.hand_off, "/usr/lib/systemd/systemd");
        assert!(!s.hand_off_from_cmdline);
        assert_eq!(s.modules, c.modules);

        let (s, _) = resolve(
            Some(&c),
            &parse("keel.disk=00000000-0000-0000-0000-000000000001 keel.init=/bin/sh"),
        );
        assert_eq!(s.disk_guid, layout::DISK_GUID);
        assert_eq!(s.hand_off, "/bin/sh");
        assert!(s.hand_off_from_cmdline);
    }

    #[test]
    fn without_config() {
        let (s, p) = resolve(None, &parse("keel.slot=USR-B"));
        assert!(p.is_empty());
        assert_eq!(s.disk_guid, layout::DISK_GUID);
        assert_eq!(s.hand_off, DEFAULT_HAND_OFF);
        assert_eq!(s.forced_slot, Some(4));
        assert!(s.modules.is_empty());
    }

    #[test]
    fn bad_config_guid_falls_back() {
        let mut c = config();
        c.disk_guid = "disk-one".into();
        let (s, p) = resolve(Some(&c), &parse("keel.verify=bogus"));
        assert_eq!(s.disk_guid, layout::DISK_GUID);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
