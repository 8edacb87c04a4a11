//! Filesystems found by label, mounted read-only just long enough to read one file:
//! `blkid` (no cache: it probes every block device) finds the device, `mount -o ro` under
//! `/run/keel/cloudinit/media/LABEL`, then `umount`. Devices are probed once per boot for every
//! label a source asks about (settling and probing per label cost 46 s of a 67 s first boot
//! under TCG, bench `cloudconfig-vs-cloud-init`): first at once, and when that finds no seed
//! medium at all (no `config-2`, no `cidata`) while some storage device still waits for its
//! driver ([`super::storage`]), again after `udevadm settle`. A seed disk the kernel already
//! shows is not held up by udev's coldplug (modules for every other device loading: seconds
//! under emulation, 10-19 s of a CI boot with two TCG guests); one whose driver udev still has
//! to load (a CD-ROM's) is found after the settle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use super::source::{Media, SourceError, CONFIG_DRIVE_LABEL, NOCLOUD_LABELS};
use super::storage;

pub struct Mounter {
    /// Mount points are made under this directory.
    dir: PathBuf,
    /// (device, label) of every labelled filesystem, probed at the first lookup.
    labelled: OnceLock<Vec<(String, String)>>,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} {:?}: {}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mounter {
    pub fn new(dir: PathBuf) -> Self {
        Mounter {
            dir,
            labelled: OnceLock::new(),
        }
    }

    /// The device holding a filesystem labelled `label`, if any. The first lookup probes every
    /// block device the kernel knows; if no seed medium is among them and a storage device has
    /// no driver yet (a CD-ROM's is loaded by udev), it gives udev up to 10 s to finish and
    /// probes again.
    fn find(&self, label: &str) -> Option<String> {
        self.labelled
            .get_or_init(|| {
                let started = Instant::now();
                let found = probe();
                if found.iter().any(|(_, l)| is_seed_label(l)) {
                    eprintln!(
                        "keel-cloudinit: block devices probed in {:.2} s, a seed medium among them",
                        started.elapsed().as_secs_f64()
                    );
                    return found;
                }
                let waiting = storage::waiting_for_a_driver(Path::new("/sys"));
                if waiting.is_empty() {
                    eprintln!(
                        "keel-cloudinit: block devices probed in {:.2} s, no seed medium, and no \
                         storage device waits for a driver (udev not waited for)",
                        started.elapsed().as_secs_f64()
                    );
                    return found;
                }
                let _ = run(Command::new("udevadm").args(["settle", "--timeout=10"]));
                let settled = started.elapsed().as_secs_f64();
                let found = probe();
                eprintln!(
                    "keel-cloudinit: no seed medium at first, storage waiting for a driver ({}); \
                     udev settled after {settled:.2} s, probed again by {:.2} s",
                    waiting.join(", "),
                    started.elapsed().as_secs_f64()
                );
                found
            })
            .iter()
            .find(|(_, l)| l == label)
            .map(|(dev, _)| dev.clone())
    }
}

/// Every labelled filesystem on the block devices the kernel shows now.
fn probe() -> Vec<(String, String)> {
    // blkid exits 2 when no device has any of the tags asked for.
    run(Command::new("blkid").args(["-c", "/dev/null", "-o", "export"]))
        .map(|out| labelled_devices(&out))
        .unwrap_or_default()
}

/// A label some source reads its configuration from.
fn is_seed_label(label: &str) -> bool {
    label == CONFIG_DRIVE_LABEL || NOCLOUD_LABELS.contains(&label)
}

/// (DEVNAME, LABEL) of each device in `blkid -o export` output (blank-line separated
/// `KEY=value` blocks).
fn labelled_devices(export: &str) -> Vec<(String, String)> {
    export
        .split("\n\n")
        .filter_map(|block| {
            let value = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_string)
            };
            Some((value("DEVNAME")?, value("LABEL")?))
        })
        .collect()
}

impl Media for Mounter {
    fn read_labelled(
        &self,
        labels: &[&str],
        file: &str,
    ) -> Result<Option<(String, Vec<u8>)>, SourceError> {
        let Some((label, dev)) = labels.iter().find_map(|l| self.find(l).map(|d| (*l, d))) else {
            return Ok(None);
        };
        let at = self.dir.join(label);
        std::fs::create_dir_all(&at).map_err(|source| SourceError::Read {
            path: at.display().to_string(),
            source,
        })?;
        run(Command::new("mount")
            .args(["-o", "ro,nodev,nosuid,noexec", &dev])
            .arg(&at))
        .map_err(SourceError::Media)?;
        let read = std::fs::read(at.join(file));
        let unmounted = run(Command::new("umount").arg(&at));
        let _ = std::fs::remove_dir(&at);
        let name = format!("{dev}:{file}");
        match read {
            Ok(bytes) => {
                unmounted.map_err(SourceError::Media)?;
                Ok(Some((name, bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SourceError::Read { path: name, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_labels_are_the_sources_labels() {
        for l in ["config-2", "cidata", "CIDATA"] {
            assert!(is_seed_label(l), "{l}");
        }
        for l in ["EFI-SYSTEM", "OEM", "ROOT", "CONFIG-2", ""] {
            assert!(!is_seed_label(l), "{l}");
        }
    }

    #[test]
    fn devices_and_labels_from_blkid_export() {
        let out = "DEVNAME=/dev/vda1\nLABEL=EFI-SYSTEM\nTYPE=vfat\n\n\
                   DEVNAME=/dev/vda4\nTYPE=erofs\n\n\
                   DEVNAME=/dev/sr0\nLABEL=cidata\nTYPE=iso9660\n";
        assert_eq!(
            labelled_devices(out),
            vec![
                ("/dev/vda1".to_string(), "EFI-SYSTEM".to_string()),
                ("/dev/sr0".to_string(), "cidata".to_string()),
            ]
        );
    }
}
