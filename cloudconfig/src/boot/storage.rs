//! Storage the kernel knows of but cannot show yet: a controller, disk or CD-ROM whose driver
//! udev has still to load. Only then can a seed medium still appear, and only then is waiting
//! for udev's coldplug (`udevadm settle`: every module for every device, seconds under
//! emulation) worth it. Read from sysfs: a device without a `driver` link has none bound.

use std::fs;
use std::path::Path;

/// PCI class 0x01: mass storage (IDE, SATA/AHCI, SCSI, NVMe...).
const PCI_MASS_STORAGE: &str = "0x01";
/// virtio device ids: block (2) and SCSI host (8).
const VIRTIO_STORAGE: &[&str] = &["0x0002", "0x0008"];
/// SCSI peripheral types a filesystem can be read from: disk, CD/DVD, optical, RBC.
const SCSI_STORAGE: &[&str] = &["0", "5", "7", "14"];
/// USB interface class 08: mass storage.
const USB_MASS_STORAGE: &str = "08";

/// Every storage device under `sys` (the sysfs root) that has no driver yet, as `bus device`.
pub fn waiting_for_a_driver(sys: &Path) -> Vec<String> {
    let mut waiting = Vec::new();
    let mut scan = |bus: &str, attribute: &str, is_storage: &dyn Fn(&str, &str) -> bool| {
        let Ok(entries) = fs::read_dir(sys.join("bus").join(bus).join("devices")) else {
            return;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let dir = sys.join("bus").join(bus).join("devices").join(&name);
            let value = fs::read_to_string(dir.join(attribute)).unwrap_or_default();
            if is_storage(&name, value.trim()) && !dir.join("driver").exists() {
                waiting.push(format!("{bus} {name}"));
            }
        }
    };
    scan("pci", "class", &|_, class| {
        class.starts_with(PCI_MASS_STORAGE)
    });
    scan("virtio", "device", &|_, id| VIRTIO_STORAGE.contains(&id));
    // Only SCSI devices (host:channel:target:lun), not their hosts and targets.
    scan("scsi", "type", &|name, kind| {
        name.split(':').count() == 4 && SCSI_STORAGE.contains(&kind)
    });
    scan("usb", "bInterfaceClass", &|_, class| {
        class == USB_MASS_STORAGE
    });
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn device(sys: &Path, bus: &str, name: &str, attribute: &str, value: &str, bound: bool) {
        let dir = sys.join("bus").join(bus).join("devices").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(attribute), format!("{value}\n")).unwrap();
        if bound {
            let driver = sys.join("bus").join(bus).join("drivers").join("d");
            fs::create_dir_all(&driver).unwrap();
            symlink(&driver, dir.join("driver")).unwrap();
        }
    }

    #[test]
    fn only_storage_without_a_driver_is_waited_for() {
        let sys = tempfile::tempdir().unwrap();
        let sys = sys.path();
        assert!(waiting_for_a_driver(sys).is_empty(), "no sysfs, nothing");
        // q35 under QEMU with its disks bound: nothing to wait for.
        device(sys, "pci", "0000:00:1f.2", "class", "0x010601", true);
        device(sys, "pci", "0000:00:01.0", "class", "0x030000", false);
        device(sys, "virtio", "virtio1", "device", "0x0002", true);
        device(sys, "virtio", "virtio2", "device", "0x0001", false);
        device(sys, "scsi", "host0", "type", "", false);
        device(sys, "scsi", "target0:0:0", "type", "", false);
        device(sys, "scsi", "0:0:0:0", "type", "0", true);
        device(sys, "usb", "1-1:1.0", "bInterfaceClass", "03", false);
        assert!(waiting_for_a_driver(sys).is_empty());
        // A CD-ROM before sr_mod, a virtio-scsi host and an NVMe before theirs, a USB stick.
        device(sys, "scsi", "0:0:0:1", "type", "5", false);
        device(sys, "virtio", "virtio3", "device", "0x0008", false);
        device(sys, "pci", "0000:00:04.0", "class", "0x010802", false);
        device(sys, "usb", "1-2:1.0", "bInterfaceClass", "08", false);
        assert_eq!(
            waiting_for_a_driver(sys),
            [
                "pci 0000:00:04.0",
                "virtio virtio3",
                "scsi 0:0:0:1",
                "usb 1-2:1.0"
            ]
        );
    }
}
