//! Finding the kernel a build ships: in the Debian tree (package or local .deb) or at the paths
//! a board names, with its release read from the bzImage header.

use std::path::{Path, PathBuf};

use crate::bzimage::{self, KernelVersion};
use crate::definition::board::KernelSource;
use crate::error::{io_at, Error, Result};

pub struct Kernel {
    pub image: PathBuf,
    pub modules_dir: PathBuf,
    pub version: KernelVersion,
}

impl Kernel {
    pub fn locate(tree: &Path, source: &KernelSource) -> Result<Kernel> {
        let (image, modules_dir) = match source {
            KernelSource::Image { vmlinuz, modules } => (vmlinuz.clone(), Some(modules.clone())),
            _ => (find_vmlinuz(tree)?, None),
        };
        let bytes = std::fs::read(&image).map_err(io_at(&image))?;
        let version = bzimage::kernel_version(&bytes)
            .map_err(|e| Error::input(format!("{}: {e}", image.display())))?;
        let modules_dir = match modules_dir {
            Some(d) => d,
            None => {
                let d = tree.join("usr/lib/modules").join(&version.release);
                if !d.join("modules.dep").is_file() {
                    return Err(Error::input(format!(
                        "kernel {} has no modules in the rootfs ({} missing)",
                        version.release,
                        d.join("modules.dep").display()
                    )));
                }
                d
            }
        };
        Ok(Kernel {
            image,
            modules_dir,
            version,
        })
    }
}

/// The one kernel image in `tree/boot`.
fn find_vmlinuz(tree: &Path) -> Result<PathBuf> {
    let boot = tree.join("boot");
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&boot) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let regular = e.file_type().is_ok_and(|t| t.is_file());
            if regular && name.starts_with("vmlinuz-") {
                found.push(e.path());
            }
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::input(format!(
            "the rootfs has no kernel in {} (is the kernel package installed?)",
            boot.display()
        ))),
        _ => Err(Error::input(format!(
            "the rootfs has several kernels in {}: {}",
            boot.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
