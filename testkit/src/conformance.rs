//! The third-party conformance material (`shared/conformance/`), read in place: it lives beside
//! the repository (at /work/main + /work/shared here, and beside the clone in CI), never in it.

use std::path::{Path, PathBuf};

/// `shared/conformance/<rel>`, found by walking up from the repository, checked to hold
/// `marker` (a file or directory inside it, or `""` for the directory itself).
pub fn dir(rel: &str, marker: &str) -> PathBuf {
    let start = crate::repo_root();
    find_above(&start, rel, marker).unwrap_or_else(|| {
        panic!(
            "shared/conformance/{rel}/{marker} not found in any directory above {}; the \
             conformance fixtures live beside the repository (../shared), never inside it",
            start.display()
        )
    })
}

fn find_above(start: &Path, rel: &str, marker: &str) -> Option<PathBuf> {
    start.ancestors().find_map(|d| {
        let candidate = d.join("shared/conformance").join(rel);
        candidate.join(marker).exists().then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_directory_above_and_nothing_that_is_not_there() {
        let t = tempfile::tempdir().unwrap();
        let omaha = t.path().join("shared/conformance/omaha");
        std::fs::create_dir_all(&omaha).unwrap();
        std::fs::write(omaha.join("INDEX.tsv"), "").unwrap();
        let repo = t.path().join("main/cli");
        std::fs::create_dir_all(&repo).unwrap();
        assert_eq!(super::find_above(&repo, "omaha", "INDEX.tsv"), Some(omaha));
        assert_eq!(super::find_above(&repo, "omaha", "missing.tsv"), None);
    }
}
