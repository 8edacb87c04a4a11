//! The validation rules, in coreos-cloudinit's order (`config/validate/rules.go`:
//! discovery URL, encoding, structure, validity, write_files, write_files under coreos), then
//! the rules Keel adds. Each takes the normalised document and appends to the report.
//!
//! Types follow the upstream two-pass trick: a key's *kind* is what go-yaml v1 infers
//! (`off` is a bool, `0744` an int), but a string field accepts any scalar and sees its text
//! (so `reboot_strategy: off` is the string "off" and `permissions: 0744` is "0744").

use crate::encoding;
use crate::report::Report;
use crate::schema::{Ty, ROOT};
use crate::values::{self, Check};
use crate::yaml::{Node, Resolved, Value};

/// The rules, upstream's first. `root` is the normalised document.
pub fn run(root: &Node, report: &mut Report) {
    discovery_url(root, report);
    encodings(root, report);
    structure(root, "", 0, &ROOT, report);
    validity(root, &ROOT, report);
    write_files_read_only(root, report);
    write_files_under_coreos(root, report);
    // Keel's own.
    write_files_paths(root, report);
}

/// Go's reflect kind of a weakly-typed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
    Slice,
    Map,
}

fn kind(n: &Node) -> Kind {
    match &n.value {
        Value::Seq(_) => Kind::Slice,
        Value::Map(_) => Kind::Map,
        Value::Scalar(s) => match s.resolve() {
            Resolved::Null => Kind::Invalid,
            Resolved::Bool(_) => Kind::Bool,
            Resolved::Int => Kind::Int,
            Resolved::Float => Kind::Float,
            Resolved::Str => Kind::String,
        },
    }
}

/// `isCompatible` from rules.go.
fn compatible(n: Kind, t: &Ty) -> bool {
    match t {
        Ty::Str(_) => matches!(n, Kind::String | Kind::Int | Kind::Float | Kind::Bool),
        Ty::Struct(_) => n == Kind::Map,
        Ty::Float => matches!(n, Kind::Float | Kind::Int),
        Ty::Bool => n == Kind::Bool,
        Ty::Int => n == Kind::Int,
        Ty::List(_) => n == Kind::Slice,
    }
}

/// A non-null scalar's text (what a Go string field receives), if `n` is one.
fn text(n: &Node) -> Option<String> {
    let s = n.as_scalar()?;
    if s.resolve() == Resolved::Null {
        return None;
    }
    Some(String::from_utf8_lossy(s.bytes()).into_owned())
}

fn child<'a>(n: &'a Node, path: &[&str]) -> Option<(&'a Node, usize)> {
    let mut cur = (n, 0);
    for key in path {
        let e = cur.0.get(key)?;
        cur = (&e.value, e.key_line);
    }
    Some(cur)
}

/// Items of `write_files` that are mappings.
fn write_files(root: &Node) -> impl Iterator<Item = &Node> {
    child(root, &["write_files"])
        .map(|(n, _)| n.items())
        .unwrap_or_default()
        .iter()
        .filter(|i| matches!(i.value, Value::Map(_)))
}

fn discovery_url(root: &Node, r: &mut Report) {
    if let Some((n, line)) = child(root, &["coreos", "etcd", "discovery"]) {
        if let Some(url) = text(n) {
            if !values::request_uri_ok(&url) {
                r.warning(line, "discovery URL is not valid");
            }
        }
    }
}

fn encodings(root: &Node, r: &mut Report) {
    for file in write_files(root) {
        let Some(enc) = file.get("encoding") else {
            continue;
        };
        let Some(name) = text(&enc.value) else {
            continue;
        };
        let (content, line) = match file.get("content") {
            Some(c) => (
                c.value
                    .as_scalar()
                    .map(|s| s.bytes().to_vec())
                    .unwrap_or_default(),
                c.key_line,
            ),
            None => (Vec::new(), enc.key_line),
        };
        if encoding::decode(&content, &name).is_err() {
            r.error(line, format!("content cannot be decoded as {name:?}"));
        }
    }
}

