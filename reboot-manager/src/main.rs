//! `keel-reboot-manager`: `run` (the daemon, one run per boot), `status` (what it is doing and
//! why), `lock …` (locksmithctl's verbs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keel_cli_support::exit;
use keel_format::update_conf::UpdateConf;
use keel_reboot_manager::lock_cli::{self, LockArgs};
use keel_reboot_manager::lockd::{self, LockdArgs};
use keel_reboot_manager::manager::{Clock, Manager, Timing, STATE_FILE};
use keel_reboot_manager::settings::Settings;
use keel_reboot_manager::system::System;

#[derive(Debug, Parser)]
#[command(name = "keel-reboot-manager", version, about, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Wait for a staged update and reboot by REBOOT_STRATEGY (the systemd unit runs this)
    Run(RunArgs),
    /// Print what the manager is doing and why (its state file)
    Status {
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
    /// The cluster reboot lock: status, lock, unlock, set-max (locksmithctl's verbs)
    Lock(LockArgs),
    /// A FleetLock server over the etcd semaphore (`keel lockd`)
    Lockd(LockdArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Root of the machine (update.conf, machine-id, /run files)
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Prints keel-update's status JSON
    #[arg(long, default_value = "keel-update status --json")]
    status_command: String,
    /// Reboots the machine
    #[arg(long, default_value = "keel-update reboot")]
    reboot_command: String,
    /// Seconds between looks at the update and health-gate state
    #[arg(long, default_value_t = 30)]
    poll_secs: u64,
    /// First wait after a refused lock (doubling up to --backoff-max-secs)
    #[arg(long, default_value_t = 5)]
    backoff_min_secs: u64,
    #[arg(long, default_value_t = 300)]
    backoff_max_secs: u64,
    /// Start the clock at this Unix time (tests of the reboot window)
    #[arg(long, hide = true)]
    clock_start: Option<i64>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-reboot-manager: {e:#}");
            exit::status(exit_code(&e))
        }
    }
}

/// Settings the user must fix are `USAGE` (nothing rebooted), a refused lock `REFUSED`,
/// anything else (etcd unreachable, a failing command) `FAILED`.
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<keel_reboot_manager::settings::SettingsError>()
        .is_some()
        || e.downcast_ref::<keel_format::update_conf::UpdateConfError>()
            .is_some()
    {
        exit::USAGE
    } else if e.downcast_ref::<lock_cli::Refused>().is_some() {
        exit::REFUSED
    } else {
        exit::FAILED
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => {
            let conf = UpdateConf::load(&a.root)?;
            // A wrong setting stops here, before anything could reboot.
            let settings = Settings::from_conf(&conf)?;
            let machine_id = lock_cli::machine_id(&a.root)?;
            let mut system = System::new(&a.root);
            system.status_command = a.status_command;
            system.reboot_command = a.reboot_command;
            let timing = Timing {
                poll: Duration::from_secs(a.poll_secs),
                backoff_min: Duration::from_secs(a.backoff_min_secs),
                backoff_max: Duration::from_secs(a.backoff_max_secs),
            };
            let clock = a
                .clock_start
                .map(Clock::starting_at)
                .unwrap_or(Clock::system());
            Manager::new(settings, system, machine_id, timing, clock).run();
            Ok(())
        }
        Command::Status { root } => {
            let path = root.join(STATE_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (is keel-reboot-manager running?)",
                    path.display()
                )
            })?;
            print!("{text}");
            Ok(())
        }
        Command::Lock(args) => lock_cli::run(args),
        Command::Lockd(args) => lockd::run(args),
    }
}
