//! `coreos.fleet` → the fleet agent's environment, as coreos-cloudinit wrote it: each setting
//! becomes `FLEET_<KEY>` (upper case, `-` → `_`) in a drop-in for fleet.service, which runs
//! `keel-fleet agent` (fleet/README.md). Address placeholders stay as written; the agent
//! fills them in from the machine's metadata when it starts.

use std::fmt::Write as _;

use crate::config::Section;

pub const DROP_IN: &str = "/run/systemd/system/fleet.service.d/20-cloudinit.conf";
pub const UNIT: &str = "fleet.service";

/// `public-ip` → `FLEET_PUBLIC_IP`.
pub fn variable(key: &str) -> String {
    format!("FLEET_{}", key.to_ascii_uppercase().replace('-', "_"))
}

pub fn drop_in(s: &Section) -> String {
    let mut out =
        String::from("# Written by keel-cloudinit from coreos.fleet at every boot.\n[Service]\n");
    for (k, v) in &s.settings {
        let _ = writeln!(
            out,
            "Environment=\"{}\"",
            crate::etcd::quote(&format!("{}={v}", variable(k)))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_drop_in() {
        let s = Section {
            line: 4,
            settings: vec![
                ("public-ip".into(), "203.0.113.29".into()),
                ("metadata".into(), "region=us-west".into()),
            ],
        };
        let text = drop_in(&s);
        // coreos-cloudinit's documented output (conformance cc03), after Keel's comment line.
        let documented = "[Service]\nEnvironment=\"FLEET_PUBLIC_IP=203.0.113.29\"\n\
                          Environment=\"FLEET_METADATA=region=us-west\"\n";
        assert!(text.ends_with(documented), "{text}");
    }
}
