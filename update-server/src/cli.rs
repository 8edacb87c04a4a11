//! The command line: `serve`, `publish`, `promote`, `group`, `channel`. This is the binary's
//! edge (anyhow); `keel serve` calls [`run`] with the same [`Args`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "keel-update-server",
    version,
    about = "Keel's Omaha update service",
    after_help = keel_cli_support::exit::HELP
)]
pub struct Args {
    /// The configuration file (YAML).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/keel/update-server.yaml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// `keel serve`: only the serving part, for the `keel` CLI to embed
/// (`Serve(keel_update_server::ServeArgs) => keel_update_server::serve(args)`).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (YAML).
    #[arg(long, short, default_value = "/etc/keel/update-server.yaml")]
    pub config: PathBuf,
}

/// Serve until SIGINT/SIGTERM (`keel-update-server serve`, `keel serve`).
pub fn serve(args: ServeArgs) -> Result<()> {
    serve_config(&load(&args.config)?)
}

fn serve_config(config: &Config) -> Result<()> {
    let running = server::start(config)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "keel-update-server: listening on {scheme}://{}/ (Omaha at /v1/update/)",
        running.addr
    );
    running.wait_for_signal();
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Omaha at /v1/update/ and the published payloads until SIGINT/SIGTERM.
    Serve,
    /// Verify a signed payload (usr.img) against the trusted keys and publish it on a channel.
    Publish {
        payload: PathBuf,
        #[arg(long)]
        channel: String,
        /// Machines download the payload from this URL (the whole file's) instead of this server.
        #[arg(long)]
        url: Option<String>,
    },
    /// Point channel TO at the package channel FROM has (e.g. `promote alpha beta`).
    Promote { from: String, to: String },
    /// Groups: the Omaha track a machine sends, each following a channel.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Channels: each points at one package per application.
    #[command(subcommand)]
    Channel(ChannelCommand),
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups, their channel and flags.
    List,
    /// A new group following CHANNEL.
    Create {
        name: String,
        #[arg(long)]
        channel: String,
    },
    /// Change a group's flags and rollout policy (fields not given keep their values).
    Set {
        name: String,
        /// Offer the channel's package even when it is older than what a machine runs.
        #[arg(long)]
        allow_downgrade: Option<bool>,
        /// At most N machines granted an update per period (0: no limit).
        #[arg(long, value_name = "N")]
        max_updates: Option<u32>,
        /// The period of --max-updates, seconds.
        #[arg(long, value_name = "SECONDS")]
        period: Option<i64>,
        /// A granted update not completed within this time has timed out, seconds.
        #[arg(long, value_name = "SECONDS")]
        update_timeout: Option<i64>,
        /// Grant only Monday to Friday, 09:00 to 17:00 in --timezone.
        #[arg(long)]
        office_hours: Option<bool>,
        /// IANA time zone name, e.g. Europe/Berlin.
        #[arg(long)]
        timezone: Option<String>,
        /// Pause the group after --safe-mode-failures failed updates to the new version.
        #[arg(long)]
        safe_mode: Option<bool>,
        #[arg(long, value_name = "N")]
        safe_mode_failures: Option<u32>,
    },
    /// Stop granting updates in a group.
    Pause { name: String },
    /// Grant updates in a group again (also after safe mode paused it).
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// List channels and the package each points at.
    List,
    /// A new channel.
    Create { name: String },
}

fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

fn print_group(store: &dyn Store, name: &str) -> Result<()> {
    let g = store
        .group(name)?
        .with_context(|| format!("group {name} not found"))?;
    let p = &g.policy;
    println!(
        "{}\tchannel={}\tallow_downgrade={}\tpaused={}\tmax_updates={}/{}s\ttimeout={}s\t\
         office_hours={} ({})\tsafe_mode={} (after {} failures)",
        g.name,
        g.channel,
        g.allow_downgrade,
        p.paused,
        p.max_updates_per_period
            .map_or("unlimited".to_owned(), |n| n.to_string()),
        p.period_seconds,
        p.update_timeout_seconds,
        p.office_hours,
        p.timezone,
        p.safe_mode,
        p.safe_mode_failures
    );
    Ok(())
}

fn set_paused(store: &dyn Store, name: &str, paused: bool) -> Result<()> {
    let g = store
        .group(name)?
        .with_context(|| format!("group {name} not found"))?;
    let mut p = g.policy;
    p.paused = paused;
    store.set_policy(name, &p, if paused { "paused" } else { "resumed" })?;
    print_group(store, name)
}

