//! The Debian tree a build starts from, made by mmdebstrap and cached: a directory named by
//! the SHA-256 of the rootfs definition and the kernel input, built next to its final place and
//! renamed into it, so a cache entry is either complete or absent.

use std::path::{Path, PathBuf};

use crate::definition::board::KernelSource;
use crate::definition::Rootfs;
use crate::digest;
use crate::error::{io_at, Result};
use crate::scratch;
use crate::tool::Tool;
use keel_cli_support::progress::Reporter;

pub const DEFAULT_CACHE: &str = "/var/cache/keel/rootfs";

pub struct CachedTree {
    pub dir: PathBuf,
    pub key: String,
    /// Whether the tree was already there.
    pub hit: bool,
}

/// The cache key: what went into the tree. The files overlay is applied later and is not part
/// of it.
pub fn cache_key(rootfs: &Rootfs, kernel: &KernelSource) -> Result<String> {
    let mut input = b"keel-rootfs-v1\n".to_vec();
    input.extend(std::fs::read(&rootfs.path).map_err(io_at(&rootfs.path))?);
    // Mirrors may come from the host's apt sources rather than the file.
    for m in &rootfs.mirrors {
        input.extend(format!("\nmirror:{m}").as_bytes());
    }
    match kernel {
        KernelSource::Package(p) => input.extend(format!("\nkernel-package:{p}").as_bytes()),
        KernelSource::Deb(f) => {
            let h = digest::file_sha256(f, |_| {})?;
            input.extend(format!("\nkernel-deb:{h}").as_bytes());
        }
        KernelSource::Image { .. } => input.extend(b"\nkernel-image"),
    }
    Ok(digest::sha256_hex(&input))
}

/// The cached tree for `rootfs` + `kernel`, made now if missing.
pub fn ensure(
    rootfs: &Rootfs,
    kernel: &KernelSource,
    cache: &Path,
    epoch: u64,
    reporter: &Reporter,
) -> Result<CachedTree> {
    let key = cache_key(rootfs, kernel)?;
    let dir = cache.join(&key);
    if dir.join("usr").is_dir() {
        return Ok(CachedTree {
            dir,
            key,
            hit: true,
        });
    }
    std::fs::create_dir_all(cache).map_err(io_at(cache))?;
    scratch::remove_stale(cache, ".tmp-")?;
    let tmp = cache.join(format!("{}{key}", scratch::own_prefix(".tmp-")));
    let _cleanup = RemoveOnDrop(tmp.clone());
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
    }

    let step = reporter.step(&format!(
        "mmdebstrap {} ({})",
        rootfs.suite,
        rootfs.variant.as_str()
    ));
    let mut packages = rootfs.packages.clone();
    if let KernelSource::Package(p) = kernel {
        packages.push(p.clone());
    }
    let mut t = Tool::new("mmdebstrap")?
        .arg(format!("--variant={}", rootfs.variant.as_str()))
        .arg("--quiet")
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    if !packages.is_empty() {
        t = t.arg(format!("--include={}", packages.join(",")));
    }
    for p in &rootfs.dpkg_path_excludes {
        t = t.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    for p in &rootfs.dpkg_path_includes {
        t = t.arg(format!("--dpkgopt=path-include={p}"));
    }
    t.arg(&rootfs.suite).arg(&tmp).args(&rootfs.mirrors).run()?;
    step.done("");

    if let KernelSource::Deb(deb) = kernel {
        let step = reporter.step("dpkg-deb -x kernel package");
        Tool::new("dpkg-deb")?.arg("-x").arg(deb).arg(&tmp).run()?;
        step.done("");
    }

    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build finished the same entry first: use it.
        Err(_) if dir.join("usr").is_dir() => {}
        Err(e) => return Err(io_at(&dir)(e)),
    }
    Ok(CachedTree {
        dir,
        key,
        hit: false,
    })
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Installed packages of a tree, from its dpkg status file: (name, version), sorted.
pub fn installed_packages(tree: &Path) -> Result<Vec<(String, String)>> {
    let status = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).map_err(io_at(&status))?;
    Ok(parse_dpkg_status(&text))
}

pub fn parse_dpkg_status(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(p), Some(v)) = (installed, field("Package:"), field("Version:")) {
            out.push((p, v));
        }
    }
    out.sort();
    out
}

/// A tree's kernel package: the version of `name` if installed, else of the `linux-image-*`
/// package that is.
pub fn kernel_package_version(
    packages: &[(String, String)],
    name: Option<&str>,
) -> Option<(String, String)> {
    if let Some(n) = name {
        if let Some(p) = packages.iter().find(|(p, _)| p == n) {
            return Some(p.clone());
        }
    }
    packages
        .iter()
        .find(|(p, _)| p.starts_with("linux-image-"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: linux-image-cloud-amd64\nStatus: install ok installed\nVersion: 6.1.119-1\n";
        let p = parse_dpkg_status(text);
        assert_eq!(
            p,
            vec![
                ("a".to_string(), "1.0".to_string()),
                (
                    "linux-image-cloud-amd64".to_string(),
                    "6.1.119-1".to_string()
                )
            ]
        );
        assert_eq!(
            kernel_package_version(&p, Some("linux-image-cloud-amd64"))
                .unwrap()
                .1,
            "6.1.119-1"
        );
    }

    #[test]
    fn key_depends_on_definition_and_kernel() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.yaml");
        std::fs::write(&p, "suite: bookworm\nvariant: minbase\nmirrors: [\"deb http://x bookworm main\"]\npackages: []\n").unwrap();
        let r = Rootfs::load(&p).unwrap();
        let a = cache_key(&r, &KernelSource::Package("linux-image-amd64".into())).unwrap();
        let b = cache_key(&r, &KernelSource::Package("linux-image-cloud-amd64".into())).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            cache_key(&r, &KernelSource::Package("linux-image-amd64".into())).unwrap()
        );
    }
}
