//! Small system files: `/etc/hostname`, the `/etc/hosts` line, `/etc/keel/update.conf`.

use std::path::Path;

use super::rootfs::{self, Change};
use super::ApplyError;

pub const UPDATE_CONF: &str = "/etc/keel/update.conf";
const HOSTS_MARK: &str = "# keel cloud-config manage_etc_hosts";

pub fn hostname(root: &Path, name: &str) -> Result<Change, ApplyError> {
    if name.is_empty() || name.len() > 64 || name.contains(|c: char| c.is_whitespace() || c == '/')
    {
        return Err(ApplyError::Invalid(format!("{name:?} is not a hostname")));
    }
    let at = rootfs::resolve(root, "/etc/hostname")?;
    Ok(rootfs::write_file(
        &at,
        format!("{name}\n").as_bytes(),
        0o644,
        None,
    )?)
}

/// Keep one marked `127.0.0.1 HOSTNAME` line in `/etc/hosts` (replaced when the hostname
/// changes); every other line is kept.
pub fn etc_hosts(root: &Path, hostname: Option<&str>) -> Result<Change, ApplyError> {
    let name = match hostname {
        Some(h) => h.to_string(),
        None => {
            let at = rootfs::resolve(root, "/etc/hostname")?;
            let h = rootfs::read(&at)?.unwrap_or_default();
            let h = String::from_utf8_lossy(&h).trim().to_string();
            if h.is_empty() {
                "localhost".into()
            } else {
                h
            }
        }
    };
    let at = rootfs::resolve(root, "/etc/hosts")?;
    let old = rootfs::read(&at)?.unwrap_or_default();
    let old = String::from_utf8_lossy(&old);
    let mut text: String = old
        .lines()
        .filter(|l| !l.ends_with(HOSTS_MARK))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("127.0.0.1 {name} {HOSTS_MARK}\n"));
    Ok(rootfs::write_file(&at, text.as_bytes(), 0o644, None)?)
}

/// Set `KEY=value` lines in update.conf: an existing key's first line is replaced (later
/// duplicates dropped), a new key appended, every other line kept. 0600 once it holds a
/// password, else 0644.
pub fn update_conf(root: &Path, settings: &[(String, String)]) -> Result<Change, ApplyError> {
    for (k, v) in settings {
        if v.contains('\n') {
            return Err(ApplyError::Invalid(format!(
                "{k}: a value cannot hold a newline"
            )));
        }
    }
    let at = rootfs::resolve(root, UPDATE_CONF)?;
    let old = rootfs::read(&at)?.unwrap_or_default();
    let old = String::from_utf8_lossy(&old);
    let mut done = vec![false; settings.len()];
    let mut lines: Vec<String> = Vec::new();
    for line in old.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key.and_then(|k| settings.iter().position(|(s, _)| s == k)) {
            Some(i) if done[i] => {}
            Some(i) => {
                done[i] = true;
                lines.push(format!("{}={}", settings[i].0, settings[i].1));
            }
            None => lines.push(line.to_string()),
        }
    }
    for (i, (k, v)) in settings.iter().enumerate() {
        if !done[i] {
            lines.push(format!("{k}={v}"));
        }
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mode = if text.contains("LOCKSMITHD_ETCD_PASSWORD=") {
        0o600
    } else {
        0o644
    };
    Ok(rootfs::write_file(&at, text.as_bytes(), mode, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn update_conf_replaces_keys_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/keel")).unwrap();
        std::fs::write(
            root.join("etc/keel/update.conf"),
            "# mine\nGROUP=stable\nOTHER=1\nGROUP=dup\n",
        )
        .unwrap();
        let s = kv(&[("REBOOT_STRATEGY", "off"), ("GROUP", "beta")]);
        assert_eq!(update_conf(root, &s).unwrap(), Change::Changed);
        assert_eq!(update_conf(root, &s).unwrap(), Change::Unchanged);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/keel/update.conf")).unwrap(),
            "# mine\nGROUP=beta\nOTHER=1\nREBOOT_STRATEGY=off\n"
        );
    }

    #[test]
    fn hostname_and_hosts() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "::1 localhost\n").unwrap();
        assert_eq!(hostname(root, "core-01").unwrap(), Change::Changed);
        assert_eq!(hostname(root, "core-01").unwrap(), Change::Unchanged);
        assert!(hostname(root, "a b").is_err());
        assert_eq!(etc_hosts(root, None).unwrap(), Change::Changed);
        assert_eq!(etc_hosts(root, None).unwrap(), Change::Unchanged);
        etc_hosts(root, Some("core-02")).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
            format!("::1 localhost\n127.0.0.1 core-02 {HOSTS_MARK}\n")
        );
    }
}
