//! Kernel modules for the initramfs: resolving the board's module names, with their
//! dependencies (`modules.dep`) and `pre:` soft dependencies (`modules.softdep`, whose names may
//! be aliases from `modules.alias`, e.g. `crc32c`), into a load order, and decompressing `.ko.xz` / `.ko.zst` / `.ko.gz` files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    #[error("module {0:?} is neither in modules.dep nor built into the kernel (modules.builtin)")]
    Unknown(String),
    #[error("cannot decompress {path}: {why}")]
    Decompress { path: String, why: String },
}

/// Module names compare with `-` and `_` equal, as modprobe does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/fs/erofs/erofs.ko.xz` → `erofs`.
pub fn name_of(path: &str) -> String {
    keel_format::initramfs::module_name(path)
}

/// The path a module gets in the initramfs: its `modules.dep` path, uncompressed.
pub fn uncompressed_path(path: &str) -> String {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(p) = path.strip_suffix(ext) {
            return p.to_string();
        }
    }
    path.to_string()
}

#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// name → path, as listed in modules.dep
    paths: HashMap<String, String>,
    /// path → dependency paths
    deps: HashMap<String, Vec<String>>,
    builtin: HashSet<String>,
    /// name → names to load first
    softdep_pre: HashMap<String, Vec<String>>,
    /// exact (wildcard-free) alias → module names, in modules.alias order
    aliases: HashMap<String, Vec<String>>,
    /// Modules that bind to devices on a bus (an alias such as `pci:…` or `virtio:…`) → those
    /// aliases (wildcards kept).
    device_drivers: HashMap<String, Vec<String>>,
}

/// Buses whose devices are all known when keel-init loads modules: PCI is enumerated before
/// /init runs, and a virtio device's modalias follows from its PCI IDs.
const ENUMERATED_BUSES: &[&str] = &["pci", "virtio"];

/// Alias prefixes that name no device on a bus: a device node the module creates, a CPU feature.
const NOT_A_BUS: &[&str] = &["devname", "cpu"];

/// A driver's aliases when every one is on an [`ENUMERATED_BUSES`] bus, else none (load it
/// whatever is present).
fn only_enumerated(aliases: Option<&Vec<String>>) -> Vec<String> {
    let Some(aliases) = aliases else {
        return Vec::new();
    };
    let enumerated = |a: &String| {
        a.split_once(':')
            .is_some_and(|(bus, _)| ENUMERATED_BUSES.contains(&bus))
    };
    if aliases.iter().all(enumerated) {
        aliases.clone()
    } else {
        Vec::new()
    }
}

/// `pci:v00001AF4d*…` binds devices; `fs-erofs`, `crypto-crc32c`, `devname:mapper/control` do not.
fn binds_devices(alias: &str) -> bool {
    alias
        .split_once(':')
        .is_some_and(|(bus, _)| !NOT_A_BUS.contains(&bus))
}

/// What the initramfs needs: modules in load order, what each needs loaded before it, and
/// requested names that are built in.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    pub load_order: Vec<String>,
    /// path → the paths (of `load_order`) it needs loaded first: its `modules.dep` entries and
    /// its `pre:` soft dependencies.
    pub needs: BTreeMap<String, Vec<String>>,
    pub builtin: Vec<String>,
    /// The modules the board names → the device aliases keel-init checks before loading it:
    /// empty (always load) unless it drives only PCI and virtio devices.
    pub named: BTreeMap<String, Vec<String>>,
}