/// Run one command line.
/// The shared exit-code vocabulary: a configuration file or argument to fix is `USAGE`, a
/// payload whose signature or bytes do not check out is `VERIFICATION`, anything else
/// (database, network, I/O) `FAILED`.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use keel_cli_support::exit;
    if e.downcast_ref::<crate::config::ConfigError>().is_some() {
        return exit::USAGE;
    }
    match e.downcast_ref::<crate::publish::PublishError>() {
        Some(crate::publish::PublishError::Payload(_)) => exit::VERIFICATION,
        Some(crate::publish::PublishError::Url(_)) => exit::USAGE,
        _ => exit::FAILED,
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config)?;
    match args.command {
        Command::Serve => serve_config(&config)?,
        Command::Publish {
            payload,
            channel,
            url,
        } => {
            let store = server::open_store(&config)?;
            let keys = keel_format::keys::require_keys(&config.trusted_keys)?;
            let p = crate::publish::publish(
                &*store,
                &keys,
                &config.payloads,
                &payload,
                &channel,
                url.as_deref(),
                crate::clock::now(),
            )
            .with_context(|| format!("publishing {}", payload.display()))?;
            println!(
                "published {} version {} ({} bytes, sha256 {}, key {}) on channel {channel}",
                payload.display(),
                p.version,
                p.size,
                p.sha256_hex,
                p.key_id
            );
        }
        Command::Promote { from, to } => {
            let store = server::open_store(&config)?;
            for p in store.promote(&from, &to)? {
                println!("channel {to}: {} version {}", p.app_id, p.version);
            }
        }
        Command::Group(g) => {
            let store = server::open_store(&config)?;
            match g {
                GroupCommand::List => {
                    for g in store.groups()? {
                        print_group(&*store, &g.name)?;
                    }
                }
                GroupCommand::Create { name, channel } => {
                    store.create_group(&name, &channel)?;
                    println!("group {name} follows channel {channel}");
                }
                GroupCommand::Set {
                    name,
                    allow_downgrade,
                    max_updates,
                    period,
                    update_timeout,
                    office_hours,
                    timezone,
                    safe_mode,
                    safe_mode_failures,
                } => {
                    let g = store
                        .group(&name)?
                        .with_context(|| format!("group {name} not found"))?;
                    let mut patch = serde_json::Map::new();
                    let mut put = |k: &str, v: serde_json::Value| {
                        patch.insert(k.to_owned(), v);
                    };
                    if let Some(n) = max_updates {
                        put(
                            "max_updates_per_period",
                            if n == 0 {
                                serde_json::Value::Null
                            } else {
                                n.into()
                            },
                        );
                    }
                    if let Some(v) = period {
                        put("period_seconds", v.into());
                    }
                    if let Some(v) = update_timeout {
                        put("update_timeout_seconds", v.into());
                    }
                    if let Some(v) = office_hours {
                        put("office_hours", v.into());
                    }
                    if let Some(v) = timezone {
                        put("timezone", v.into());
                    }
                    if let Some(v) = safe_mode {
                        put("safe_mode", v.into());
                    }
                    if let Some(v) = safe_mode_failures {
                        put("safe_mode_failures", v.into());
                    }
                    let policy = crate::http::api::patched_policy(&g.policy, &patch)
                        .map_err(anyhow::Error::msg)?;
                    if let Some(a) = allow_downgrade {
                        store.set_allow_downgrade(&name, a)?;
                    }
                    if !patch.is_empty() {
                        let why: Vec<String> =
                            patch.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        store.set_policy(&name, &policy, &why.join(", "))?;
                    }
                    print_group(&*store, &name)?;
                }
                GroupCommand::Pause { name } => set_paused(&*store, &name, true)?,
                GroupCommand::Resume { name } => set_paused(&*store, &name, false)?,
            }
        }
        Command::Channel(c) => {
            let store = server::open_store(&config)?;
            match c {
                ChannelCommand::List => {
                    for name in store.channels()? {
                        let p = store.channel_package(keel_omaha::KEEL_APP_ID, &name)?;
                        match p {
                            Some(p) => println!("{name}\t{}\t{}", p.version, p.sha256_hex),
                            None => println!("{name}\t-"),
                        }
                    }
                }
                ChannelCommand::Create { name } => {
                    store.create_channel(&name)?;
                    println!("channel {name} created");
                }
            }
        }
    }
    Ok(())
}
