//! One user-data at boot: validate it (findings on the console as `FILE:LINE: kind: message`),
//! apply what is valid (or, in strict mode, nothing and halt), then hand systemd what the
//! apply report lists: daemon-reload, the newly enabled units, the `command:`s, a `#!` script.

use std::io::Write;
use std::path::Path;

use super::host::Host;
use crate::apply::{self, Action, ActionKind, Status};
use crate::config::User;
use crate::UserData;

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Applied; `errors` findings or failed actions (the machine boots with what was valid).
    Applied { errors: usize },
    /// Strict mode and the config has errors: halt the machine.
    Halt,
}

/// Groups `core` joins when the image has them, as on Flatcar: `docker` runs containers,
/// `systemd-journal` reads every unit's journal (what `fleetctl journal` runs over SSH).
pub const CORE_GROUPS: &[&str] = &["docker", "systemd-journal"];

/// The user every Keel machine has (made on first boot, before any config is applied), in
/// those of `groups` that exist.
pub fn core_user(groups: Vec<String>) -> Action {
    Action {
        line: 0,
        field: "keel: user core".into(),
        kind: ActionKind::User(Box::new(User {
            name: Some("core".into()),
            gecos: None,
            shell: None,
            groups,
            ..User::default()
        })),
    }
}

/// Those of `CORE_GROUPS` that `root/etc/group` defines.
fn existing_core_groups(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    CORE_GROUPS
        .iter()
        .filter(|g| text.lines().any(|l| l.split(':').next() == Some(**g)))
        .map(|g| g.to_string())
        .collect()
}

/// Make sure `core` exists; errors only on the console.
pub fn ensure_core(root: &Path, out: &mut dyn Write) {
    let r = apply::apply(root, &[core_user(existing_core_groups(root))]);
    for o in r.errors() {
        let _ = writeln!(out, "keel-cloudinit: user core: error: {:?}", o.status);
    }
}

