//! Rootfs definitions (`rootfs/*.yaml`): the Debian suite, mirrors and packages mmdebstrap
//! installs, what dpkg leaves out, the files tree laid over the result and the units to enable.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::yaml::{self, located};
use crate::error::Result;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootfsFile {
    suite: Spanned<String>,
    variant: Variant,
    /// sources.list lines; absent: the build host's own apt sources for the suite.
    #[serde(default)]
    mirrors: Option<Spanned<Vec<String>>>,
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    dpkg_path_excludes: Vec<String>,
    #[serde(default)]
    dpkg_path_includes: Vec<String>,
    #[serde(default)]
    files: Option<Spanned<PathBuf>>,
    #[serde(default)]
    enable_units: Vec<Spanned<String>>,
    #[serde(default)]
    disable_units: Vec<Spanned<String>>,
    #[serde(default)]
    source_date_epoch: u64,
}

/// mmdebstrap's `--variant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Extract,
    Custom,
    Essential,
    Apt,
    Required,
    Minbase,
    Buildd,
    Important,
    Standard,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Extract => "extract",
            Variant::Custom => "custom",
            Variant::Essential => "essential",
            Variant::Apt => "apt",
            Variant::Required => "required",
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
            Variant::Important => "important",
            Variant::Standard => "standard",
        }
    }
}

/// A validated rootfs definition.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rootfs {
    pub path: PathBuf,
    pub suite: String,
    pub variant: Variant,
    pub mirrors: Vec<String>,
    pub packages: Vec<String>,
    pub dpkg_path_excludes: Vec<String>,
    pub dpkg_path_includes: Vec<String>,
    /// Tree laid over the installed system (only its `usr/`, `etc/` and `var/` may hold files).
    pub files: Option<PathBuf>,
    pub enable_units: Vec<String>,
    /// Units the packages enabled that the image starts only on demand (`systemctl disable`).
    pub disable_units: Vec<String>,
    pub source_date_epoch: u64,
}

fn package_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

impl Rootfs {
    pub fn load(path: &Path) -> Result<Rootfs> {
        let f: RootfsFile = yaml::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let err = |pos: serde_saphyr::Location, field: &str, msg: &str| {
            located(path, pos.into(), Some(field), msg)
        };
        if !package_ok(&f.suite.value) {
            return Err(err(f.suite.referenced, "suite", "not a Debian suite name"));
        }
        let mirrors = match &f.mirrors {
            Some(m) => {
                if m.value.is_empty() {
                    return Err(err(m.referenced, "mirrors", "list at least one mirror, or leave the field out to use this host's apt sources"));
                }
                for (i, line) in m.value.iter().enumerate() {
                    if !line.starts_with("deb ") {
                        return Err(err(
                            m.referenced,
                            &format!("mirrors[{i}]"),
                            "a mirror is a sources.list line starting with \"deb \"",
                        ));
                    }
                }
                m.value.clone()
            }
            None => {
                let host = super::apt_sources::mirrors_for(&f.suite.value, Path::new("/"));
                if host.is_empty() {
                    return Err(err(
                        f.suite.referenced,
                        "mirrors",
                        &format!(
                            "no `mirrors:` given and this host's apt sources have none for {}",
                            f.suite.value
                        ),
                    ));
                }
                host
            }
        };
        let mut packages = Vec::new();
        for (i, p) in f.packages.iter().enumerate() {
            if !package_ok(&p.value) {
                return Err(err(
                    p.referenced,
                    &format!("packages[{i}]"),
                    "not a Debian package name",
                ));
            }
            packages.push(p.value.clone());
        }
        let files = match f.files {
            None => None,
            Some(s) => {
                let dir = if s.value.is_absolute() {
                    s.value.clone()
                } else {
                    base.join(&s.value)
                };
                if !dir.is_dir() {
                    return Err(err(
                        s.referenced,
                        "files",
                        &format!("{} is not a directory", dir.display()),
                    ));
                }
                Some(dir)
            }
        };
        let unit_names = |field: &str, list: &[Spanned<String>]| -> Result<Vec<String>> {
            let mut units = Vec::new();
            for (i, u) in list.iter().enumerate() {
                let ok = u.value.contains('.')
                    && !u.value.contains('/')
                    && u.value.chars().all(|c| !c.is_whitespace());
                if !ok {
                    return Err(err(
                        u.referenced,
                        &format!("{field}[{i}]"),
                        "not a unit name (like hello.service)",
                    ));
                }
                units.push(u.value.clone());
            }
            Ok(units)
        };
        let units = unit_names("enable_units", &f.enable_units)?;
        let disabled = unit_names("disable_units", &f.disable_units)?;
        if let Some(both) = disabled.iter().find(|u| units.contains(u)) {
            let at = f.disable_units.iter().find(|u| &u.value == both).unwrap();
            return Err(err(
                at.referenced,
                "disable_units",
                &format!("{both} is in enable_units too"),
            ));
        }
        Ok(Rootfs {
            path: path.to_path_buf(),
            suite: f.suite.value,
            variant: f.variant,
            mirrors,
            packages,
            dpkg_path_excludes: f.dpkg_path_excludes,
            dpkg_path_includes: f.dpkg_path_includes,
            files,
            enable_units: units,
            disable_units: disabled,
            source_date_epoch: f.source_date_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Rootfs> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(&p, text).unwrap();
        Rootfs::load(&p)
    }

    const GOOD: &str = "\
suite: bookworm
variant: minbase
mirrors:
  - deb http://mirror.example/debian bookworm main
packages: [systemd, udev]
dpkg_path_excludes: [/usr/share/doc/*]
files: files
enable_units: [hello.service]
source_date_epoch: 1700000000
";

    #[test]
    fn good_definition_loads() {
        let r = load(GOOD).unwrap();
        assert_eq!(r.variant, Variant::Minbase);
        assert_eq!(r.packages, vec!["systemd", "udev"]);
        assert_eq!(r.source_date_epoch, 1_700_000_000);
        assert!(r.files.unwrap().ends_with("files"));
    }

    #[test]
    fn bad_values_are_located() {
        let e = load(&GOOD.replace("[systemd, udev]", "[systemd, \"Bad Name\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.yaml:5:") && e.contains("packages[1]"), "{e}");
        let e = load(&GOOD.replace("files: files", "files: nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.yaml:7:8: files: "), "{e}");
        let e = load(&GOOD.replace("variant: minbase", "variant: tiny"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.yaml:2:") && e.contains("tiny"), "{e}");
        let e = load(&GOOD.replace("source_date_epoch: 1700000000", "source_date_epoch: soon"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.yaml:9:20: source_date_epoch: "), "{e}");
        let e = load(&GOOD.replace(
            "enable_units: [hello.service]",
            "enable_units: [hello.service]\ndisable_units: [docker.service, hello.service]",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("disable_units") && e.contains("hello.service is in enable_units too"),
            "{e}"
        );
        let e = load(&GOOD.replace("enable_units: [hello.service]", "disable_units: [docker]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("disable_units[0]"), "{e}");
    }

    #[test]
    fn repository_rootfs_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                Rootfs::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
