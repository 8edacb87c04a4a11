//! Config → ordered actions, touching nothing. Order is coreos-cloudinit's: hostname, users
//! (each with its keys), core's keys, write_files, /etc/hosts, update.conf, units (content,
//! drop-ins, mask, enable), the sections not applied yet, then the unit commands in order.

use super::action::{Action, ActionKind};
use crate::config::{CloudConfig, Section};

/// systemd-networkd's files: written to `/etc/systemd/network` (`/run/…` when `runtime`).
const NETWORK_UNITS: [&str; 3] = [".network", ".netdev", ".link"];

/// Default mode of a `write_files` entry without `permissions` (coreos-cloudinit's).
pub const DEFAULT_FILE_MODE: u32 = 0o644;

pub fn plan(cc: &CloudConfig) -> Vec<Action> {
    let mut out = Vec::new();
    let mut push =
        |line: usize, field: String, kind: ActionKind| out.push(Action { line, field, kind });

    if let Some(h) = &cc.hostname {
        push(
            cc.line_of("hostname"),
            "hostname".into(),
            ActionKind::Hostname(h.clone()),
        );
    }

    for (i, u) in cc.users.iter().enumerate() {
        let field = format!("users[{i}]");
        let Some(name) = &u.name else {
            push(u.line, field, invalid("a user needs a name"));
            continue;
        };
        let field = format!("{field} {name}");
        push(u.line, field.clone(), ActionKind::User(Box::new(u.clone())));
        if !u.ssh_authorized_keys.is_empty() {
            push(
                u.line,
                format!("{field}.ssh_authorized_keys"),
                ActionKind::AuthorizedKeys {
                    user: name.clone(),
                    keys: u.ssh_authorized_keys.clone(),
                },
            );
        }
    }

    if !cc.ssh_authorized_keys.is_empty() {
        push(
            cc.line_of("ssh_authorized_keys"),
            "ssh_authorized_keys".into(),
            ActionKind::AuthorizedKeys {
                user: "core".into(),
                keys: cc.ssh_authorized_keys.clone(),
            },
        );
    }

    for (i, w) in cc.write_files.iter().enumerate() {
        let field = format!("write_files[{i}]");
        let Some(path) = &w.path else {
            push(w.line, field, invalid("path is missing"));
            continue;
        };
        let field = format!("{field} {path}");
        let mode = match (&w.permissions, w.mode()) {
            (None, _) => DEFAULT_FILE_MODE,
            (Some(_), Some(m)) => m,
            (Some(p), None) => {
                push(
                    w.line,
                    field,
                    invalid(&format!("permissions {p:?} is not octal")),
                );
                continue;
            }
        };
        match w.decoded_content() {
            Ok(content) => push(
                w.line,
                field,
                ActionKind::WriteFile {
                    path: path.clone(),
                    content,
                    mode,
                    owner: w.owner.clone(),
                },
            ),
            Err(e) => push(w.line, format!("{field}.content"), invalid(&e.to_string())),
        }
    }

    if let Some(m) = &cc.manage_etc_hosts {
        let line = cc.line_of("manage_etc_hosts");
        if m == "localhost" {
            push(
                line,
                "manage_etc_hosts".into(),
                ActionKind::EtcHosts {
                    hostname: cc.hostname.clone(),
                },
            );
        } else {
            push(
                line,
                "manage_etc_hosts".into(),
                invalid(&format!("{m:?} is not supported (only \"localhost\")")),
            );
        }
    }

    if let Some(u) = &cc.coreos.update {
        let mut settings = Vec::new();
        let mut set = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                settings.push((k.to_string(), v.to_string()));
            }
        };
        set("REBOOT_STRATEGY", u.reboot_strategy.map(|r| r.as_str()));
        set("GROUP", u.group.as_deref());
        set("SERVER", u.server.as_deref());
        if !settings.is_empty() {
            push(
                u.line,
                "coreos.update".into(),
                ActionKind::UpdateConf { settings },
            );
        }
    }
    if let Some(l) = &cc.coreos.locksmith {
        let mut settings = Vec::new();
        for (k, v) in [
            ("LOCKSMITHD_ENDPOINT", &l.endpoint),
            ("LOCKSMITHD_ETCD_CAFILE", &l.etcd_cafile),
            ("LOCKSMITHD_ETCD_CERTFILE", &l.etcd_certfile),
            ("LOCKSMITHD_ETCD_KEYFILE", &l.etcd_keyfile),
            ("LOCKSMITHD_ETCD_USERNAME", &l.etcd_username),
            ("LOCKSMITHD_ETCD_PASSWORD", &l.etcd_password),
            ("LOCKSMITHD_GROUP", &l.group),
            ("REBOOT_WINDOW_START", &l.window_start),
            ("REBOOT_WINDOW_LENGTH", &l.window_length),
        ] {
            if let Some(v) = v {
                settings.push((k.to_string(), v.clone()));
            }
        }
        if !settings.is_empty() {
            push(
                l.line,
                "coreos.locksmith".into(),
                ActionKind::UpdateConf { settings },
            );
        }
    }

    let mut commands = Vec::new();
    let mut restart_networkd = false;
    for (i, u) in cc.coreos.units.iter().enumerate() {
        let field = format!("coreos.units[{i}]");
        let Some(name) = &u.name else {
            push(u.line, field, invalid("a unit needs a name"));
            continue;
        };
        let field = format!("{field} {name}");
        if name.contains('/') || name == "." || name == ".." {
            push(u.line, field, invalid("a unit name cannot contain \"/\""));
            continue;
        }
        // coreos-cloudinit's rule: networkd's own files go where networkd reads them.
        let network = NETWORK_UNITS.iter().any(|ext| name.ends_with(ext));
        let dir = match (network, u.runtime) {
            (true, true) => "/run/systemd/network",
            (true, false) => "/etc/systemd/network",
            (false, true) => "/run/systemd/system",
            (false, false) => "/etc/systemd/system",
        };
        if network && (u.enable || u.mask || u.command.is_some() || !u.drop_ins.is_empty()) {
            push(
                u.line,
                field.clone(),
                invalid("a networkd file is not a unit: it has no enable, mask, command or drop-ins (its content is applied, networkd restarted)"),
            );
        }
        if network && u.content.is_some() && !restart_networkd {
            restart_networkd = true;
            commands.push(Action {
                line: u.line,
                field: format!("{field}.content"),
                kind: ActionKind::RunCommand {
                    unit: "systemd-networkd.service".into(),
                    command: crate::UnitCommand::TryRestart,
                },
            });
        }
        if let Some(content) = &u.content {
            push(
                u.line,
                format!("{field}.content"),
                ActionKind::UnitFile {
                    path: format!("{dir}/{name}"),
                    content: content.clone(),
                },
            );
        }
        if network {
            continue;
        }
        for (j, d) in u.drop_ins.iter().enumerate() {
            let dfield = format!("{field}.drop_ins[{j}]");
            match (&d.name, &d.content) {
                (Some(dn), _) if dn.contains('/') => push(
                    d.line,
                    dfield,
                    invalid("a drop-in name cannot contain \"/\""),
                ),
                (Some(dn), Some(content)) => push(
                    d.line,
                    format!("{dfield} {dn}"),
                    ActionKind::UnitFile {
                        path: format!("{dir}/{name}.d/{dn}"),
                        content: content.clone(),
                    },
                ),
                (None, _) => push(d.line, dfield, invalid("a drop-in needs a name")),
                (Some(dn), None) => push(
                    d.line,
                    format!("{dfield} {dn}"),
                    invalid("a drop-in needs content"),
                ),
            }
        }
        if u.mask {
            push(
                u.line,
                format!("{field}.mask"),
                ActionKind::MaskUnit {
                    path: format!("{dir}/{name}"),
                },
            );
        }
        if u.enable {
            push(
                u.line,
                format!("{field}.enable"),
                ActionKind::EnableUnit {
                    dir: dir.into(),
                    name: name.clone(),
                },
            );
        }
        if let Some(command) = u.command {
            commands.push(Action {
                line: u.line,
                field: format!("{field}.command"),
                kind: ActionKind::RunCommand {
                    unit: name.clone(),
                    command,
                },
            });
        }
    }

    if let Some(s) = &cc.coreos.etcd2 {
        let t = crate::etcd::translate(s);
        for w in &t.warnings {
            push(
                s.line,
                "coreos.etcd2".into(),
                ActionKind::NotApplied { message: w.clone() },
            );
        }
        for e in &t.errors {
            push(s.line, "coreos.etcd2".into(), invalid(e));
        }
        push(
            s.line,
            "coreos.etcd2".into(),
            ActionKind::UnitFile {
                path: crate::etcd::DROP_IN.into(),
                content: crate::etcd::drop_in(&t),
            },
        );
    }
    if let Some(s) = &cc.coreos.fleet {
        push(
            s.line,
            "coreos.fleet".into(),
            ActionKind::UnitFile {
                path: crate::fleet::DROP_IN.into(),
                content: crate::fleet::drop_in(s),
            },
        );
        // The section turns the agent on (Keel's rule; coreos-cloudinit also needed
        // `fleet.service` in `coreos.units`, which still works and is not repeated).
        let commanded = cc
            .coreos
            .units
            .iter()
            .any(|u| u.name.as_deref() == Some(crate::fleet::UNIT) && u.command.is_some());
        if !commanded {
            commands.push(Action {
                line: s.line,
                field: "coreos.fleet".into(),
                kind: ActionKind::RunCommand {
                    unit: crate::fleet::UNIT.into(),
                    command: crate::UnitCommand::Start,
                },
            });
        }
    }
    for (key, section) in [("etcd", &cc.coreos.etcd), ("flannel", &cc.coreos.flannel)] {
        if let Some(s) = section {
            push(s.line, format!("coreos.{key}"), not_applied(key, s));
        }
    }
    if let Some(o) = &cc.coreos.oem {
        push(
            o.line,
            "coreos.oem".into(),
            ActionKind::NotApplied {
                message: "coreos.oem is not applied by Keel (the image's own oem-release stays)"
                    .into(),
            },
        );
    }

    out.extend(commands);
    out
}

