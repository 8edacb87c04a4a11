//! `keel-update`'s command line (the in-image binary is `main` over it), and `keel apply
//! --disk` ([`disk`]): the arguments and the `run`s that print results and return exit codes
//! ([`keel_cli_support::exit`]).

mod disk;
mod print;

pub use disk::{run as run_disk_apply, DiskApplyArgs};

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use keel_cli_support::progress::Reporter;

use crate::agent::check;
use crate::agent::config::AgentConfig;
use crate::agent::schedule::{after_check, next_wake, AgentState, Timing};
use crate::download::ResumePolicy;
use crate::error::{Result, UpdateError};
use crate::lifecycle;
use crate::reboot::RebootMode;
use crate::state::{Outcome, StagedUpdate, UpdateState, STATE_FILE};
use crate::{apply, health, reboot, trust, ApplyOptions, PayloadSource, Target};
use print::{print_change, print_check, print_status};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "keel-update",
    version,
    about = "Apply signed USR updates to the passive slot, mark boots good, roll back",
    after_help = keel_cli_support::exit::HELP
)]
pub struct Cli {
    /// Work on this disk image or unmounted disk instead of the running system; its running
    /// slot is the one the boot rule picks.
    #[arg(long, global = true, value_name = "PATH")]
    disk: Option<PathBuf>,
    /// Update state file (default /var/lib/keel/update-state.json for the running system,
    /// none with --disk).
    #[arg(long, global = true, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where update.conf's layers, etc/machine-id and run/reboot-required are (check, agent,
    /// mark-good).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct KeyArgs {
    /// Trust this public key (PEM); repeatable. Default: /usr/share/keel/keys/*.pem of the
    /// running system, or with --disk of the image's running slot.
    #[arg(long, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// Trust every *.pem in this directory instead of /usr/share/keel/keys.
    #[arg(long, value_name = "DIR", conflicts_with = "pubkey")]
    keys_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a payload and write it to the passive slot, then make that slot the next boot.
    Apply {
        /// Payload file, http(s) URL, or - for standard input.
        payload: String,
        #[command(flatten)]
        keys: KeyArgs,
        /// Accept a version older than or equal to the running one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Trial boots the new slot gets before keel-init falls back.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=15))]
        tries: u8,
        /// Do not hash a payload file before writing it (saves one read of the file; a bad
        /// body is then found while writing and leaves the passive slot invalidated).
        #[arg(long)]
        no_precheck: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the running and passive slot, the next boot and the last update's outcome.
    Status {
        #[command(flatten)]
        keys: KeyArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the update server (update.conf's SERVER, GROUP) now; download and stage an offered
    /// update; wait for the outcome and print it.
    Check {
        #[command(flatten)]
        keys: KeyArgs,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The update agent: check on update_engine's schedule, forever. A staged update leaves
    /// /run/reboot-required; keel-reboot-manager reboots as REBOOT_STRATEGY says.
    Agent {
        #[command(flatten)]
        keys: KeyArgs,
        /// Seconds before the first check (default 7 min ± 5, update_engine's).
        #[arg(long, hide = true)]
        first_check: Option<u64>,
        /// Seconds between checks (default 45 min ± 5; the server's PollInterval wins).
        #[arg(long, hide = true)]
        interval: Option<u64>,
    },
    /// Mark the running slot good: successful, no tries left, ranked above the other.
    MarkGood,
    /// Make the other slot the next boot (only if it verifies and was marked good before).
    Rollback {
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Reboot into the next slot: firmware reboot by default.
    Reboot {
        /// Skip the firmware: kexec the running kernel and Keel initramfs; keel-init then picks
        /// the next slot (and kexecs its kernel if it differs).
        #[arg(long, conflicts_with = "firmware")]
        kexec: bool,
        /// A full firmware reboot (the default).
        #[arg(long)]
        firmware: bool,
    },
    /// The cluster's reboot lock, locksmithctl's verbs (`status`, `lock [ID]`, `unlock [ID]`,
    /// `set-max N`, `--group G`, `--json`): `keel-reboot-manager lock ARGS`.
    #[command(disable_help_flag = true)]
    Lock {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The health gate's check: required units active and /etc/keel/health-check exits 0.
    HealthCheck,
    /// Write the health gate's systemd drop-ins (what keel-health-generator does).
    #[command(hide = true)]
    GenerateHealthGate {
        normal_dir: PathBuf,
        early_dir: Option<PathBuf>,
        late_dir: Option<PathBuf>,
    },
}

/// `keel-update ARGS`, or `keel-health-generator DIRS` (the same binary, as systemd's
/// generator): runs it and returns the exit code.
pub fn run_standalone() -> i32 {
    let argv0 = std::env::args().next().unwrap_or_default();
    let result = if Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "keel-health-generator")
    {
        // systemd runs generators as `NAME normal-dir early-dir late-dir`.
        let dir = std::env::args().nth(1).map(PathBuf::from);
        match dir {
            Some(d) => generate_health_gate(&d),
            None => Err(UpdateError::System(
                "usage: keel-health-generator NORMAL-DIR [EARLY-DIR LATE-DIR]".into(),
            )),
        }
    } else {
        run(&Cli::parse())
    };
    match result {
        Ok(()) => keel_cli_support::exit::OK,
        Err(UpdateError::Reported(code)) => code,
        Err(e) => {
            eprintln!("keel-update: {e}");
            e.exit_code()
        }
    }
}

/// The reboot manager, which owns the lock verbs (found in `PATH`: /usr/bin in the image).
const REBOOT_MANAGER: &str = "keel-reboot-manager";

fn target(cli: &Cli) -> Result<Target> {
    match &cli.disk {
        Some(d) => Ok(Target::offline(d)),
        None => Target::running_system(),
    }
}

fn state_path(cli: &Cli) -> Option<PathBuf> {
    match (&cli.state, &cli.disk) {
        (Some(s), _) => Some(s.clone()),
        (None, None) => Some(PathBuf::from(STATE_FILE)),
        (None, Some(_)) => None,
    }
}

/// `--pubkey`, `--keys-dir`, else the keys the target itself trusts: the running system's
/// /usr/share/keel/keys, or with `--disk` the same directory inside the image's running slot.
fn load_keys(k: &KeyArgs, target: &Target) -> Result<Vec<VerifyingKey>> {
    if !k.pubkey.is_empty() {
        return k.pubkey.iter().map(|p| trust::load_key(p)).collect();
    }
    match &k.keys_dir {
        Some(dir) => trust::load_dir(dir),
        None => trust::trusted_by(target),
    }
}

/// The next boot differs from this one: say so in `/run/reboot-required` (the reboot manager
/// and kured act on it). The slot change itself is done; a flag that cannot be written is
/// reported, not an error.
fn flag_reboot_required(what: &str) {
    if let Err(e) = crate::reboot_required::set(Path::new("/"), what) {
        eprintln!("keel-update: warning: cannot write /run/reboot-required: {e}");
    }
}

fn load_state(path: Option<&Path>) -> Result<UpdateState> {
    path.map_or(Ok(UpdateState::default()), UpdateState::load)
}

fn run(cli: &Cli) -> Result<()> {
    let state_file = state_path(cli);
    match &cli.command {
        Cmd::Apply {
            payload,
            keys,
            allow_downgrade,
            tries,
            no_precheck,
            json,
        } => {
            let target = target(cli)?;
            let mut opts = ApplyOptions::new(load_keys(keys, &target)?);
            opts.allow_downgrade = *allow_downgrade;
            opts.tries = *tries;
            opts.precheck_file = !no_precheck;
            // Step lines when piped: the journal (and the power-cut tests) follow them.
            let progress = Reporter::with_step_lines("keel-update", *json);
            let result = apply(PayloadSource::parse(payload), &target, &opts, &progress);
            if let Some(path) = &state_file {
                let mut state = load_state_or_empty(path);
                match &result {
                    Ok(a) => {
                        state.staged = Some(StagedUpdate {
                            version: a.version.clone(),
                            previous_version: a.previous_version.clone(),
                            slot: a.slot.clone(),
                            slot_guid: a.slot_guid,
                            time: crate::state::now(),
                        });
                        state.last = Some(Outcome::now(
                            "apply",
                            "ok",
                            format!("version {} staged on {}", a.version, a.slot),
                        ));
                    }
                    Err(e) => state.last = Some(Outcome::now("apply", "failed", e.to_string())),
                }
                save_state(&state, path);
            }
            let a = result?;
            if cli.disk.is_none() {
                flag_reboot_required(&a.version);
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&a).expect("serializes"));
            } else {
                println!(
                    "Version {} is written to {} and staged ({}); {} stays the fallback ({}).\n\
                     Reboot to boot it: keel-update reboot",
                    a.version, a.slot, a.slot_attrs, a.running_slot, a.running_attrs
                );
            }
            Ok(())
        }
        Cmd::Status { keys, json } => {
            let target = target(cli)?;
            let state = load_state(state_file.as_deref())?;
            let status = lifecycle::status(&target, &load_keys(keys, &target)?, &state)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("serializes")
                );
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Cmd::MarkGood => {
            let target = target(cli)?;
            let change = lifecycle::mark_good(&target)?;
            if let Some(path) = &state_file {
                let mut state = load_state_or_empty(path);
                let staged = state.staged.clone();
                if let Some(v) = lifecycle::record_mark_good(&target, &mut state, &change)? {
                    println!("{v}");
                    if let Some(staged) = &staged {
                        check::absorb_verdict(&mut state, staged, &v);
                    }
                }
                report_queued_events(&cli.root, &target, &mut state);
                save_state(&state, path);
            }
            print_change("marked good", &change);
            Ok(())
        }
        Cmd::Rollback { keys } => {
            let target = target(cli)?;
            let from = check::identity_version(&target).ok();
            let result = lifecycle::rollback(&target, &load_keys(keys, &target)?);
            if let Some(path) = &state_file {
                let mut state = load_state_or_empty(path);
                if let (Ok(_), Some(v)) = (&result, &from) {
                    check::record_rollback(&mut state, v);
                }
                state.last = Some(match &result {
                    Ok(c) => Outcome::now("rollback", "ok", format!("next boot is {}", c.other)),
                    Err(e) => Outcome::now("rollback", "failed", e.to_string()),
                });
                save_state(&state, path);
            }
            let change = result?;
            if cli.disk.is_none() {
                flag_reboot_required(&format!("rollback to {}", change.other));
            }
            print_change("rolled back", &change);
            println!(
                "The next boot is {}. Reboot to boot it: keel-update reboot",
                change.other
            );
            Ok(())
        }
        Cmd::Check { keys, json } => {
            let target = target(cli)?;
            let progress = Reporter::with_step_lines("keel-update", *json);
            let ctx = check_context(cli, &target, keys, &progress)?;
            let report = check::check(&ctx)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                );
            } else {
                print_check(&report);
            }
            if report.exit_code == keel_cli_support::exit::OK {
                Ok(())
            } else {
                Err(UpdateError::Reported(report.exit_code))
            }
        }
        Cmd::Agent {
            keys,
            first_check,
            interval,
        } => {
            let mut timing = Timing::default();
            if let Some(s) = first_check {
                timing.first = Duration::from_secs(*s);
                timing.first_fuzz = Duration::ZERO;
            }
            if let Some(s) = interval {
                timing.interval = Duration::from_secs(*s);
                timing.fuzz = Duration::ZERO;
            }
            run_agent(cli, keys, &timing)
        }
        Cmd::Reboot { kexec, .. } => reboot::reboot(if *kexec {
            RebootMode::Kexec
        } else {
            RebootMode::Firmware
        }),
        Cmd::Lock { args } => {
            use std::os::unix::process::CommandExt;
            // Only returns when the exec failed.
            let e = std::process::Command::new(REBOOT_MANAGER)
                .arg("lock")
                .args(args)
                .exec();
            Err(UpdateError::System(format!(
                "running {REBOOT_MANAGER} lock: {e}"
            )))
        }
        Cmd::HealthCheck => {
            let units = health::required_units(&health::default_sources())?;
            health::check(&units, Path::new(health::HEALTH_HOOK))?;
            println!(
                "healthy: {} required unit(s) active, health hook passed",
                units.len()
            );
            Ok(())
        }
        Cmd::GenerateHealthGate { normal_dir, .. } => generate_health_gate(normal_dir),
    }
}

fn check_context<'a>(
    cli: &Cli,
    target: &'a Target,
    keys: &KeyArgs,
    progress: &'a dyn keel_cli_support::progress::Progress,
) -> Result<check::CheckContext<'a>> {
    Ok(check::CheckContext {
        target,
        keys: load_keys(keys, target)?,
        config: AgentConfig::load(&cli.root)?,
        state_file: state_path(cli),
        flag_root: cli.disk.is_none().then(|| cli.root.clone()),
        resume: ResumePolicy::default(),
        progress,
    })
}

