//! `update.conf`, the file the update agent, the reboot manager and cloud-config agree on:
//! `KEY=VALUE` lines (Flatcar's format and key names: `SERVER=`, `GROUP=`, `REBOOT_STRATEGY=`,
//! `LOCKSMITHD_*`, `REBOOT_WINDOW_*`), read in layers so that the image's defaults can be
//! overridden per machine. Every value remembers the file and line it came from, so an error
//! about it can name both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The layers, lowest first: the image's defaults (in the read-only USR), Flatcar's machine
/// file (read where present, so a migrated machine keeps its settings), Keel's machine file.
pub const LAYERS: [&str; 3] = [
    "usr/share/keel/update.conf",
    "etc/flatcar/update.conf",
    "etc/keel/update.conf",
];

/// Relative to the root: exists while an update is staged and the machine has not rebooted
/// into it (`keel-update apply` writes it, `rollback` removes it, a reboot clears `/run`). The
/// reboot manager acts on it, and so does kured, which watches this very path.
pub const REBOOT_REQUIRED: &str = "run/reboot-required";

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Error)]
pub enum UpdateConfError {
    #[error("{file}:{line}: expected KEY=VALUE, found {text:?}")]
    Syntax {
        file: PathBuf,
        line: usize,
        text: String,
    },
    #[error("reading {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The merged settings: for each key, the value of the highest layer that sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateConf {
    values: BTreeMap<String, (String, Origin)>,
}

impl UpdateConf {
    /// Reads every layer under `root` (`/` on a running machine) that exists.
    pub fn load(root: &Path) -> Result<Self, UpdateConfError> {
        let mut conf = Self::default();
        for layer in LAYERS {
            let file = root.join(layer);
            match std::fs::read_to_string(&file) {
                Ok(text) => conf.merge(&file, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(UpdateConfError::Read { file, source }),
            }
        }
        Ok(conf)
    }

    /// Parses one file's text over what is already there. Blank lines and `#` comments are
    /// skipped; values may be quoted with `"` or `'` (as the shell that sources the file would
    /// strip them); a later line for the same key wins, as in a sourced shell file.
    pub fn merge(&mut self, file: &Path, text: &str) -> Result<(), UpdateConfError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(UpdateConfError::Syntax {
                    file: file.to_path_buf(),
                    line: i + 1,
                    text: raw.to_string(),
                });
            };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(UpdateConfError::Syntax {
                    file: file.to_path_buf(),
                    line: i + 1,
                    text: raw.to_string(),
                });
            }
            let origin = Origin {
                file: file.to_path_buf(),
                line: i + 1,
            };
            self.values
                .insert(key.to_string(), (unquote(value.trim()).to_string(), origin));
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// The value and where it was set.
    pub fn get_with_origin(&self, key: &str) -> Option<(&str, &Origin)> {
        self.values.get(key).map(|(v, o)| (v.as_str(), o))
    }

    /// The first of `keys` that is set (e.g. `LOCKSMITHD_REBOOT_WINDOW_START`, then
    /// `REBOOT_WINDOW_START`), with the key that matched.
    pub fn first_of<'a>(&'a self, keys: &[&'a str]) -> Option<(&'a str, &'a str, &'a Origin)> {
        keys.iter()
            .find_map(|k| self.get_with_origin(k).map(|(v, o)| (*k, v, o)))
    }
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_file_overrides_image_defaults_and_remembers_the_line() {
        let root = tempfile::tempdir().unwrap();
        let usr = root.path().join("usr/share/keel");
        let etc = root.path().join("etc/keel");
        std::fs::create_dir_all(&usr).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            usr.join("update.conf"),
            "SERVER=https://updates.example/v1/update/\nGROUP=stable\nREBOOT_STRATEGY=best-effort\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("update.conf"),
            "# machine\n\nGROUP=\"beta\"\nREBOOT_STRATEGY='etcd-lock'\n",
        )
        .unwrap();
        let conf = UpdateConf::load(root.path()).unwrap();
        assert_eq!(conf.get("GROUP"), Some("beta"));
        assert_eq!(
            conf.get("SERVER"),
            Some("https://updates.example/v1/update/")
        );
        let (v, origin) = conf.get_with_origin("REBOOT_STRATEGY").unwrap();
        assert_eq!(v, "etcd-lock");
        assert_eq!(
            origin.to_string(),
            format!("{}:4", etc.join("update.conf").display())
        );
    }

    #[test]
    fn flatcar_file_sits_between_the_two() {
        let root = tempfile::tempdir().unwrap();
        for (dir, text) in [
            ("usr/share/keel", "GROUP=stable\n"),
            ("etc/flatcar", "GROUP=alpha\nSERVER=x\n"),
            ("etc/keel", "SERVER=y\n"),
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            std::fs::write(root.path().join(dir).join("update.conf"), text).unwrap();
        }
        let conf = UpdateConf::load(root.path()).unwrap();
        assert_eq!(
            (conf.get("GROUP"), conf.get("SERVER")),
            (Some("alpha"), Some("y"))
        );
    }

    #[test]
    fn a_line_that_is_not_key_value_names_file_and_line() {
        let mut conf = UpdateConf::default();
        let err = conf
            .merge(Path::new("/etc/keel/update.conf"), "GROUP=a\nreboot now\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/keel/update.conf:2: expected KEY=VALUE, found \"reboot now\""
        );
        let err = conf
            .merge(Path::new("f"), "BAD KEY=1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f:1:"), "{err}");
    }

    #[test]
    fn first_of_prefers_the_prefixed_key() {
        let mut conf = UpdateConf::default();
        conf.merge(
            Path::new("f"),
            "REBOOT_WINDOW_START=Mon 01:00\nLOCKSMITHD_REBOOT_WINDOW_START=Thu 04:00\n",
        )
        .unwrap();
        let (k, v, o) = conf
            .first_of(&["LOCKSMITHD_REBOOT_WINDOW_START", "REBOOT_WINDOW_START"])
            .unwrap();
        assert_eq!(
            (k, v, o.line),
            ("LOCKSMITHD_REBOOT_WINDOW_START", "Thu 04:00", 2)
        );
    }
}
