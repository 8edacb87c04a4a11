//! A unit file as fleet reads it: its name (plain, template `foo@.service` or instance
//! `foo@1.service`) and its `[X-Fleet]` section turned into [`Requirements`]. Every error names
//! the file's line and key, and contradictory options are refused here, before anything is
//! stored or scheduled.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The unit types systemd (and so fleet) accepts as names.
const SUFFIXES: [&str; 10] = [
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".mount",
    ".automount",
    ".target",
    ".device",
    ".swap",
    ".slice",
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    #[error("unit name {name:?}: {why}")]
    Name { name: String, why: &'static str },
    #[error("{unit}: line {line}: {key}: {why}")]
    Option {
        unit: String,
        line: usize,
        key: String,
        why: String,
    },
    #[error("{unit}: {why}")]
    Contradiction { unit: String, why: String },
}

/// Checks a unit name the way systemd's `unit_name_is_valid` does, in the part fleet needs.
pub fn check_name(name: &str) -> Result<(), UnitError> {
    let bad = |why| {
        Err(UnitError::Name {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 characters");
    }
    let Some(suffix) = SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
        return bad("must end in a unit type such as .service");
    };
    let stem = &name[..name.len() - suffix.len()];
    if stem.is_empty() {
        return bad("has nothing before its type");
    }
    if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
    {
        return bad("may hold only ASCII letters, digits and :-_.\\@");
    }
    if stem.matches('@').count() > 1 {
        return bad("has more than one @");
    }
    if stem.starts_with('@') {
        return bad("has nothing before its @");
    }
    Ok(())
}

/// `foo@.service` is a template.
pub fn is_template(name: &str) -> bool {
    name.contains("@.")
}

/// `foo@1.service` → `Some(("foo@.service", "1"))`; other names → `None`.
pub fn split_instance(name: &str) -> Option<(String, &str)> {
    let at = name.find('@')?;
    let dot = name.rfind('.')?;
    if dot <= at + 1 {
        return None;
    }
    Some((
        format!("{}{}", &name[..=at], &name[dot..]),
        &name[at + 1..dot],
    ))
}

/// systemd's `%p`: the name before `@` (or before the type).
fn prefix(name: &str) -> &str {
    let end = name
        .find('@')
        .or_else(|| name.rfind('.'))
        .unwrap_or(name.len());
    &name[..end]
}

/// What a unit asks of the machine it runs on (fleet's `[X-Fleet]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// `MachineID=`: only this machine (a full machine id, or a unique prefix of one).
    pub machine_id: Option<String>,
    /// `MachineOf=`: the machine that runs each of these units.
    pub machine_of: Vec<String>,
    /// `MachineMetadata=k=v`: values of one key are alternatives, different keys must all match.
    pub metadata: Vec<(String, Vec<String>)>,
    /// `Conflicts=`: globs of unit names that must not share the machine (either direction).
    pub conflicts: Vec<String>,
    /// `Replaces=`: units that must leave the machine this one is placed on.
    pub replaces: Vec<String>,
    /// `Global=true`: on every machine whose metadata matches.
    pub global: bool,
}

impl Requirements {
    /// Reads the `[X-Fleet]` section of `text`, the file of unit `name`.
    pub fn parse(name: &str, text: &str) -> Result<Self, UnitError> {
        let mut req = Requirements::default();
        let mut machine_id_line = 0;
        for opt in x_fleet_options(text) {
            let err = |why: String| UnitError::Option {
                unit: name.to_string(),
                line: opt.line,
                key: opt.key.clone(),
                why,
            };
            let values: Vec<String> =
                split_values(&expand(&opt.value, name)).map_err(|w| err(w.to_string()))?;
            if values.is_empty() {
                return Err(err("has no value".into()));
            }
            match canonical_key(&opt.key) {
                Some("MachineID") => {
                    if values.len() > 1 || req.machine_id.is_some() {
                        return Err(err(format!(
                            "a unit runs on one machine; MachineID is also set on line {}",
                            if machine_id_line == 0 {
                                opt.line
                            } else {
                                machine_id_line
                            }
                        )));
                    }
                    machine_id_line = opt.line;
                    req.machine_id = Some(values[0].clone());
                }
                Some("MachineOf") => {
                    for v in values {
                        check_name(&v).map_err(|e| err(e.to_string()))?;
                        if v == name {
                            return Err(err("a unit cannot be MachineOf itself".into()));
                        }
                        req.machine_of.push(v);
                    }
                }
                Some("MachineMetadata") => {
                    for v in values {
                        let Some((k, val)) = v.split_once('=') else {
                            return Err(err(format!("{v:?} is not key=value")));
                        };
                        if k.is_empty() || val.is_empty() {
                            return Err(err(format!("{v:?} has an empty key or value")));
                        }
                        // `ram>=2048` would otherwise be the key `ram>`, which no machine has:
                        // a unit that is never scheduled, and nothing saying why.
                        if k.ends_with(['<', '>', '!']) || val.starts_with('=') {
                            return Err(err(format!(
                                "{v:?}: comparison operators are not supported (fleet never \
                                 released them); give key=value"
                            )));
                        }
                        match req.metadata.iter_mut().find(|(key, _)| key == k) {
                            Some((_, vals)) => vals.push(val.to_string()),
                            None => req.metadata.push((k.to_string(), vec![val.to_string()])),
                        }
                    }
                }
                Some("Conflicts") => req.conflicts.extend(values),
                Some("Replaces") => {
                    for v in values {
                        check_name(&v).map_err(|e| err(e.to_string()))?;
                        req.replaces.push(v);
                    }
                }
                Some("Global") => {
                    req.global = match values[0].to_ascii_lowercase().as_str() {
                        "true" | "yes" | "1" | "on" | "t" => true,
                        "false" | "no" | "0" | "off" => false,
                        _ => {
                            return Err(err(format!("{:?} is not a boolean", values[0])));
                        }
                    };
                }
                _ => {
                    return Err(err(format!(
                        "unknown option (fleet knows {})",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        req.check(name)?;
        Ok(req)
    }

    /// Options that can never be satisfied together: fleet's `ValidateOptions` rules and
    /// strings (MachineOf is its "Peers"), plus `Global` with `Replaces`, which fleet's
    /// documentation calls invalid but did not check.
    fn check(&self, name: &str) -> Result<(), UnitError> {
        let contradiction = |why: String| {
            Err(UnitError::Contradiction {
                unit: name.to_string(),
                why,
            })
        };
        for target in &self.machine_of {
            if let Some(glob) = self
                .conflicts
                .iter()
                .find(|g| crate::glob::matches(g, target))
            {
                return contradiction(format!(
                    "unresolvable requirements: MachineOf={target} matches Conflicts={glob}"
                ));
            }
            if self.replaces.contains(target) {
                return contradiction(format!(
                    "unresolvable requirements: MachineOf={target} and Replaces={target}"
                ));
            }
        }
        let pairs = [
            (
                self.machine_id.is_some(),
                "MachineID",
                !self.machine_of.is_empty(),
                "MachineOf",
            ),
            (
                self.machine_id.is_some(),
                "MachineID",
                !self.conflicts.is_empty(),
                "Conflicts",
            ),
            (
                self.machine_id.is_some(),
                "MachineID",
                self.global,
                "Global",
            ),
            (
                self.global,
                "Global",
                !self.machine_of.is_empty(),
                "MachineOf",
            ),
            (
                self.global,
                "Global",
                !self.conflicts.is_empty(),
                "Conflicts",
            ),
            (self.global, "Global", !self.replaces.is_empty(), "Replaces"),
        ];
        for (a, a_name, b, b_name) in pairs {
            if a && b {
                return contradiction(format!("{a_name} cannot be used with {b_name}"));
            }
        }
        Ok(())
    }

    /// Whether this unit and `other` may not share a machine (`Conflicts` either way, `Replaces`).
    pub fn conflicts_with(&self, me: &str, other: &str, other_req: &Requirements) -> bool {
        me != other
            && (self
                .conflicts
                .iter()
                .any(|g| crate::glob::matches(g, other))
                || other_req
                    .conflicts
                    .iter()
                    .any(|g| crate::glob::matches(g, me))
                || self.replaces.iter().any(|r| r == other)
                || other_req.replaces.iter().any(|r| r == me))
    }
}

const KNOWN: [&str; 6] = [
    "MachineID",
    "MachineOf",
    "MachineMetadata",
    "Conflicts",
    "Replaces",
    "Global",
];

/// fleet's names, and the `X-Condition…`/`X-` names it still read from its first releases.
fn canonical_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "MachineID" | "X-ConditionMachineID" => "MachineID",
        "MachineOf" | "X-ConditionMachineOf" => "MachineOf",
        "MachineMetadata" | "X-ConditionMachineMetadata" => "MachineMetadata",
        "Conflicts" | "X-Conflicts" => "Conflicts",
        "Replaces" => "Replaces",
        "Global" => "Global",
        _ => return None,
    })
}

/// `%n` (full name), `%N` (name without type), `%p` (prefix), `%i` (instance), `%%`.
fn expand(value: &str, name: &str) -> String {
    let instance = split_instance(name).map(|(_, i)| i).unwrap_or("");
    let without_type = name.rfind('.').map(|d| &name[..d]).unwrap_or(name);
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(name),
            Some('N') => out.push_str(without_type),
            Some('p') => out.push_str(prefix(name)),
            Some('i') => out.push_str(instance),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Whitespace-separated values, each optionally in double quotes (`"rack=22" "gpu=true"`).
fn split_values(value: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut v = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => v.push(c),
                    None => return Err("unterminated quote"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                v.push(c);
                chars.next();
            }
        }
        out.push(v);
    }
}

/// One `Key=Value` of a unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitOption {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// Every option of a unit file, in order, with systemd's syntax: `[Section]` headers, `#`/`;`
/// comments, a trailing `\` continuing the value on the next line.
pub fn options(text: &str) -> Vec<UnitOption> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<UnitOption> = None;
    for (i, raw) in text.lines().enumerate() {
        if let Some(mut opt) = pending.take() {
            let (part, more) = continued(raw.trim());
            opt.value.push(' ');
            opt.value.push_str(part);
            if more {
                pending = Some(opt);
            } else {
                out.push(opt);
            }
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (value, more) = continued(v.trim());
        let opt = UnitOption {
            section: section.clone(),
            key: k.trim().to_string(),
            value: value.to_string(),
            line: i + 1,
        };
        if more {
            pending = Some(opt);
        } else {
            out.push(opt);
        }
    }
    out.extend(pending);
    out
}

fn continued(v: &str) -> (&str, bool) {
    match v.strip_suffix('\\') {
        Some(head) => (head.trim_end(), true),
        None => (v, false),
    }
}

fn x_fleet_options(text: &str) -> impl Iterator<Item = UnitOption> {
    options(text).into_iter().filter(|o| o.section == "X-Fleet")
}

/// Where a unit runs, as fleet's target states name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Known to the cluster, placed nowhere.
    #[default]
    Inactive,
    /// Placed on a machine and written there, not started.
    Loaded,
    /// Placed and started.
    Launched,
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetState::Inactive => "inactive",
            TargetState::Loaded => "loaded",
            TargetState::Launched => "launched",
        })
    }
}