impl ModuleIndex {
    pub fn parse(
        modules_dep: &str,
        modules_builtin: &str,
        modules_softdep: &str,
        modules_alias: &str,
    ) -> ModuleIndex {
        let mut idx = ModuleIndex::default();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_string();
            idx.paths.insert(name_of(&path), path.clone());
            idx.deps
                .insert(path, deps.split_whitespace().map(str::to_string).collect());
        }
        for line in modules_builtin.lines() {
            let line = line.trim();
            if !line.is_empty() {
                idx.builtin.insert(name_of(line));
            }
        }
        for line in modules_softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => pre.push(normalize(w)),
                    _ => {}
                }
            }
            idx.softdep_pre
                .entry(normalize(module))
                .or_default()
                .extend(pre);
        }
        for line in modules_alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if binds_devices(alias) {
                    idx.device_drivers
                        .entry(normalize(module))
                        .or_default()
                        .push(alias.to_string());
                }
                if !alias.contains(['*', '?', '[']) {
                    idx.aliases
                        .entry(normalize(alias))
                        .or_default()
                        .push(normalize(module));
                }
            }
        }
        idx
    }

    /// Resolve `names` to module paths, dependencies before the modules that need them.
    /// A soft dependency that names an alias brings every module providing it (modprobe would
    /// try them in turn; keel-init cannot run modprobe, and the kernel cannot ask for them
    /// later, so a missing `crc32c` makes libcrc32c, and erofs after it, fail to load).
    /// Aliases built into the kernel, or provided by nothing, are skipped.
    pub fn resolve(&self, names: &[String]) -> Result<Resolved, ModulesError> {
        let mut order = Vec::new();
        let mut needs = BTreeMap::new();
        let mut builtin = Vec::new();
        let mut named = BTreeMap::new();
        // The device drivers the board names load in the board's order, each after the one
        // named before it. A bus driver and a driver for devices on it (virtio_pci, virtio_blk)
        // share no dependency, and loaded at once they probe the devices in a racing order:
        // /dev/vda and /dev/vdb swapped between boots. Everything else (dependencies,
        // filesystems, device-mapper targets) loads as soon as what it needs has loaded.
        let mut previous: Option<String> = None;
        for n in names {
            let key = normalize(n);
            if let Some(path) = self.paths.get(&key) {
                let new = !needs.contains_key(path);
                self.visit(path, &mut needs, &mut order);
                let aliases = self.device_drivers.get(&key);
                named.insert(path.clone(), only_enumerated(aliases));
                if aliases.is_none() {
                    continue;
                }
                if let (true, Some(before)) = (new, &previous) {
                    let path_needs = needs.get_mut(path).expect("visited");
                    if !path_needs.contains(before) {
                        path_needs.push(before.clone());
                    }
                }
                previous = Some(path.clone());
            } else if self.builtin.contains(&key) {
                builtin.push(n.clone());
            } else {
                return Err(ModulesError::Unknown(n.clone()));
            }
        }
        Ok(Resolved {
            load_order: order,
            needs,
            builtin,
            named,
        })
    }

    fn visit(
        &self,
        path: &str,
        needs: &mut BTreeMap<String, Vec<String>>,
        order: &mut Vec<String>,
    ) {
        if needs.contains_key(path) {
            return;
        }
        needs.insert(path.to_string(), Vec::new());
        let mut first: Vec<&String> = Vec::new();
        if let Some(pre) = self.softdep_pre.get(&name_of(path)) {
            for p in pre {
                let modules = match self.paths.get(p) {
                    Some(pp) => vec![pp],
                    None => self
                        .aliases
                        .get(p)
                        .into_iter()
                        .flatten()
                        .filter_map(|m| self.paths.get(m))
                        .collect(),
                };
                first.extend(modules);
            }
        }
        first.extend(self.deps.get(path).into_iter().flatten());
        for d in &first {
            self.visit(d, needs, order);
        }
        let mut direct: Vec<String> = Vec::new();
        for d in first {
            if !direct.contains(d) {
                direct.push(d.clone());
            }
        }
        needs.insert(path.to_string(), direct);
        order.push(path.to_string());
    }
}

