//! `keel apply --disk IMAGE PAYLOAD` on the build host: what `keel-update apply` does on a
//! running system, to a disk image. It trusts what the image trusts (the keys in its running
//! slot) unless `--pubkey` says otherwise.

use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;
use keel_cli_support::progress::Reporter;

use crate::{apply, trust, ApplyOptions, PayloadSource, Target};

#[derive(Args, Debug)]
pub struct DiskApplyArgs {
    /// The disk image to update (not running, not attached to a loop device)
    #[arg(long)]
    pub disk: PathBuf,
    /// The payload: a usr.img file, an http(s):// URL, or - for standard input
    pub payload: String,
    /// Trusted public key (SPKI PEM), repeatable [default: the keys the image trusts,
    /// /usr/share/keel/keys in the slot it boots]
    #[arg(long)]
    pub pubkey: Vec<PathBuf>,
    /// Accept a version older than or equal to the running one
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Trial boots the new slot gets before keel-init falls back
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=15))]
    pub tries: u8,
    #[arg(long)]
    pub json: bool,
}

/// Runs `keel apply`; prints the result (stdout) or the error (stderr), returns the exit code.
pub fn run(a: &DiskApplyArgs, quiet: bool) -> i32 {
    match disk_apply(a, quiet) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("keel: error: {e}");
            e.exit_code()
        }
    }
}

fn disk_apply(a: &DiskApplyArgs, quiet: bool) -> crate::error::Result<()> {
    let target = Target::offline(&a.disk);
    let keys = if a.pubkey.is_empty() {
        trust::trusted_by(&target)?
    } else {
        a.pubkey
            .iter()
            .map(|p| trust::load_key(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut opts = ApplyOptions::new(keys);
    opts.allow_downgrade = a.allow_downgrade;
    opts.tries = a.tries;
    let progress = Reporter::new(quiet || a.json);
    let applied = apply(PayloadSource::parse(&a.payload), &target, &opts, &progress)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&applied).expect("serializes")
        );
    } else if !quiet {
        println!(
            "staged Keel {} in {} of {} (priority {}, tries {}); {} {} stays as the fallback",
            applied.version,
            applied.slot,
            a.disk.display(),
            applied.slot_attrs.priority,
            applied.slot_attrs.tries,
            applied.running_slot,
            applied.previous_version,
        );
    }
    Ok(())
}
