//! The kernel command line parameters keel-init reads (see README.md), and the command line it
//! hands to the kernel it kexecs.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_format::layout::{self, Role};
use uuid::Uuid;

pub const DEFAULT_DISK_TIMEOUT: Duration = Duration::from_secs(30);

/// `keel.verify=`: when to read a whole slot through dm-verity before handing off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyPolicy {
    /// Every boot.
    Full,
    /// Only while the slot is on trial (not yet successful). The default.
    First,
    /// Never; dm-verity still checks every block as it is read.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdLine {
    pub disk: Option<Uuid>,
    /// Partition number of `keel.slot=USR-A|USR-B`.
    pub slot: Option<u32>,
    pub kexec: bool,
    pub verify: VerifyPolicy,
    pub init: Option<String>,
    pub rescue: bool,
    pub timeout: Duration,
    pub debug: bool,
    /// Parameters that were present but unusable, as messages to log.
    pub problems: Vec<String>,
}

impl Default for CmdLine {
    fn default() -> Self {
        CmdLine {
            disk: None,
            slot: None,
            kexec: true,
            verify: VerifyPolicy::First,
            init: None,
            rescue: false,
            timeout: DEFAULT_DISK_TIMEOUT,
            debug: false,
            problems: Vec::new(),
        }
    }
}

/// Split a command line into words the way the kernel does: whitespace separates, double quotes
/// group (and are kept here, so that words can be passed on unchanged).
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A word as `(name, value)`, quotes removed.
fn param(word: &str) -> (String, Option<String>) {
    let plain: String = word.chars().filter(|&c| c != '"').collect();
    match plain.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (plain, None),
    }
}

fn flag(name: &str, value: Option<&str>, problems: &mut Vec<String>) -> bool {
    match value {
        None | Some("1") | Some("yes") | Some("true") => true,
        Some("0") | Some("no") | Some("false") => false,
        Some(other) => {
            problems.push(format!("{name}={other}: expected 0 or 1; taking it as 1"));
            true
        }
    }
}

/// Parse the keel.* parameters; everything else is ignored. The last occurrence wins, as with
/// the kernel's own parameters. Words after `--` belong to init's argv and are not parameters.
pub fn parse(cmdline: &str) -> CmdLine {
    let mut c = CmdLine::default();
    for word in words(cmdline) {
        if word == "--" {
            break;
        }
        let (name, value) = param(&word);
        let v = value.as_deref();
        let mut bad = |what: &str| {
            c.problems
                .push(format!("{word}: {what}; the parameter is ignored"));
        };
        match name.as_str() {
            "keel.disk" => match v.map(Uuid::parse_str) {
                Some(Ok(u)) => c.disk = Some(u),
                _ => bad("not a GUID"),
            },
            "keel.slot" => match v.and_then(slot_number) {
                Some(n) => c.slot = Some(n),
                None => bad("expected USR-A or USR-B"),
            },
            "keel.kexec" => c.kexec = flag(&name, v, &mut c.problems),
            "keel.verify" => match v {
                Some("full") => c.verify = VerifyPolicy::Full,
                Some("first") => c.verify = VerifyPolicy::First,
                Some("none") => c.verify = VerifyPolicy::None,
                _ => bad("expected full, first or none"),
            },
            "keel.init" => match v {
                Some(p) if p.starts_with('/') => c.init = Some(p.to_string()),
                _ => bad("expected an absolute path"),
            },
            "keel.rescue" => c.rescue = flag(&name, v, &mut c.problems),
            "keel.timeout" => match v.and_then(|s| s.parse::<u64>().ok()) {
                Some(s) => c.timeout = Duration::from_secs(s),
                None => bad("expected a number of seconds"),
            },
            "keel.debug" => c.debug = flag(&name, v, &mut c.problems),
            n if n.starts_with("keel.") => bad("unknown keel-init parameter"),
            _ => {}
        }
    }
    c
}

