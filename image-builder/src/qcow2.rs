//! The qcow2 form of a disk: `qemu-img convert -c` of disk.raw (compressed clusters, zero
//! clusters left out).

use std::path::Path;

use crate::error::Result;
use crate::tool::Tool;

pub fn convert(raw: &Path, out: &Path) -> Result<()> {
    Tool::new("qemu-img")?
        .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .run()?;
    Ok(())
}