fn structure(n: &Node, name: &str, line: usize, ty: &'static Ty, r: &mut Report) {
    if !compatible(kind(n), ty) {
        r.warning(
            line,
            format!("incorrect type for {name:?} (want {})", ty.human()),
        );
        return;
    }
    match (&n.value, ty) {
        (Value::Map(entries), Ty::Struct(_)) => {
            for e in entries {
                match ty.field(&e.key) {
                    Some(f) => {
                        if let Some(why) = f.deprecated {
                            r.warning(e.key_line, format!("deprecated key {:?} ({why})", e.key));
                        }
                        structure(&e.value, &e.key, e.key_line, &f.ty, r);
                    }
                    None => r.warning(e.key_line, format!("unrecognized key {:?}", e.key)),
                }
            }
        }
        (Value::Seq(items), Ty::List(elem)) => {
            for (i, item) in items.iter().enumerate() {
                structure(item, &format!("{name}[{i}]"), item.line, elem, r);
            }
        }
        _ => {}
    }
}

fn validity(n: &Node, ty: &'static Ty, r: &mut Report) {
    match (&n.value, ty) {
        (Value::Map(entries), Ty::Struct(_)) => {
            for e in entries {
                let Some(f) = ty.field(&e.key) else { continue };
                if let Ty::Str(Some(check)) = f.ty {
                    check_value(&e.value, e.key_line, check, r);
                }
                validity(&e.value, &f.ty, r);
            }
        }
        (Value::Seq(items), Ty::List(elem)) => {
            for item in items {
                validity(item, elem, r);
            }
        }
        _ => {}
    }
}

fn check_value(n: &Node, line: usize, check: Check, r: &mut Report) {
    // Zero values (empty string) are valid upstream; mappings and lists are the structure
    // rule's business.
    let Some(v) = text(n).filter(|v| !v.is_empty()) else {
        return;
    };
    if !check.upstream_ok(&v) {
        r.error(line, format!("invalid value {v}"));
    } else if let Some(why) = check.keel_refuses(&v) {
        r.error(line, format!("invalid value {v}: {why}"));
    }
}

fn write_files_read_only(root: &Node, r: &mut Report) {
    for file in write_files(root) {
        let Some(p) = file.get("path") else { continue };
        let Some(path) = text(&p.value) else { continue };
        if go_path_dir(&path).starts_with("/usr") {
            r.error(
                p.key_line,
                "file cannot be written to a read-only filesystem",
            );
        }
    }
}

fn write_files_under_coreos(root: &Node, r: &mut Report) {
    if let Some((n, line)) = child(root, &["coreos", "write_files"]) {
        if !n.is_null() {
            r.info(line, "write_files doesn't belong under coreos");
        }
    }
}

/// Keel: a file is written inside the root, at an absolute path, never through `..`.
fn write_files_paths(root: &Node, r: &mut Report) {
    for file in write_files(root) {
        let Some(p) = file.get("path") else { continue };
        let Some(path) = text(&p.value) else { continue };
        if !path.starts_with('/') {
            r.error(
                p.key_line,
                format!("path {path:?} is relative; write_files paths must be absolute (Keel)"),
            );
        } else if path.split('/').any(|c| c == "..") {
            r.error(
                p.key_line,
                format!("path {path:?} contains \"..\"; Keel refuses paths that climb out of where they point"),
            );
        }
    }
}

/// Go's `path.Dir`: everything before the last `/`, then `path.Clean`.
pub fn go_path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    go_path_clean(dir)
}