/// The uncompressed contents of a module file.
pub fn decompress(path: &str, bytes: &[u8]) -> Result<Vec<u8>, ModulesError> {
    let fail = |why: String| ModulesError::Decompress {
        path: path.to_string(),
        why,
    };
    let mut out = Vec::new();
    if path.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut &bytes[..], &mut out).map_err(|e| fail(e.to_string()))?;
    } else if path.ends_with(".zst") {
        let mut d =
            ruzstd::decoding::StreamingDecoder::new(bytes).map_err(|e| fail(e.to_string()))?;
        d.read_to_end(&mut out).map_err(|e| fail(e.to_string()))?;
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?;
    } else {
        out = bytes.to_vec();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko:
kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c-intel.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n";
    const SOFTDEP: &str = "# comment\nsoftdep libcrc32c pre: crc32c-intel crypto-crc32c\n";
    const ALIAS: &str = "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n\
                         alias cpu:type:x86,ven*fea*0094* crc32c_intel\n\
                         alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                         alias virtio:d00000002v* virtio_blk\n\
                         alias devname:mapper/control dm_mod\nalias fs-erofs erofs\n";

    fn idx() -> ModuleIndex {
        ModuleIndex::parse(DEP, BUILTIN, SOFTDEP, ALIAS)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_come_first_without_duplicates() {
        let r = idx()
            .resolve(&names(&["virtio_pci", "virtio-blk", "dm_verity"]))
            .unwrap();
        let pos = |p: &str| r.load_order.iter().position(|x| x.ends_with(p)).unwrap();
        assert!(pos("/virtio.ko") < pos("/virtio_pci.ko"));
        assert!(pos("/virtio_ring.ko") < pos("/virtio_blk.ko"));
        assert!(pos("/dm-mod.ko") < pos("/dm-verity.ko.xz"));
        assert_eq!(r.load_order.len(), 8);
        let unique: HashSet<_> = r.load_order.iter().collect();
        assert_eq!(unique.len(), r.load_order.len());
        // Every module's needs come before it in the load order.
        assert_eq!(r.needs.len(), r.load_order.len());
        for (path, needs) in &r.needs {
            for n in needs {
                assert!(pos(n) < pos(path), "{n} before {path}");
            }
        }
        assert_eq!(
            r.needs["kernel/drivers/md/dm-verity.ko.xz"],
            vec![
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-mod.ko"
            ],
            "its dependencies only: a device-mapper target binds no device"
        );
    }

    /// A bus driver and a driver of its devices share no dependency: loaded at once, virtio_blk
    /// probed the second virtio disk first and named it vda. The board's order holds among the
    /// device drivers it names; the others load as soon as their dependencies have.
    #[test]
    fn device_drivers_the_board_names_load_in_its_order() {
        let r = idx()
            .resolve(&names(&["virtio_pci", "erofs", "virtio_blk"]))
            .unwrap();
        assert_eq!(
            r.needs["kernel/drivers/block/virtio_blk.ko"],
            vec![
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_pci.ko"
            ]
        );
        assert_eq!(
            r.needs["kernel/fs/erofs/erofs.ko"],
            vec!["kernel/lib/libcrc32c.ko"],
            "a filesystem waits for no device driver"
        );
        // Dependencies still load beside each other: nothing is added to them.
        assert!(r.needs["kernel/drivers/virtio/virtio_ring.ko"].is_empty());
        // A named module already loaded as another's dependency gains no need (no cycle).
        let r = idx().resolve(&names(&["erofs", "libcrc32c"])).unwrap();
        assert_eq!(
            r.needs["kernel/lib/libcrc32c.ko"],
            vec!["kernel/crypto/crc32c-intel.ko"]
        );
    }

    #[test]
    fn soft_and_builtin_dependencies() {
        let r = idx().resolve(&names(&["erofs", "ext4"])).unwrap();
        assert_eq!(
            r.load_order,
            vec![
                "kernel/crypto/crc32c-intel.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/erofs/erofs.ko"
            ]
        );
        assert_eq!(r.builtin, vec!["ext4"]);
        assert_eq!(
            r.needs["kernel/lib/libcrc32c.ko"],
            vec!["kernel/crypto/crc32c-intel.ko"],
            "the soft dependency is a dependency"
        );
        assert_eq!(
            r.needs["kernel/fs/erofs/erofs.ko"],
            vec!["kernel/lib/libcrc32c.ko"]
        );
        assert!(r.needs["kernel/crypto/crc32c-intel.ko"].is_empty());
    }

    /// Debian's generic kernel: `softdep libcrc32c pre: crc32c`, where `crc32c` is only an
    /// alias of two modules (crc32c_generic is a module there, not built in).
    #[test]
    fn soft_dependency_through_an_alias_brings_every_provider() {
        let dep = "kernel/lib/libcrc32c.ko:\nkernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\n\
                   kernel/arch/x86/crypto/crc32c-intel.ko:\nkernel/crypto/crc32c_generic.ko:\n\
                   kernel/crypto/xor.ko:\n";
        let alias = "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\n\
                     alias crc32c-* xor\nalias crypto-nothing absent_module\n";
        let softdep = "softdep libcrc32c pre: crc32c crypto-nothing\n";
        let r = ModuleIndex::parse(dep, "", softdep, alias)
            .resolve(&names(&["erofs"]))
            .unwrap();
        assert_eq!(
            r.load_order,
            vec![
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/erofs/erofs.ko"
            ]
        );
    }

    #[test]
    fn unknown_module_is_an_error() {
        assert_eq!(
            idx().resolve(&names(&["floppy"])),
            Err(ModulesError::Unknown("floppy".into()))
        );
    }

    #[test]
    fn device_drivers_are_told_by_their_aliases() {
        assert!(binds_devices("pci:v00001AF4d*sv*sd*bc*sc*i*"));
        assert!(binds_devices("virtio:d00000002v*"));
        assert!(binds_devices("scsi:t-0x00*"));
        assert!(!binds_devices("devname:mapper/control"));
        assert!(!binds_devices("cpu:type:x86,ven*fea*0094*"));
        assert!(!binds_devices("fs-erofs"));
        assert!(!binds_devices("crypto-crc32c"));
        let idx = idx();
        assert!(idx.device_drivers.contains_key("virtio_pci"));
        assert!(!idx.device_drivers.contains_key("crc32c_intel"));
        assert!(!idx.device_drivers.contains_key("dm_mod"));
    }

    #[test]
    fn named_modules_carry_the_devices_they_drive() {
        let r = idx()
            .resolve(&names(&["virtio_pci", "virtio_blk", "erofs", "ext4"]))
            .unwrap();
        assert_eq!(
            r.named["kernel/drivers/block/virtio_blk.ko"],
            vec!["virtio:d00000002v*"]
        );
        assert_eq!(
            r.named["kernel/drivers/virtio/virtio_pci.ko"],
            vec!["pci:v00001AF4d*sv*sd*bc*sc*i*"]
        );
        assert!(
            r.named["kernel/fs/erofs/erofs.ko"].is_empty(),
            "always loads"
        );
        assert_eq!(r.named.len(), 3, "dependencies and built-ins are not named");
        let usb = vec!["usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*".to_string()];
        assert!(
            only_enumerated(Some(&usb)).is_empty(),
            "USB enumerates later"
        );
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(name_of("kernel/drivers/md/dm-verity.ko.zst"), "dm_verity");
        assert_eq!(
            uncompressed_path("kernel/drivers/md/dm-verity.ko.zst"),
            "kernel/drivers/md/dm-verity.ko"
        );
    }

    /// Real compressors (xz, zstd, gzip) produce files we read back.
    #[test]
    fn decompresses_what_the_real_tools_write() {
        let d = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let f = d.path().join("m.ko");
        for (tool, ext) in [("xz", "xz"), ("zstd", "zst"), ("gzip", "gz")] {
            std::fs::write(&f, &plain).unwrap();
            let st = std::process::Command::new(tool)
                .args(["-q", "-f", "-k"])
                .arg(&f)
                .status()
                .unwrap();
            assert!(st.success());
            let packed = std::fs::read(d.path().join(format!("m.ko.{ext}"))).unwrap();
            assert_eq!(decompress(&format!("m.ko.{ext}"), &packed).unwrap(), plain);
        }
    }
}
