//! Step 2b: load the kernel modules the builder put into the initramfs. A module loads once
//! everything it needs has loaded; modules that do not need each other load at once, one
//! thread each (under emulation most of a module's load is the kernel checking its signature
//! and linking it, which two vCPUs do side by side).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use keel_format::initramfs::module_name;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

pub const MODULES_DIR: &str = "/lib/modules";

/// Load each module; already loaded (EEXIST) is fine. Failures are logged and the boot goes
/// on: a missing driver shows up later as a missing disk or an unknown filesystem, with a
/// clearer message than the module loader's.
/// `board`: the board's modules and the devices each drives (see [`wanted`]); `options`: module
/// name (`_` for `-`) → options from the kernel command line.
pub fn load_all(
    release: &str,
    modules: &[String],
    needs: Option<&BTreeMap<String, Vec<String>>>,
    board: Option<&BTreeMap<String, Vec<String>>>,
    options: &BTreeMap<String, String>,
) {
    let base = Path::new(MODULES_DIR).join(release);
    let loaded = AtomicUsize::new(0);
    let (modules, absent) = match (board, needs, crate::coldplug::present()) {
        (Some(board), Some(needs), Some(present)) => wanted(modules, needs, board, &present),
        _ => (modules.to_vec(), Vec::new()),
    };
    if !absent.is_empty() {
        crate::info!(
            "no device for {} on this machine: not loaded (udev loads a driver if its device \
             appears later)",
            absent.join(", ")
        );
    }
    let modules = &modules[..];
    let waves = waves(modules, needs);
    for wave in &waves {
        std::thread::scope(|s| {
            for m in wave {
                let (base, loaded) = (&base, &loaded);
                s.spawn(move || {
                    let path = base.join(m);
                    let opts = options.get(&module_name(m)).map_or("", String::as_str);
                    if !opts.is_empty() {
                        crate::info!("module {m}: options from the command line: {opts}");
                    }
                    match load(&path, opts) {
                        Ok(true) => {
                            loaded.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => crate::warning!("module {}: {e}", path.display()),
                    }
                });
            }
        });
    }
    crate::info!(
        "loaded {} of {} kernel modules ({} at once at most, in {} steps)",
        loaded.into_inner(),
        modules.len(),
        waves.iter().map(Vec::len).max().unwrap_or(0),
        waves.len()
    );
}

/// The modules to load, in their order, and the board's drivers left out: a driver whose
/// device aliases (`board`'s values; none means always) match none of the `present`
/// modaliases is left out, and so is a dependency that no module being loaded needs.
pub fn wanted(
    modules: &[String],
    needs: &BTreeMap<String, Vec<String>>,
    board: &BTreeMap<String, Vec<String>>,
    present: &[String],
) -> (Vec<String>, Vec<String>) {
    let absent: Vec<&String> = board
        .iter()
        .filter(|(_, aliases)| {
            !aliases.is_empty()
                && !aliases
                    .iter()
                    .any(|a| present.iter().any(|p| crate::coldplug::matches(a, p)))
        })
        .map(|(path, _)| path)
        .collect();
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = board
        .keys()
        .filter(|p| !absent.contains(p))
        .map(String::as_str)
        .collect();
    while let Some(m) = todo.pop() {
        if keep.insert(m) {
            let next = needs.get(m).into_iter().flatten();
            todo.extend(next.filter(|n| !absent.contains(n)).map(String::as_str));
        }
    }
    let load = modules
        .iter()
        .filter(|m| keep.contains(m.as_str()))
        .cloned()
        .collect();
    let absent = absent.iter().map(|p| module_name(p)).collect();
    (load, absent)
}

/// `Ok(false)`: it was loaded already.
fn load(path: &Path, options: &str) -> Result<bool, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let options = CString::new(options).map_err(|e| e.to_string())?;
    match finit_module(&f, &options, ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e @ Errno::ENOENT) => Err(format!(
            "{e} (unknown symbols: a module it depends on is missing or listed after it; the \
             kernel log names the symbols)"
        )),
        Err(e @ Errno::ENOEXEC) => Err(format!("{e} (not a module for this kernel)")),
        Err(e @ Errno::EKEYREJECTED) => Err(format!("{e} (signature rejected)")),
        Err(e) => Err(e.to_string()),
    }
}