/// The short content hash fleetctl shows (first 7 hex digits of SHA-256 here).
pub fn content_hash(content: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
    hex::encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_documents_template_parses() {
        let text = "[Unit]\nDescription=My Service\nAfter=docker.service\n\n[Service]\n\
                    ExecStart=/bin/bash -c \"while true; do echo Hello World; sleep 1; done\"\n\n\
                    [X-Fleet]\nConflicts=hello_world@*\n";
        let r = Requirements::parse("hello_world@1.service", text).unwrap();
        assert_eq!(r.conflicts, ["hello_world@*"]);
        let other = Requirements::parse("hello_world@2.service", text).unwrap();
        assert!(r.conflicts_with("hello_world@1.service", "hello_world@2.service", &other));
        assert!(!r.conflicts_with("hello_world@1.service", "hello_world@1.service", &r));
    }

    #[test]
    fn metadata_values_of_one_key_are_alternatives() {
        let r = Requirements::parse(
            "a.service",
            "[X-Fleet]\nMachineMetadata=group=hw_webservers\nMachineMetadata=\"region=us\" region=eu disk=ssd\n",
        )
        .unwrap();
        assert_eq!(
            r.metadata,
            [
                ("group".to_string(), vec!["hw_webservers".to_string()]),
                ("region".to_string(), vec!["us".into(), "eu".into()]),
                ("disk".to_string(), vec!["ssd".to_string()]),
            ]
        );
    }

    #[test]
    fn specifiers_expand_and_old_names_are_read() {
        let r = Requirements::parse(
            "web@3.service",
            "[X-Fleet]\nX-ConditionMachineOf=log@%i.service\nX-Conflicts=%p@*.service\n",
        )
        .unwrap();
        assert_eq!(r.machine_of, ["log@3.service"]);
        assert_eq!(r.conflicts, ["web@*.service"]);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = Requirements::parse("a.service", "[Unit]\n\n[X-Fleet]\nMachineId=abc\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("a.service: line 4: MachineId: unknown option"),
            "{e}"
        );
    }

    #[test]
    fn contradictions_are_refused() {
        let cases = [
            (
                "[X-Fleet]\nGlobal=true\nConflicts=b*\n",
                "Global cannot be used with Conflicts",
            ),
            (
                "[X-Fleet]\nGlobal=true\nMachineID=123\n",
                "MachineID cannot be used with Global",
            ),
            (
                "[X-Fleet]\nMachineID=1\nMachineOf=b.service\n",
                "MachineID cannot be used with MachineOf",
            ),
            (
                "[X-Fleet]\nMachineOf=b.service\nConflicts=b*\n",
                "unresolvable requirements: MachineOf=b.service matches Conflicts=b*",
            ),
            (
                "[X-Fleet]\nMachineID=1\nMachineID=2\n",
                "line 3: MachineID: a unit runs on one machine; MachineID is also set on line 2",
            ),
            ("[X-Fleet]\nMachineOf=a.service\n", "MachineOf itself"),
            ("[X-Fleet]\nGlobal=maybe\n", "not a boolean"),
            ("[X-Fleet]\nMachineMetadata=group\n", "not key=value"),
            (
                "[X-Fleet]\nMachineMetadata=ram>=2048\n",
                "line 2: MachineMetadata: \"ram>=2048\": comparison operators are not supported",
            ),
            (
                "[X-Fleet]\nMachineMetadata=role!=db\n",
                "comparison operators",
            ),
            (
                "[X-Fleet]\nMachineMetadata=disk==ssd\n",
                "comparison operators",
            ),
            ("[X-Fleet]\nConflicts=\n", "has no value"),
        ];
        for (text, says) in cases {
            let e = Requirements::parse("a.service", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn names_and_instances() {
        assert!(check_name("hello_world@.service").is_ok());
        assert!(check_name("hello").is_err());
        assert!(check_name("a@b@c.service").is_err());
        assert_eq!(
            split_instance("hello_world@1.service"),
            Some(("hello_world@.service".to_string(), "1"))
        );
        assert_eq!(split_instance("hello_world@.service"), None);
        assert!(is_template("hello_world@.service"));
    }

    #[test]
    fn continuation_lines_join() {
        let o = options("[X-Fleet]\nConflicts=a* \\\n  b*\n");
        assert_eq!(o[0].value, "a* b*");
        assert_eq!(o[0].line, 2);
    }
}
