//! A read-only loop device over a byte range of an image, detached on drop: lets veritysetup
//! check one partition of a disk image without copying it out.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::command;

pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(image: &Path, offset: u64, size: u64) -> Result<LoopDevice> {
        let dev = command::stdout(
            Command::new("losetup")
                .args(["--find", "--show", "--read-only"])
                .arg(format!("--offset={offset}"))
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