/// A number in [-1, 1] from the system's random source (0 if it fails).
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0,
        Err(_) => 0.0,
    }
}

/// `keel-update agent`: one check per wake-up, forever. Configuration and keys are read again
/// at each check, so a GROUP change applies at the next one.
fn run_agent(cli: &Cli, keys: &KeyArgs, timing: &Timing) -> Result<()> {
    let mut state = AgentState::Starting;
    let mut poll_interval = None;
    let progress = Reporter::with_step_lines("keel-update", false);
    loop {
        let wait = next_wake(state, poll_interval, timing, jitter());
        println!(
            "keel-update agent: next check in {} s ({state:?})",
            wait.as_secs()
        );
        std::thread::sleep(wait);
        let report = target(cli).and_then(|t| {
            let ctx = check_context(cli, &t, keys, &progress)?;
            check::check(&ctx).map(|r| (r, ctx.config.reboot_strategy))
        });
        let (report, strategy) = match report {
            Ok(r) => r,
            Err(e) => {
                println!("keel-update agent: check failed: {e}");
                state = AgentState::Idle;
                continue;
            }
        };
        println!(
            "keel-update agent: {}",
            serde_json::to_string(&report).expect("serializes")
        );
        if report.poll_interval.is_some() {
            poll_interval = report.poll_interval;
        }
        state = after_check(state, &report);
        if report.result == check::CheckResult::Staged {
            // One actor reboots: keel-reboot-manager (in every image) acts on
            // /run/reboot-required by REBOOT_STRATEGY, with the etcd lock or FleetLock.
            println!(
                "keel-update agent: {} is staged; keel-reboot-manager reboots into it as REBOOT_STRATEGY={} says",
                report.offered_version.as_deref().unwrap_or("the new version"),
                if strategy.is_empty() { "best-effort" } else { &strategy }
            );
        }
    }
}

