//! Enabling systemd units in a tree the way `systemctl enable` does: symlinks in
//! `etc/systemd/system/<target>.wants/` (and `.requires/`, aliases) as the unit's [Install]
//! section asks, without running systemctl.

use std::path::{Path, PathBuf};

use crate::error::{io_at, Error, Result};

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Where `unit` lives in `root`, as a path relative to it.
pub fn find_unit(root: &Path, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|rel| root.join(rel).is_file())
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
}

pub fn parse_install(text: &str) -> Install {
    let mut inst = Install::default();
    let mut in_install = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let values = v.split_whitespace().map(str::to_string);
        match k.trim() {
            "WantedBy" => inst.wanted_by.extend(values),
            "RequiredBy" => inst.required_by.extend(values),
            "Alias" => inst.alias.extend(values),
            "Also" => inst.also.extend(values),
            _ => {}
        }
    }
    inst
}

/// Enable `unit` in `root`; returns the links made (relative to `root`).
pub fn enable(root: &Path, unit: &str) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    enable_inner(root, unit, &mut made, 0)?;
    Ok(made)
}

/// Where `unit` lives (relative to `root`) and its [Install] section; `verb` names the caller
/// in the error for a unit that is nowhere.
fn locate(root: &Path, unit: &str, verb: &str) -> Result<(String, Install)> {
    let rel = find_unit(root, unit).ok_or_else(|| {
        Error::input(format!(
            "unit {unit} to {verb} is in neither the packages nor the files tree (looked in {})",
            UNIT_DIRS.join(", ")
        ))
    })?;
    let path = root.join(&rel);
    let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
    Ok((rel, parse_install(&text)))
}

fn enable_inner(root: &Path, unit: &str, made: &mut Vec<PathBuf>, depth: u32) -> Result<()> {
    let (rel, inst) = locate(root, unit, "enable")?;
    if inst.wanted_by.is_empty()
        && inst.required_by.is_empty()
        && inst.alias.is_empty()
        && inst.also.is_empty()
    {
        return Err(Error::input(format!(
            "unit {unit} has no [Install] section to enable it with"
        )));
    }
    let target = PathBuf::from("/").join(&rel);
    let mut link = |linkrel: PathBuf| -> Result<()> {
        let at = root.join(&linkrel);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        if at.symlink_metadata().is_ok() {
            std::fs::remove_file(&at).map_err(io_at(&at))?;
        }
        std::os::unix::fs::symlink(&target, &at).map_err(io_at(&at))?;
        made.push(linkrel);
        Ok(())
    };
    for t in &inst.wanted_by {
        link(PathBuf::from(format!(
            "etc/systemd/system/{t}.wants/{unit}"
        )))?;
    }
    for t in &inst.required_by {
        link(PathBuf::from(format!(
            "etc/systemd/system/{t}.requires/{unit}"
        )))?;
    }
    for a in &inst.alias {
        link(PathBuf::from(format!("etc/systemd/system/{a}")))?;
    }
    if depth < 8 {
        for also in &inst.also {
            enable_inner(root, also, made, depth + 1)?;
        }
    }
    Ok(())
}

/// Disable `unit` in `root` as `systemctl disable` does: remove the links its [Install] section
/// made (`.wants/`, `.requires/`, aliases). Returns the links removed (relative to `root`); a
/// unit that was not enabled removes nothing.
pub fn disable(root: &Path, unit: &str) -> Result<Vec<PathBuf>> {
    let (_, inst) = locate(root, unit, "disable")?;
    let mut links: Vec<PathBuf> = Vec::new();
    for t in &inst.wanted_by {
        links.push(format!("etc/systemd/system/{t}.wants/{unit}").into());
    }
    for t in &inst.required_by {
        links.push(format!("etc/systemd/system/{t}.requires/{unit}").into());
    }
    for a in &inst.alias {
        links.push(format!("etc/systemd/system/{a}").into());
    }
    let mut removed = Vec::new();
    for l in links {
        let at = root.join(&l);
        if at
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&at).map_err(io_at(&at))?;
            removed.push(l);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enables_like_systemctl() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hello.service"),
            "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=hi.service\n",
        )
        .unwrap();
        let made = enable(d.path(), "hello.service").unwrap();
        assert_eq!(made.len(), 2);
        let link = d
            .path()
            .join("etc/systemd/system/multi-user.target.wants/hello.service");
        assert_eq!(
            std::fs::read_link(link).unwrap(),
            PathBuf::from("/usr/lib/systemd/system/hello.service")
        );
        assert!(d
            .path()
            .join("etc/systemd/system/hi.service")
            .symlink_metadata()
            .is_ok());
        assert!(enable(d.path(), "missing.service")
            .unwrap_err()
            .to_string()
            .contains("missing.service"));

        let removed = disable(d.path(), "hello.service").unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(d
            .path()
            .join("etc/systemd/system/multi-user.target.wants/hello.service")
            .symlink_metadata()
            .is_err());
        assert!(disable(d.path(), "hello.service").unwrap().is_empty());
        assert!(disable(d.path(), "missing.service").is_err());
    }

    /// systemctl itself, where installed, agrees on what to link.
    #[test]
    fn same_links_as_systemctl() {
        let Ok(systemctl) = crate::tool::find("systemctl") else {
            return;
        };
        let mk = || {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("usr/lib/systemd/system");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("hello.service"),
                "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            )
            .unwrap();
            d
        };
        let ours = mk();
        enable(ours.path(), "hello.service").unwrap();
        let theirs = mk();
        let st = std::process::Command::new(systemctl)
            .arg(format!("--root={}", theirs.path().display()))
            .args(["enable", "hello.service"])
            .output()
            .unwrap();
        if !st.status.success() {
            return; // systemctl without systemd around may refuse; nothing to compare then
        }
        let rel = "etc/systemd/system/multi-user.target.wants/hello.service";
        assert_eq!(
            std::fs::read_link(ours.path().join(rel)).unwrap(),
            std::fs::read_link(theirs.path().join(rel)).unwrap()
        );
    }
}