/// Go's `path.Clean`.
pub fn go_path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Document, Kind as K};

    fn check(yaml: &str) -> Vec<(K, usize, String)> {
        let mut n = crate::yaml::parse(yaml).unwrap().unwrap();
        crate::normalise::tree(&mut n);
        let mut r = Report::new(Document::CloudConfig);
        run(&n, &mut r);
        r.entries
            .into_iter()
            .map(|e| (e.kind, e.line, e.message))
            .collect()
    }

    #[test]
    fn go_paths() {
        assert_eq!(go_path_dir("/tmp/../usr/invalid"), "/usr");
        assert_eq!(go_path_dir("/etc/motd"), "/etc");
        assert_eq!(go_path_dir("motd"), ".");
        assert_eq!(go_path_clean("a/../../b"), "../b");
        assert_eq!(go_path_clean("/../x"), "/x");
    }

    // Cases from coreos-cloudinit's rules_test.go (lines as upstream: no header line).
    #[test]
    fn structure_like_upstream() {
        assert_eq!(
            check("coreos:\n  units:\n    - hello\n    - goodbye"),
            vec![
                (
                    K::Warning,
                    3,
                    "incorrect type for \"units[0]\" (want struct)".into()
                ),
                (
                    K::Warning,
                    4,
                    "incorrect type for \"units[1]\" (want struct)".into()
                ),
            ]
        );
        for bad in [
            "coreos:\n  units:\n    - enable: 4",
            "coreos:\n  units:\n    - enable: bad",
            "coreos:\n  units:\n    - enable:\n        bad:",
            "coreos:\n  units:\n    - enable:\n      - bad",
        ] {
            assert_eq!(
                check(bad),
                vec![(
                    K::Warning,
                    3,
                    "incorrect type for \"enable\" (want bool)".into()
                )],
                "{bad}"
            );
        }
        assert!(check("coreos:\n  units:\n    - enable: true").is_empty());
        assert!(check("hostname: true").is_empty());
        assert!(check("coreos:\n  etcd:\n    addr: hi")
            .iter()
            .all(|e| e.2.starts_with("deprecated key \"etcd\"")));
        assert_eq!(
            check("ssh_authorized_keys: key"),
            vec![(
                K::Warning,
                1,
                "incorrect type for \"ssh_authorized_keys\" (want []string)".into()
            )]
        );
    }

    #[test]
    fn validity_and_order() {
        assert_eq!(
            check("write_files:\n  - encoding: custom\n    content: hello"),
            vec![
                (
                    K::Error,
                    3,
                    "content cannot be decoded as \"custom\"".into()
                ),
                (K::Error, 2, "invalid value custom".into()),
            ]
        );
        assert!(check("coreos:\n  update:\n    reboot-strategy: off").is_empty());
        assert_eq!(
            check("coreos:\n  update:\n    reboot_strategy: false")[0].2,
            "invalid value false"
        );
        assert!(
            check("coreos:\n  locksmith:\n    window_start: Thu 04:00\n    window_length: 1h")
                .is_empty()
        );
        assert_eq!(
            check("coreos:\n  locksmith:\n    window_length: 1x")[0].1,
            3
        );
        assert!(check("write_files:\n  - permissions: 0744\n  - permissions: 744").is_empty());
        assert_eq!(
            check("write_files:\n  - permissions: 0999")[0].2,
            "invalid value 0999"
        );
    }

    #[test]
    fn write_files_rules() {
        assert_eq!(
            check("write-files:\n  - path: /tmp/../usr/invalid"),
            vec![
                (K::Error, 2, "file cannot be written to a read-only filesystem".into()),
                (K::Error, 2, "path \"/tmp/../usr/invalid\" contains \"..\"; Keel refuses paths that climb out of where they point".into()),
            ]
        );
        assert_eq!(check("write_files:\n  - path: etc/x")[0].0, K::Error);
        assert!(check("write_files:\n  - path: /tmp/usr/valid").is_empty());
        assert_eq!(
            check("coreos:\n  write-files:\n    - path: /hi"),
            vec![
                (K::Warning, 2, "unrecognized key \"write_files\"".into()),
                (K::Info, 2, "write_files doesn't belong under coreos".into()),
            ]
        );
    }
}
