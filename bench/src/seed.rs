//! A NoCloud seed: a small vfat filesystem labelled `cidata` holding `user-data` and
//! `meta-data`, made with the real tools (mkfs.vfat, mtools' mcopy) as a cloud would hand it
//! to a machine. Keel's keel-cloudinit and cloud-init's NoCloud datasource both find it by
//! its label.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command;

/// The label both readers look for.
pub const LABEL: &str = "cidata";

/// Write the seed `image` (replaced if present) holding `user_data`, and `meta-data` naming
/// the instance `instance_id`.
pub fn nocloud(image: &Path, user_data: &[u8], instance_id: &str) -> Result<()> {
    let _ = std::fs::remove_file(image);
    command::run(
        Command::new("mkfs.vfat")
            .args(["-n", LABEL, "-C"])
            .arg(image)
            .arg("2048"),
    )?;
    let dir = image.with_extension("files");
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let meta = format!("instance-id: {instance_id}\n");
    for (name, bytes) in [("user-data", user_data), ("meta-data", meta.as_bytes())] {
        let src = dir.join(name);
        std::fs::write(&src, bytes).with_context(|| format!("writing {}", src.display()))?;
        command::run(
            Command::new("mcopy")
                .arg("-i")
                .arg(image)
                .arg(&src)
                .arg(format!("::/{name}")),
        )?;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_the_label_and_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("seed.img");
        nocloud(&img, b"#cloud-config\nhostname: x\n", "i-1").unwrap();
        let label = command::stdout(
            Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "LABEL"])
                .arg(&img),
        )
        .unwrap();
        assert_eq!(label.trim(), LABEL);
        let read = |name: &str| {
            command::stdout(
                Command::new("mtype")
                    .arg("-i")
                    .arg(&img)
                    .arg(format!("::/{name}")),
            )
            .unwrap()
        };
        assert_eq!(read("user-data"), "#cloud-config\nhostname: x\n");
        assert_eq!(read("meta-data"), "instance-id: i-1\n");
    }
}