/// Options for loadable modules, `module.option[=value]` (what modprobe reads from the command
/// line; the kernel applies them only to built-in code): module name with `-` as `_` → its
/// options, space-separated, quotes kept, in command-line order.
pub fn module_options(cmdline: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for word in words(cmdline) {
        if word == "--" {
            break;
        }
        let key = word.split('=').next().unwrap_or_default();
        let Some((module, _)) = key.split_once('.') else {
            continue;
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if module.is_empty() || !module.chars().all(valid) {
            continue;
        }
        let option = &word[module.len() + 1..];
        if option.is_empty() || option.starts_with('=') {
            continue;
        }
        let options = out.entry(module.replace('-', "_")).or_default();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(option);
    }
    out
}

/// Partition number of a USR slot label (`USR-A`, case-insensitive).
pub fn slot_number(label: &str) -> Option<u32> {
    Role::by_label(&label.to_ascii_uppercase())
        .filter(|r| r.type_guid == layout::USR_TYPE)
        .map(|r| r.number)
}

/// Label of a USR slot number.
pub fn slot_label(number: u32) -> String {
    layout::ROLES
        .iter()
        .find(|r| r.number == number)
        .map_or_else(|| format!("partition {number}"), |r| r.label.to_string())
}

/// The command line for the kexec'd second stage: the current one with any `keel.slot=`
/// replaced by `keel.slot=<label>`, placed before a `--` so that it stays a parameter.
pub fn second_stage(current: &str, label: &str) -> String {
    let mut before: Vec<String> = Vec::new();
    let mut after: Vec<String> = Vec::new();
    let mut in_init_args = false;
    for w in words(current) {
        if w == "--" && !in_init_args {
            in_init_args = true;
        }
        if in_init_args {
            after.push(w);
        } else if param(&w).0 != "keel.slot" {
            before.push(w);
        }
    }
    before.push(format!("keel.slot={label}"));
    before.extend(after);
    before.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_options_as_modprobe_reads_them() {
        let o = module_options(
            "console=ttyS0 dm_verity.prefetch_cluster=4194304 nvme-core.io_timeout=42 \
             foo.bar=\"a b\" dm_verity.x keel.slot=USR-B .bad=1 x.=2 a/b.c=3 -- late.opt=1",
        );
        assert_eq!(o["dm_verity"], "prefetch_cluster=4194304 x");
        assert_eq!(o["nvme_core"], "io_timeout=42", "a module name's - is _");
        assert_eq!(
            o["foo"], "bar=\"a b\"",
            "quotes go on to the kernel's parser"
        );
        assert_eq!(
            o["keel"], "slot=USR-B",
            "harmless: no module is called keel"
        );
        assert_eq!(o.len(), 4, "{o:?}");
    }

    #[test]
    fn defaults() {
        let c = parse("BOOT_IMAGE=/vmlinuz root=/dev/foo console=ttyS0 quiet");
        assert_eq!(c, CmdLine::default());
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.verify, VerifyPolicy::First);
        assert!(c.kexec);
    }

    #[test]
    fn every_parameter() {
        let c = parse(
            "console=ttyS0 keel.disk=00000000-0000-0000-0000-000000000001 keel.slot=USR-B \
             keel.kexec=0 keel.verify=full keel.init=/usr/bin/bash keel.rescue keel.timeout=5 \
             keel.debug",
        );
        assert_eq!(
            c.disk,
            Some(Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap())
        );
        assert_eq!(c.slot, Some(4));
        assert!(!c.kexec);
        assert_eq!(c.verify, VerifyPolicy::Full);
        assert_eq!(c.init.as_deref(), Some("/usr/bin/bash"));
        assert!(c.rescue);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert!(c.debug);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn last_wins_and_case() {
        let c = parse("keel.slot=usr-a keel.verify=none keel.slot=USR-A keel.kexec=1");
        assert_eq!(c.slot, Some(3));
        assert_eq!(c.verify, VerifyPolicy::None);
        assert!(c.kexec);
        let c = parse("keel.disk=7130C94A-213A-4E5A-8E26-6CCE9662F132");
        assert_eq!(c.disk, Some(keel_format::layout::USR_A_GUID));
    }

    #[test]
    fn bad_values_are_reported_not_applied() {
        let c = parse(
            "keel.slot=ROOT keel.slot=USR-C keel.disk=nope keel.verify=sometimes \
             keel.timeout=soon keel.init=relative keel.frobnicate=1 keel.kexec=maybe",
        );
        assert_eq!(c.slot, None);
        assert_eq!(c.disk, None);
        assert_eq!(c.verify, VerifyPolicy::First);
        assert_eq!(c.timeout, DEFAULT_DISK_TIMEOUT);
        assert_eq!(c.init, None);
        assert!(c.kexec);
        assert_eq!(c.problems.len(), 8, "{:#?}", c.problems);
        assert!(c.problems[0].starts_with("keel.slot=ROOT"));
    }

    #[test]
    fn quotes_and_init_args() {
        assert_eq!(
            words(r#"a "b c" d="e f" g"#),
            vec!["a", r#""b c""#, r#"d="e f""#, "g"]
        );
        let c = parse(r#"keel.init="/usr/lib/x" -- keel.rescue"#);
        assert_eq!(c.init.as_deref(), Some("/usr/lib/x"));
        assert!(!c.rescue, "words after -- are init's arguments");
    }

    #[test]
    fn second_stage_command_line() {
        assert_eq!(
            second_stage("console=ttyS0 keel.verify=full\n", "USR-B"),
            "console=ttyS0 keel.verify=full keel.slot=USR-B"
        );
        assert_eq!(
            second_stage(
                r#"keel.slot=USR-A x="a b" -- single keel.slot=USR-A"#,
                "USR-B"
            ),
            r#"x="a b" keel.slot=USR-B -- single keel.slot=USR-A"#
        );
        let c = parse(&second_stage("console=ttyS0", "USR-A"));
        assert_eq!(c.slot, Some(3));
    }

    #[test]
    fn labels() {
        assert_eq!(slot_number("USR-A"), Some(3));
        assert_eq!(slot_number("usr-b"), Some(4));
        assert_eq!(slot_number("OEM"), None);
        assert_eq!(slot_label(4), "USR-B");
    }
}
