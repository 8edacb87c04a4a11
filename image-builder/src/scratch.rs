//! Scratch directories named after the process that owns them (`<prefix><pid>-…`), so that
//! what an interrupted build (Ctrl-C, kill) left behind can be recognised and removed by the
//! next one without touching the scratch space of a build still running.

use std::path::{Path, PathBuf};

use crate::error::{io_at, Result};

/// `<prefix><our pid>-`: the start of our scratch directory names.
pub fn own_prefix(prefix: &str) -> String {
    format!("{prefix}{}-", std::process::id())
}

/// Remove entries of `dir` named `<prefix><pid>-…` whose process no longer exists.
pub fn remove_stale(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(removed);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        std::fs::remove_dir_all(&p).map_err(io_at(&p))?;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_what_dead_processes_left() {
        let d = tempfile::tempdir().unwrap();
        let ours = d.path().join(format!("{}x", own_prefix(".s-")));
        let dead = d.path().join(".s-999999999-x");
        let other = d.path().join("keep");
        for p in [&ours, &dead, &other] {
            std::fs::create_dir(p).unwrap();
        }
        let removed = remove_stale(d.path(), ".s-").unwrap();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(ours.exists() && other.exists() && !dead.exists());
    }
}
