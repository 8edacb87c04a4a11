//! Unit files: the `[Install]` section read from the unit text, and the symlinks `systemctl
//! enable` would make from it (WantedBy= → `T.wants/`, RequiredBy= → `T.requires/`,
//! Alias= → a second name), made here so no systemd is needed at apply time.

use std::path::Path;

use super::rootfs::{self, Change};
use super::ApplyError;

/// Where a unit's text is looked for, first found wins (systemd's order, /run before /etc
/// only for runtime units: the caller passes its own dir first).
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// A unit's `[Install]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty() && self.required_by.is_empty() && self.alias.is_empty()
    }
}

/// Read `[Install]` from unit text: space-separated lists, repeated keys add, an empty
/// assignment resets (systemd's rules), comments (`#`, `;`) and continuation lines handled.
pub fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        if let Some(stripped) = raw.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        lines.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let list = match key.trim() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                let v = value.trim();
                install.default_instance = (!v.is_empty()).then(|| v.to_string());
                continue;
            }
            _ => continue,
        };
        let value = value.trim();
        if value.is_empty() {
            list.clear();
        } else {
            list.extend(value.split_whitespace().map(str::to_string));
        }
    }
    install
}

/// Find the unit's text in the root (`first_dir` first); returns its guest path too.
fn find_unit(root: &Path, first_dir: &str, name: &str) -> Result<(String, String), ApplyError> {
    for dir in std::iter::once(first_dir).chain(UNIT_DIRS.iter().copied()) {
        let path = format!("{dir}/{name}");
        let at = rootfs::resolve(root, &path)?;
        if let Ok(m) = std::fs::symlink_metadata(at.host_path()) {
            if m.file_type().is_symlink() {
                let target = std::fs::read_link(at.host_path()).unwrap_or_default();
                if target == Path::new("/dev/null") {
                    return Err(ApplyError::Invalid(format!("{name} is masked ({path})")));
                }
            }
        }
        if let Some(bytes) = rootfs::read(&at)? {
            return Ok((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    Err(ApplyError::Invalid(format!(
        "unit {name} not found (give content, or ship it in /usr/lib/systemd/system)"
    )))
}

/// Make the `[Install]` symlinks of unit `name` in `dir`.
pub fn enable(root: &Path, dir: &str, name: &str) -> Result<Change, ApplyError> {
    let (unit_path, text) = find_unit(root, dir, name)?;
    let install = parse_install(&text);
    if install.is_empty() {
        return Err(ApplyError::Invalid(format!(
            "{name} has no WantedBy=, RequiredBy= or Alias= in [Install]: nothing to enable"
        )));
    }
    // A template (`foo@.service`) is enabled as its DefaultInstance= (`foo@x.service`).
    let link_name = match name.split_once("@.") {
        Some((prefix, suffix)) => match &install.default_instance {
            Some(instance) => format!("{prefix}@{instance}.{suffix}"),
            None => {
                return Err(ApplyError::Invalid(format!(
                    "{name} is a template without DefaultInstance=: nothing to enable"
                )))
            }
        },
        None => name.to_string(),
    };
    let mut change = Change::Unchanged;
    let mut links = Vec::new();
    for t in &install.wanted_by {
        links.push(format!("{dir}/{t}.wants/{link_name}"));
    }
    for t in &install.required_by {
        links.push(format!("{dir}/{t}.requires/{link_name}"));
    }
    for a in &install.alias {
        if a.contains('/') {
            return Err(ApplyError::Invalid(format!("Alias={a} is not a unit name")));
        }
        links.push(format!("{dir}/{a}"));
    }
    for link in links {
        if link.split('/').any(|c| c == "..") {
            return Err(ApplyError::Invalid(format!(
                "[Install] of {name} names {link}"
            )));
        }
        let at = rootfs::resolve(root, &link)?;
        change = change.or(rootfs::symlink(&at, &unit_path)?);
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section() {
        let i = parse_install(
            "[Unit]\nWantedBy=not-this.target\n[Install]\n# c\nWantedBy=a.target \\\n  b.target\nRequiredBy=c.target\nAlias=x.service\nAlias=\nAlias=y.service\nDefaultInstance=tty1\n[X-Other]\nWantedBy=z\n",
        );
        assert_eq!(i.wanted_by, ["a.target", "b.target"]);
        assert_eq!(i.required_by, ["c.target"]);
        assert_eq!(i.alias, ["y.service"]);
        assert_eq!(i.default_instance.as_deref(), Some("tty1"));
    }

    #[test]
    fn enables_from_the_install_section() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let unit = rootfs::resolve(root, "/usr/lib/systemd/system/s@.service").unwrap();
        rootfs::write_file(
            &unit,
            b"[Install]\nWantedBy=multi-user.target\nRequiredBy=x.target\nAlias=al@.service\nDefaultInstance=one\n",
            0o644,
            None,
        )
        .unwrap();
        let dir = "/etc/systemd/system";
        assert_eq!(enable(root, dir, "s@.service").unwrap(), Change::Changed);
        assert_eq!(enable(root, dir, "s@.service").unwrap(), Change::Unchanged);
        let link = root.join("etc/systemd/system/multi-user.target.wants/s@one.service");
        assert_eq!(
            std::fs::read_link(link).unwrap(),
            Path::new("/usr/lib/systemd/system/s@.service")
        );
        assert!(root
            .join("etc/systemd/system/x.target.requires/s@one.service")
            .symlink_metadata()
            .is_ok());
        assert!(root
            .join("etc/systemd/system/al@.service")
            .symlink_metadata()
            .is_ok());
        let err = enable(root, dir, "missing.service").unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