/// `modules` in steps: everything a module needs is in an earlier step (a module's step is one
/// past the latest of its needs'; needs outside `modules`, built into the kernel, are none).
/// Without `needs` (an older builder's initramfs), or when a module needs one listed after it,
/// each module is a step of its own, in the listed order.
pub fn waves<'a>(
    modules: &'a [String],
    needs: Option<&BTreeMap<String, Vec<String>>>,
) -> Vec<Vec<&'a str>> {
    let one_by_one = || modules.iter().map(|m| vec![m.as_str()]).collect();
    let Some(needs) = needs else {
        return one_by_one();
    };
    let mut step_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<&str>> = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let mut step = 0;
        for n in needs.get(m).into_iter().flatten() {
            match step_of.get(n.as_str()) {
                Some(s) => step = step.max(s + 1),
                None if modules[i + 1..].contains(n) => return one_by_one(),
                None => {}
            }
        }
        step_of.insert(m, step);
        if waves.len() <= step {
            waves.resize_with(step + 1, Vec::new);
        }
        waves[step].push(m);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_of(v: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        v.iter().map(|(m, n)| (m.to_string(), list(n))).collect()
    }

    /// The qemu board on a machine with a virtio-blk disk and no virtio-scsi controller: the
    /// SCSI driver and the SCSI core it alone needs stay out; the board's order edge from
    /// virtio_scsi to virtio_blk does not bring it back.
    #[test]
    fn drivers_without_their_device_stay_out() {
        let modules = list(&[
            "virtio.ko",
            "virtio_pci.ko",
            "virtio_blk.ko",
            "scsi_mod.ko",
            "virtio_scsi.ko",
            "dm-mod.ko",
            "dm-verity.ko",
        ]);
        let needs = needs_of(&[
            ("virtio.ko", &[]),
            ("virtio_pci.ko", &["virtio.ko"]),
            ("virtio_blk.ko", &["virtio.ko", "virtio_pci.ko"]),
            ("scsi_mod.ko", &[]),
            (
                "virtio_scsi.ko",
                &["scsi_mod.ko", "virtio.ko", "virtio_blk.ko"],
            ),
            ("dm-mod.ko", &[]),
            ("dm-verity.ko", &["dm-mod.ko"]),
        ]);
        let board: BTreeMap<String, Vec<String>> = [
            ("virtio_pci.ko", vec!["pci:v00001AF4d*sv*sd*bc*sc*i*"]),
            ("virtio_blk.ko", vec!["virtio:d00000002v*"]),
            ("virtio_scsi.ko", vec!["virtio:d00000008v*"]),
            ("dm-verity.ko", vec![]),
        ]
        .into_iter()
        .map(|(m, a)| (m.to_string(), list(&a)))
        .collect();
        let blk_only = list(&[
            "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00",
            "virtio:d00000002v00001AF4",
        ]);
        let (load, absent) = wanted(&modules, &needs, &board, &blk_only);
        assert_eq!(
            load,
            list(&[
                "virtio.ko",
                "virtio_pci.ko",
                "virtio_blk.ko",
                "dm-mod.ko",
                "dm-verity.ko"
            ])
        );
        assert_eq!(absent, list(&["virtio_scsi"]));

        // No virtio device at all: only what always loads.
        let (load, absent) = wanted(&modules, &needs, &board, &list(&["pci:v00008086d1"]));
        assert_eq!(load, list(&["dm-mod.ko", "dm-verity.ko"]));
        assert_eq!(absent.len(), 3);

        // Both disks: everything, in order.
        let mut both = blk_only.clone();
        both.push("virtio:d00000008v00001AF4".into());
        let (load, absent) = wanted(&modules, &needs, &board, &both);
        assert_eq!(load, modules);
        assert!(absent.is_empty());
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The qemu board's 17 modules and what the builder says they need (Debian 6.1 cloud).
    #[test]
    fn independent_modules_share_a_step() {
        let modules = list(&[
            "virtio_ring.ko",
            "virtio.ko",
            "virtio_pci.ko",
            "virtio_blk.ko",
            "dm-mod.ko",
            "dm-bufio.ko",
            "dm-verity.ko",
            "crc32c-intel.ko",
            "libcrc32c.ko",
            "erofs.ko",
            "overlay.ko",
        ]);
        let needs: BTreeMap<String, Vec<String>> = [
            ("virtio_ring.ko", &[][..]),
            ("virtio.ko", &[]),
            ("virtio_pci.ko", &["virtio.ko", "virtio_ring.ko"]),
            ("virtio_blk.ko", &["virtio.ko", "virtio_ring.ko"]),
            ("dm-mod.ko", &[]),
            ("dm-bufio.ko", &["dm-mod.ko"]),
            (
                "dm-verity.ko",
                &["dm-bufio.ko", "dm-mod.ko", "reed_solomon.ko"],
            ),
            ("crc32c-intel.ko", &[]),
            ("libcrc32c.ko", &["crc32c-intel.ko"]),
            ("erofs.ko", &["libcrc32c.ko"]),
            ("overlay.ko", &[]),
        ]
        .into_iter()
        .map(|(m, n)| (m.to_string(), list(n)))
        .collect();
        assert_eq!(
            waves(&modules, Some(&needs)),
            vec![
                vec![
                    "virtio_ring.ko",
                    "virtio.ko",
                    "dm-mod.ko",
                    "crc32c-intel.ko",
                    "overlay.ko"
                ],
                vec![
                    "virtio_pci.ko",
                    "virtio_blk.ko",
                    "dm-bufio.ko",
                    "libcrc32c.ko"
                ],
                vec!["dm-verity.ko", "erofs.ko"],
            ],
            "reed_solomon.ko is not in the list (built in): it holds nothing back"
        );
    }

    #[test]
    fn without_needs_or_with_needs_out_of_order_one_at_a_time() {
        let modules = list(&["a.ko", "b.ko"]);
        assert_eq!(waves(&modules, None), vec![vec!["a.ko"], vec!["b.ko"]]);
        let backwards: BTreeMap<String, Vec<String>> =
            [("a.ko".to_string(), list(&["b.ko"]))].into();
        assert_eq!(
            waves(&modules, Some(&backwards)),
            vec![vec!["a.ko"], vec!["b.ko"]]
        );
    }
}
