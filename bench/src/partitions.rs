//! The partitions of a disk image as `sfdisk --json` reports them, for comparing images
//! partition by partition.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

pub fn list(image: &Path) -> Result<Vec<Partition>> {
    let json = command::stdout(Command::new("sfdisk").arg("--json").arg(image))?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .with_context(|| format!("sfdisk --json {}", image.display()))?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"]
        .as_array()
        .context("sfdisk --json: no partitions")?;
    Ok(parts
        .iter()
        .map(|p| Partition {
            name: p["name"].as_str().unwrap_or("").to_string(),
            offset: p["start"].as_u64().unwrap_or(0) * sector,
            size: p["size"].as_u64().unwrap_or(0) * sector,
        })
        .collect())
}
