//! Filesystems found by label, mounted read-only just long enough to read one file:
//! `blkid` (no cache: it probes every block device) finds the device, `mount -o ro` under
//! `/run/keel/cloudinit/media/LABEL`, then `umount`.

use std::path::PathBuf;
use std::process::Command;

use super::source::{Media, SourceError};

pub struct Mounter {
    /// Mount points are made under this directory.
    pub dir: PathBuf,
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
    /// The device holding a filesystem labelled `label`, if any. Block devices the kernel
    /// knows are probed directly; udev is given up to 10 s to finish first (a CD-ROM's
    /// driver is loaded by udev).
    fn find(&self, label: &str) -> Option<String> {
        let _ = run(Command::new("udevadm").args(["settle", "--timeout=10"]));
        // blkid exits 2 when nothing matches.
        let out = run(Command::new("blkid").args([
            "-c",
            "/dev/null",
            "-l",
            "-o",
            "device",
            "-t",
            &format!("LABEL={label}"),
        ]))
        .ok()?;
        out.lines().next().map(str::to_string)
    }
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
