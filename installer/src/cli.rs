//! The `install` command line, shared by `keel install` (the host CLI) and the static
//! `keel-install` every Keel system ships.

use std::path::PathBuf;

use clap::Args;
use ed25519_dalek::VerifyingKey;

use keel_cli_support::exit;
use keel_cli_support::progress::Reporter;

use crate::error::InstallError;
use crate::source::Location;
use crate::{install, trust, Options};

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The disk image: a disk.raw path or an http(s):// URL (streamed, never held in memory)
    #[arg(long)]
    pub image: String,
    /// Its detached signature [default: IMAGE.sig beside the image]
    #[arg(long)]
    pub signature: Option<String>,
    /// The whole disk to write (e.g. /dev/sdb); everything on it is replaced
    #[arg(long)]
    pub device: PathBuf,
    /// A `#cloud-config` YAML file, put on the OEM partition as /oem/cloud-config.yml
    #[arg(long)]
    pub cloud_config: Option<PathBuf>,
    /// Trusted public key (SPKI PEM, or a directory of them), repeatable
    /// [default: /usr/share/keel/keys on a Keel system, and the development key]
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// Run the command; `fallback` is the key trusted when neither --key nor system keys exist.
/// Returns the exit code; messages go to stdout (results) and stderr (errors).
pub fn run(a: &InstallArgs, quiet: bool, fallback: Option<(PathBuf, VerifyingKey)>) -> i32 {
    match try_run(a, quiet, fallback) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("keel install: error: {e}");
            e.exit_code()
        }
    }
}

fn try_run(
    a: &InstallArgs,
    quiet: bool,
    fallback: Option<(PathBuf, VerifyingKey)>,
) -> Result<(), InstallError> {
    let trusted = trust::resolve(&a.keys, fallback)?;
    let opts = Options {
        image: Location::parse(&a.image),
        signature: a.signature.as_deref().map(Location::parse),
        device: a.device.clone(),
        cloud_config: a.cloud_config.clone(),
        trusted,
    };
    let r = install(&opts, &Reporter::new(quiet || a.json))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serializable")
        );
    } else if !quiet {
        println!(
            "installed Keel {} ({}) on {} in {:.0}s",
            r.usr_a.version, r.usr_a.channel, r.device, r.seconds
        );
        println!(
            "  image {} ({} MiB, sha256 {}, signed by key {})",
            r.image,
            r.image_bytes >> 20,
            r.sha256,
            r.key_id
        );
        if r.layout.relocated {
            println!(
                "  disk {} MiB: backup GPT moved to its end, ROOT {} to {} MiB (the filesystem grows on first boot)",
                r.disk_bytes >> 20,
                if r.layout.root_grown { "grown" } else { "kept" },
                r.layout.root_bytes >> 20
            );
        }
        if let Some(c) = &r.cloud_config {
            println!("  cloud-config at {} (OEM partition)", c.display());
        }
    }
    Ok(())
}
