//! `keel inspect` and `keel verify`: read a disk image or payload back.

use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;
use keel_cli_support::progress::Reporter;

use crate::error::Error;
use crate::{inspect, verify};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// disk.raw or usr.img
    pub image: PathBuf,
    /// Public key to check signatures with [default: the development key if there is one]
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// disk.raw or usr.img
    pub image: PathBuf,
    /// Trusted public key (SPKI PEM, or a key directory) [default: the development key]
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Pass a disk whose partition table has one damaged copy while the other is intact
    /// (keel-init rewrites the damaged copy at boot); it is still reported
    #[arg(long)]
    pub accept_repairable: bool,
}

pub fn run_inspect(a: &InspectArgs) -> i32 {
    super::finish(inspect(a))
}

fn inspect(a: &InspectArgs) -> anyhow::Result<i32> {
    let trust = super::trust_from(a.pubkey.clone())?;
    let i = inspect::inspect(&a.image, trust.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        print!("{}", inspect::render(&i));
    }
    Ok(exit::OK)
}

pub fn run_verify(a: &VerifyArgs, quiet: bool) -> i32 {
    super::finish(verify(a, quiet))
}

fn verify(a: &VerifyArgs, quiet: bool) -> anyhow::Result<i32> {
    let trust = super::trust_from(a.pubkey.clone())?.ok_or_else(|| {
        Error::input("no --pubkey given and no development key found to verify against")
    })?;
    let report = verify::verify(
        &a.image,
        &trust,
        &Reporter::new(quiet || a.json),
        a.accept_repairable,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if report.ok {
        if !a.json && !quiet {
            if let Some(h) = report.gpt.as_ref().filter(|h| !h.is_clean()) {
                for d in &h.damaged {
                    println!("partition table: {d} (accepted: repairable from the intact copy)");
                }
            }
            for s in &report.slots {
                println!("{}: ok ({})", s.slot, s.version.clone().unwrap_or_default());
                for c in &s.checks {
                    println!("  {}: {}", c.name, c.detail);
                }
            }
            for e in &report.empty_slots {
                println!("{e}: empty");
            }
        }
        return Ok(exit::OK);
    }
    for f in report.failures() {
        eprintln!("keel: verification failed: {f}");
    }
    Ok(exit::VERIFICATION)
}