/// Validate and apply `bytes` (from `file`, for messages) to `root`.
pub fn apply_user_data(
    root: &Path,
    file: &str,
    bytes: &[u8],
    strict: bool,
    host: &mut dyn Host,
    out: &mut dyn Write,
) -> Verdict {
    let mut findings = crate::validate(bytes);
    findings.file = file.to_string();
    for line in findings.to_human().lines() {
        let _ = writeln!(out, "keel-cloudinit: {line}");
    }
    let validator_errors = findings
        .entries
        .iter()
        .filter(|e| e.kind == crate::Kind::Error)
        .count();
    if strict && validator_errors > 0 {
        let _ = writeln!(
            out,
            "keel-cloudinit: {file}: {validator_errors} error(s) and keel.config.strict=1: nothing applied, halting"
        );
        return Verdict::Halt;
    }
    let user_data = match crate::parse(bytes) {
        Ok(u) => u,
        Err(e) => {
            // The validator has said why, with the line; this says what it means.
            let _ = writeln!(
                out,
                "keel-cloudinit: {file}:{}: error: not readable as a cloud-config, nothing applied from it",
                e.line()
            );
            return Verdict::Applied {
                errors: validator_errors.max(1),
            };
        }
    };
    if matches!(user_data, UserData::Ignition) {
        let _ = writeln!(
            out,
            "keel-cloudinit: {file}: an Ignition config, not a cloud-config: not applied"
        );
        return Verdict::Applied { errors: 1 };
    }
    let actions = apply::plan_user_data(&user_data);
    let invalid: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Invalid { .. }))
        .collect();
    if strict && !invalid.is_empty() {
        for a in invalid {
            let _ = writeln!(
                out,
                "keel-cloudinit: {file}:{}: {}: error: {}",
                a.line, a.field, a.kind
            );
        }
        let _ = writeln!(
            out,
            "keel-cloudinit: {file}: keel.config.strict=1: nothing applied, halting"
        );
        return Verdict::Halt;
    }

    let report = apply::apply(root, &actions);
    for line in report.to_human(file).lines() {
        if !line.contains(": unchanged: ") {
            let _ = writeln!(out, "keel-cloudinit: {line}");
        }
    }
    let mut errors = validator_errors.max(report.errors().count());

    if report.daemon_reload {
        systemctl(host, out, &["daemon-reload"], &mut errors);
    }
    // Units enabled now start on this boot too, as if they had been there all along: the
    // default target, started again, pulls in what now wants it (running units stay).
    let enabled_now = actions.iter().zip(&report.outcomes).any(|(a, o)| {
        matches!(a.kind, ActionKind::EnableUnit { .. }) && o.status == Status::Changed
    });
    if enabled_now {
        systemctl(
            host,
            out,
            &["--no-block", "start", "default.target"],
            &mut errors,
        );
    }
    for (unit, command) in &report.commands {
        // Units absent from the image fail here with
        // systemd's "Unit X not found": a warning on the console, the rest goes on.
        if let Err(e) = host.systemctl(&["--no-block", command.as_str(), unit]) {
            let _ = writeln!(
                out,
                "keel-cloudinit: warning: systemctl {} {unit}: {e}",
                command.as_str()
            );
        }
    }
    if let Some(name) = actions.iter().find_map(|a| match &a.kind {
        ActionKind::Hostname(h) => Some(h),
        _ => None,
    }) {
        if let Err(e) = host.set_hostname(name) {
            errors += 1;
            let _ = writeln!(out, "keel-cloudinit: hostname {name}: {e}");
        }
    }
    for s in report.scripts.iter().filter(|s| !s.already_ran) {
        // Marked first: a script runs at most once, even if the machine dies while it runs.
        match apply::script::mark_ran(root, s) {
            Ok(_) => {
                if let Err(e) = host.run_script(&s.path) {
                    errors += 1;
                    let _ = writeln!(out, "keel-cloudinit: {file}: running {}: {e}", s.path);
                }
            }
            Err(e) => {
                errors += 1;
                let _ = writeln!(out, "keel-cloudinit: {file}: {}: {e}; not run", s.marker);
            }
        }
    }
    let count = |f: fn(&Status) -> bool| report.outcomes.iter().filter(|o| f(&o.status)).count();
    let _ = writeln!(
        out,
        "keel-cloudinit: applied {file}: {} changed, {} unchanged, {} warning(s), {errors} error(s)",
        count(|s| *s == Status::Changed),
        count(|s| *s == Status::Unchanged),
        findings.entries.iter().filter(|e| e.kind == crate::Kind::Warning).count()
            + count(|s| matches!(s, Status::Warning(_))),
    );
    if strict && errors > 0 {
        let _ = writeln!(
            out,
            "keel-cloudinit: {file}: keel.config.strict=1 and applying failed: halting"
        );
        return Verdict::Halt;
    }
    Verdict::Applied { errors }
}

/// `systemctl ARGS`; a failure is an error on the console.
fn systemctl(host: &mut dyn Host, out: &mut dyn Write, args: &[&str], errors: &mut usize) {
    if let Err(e) = host.systemctl(args) {
        *errors += 1;
        let _ = writeln!(out, "keel-cloudinit: systemctl {}: {e}", args.join(" "));
    }
}

#[cfg(test)]
mod core_tests {
    use super::*;
    use crate::apply::tests::fixture_root;

    #[test]
    fn core_joins_docker_only_where_the_group_exists() {
        let t = fixture_root();
        let root = t.path();
        let mut out = Vec::new();
        ensure_core(root, &mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(!group.contains("docker"), "{group}");

        std::fs::write(
            root.join("etc/group"),
            format!("{group}docker:x:998:\nsystemd-journal:x:999:\n"),
        )
        .unwrap();
        ensure_core(root, &mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(group.contains("docker:x:998:core\n"), "{group}");
        assert!(group.contains("systemd-journal:x:999:core\n"), "{group}");
    }
}
