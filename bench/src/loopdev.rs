//! A loop device over a byte range of an image, detached on drop: lets veritysetup or e2fsck
//! work on one partition of a disk image without copying it out.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::command;

pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(image: &Path, offset: u64, size: u64, writable: bool) -> Result<LoopDevice> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if !writable {
            cmd.arg("--read-only");
        }
        let dev = command::stdout(
            cmd.arg(format!("--offset={offset}"))
                .arg(format!("--sizelimit={size}"))
                .arg(image),
        )?;
        Ok(LoopDevice {
            path: PathBuf::from(dev.trim()),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).output();
    }
}