/// The actions for a `#!` user-data.
pub fn plan_script(text: &str) -> Vec<Action> {
    vec![Action {
        line: 1,
        field: "#! script".into(),
        kind: ActionKind::Script { text: text.into() },
    }]
}

fn invalid(message: &str) -> ActionKind {
    ActionKind::Invalid {
        message: message.into(),
    }
}

fn not_applied(key: &str, s: &Section) -> ActionKind {
    ActionKind::NotApplied {
        message: format!(
            "coreos.{key} ({} setting(s)) handed to the cluster issues, not applied yet",
            s.settings.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, UserData};

    fn cc(text: &str) -> CloudConfig {
        match parse(text.as_bytes()).unwrap() {
            UserData::CloudConfig(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn orders_commands_last_and_names_lines() {
        let actions = plan(&cc("#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: start\n      content: |\n        [Service]\n  etcd2:\n    name: x\nhostname: h\n"));
        let kinds: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "line 10: hostname: set hostname \"h\" in /etc/hostname",
                "line 4: coreos.units[0] a.service.content: write unit /etc/systemd/system/a.service",
                "line 8: coreos.etcd2: write unit /run/systemd/system/etcd-member.service.d/20-cloudinit.conf",
                "line 4: coreos.units[0] a.service.command: systemctl start a.service",
            ]
        );
    }

    #[test]
    fn bad_items_become_invalid_actions() {
        let actions = plan(&cc("#cloud-config\nwrite_files:\n  - content: x\n  - path: /a\n    encoding: b64\n    content: '%%%'\ncoreos:\n  units:\n    - command: start\n    - name: x.service\n      runtime: true\n      mask: true\n"));
        let shown: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert!(
            shown[0].starts_with("line 3: write_files[0]: path is missing"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("line 4: write_files[1] /a.content: "),
            "{shown:?}"
        );
        assert_eq!(shown[2], "line 9: coreos.units[0]: a unit needs a name");
        assert_eq!(
            shown[3],
            "line 10: coreos.units[1] x.service.mask: mask /run/systemd/system/x.service -> /dev/null"
        );
    }

    #[test]
    fn networkd_files_go_to_systemd_network_and_restart_networkd() {
        let actions = plan(&cc("#cloud-config\ncoreos:\n  units:\n    - name: 10-lan.network\n      content: |\n        [Match]\n        Name=eth1\n    - name: 20-x.netdev\n      runtime: true\n      content: |\n        [NetDev]\n    - name: 30-y.link\n      command: start\n"));
        let shown: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            [
                "line 4: coreos.units[0] 10-lan.network.content: write unit /etc/systemd/network/10-lan.network",
                "line 8: coreos.units[1] 20-x.netdev.content: write unit /run/systemd/network/20-x.netdev",
                "line 12: coreos.units[2] 30-y.link: a networkd file is not a unit: it has no enable, mask, command or drop-ins (its content is applied, networkd restarted)",
                "line 4: coreos.units[0] 10-lan.network.content: systemctl try-restart systemd-networkd.service",
            ]
        );
    }
}
