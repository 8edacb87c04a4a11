//! The command line: `serve`, `publish`, `promote`, `group`, `channel`. This is the binary's
//! edge (anyhow); `keel serve` calls [`run`] with the same [`Args`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server;

#[derive(Debug, Parser)]
#[command(
    name = "keel-update-server",
    version,
    about = "Keel's Omaha update service"
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
    /// Change a group's flags.
    Set {
        name: String,
        /// Offer the channel's package even when it is older than what a machine runs.
        #[arg(long)]
        allow_downgrade: Option<bool>,
    },
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

/// Run one command line.
pub fn run(args: Args) -> Result<()> {
    let config = load(&args.config)?;
    match args.command {
        Command::Serve => {
            let running = server::start(&config)?;
            eprintln!(
                "keel-update-server: serving Omaha at {}/v1/update/",
                config.public_url()
            );
            running.wait_for_signal();
        }
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
                crate::http::routes::now(),
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
                        println!(
                            "{}\tchannel={}\tallow_downgrade={}",
                            g.name, g.channel, g.allow_downgrade
                        );
                    }
                }
                GroupCommand::Create { name, channel } => {
                    store.create_group(&name, &channel)?;
                    println!("group {name} follows channel {channel}");
                }
                GroupCommand::Set {
                    name,
                    allow_downgrade,
                } => {
                    if let Some(a) = allow_downgrade {
                        store.set_allow_downgrade(&name, a)?;
                    }
                    let g = store
                        .group(&name)?
                        .with_context(|| format!("group {name} not found"))?;
                    println!(
                        "{}\tchannel={}\tallow_downgrade={}",
                        g.name, g.channel, g.allow_downgrade
                    );
                }
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
