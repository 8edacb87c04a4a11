//! The Debian tree `keel build` caches (/var/cache/keel/rootfs/<key>/): the source of the /usr
//! tree and the kernel the benchmarks use.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The newest cached tree that has a /usr and a kernel in /boot.
pub fn cached_tree() -> Result<PathBuf> {
    let cache = Path::new(keel_builder::rootfs_cache::DEFAULT_CACHE);
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(cache) {
        for e in entries.flatten() {
            let p = e.path();
            if p.join("usr").is_dir() && kernel_in(&p).is_some() {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((t, p));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no rootfs cache with /usr and /boot/vmlinuz-* under {}: run `keel build` once",
            cache.display()
        ),
    }
}

/// The cached tree whose kernel is byte-for-byte `kernel` (the one an image was built with):
/// the cache may hold trees of other boards or suites, newer than the image.
pub fn cached_tree_with_kernel(kernel: &Path) -> Result<PathBuf> {
    let cache = Path::new(keel_builder::rootfs_cache::DEFAULT_CACHE);
    let wanted = std::fs::read(kernel)?;
    let mut seen = Vec::new();
    if let Ok(entries) = std::fs::read_dir(cache) {
        for e in entries.flatten() {
            let p = e.path();
            if let (true, Some((k, _))) = (p.join("usr").is_dir(), kernel_in(&p)) {
                if std::fs::read(&k).is_ok_and(|b| b == wanted) {
                    return Ok(p);
                }
                seen.push(k.display().to_string());
            }
        }
    }
    bail!(
        "no rootfs cache under {} has the image's kernel {} (kernels there: {}): rebuild the \
         image from the current rootfs cache",
        cache.display(),
        kernel.display(),
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    )
}

/// `/boot/vmlinuz-<release>` of a tree and its release.
pub fn kernel_in(tree: &Path) -> Option<(PathBuf, String)> {
    let boot = tree.join("boot");
    let mut kernels: Vec<(PathBuf, String)> = std::fs::read_dir(boot)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-")
                .map(|r| (e.path(), r.to_string()))
        })
        .collect();
    kernels.sort();
    kernels.pop()
}