/// After mark-good: deliver the queued events (3/2, or a fallback's 3/0) if update.conf names
/// a server; otherwise, or if it cannot be reached, they wait for the next check.
fn report_queued_events(root: &Path, target: &Target, state: &mut UpdateState) {
    if state.pending_events.is_empty() {
        return;
    }
    let Ok(config) = AgentConfig::load(root) else {
        return;
    };
    match check::identity(target, &config) {
        Ok(id) => {
            let client = crate::agent::omaha::OmahaClient::new(&config.server);
            let sent = check::flush_events(&client, &id, state);
            if !sent.is_empty() {
                println!("reported to {}: {}", config.server, sent.join(", "));
            }
        }
        Err(e) => eprintln!("keel-update: warning: events stay queued: {e}"),
    }
}

fn load_state_or_empty(path: &Path) -> UpdateState {
    UpdateState::load(path).unwrap_or_else(|e| {
        eprintln!("keel-update: warning: {e}; starting a new state file");
        UpdateState::default()
    })
}

/// The slots are what counts; a state file that cannot be written is reported, not fatal.
fn save_state(state: &UpdateState, path: &Path) {
    if let Err(e) = state.save(path) {
        eprintln!("keel-update: warning: {e}");
    }
}

/// The generator: never fails the boot; a slot whose state cannot be read counts as on trial.
fn generate_health_gate(dir: &Path) -> Result<()> {
    let proven = match running_slot_proven() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keel-health-generator: cannot tell whether the running slot is proven, treating it as on trial: {e}");
            false
        }
    };
    let units = health::required_units(&health::default_sources())?;
    health::generate(dir, &units, proven)?;
    Ok(())
}

fn running_slot_proven() -> Result<bool> {
    let target = Target::running_system()?;
    let mut disk = crate::disk::Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = crate::slots::find_slots(&table, target.running, &disk.path)?;
    Ok(slots.running.slot_attrs().successful)
}
