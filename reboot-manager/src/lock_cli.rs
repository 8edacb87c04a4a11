//! locksmithctl's verbs on the etcd semaphore: `status`, `lock [ID]`, `unlock [ID]`,
//! `set-max N`, with `--group` and `--endpoint`, defaults from update.conf (`LOCKSMITHD_*`) and
//! the machine id. Output as locksmithctl prints it, or the semaphore as JSON with `--json`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use keel_coordination::store::{self, DEFAULT_ATTEMPTS};
use keel_coordination::{semaphore_key, EtcdStore, Op, Semaphore};
use keel_format::update_conf::UpdateConf;

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    pub verb: Verb,
    /// etcd endpoints, comma-separated (default: LOCKSMITHD_ENDPOINT, else locksmith's defaults)
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// The semaphore's group (default: LOCKSMITHD_GROUP, else the default semaphore)
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// Print the semaphore as JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Root of the machine whose update.conf and machine-id are read
    #[arg(long, global = true, default_value = "/", hide = true)]
    pub root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show the semaphore: available slots, max, holders
    Status,
    /// Take a slot for ID (default: this machine), with locksmith's semantics
    Lock { id: Option<String> },
    /// Free ID's slot (default: this machine): the way out for a holder that is gone
    Unlock { id: Option<String> },
    /// Set how many machines may hold the lock at once
    SetMax { max: i64 },
}

/// The semaphore said no (locksmith's own error text): exit code `REFUSED`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub fn machine_id(root: &std::path::Path) -> Result<String> {
    let path = root.join("etc/machine-id");
    let id = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string();
    if id.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(id)
}

pub fn run(args: LockArgs) -> Result<()> {
    let conf = UpdateConf::load(&args.root)?;
    let settings = Settings::from_conf(&conf)?;
    let mut etcd = settings.etcd.clone();
    if let Some(list) = &args.endpoint {
        etcd.endpoints = keel_coordination::etcd::split_endpoints(list);
    }
    let group = args.group.clone().or(settings.group.clone());
    let key = semaphore_key(group.as_deref());
    let store = EtcdStore::connect(&etcd, key.clone())?;
    let id = |given: &Option<String>| -> Result<String> {
        match given {
            Some(id) => Ok(id.clone()),
            None => machine_id(&args.root),
        }
    };
    let sem = match &args.verb {
        Verb::Status => store::status(&store).map_err(|e| anyhow::anyhow!("{key}: {e}"))?,
        Verb::Lock { id: who } => {
            let who = id(who)?;
            store::update(&store, &Op::Lock(who), DEFAULT_ATTEMPTS)
                .map_err(|e| refusal("Error locking", e))?
        }
        Verb::Unlock { id: who } => {
            let who = id(who)?;
            store::update(&store, &Op::Unlock(who), DEFAULT_ATTEMPTS)
                .map_err(|e| refusal("Error unlocking", e))?
        }
        Verb::SetMax { max } => {
            if *max < 0 {
                bail!("set-max {max}: the maximum cannot be negative");
            }
            let (old, new) = store::set_max(&store, *max)
                .map_err(|e| anyhow::anyhow!("Error setting value: {e}"))?;
            if !args.json {
                println!("Old-Max: {old}\nMax: {}", new.max);
                return Ok(());
            }
            new
        }
    };
    if args.json {
        println!("{}", sem.to_json());
    } else if matches!(args.verb, Verb::Status) {
        print_status(&sem);
    }
    Ok(())
}

fn refusal<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
    e: store::StoreError<E>,
) -> anyhow::Error {
    match e {
        store::StoreError::Lock(l) => Refused(format!("{what}: {l}")).into(),
        other => anyhow::Error::new(other).context(what.to_string()),
    }
}

fn print_status(s: &Semaphore) {
    println!("Available: {}", s.semaphore);
    println!("Max: {}", s.max);
    if !s.holders().is_empty() {
        println!("\nMACHINE ID");
        for h in s.holders() {
            println!("{h}");
        }
    }
}
