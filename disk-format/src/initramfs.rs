//! What the builder puts into the Keel initramfs for keel-init, and where. The builder writes
//! [`InitConfig`] as JSON at [`CONFIG_PATH`]; keel-init reads it at start.
//!
//! | path in the initramfs | what |
//! |---|---|
//! | `/init` | keel-init (static) |
//! | `/etc/keel/init.json` | [`InitConfig`] |
//! | `/etc/keel/keys/*.pem` | trusted Ed25519 public keys (SPKI PEM) |
//! | `/lib/modules/<release>/…` | the modules of [`InitConfig::modules`], uncompressed |
//! | `/dev/console`, `/dev/null` | device nodes the kernel needs before devtmpfs is mounted |
//! | `/usr.img` (PXE/ISO only) | a whole signed USR payload, booted from RAM |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const CONFIG_PATH: &str = "/etc/keel/init.json";
pub const KEYS_DIR: &str = "/etc/keel/keys";
/// A signed payload carried inside the initramfs (diskless PXE/ISO boots).
pub const EMBEDDED_PAYLOAD: &str = "/usr.img";

/// How a live initramfs reaches the machine, which decides how many copies of it are in RAM
/// while the kernel unpacks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveLoader {
    /// iPXE: under UEFI it keeps its download in boot-services memory, which Linux frees only
    /// after it has sized its root filesystem, so one more copy counts.
    Pxe,
    /// GRUB from the ISO (or any loader that keeps one copy).
    Iso,
}

/// Guest memory a live boot (PXE, ISO) needs, in MiB, for a live initramfs of
/// `initramfs_bytes`. Linux unpacks the initramfs into a tmpfs capped at half the memory it
/// manages when it creates that tmpfs, so half of (RAM − loaded copies − kernel and firmware)
/// must hold the unpacked initramfs (the payload, then the running /usr, stays there). Measured
/// with a 257 MiB initramfs under QEMU: PXE under UEFI boots from 1280 MiB (the limit lies near
/// 1170), the ISO under UEFI from 1024 (near 900), SeaBIOS from 896; this rounds
/// `copies·S + 288` up to the kernel's 128 MiB memory block, which leaves about 20 % spare
/// (1408 and 1152 MiB there). `keel build --format pxe|iso` prints it; `keel boot --pxe|--iso`
/// sizes the guest with it.
/// A module's name as the kernel and modprobe have it, from its path in `modules` (or
/// modules.dep): `kernel/drivers/md/dm-verity.ko.xz` → `dm_verity`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

pub fn live_min_ram_mib(initramfs_bytes: u64, loader: LiveLoader) -> u32 {
    // Unpacked twice over (the tmpfs cap is half), plus the loaded copies.
    let copies = match loader {
        LiveLoader::Pxe => 4,
        LiveLoader::Iso => 3,
    };
    // Kernel, firmware (OVMF keeps ~100 MiB) and the gzip'd part's growth when unpacked.
    const OVERHEAD_MIB: u64 = 288;
    let initramfs_mib = initramfs_bytes.div_ceil(1 << 20);
    let mib = copies * initramfs_mib + OVERHEAD_MIB;
    u32::try_from(mib.next_multiple_of(128)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_as_the_kernel_has_them() {
        assert_eq!(module_name("kernel/drivers/md/dm-verity.ko"), "dm_verity");
        assert_eq!(module_name("kernel/fs/erofs/erofs.ko.xz"), "erofs");
        assert_eq!(module_name("virtio_pci.ko"), "virtio_pci");
    }

    #[test]
    fn live_boot_memory_covers_what_was_measured() {
        // The metal board's live initramfs, 2026-12-01: 269,951,980 bytes.
        let measured = 269_951_980;
        assert_eq!(live_min_ram_mib(measured, LiveLoader::Pxe), 1408);
        assert!(live_min_ram_mib(measured, LiveLoader::Pxe) >= 1280);
        assert_eq!(live_min_ram_mib(measured, LiveLoader::Iso), 1152);
        assert!(live_min_ram_mib(measured, LiveLoader::Iso) >= 1024);
        assert_eq!(live_min_ram_mib(0, LiveLoader::Iso), 384);
    }
}

/// Paths inside a USR slot's filesystem (relative to /usr).
pub mod usr {
    /// Factory /etc: the lower layer of the /etc overlay.
    pub const FACTORY_ETC: &str = "share/keel/etc";
    /// Factory /var: copied to ROOT's /var on first boot.
    pub const FACTORY_VAR: &str = "share/keel/var";
    /// Release facts (KEY=value) read by keel-update.
    pub const RELEASE: &str = "share/keel/release";
    /// The public keys the running system trusts for its updates and installs (`*.pem`).
    pub const KEYS: &str = "share/keel/keys";

    /// The slot's kernel, below /usr.
    pub fn kernel(release: &str) -> String {
        format!("lib/modules/{release}/vmlinuz")
    }

    /// The Keel initramfs matching [`kernel`], below /usr.
    pub fn initramfs(release: &str) -> String {
        format!("lib/modules/{release}/keel-initramfs.img")
    }
}

/// The same paths as the running system sees them (/usr mounted).
pub mod system {
    /// Release facts of the running slot.
    pub const RELEASE_FILE: &str = "/usr/share/keel/release";
    /// Trusted public keys of the running slot.
    pub const KEYS_DIR: &str = "/usr/share/keel/keys";
}

/// Where keel-init keeps its own state on ROOT.
pub mod root {
    pub const ETC_UPPER: &str = ".keel/etc-upper";
    pub const ETC_WORK: &str = ".keel/etc-work";
    /// Exists once ROOT's /var has been populated from the factory copy.
    pub const VAR_POPULATED: &str = ".keel/var-populated";
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// `uname -r` of the kernel these modules belong to.
    pub kernel_release: String,
    /// Modules to load, in load order (dependencies first), as paths below
    /// `/lib/modules/<kernel_release>/`.
    pub modules: Vec<String>,
    /// What each of `modules` needs loaded before it (its `modules.dep` entries and `pre:`
    /// soft dependencies, among `modules`), so that independent ones load at once. Absent
    /// (initramfs of an older Keel): each module needs the ones listed before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_needs: Option<BTreeMap<String, Vec<String>>>,
    /// The modules the board names (the others in `modules` are their dependencies) → the
    /// modaliases of the PCI or virtio devices it drives, or none. keel-init loads a driver
    /// with aliases only when such a device is present, and a dependency only for a module it
    /// loads. Absent: every module loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_modules: Option<BTreeMap<String, Vec<String>>>,
    /// Disk GUID of the boot disk as built; `keel.disk=` on the command line overrides it.
    pub disk_guid: String,
    /// Program to hand off to as PID 1; `keel.init=` overrides it.
    pub hand_off: String,
    /// Keel release that built this initramfs.
    pub keel_version: String,
}
