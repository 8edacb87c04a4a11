//! `keel keygen`: a new Ed25519 signing key pair.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use keel_cli_support::exit;

use crate::error::Error;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Directory for keel-signing.key (0600) and keel-signing.pub
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing key
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &KeygenArgs) -> i32 {
    super::finish(keygen(a))
}

fn keygen(a: &KeygenArgs) -> anyhow::Result<i32> {
    let key = keel_signing::Key::generate().map_err(Error::from)?;
    let (private, public) = key
        .save(&a.out, a.force)
        .map_err(Error::from)
        .with_context(|| format!("keygen into {}", a.out.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"private_key": private, "public_key": public, "key_id": key.key_id()})
        );
    } else {
        println!(
            "key id {}\n  private {}\n  public  {}",
            key.key_id(),
            private.display(),
            public.display()
        );
    }
    Ok(exit::OK)
}
