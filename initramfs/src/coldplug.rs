//! Which PCI and virtio devices the machine has, as modaliases (what udev's coldplug matches
//! against modules.alias): keel-init skips a board's driver for hardware that is not there.
//! The kernel enumerates PCI before /init runs; a virtio device's modalias follows from its PCI
//! IDs (virtio 1.x, "PCI Device Discovery"), read from its PCI modalias, so both are known
//! before any module loads.

use std::fs;
use std::path::Path;

const PCI_DEVICES: &str = "/sys/bus/pci/devices";
const PLATFORM_DEVICES: &str = "/sys/bus/platform/devices";
const VIRTIO_VENDOR: u32 = 0x1af4;
/// PCI device IDs of virtio devices: 0x1000–0x103f transitional (the virtio ID is the
/// subsystem device ID), 0x1040–0x107f modern (0x1040 + the virtio ID).
const VIRTIO_IDS: std::ops::RangeInclusive<u32> = 0x1000..=0x107f;
const VIRTIO_MODERN: u32 = 0x1040;

/// The modaliases of the PCI devices present and of the virtio devices among them; `None` when
/// PCI cannot be read or virtio devices sit on MMIO rather than PCI (then every driver loads).
pub fn present() -> Option<Vec<String>> {
    if virtio_mmio_in(Path::new(PLATFORM_DEVICES)) {
        return None;
    }
    present_in(Path::new(PCI_DEVICES))
}

/// virtio-mmio transports (QEMU's microvm, Firecracker: from ACPI as `LNRO0005:NN`, or from
/// `virtio_mmio.device=` as `virtio-mmio.N`): their devices appear only once the transport's
/// driver loads, so nothing can be ruled out beforehand.
fn virtio_mmio_in(platform_devices: &Path) -> bool {
    fs::read_dir(platform_devices).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("LNRO0005") || name.starts_with("virtio-mmio")
        })
    })
}

fn present_in(pci_devices: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(pci_devices).ok()?.flatten() {
        let Ok(alias) = fs::read_to_string(entry.path().join("modalias")) else {
            continue;
        };
        let alias = alias.trim().to_string();
        if let Some(virtio) = virtio_alias(&alias) {
            out.push(virtio);
        }
        out.push(alias);
    }
    (!out.is_empty()).then_some(out)
}

/// `pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00` → `virtio:d00000002v00001AF4`.
fn virtio_alias(pci: &str) -> Option<String> {
    let (vendor, rest) = hex_after(pci, "pci:v")?;
    let (device, rest) = hex_after(rest, "d")?;
    let (sub_vendor, rest) = hex_after(rest, "sv")?;
    let (sub_device, _) = hex_after(rest, "sd")?;
    if vendor != VIRTIO_VENDOR || !VIRTIO_IDS.contains(&device) {
        return None;
    }
    let id = if device >= VIRTIO_MODERN {
        device - VIRTIO_MODERN
    } else {
        sub_device
    };
    Some(format!("virtio:d{id:08X}v{sub_vendor:08X}"))
}

/// `tag` and the 8 hex digits after it, and what follows them.
fn hex_after<'a>(s: &'a str, tag: &str) -> Option<(u32, &'a str)> {
    let rest = s.strip_prefix(tag)?;
    let digits = rest.get(..8)?;
    Some((u32::from_str_radix(digits, 16).ok()?, &rest[8..]))
}

/// Does a modules.alias pattern match a modalias? `*` and `?` as fnmatch; a pattern with a
/// bracket expression is taken to match (the driver loads rather than be skipped wrongly).
pub fn matches(pattern: &str, alias: &str) -> bool {
    if pattern.contains('[') {
        return true;
    }
    glob(pattern.as_bytes(), alias.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_as_modules_alias_writes_them() {
        let blk = "virtio:d00000002v*";
        assert!(matches(blk, "virtio:d00000002v00001AF4"));
        assert!(!matches(blk, "virtio:d00000008v00001AF4"));
        let pci = "pci:v00001AF4d*sv*sd*bc*sc*i*";
        assert!(matches(
            pci,
            "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"
        ));
        assert!(!matches(
            pci,
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
        ));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*", ""));
        assert!(matches("pci:v[0-9]*", "anything"), "brackets: load");
    }

    fn device(dir: &Path, name: &str, modalias: &str) {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("modalias"), format!("{modalias}\n")).unwrap();
    }

    /// QEMU's q35 with a modern virtio-blk disk, a transitional virtio-scsi controller and
    /// the AHCI controller (modaliases as its sysfs shows them).
    #[test]
    fn virtio_devices_follow_from_pci_ids() {
        let t = tempfile::tempdir().unwrap();
        let blk = "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00";
        device(t.path(), "0000:00:02.0", blk);
        let scsi = "pci:v00001AF4d00001004sv00001AF4sd00000008bc01sc00i00";
        device(t.path(), "0000:00:03.0", scsi);
        let ahci = "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01";
        device(t.path(), "0000:00:1f.2", ahci);
        let mut got = present_in(t.path()).unwrap();
        got.sort();
        let mut want = vec![
            blk.to_string(),
            scsi.to_string(),
            ahci.to_string(),
            "virtio:d00000002v00001AF4".to_string(),
            "virtio:d00000008v00001AF4".to_string(),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(present_in(&t.path().join("none")), None);
        assert!(!virtio_mmio_in(t.path()));
        fs::create_dir(t.path().join("virtio-mmio.0")).unwrap();
        assert!(
            virtio_mmio_in(t.path()),
            "MMIO transports: load every driver"
        );
        assert_eq!(virtio_alias("pci:v00001AF4"), None, "cut short");
        assert_eq!(
            virtio_alias("pci:v00001AF4d00002000sv00001AF4sd00000002bc01sc00i00"),
            None
        );
    }
}
