//! `keel`: argument dispatch and exit codes only. Every command's arguments and `run` live in
//! the library that does the work; the exit codes are keel-cli-support's one vocabulary.

#![forbid(unsafe_code)]

mod delegate;

use clap::{Parser, Subcommand};
use keel_builder::cli::build::BuildArgs;
use keel_builder::cli::inspect::{InspectArgs, VerifyArgs};
use keel_builder::cli::keygen::KeygenArgs;
use keel_cli_support::exit;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Build, inspect, verify and boot Keel OS images",
    long_about = None,
    after_help = exit::HELP
)]
struct Cli {
    /// No progress bars and no chatter (also the case when stderr is not a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a bootable disk image (disk.raw), its update payload (usr.img) and manifest.json.
    Build(BuildArgs),
    /// Show the partitions and USR slots of a disk image or a payload.
    Inspect(InspectArgs),
    /// Check signatures, geometry, the dm-verity tree and body hash of every USR slot.
    Verify(VerifyArgs),
    /// Make a new Ed25519 signing key pair.
    Keygen(KeygenArgs),
    /// Write a signed update payload (usr.img) into the passive slot of a disk image and make
    /// it the next boot, on trial (what `keel-update apply` does on a running system).
    Apply(keel_update::cli::DiskApplyArgs),
    /// Boot an image in QEMU (UEFI through OVMF by default) and watch its serial console.
    Boot(keel_qemu::BootArgs),
    /// Write a signed disk image (file or http(s) URL) to a disk, checking its signature
    /// (IMAGE.sig) while streaming; moves the backup GPT to the disk's end and grows ROOT.
    Install(keel_install::cli::InstallArgs),
    /// Check a cloud-config (coreos-cloudinit's language) before deploying it: errors and
    /// warnings with their lines; exit 0 valid, 3 errors found, 2 unreadable.
    ValidateConfig(keel_cloudconfig::cli::ValidateArgs),
    /// Upload disk.raw as an EBS snapshot and register it as an AMI (runs keel-upload-ami;
    /// `keel upload-ami --help` for its options).
    #[command(disable_help_flag = true)]
    UploadAmi(delegate::PassThrough),
    /// Run the Omaha update server (runs `keel-update-server serve`; `keel serve --help` for
    /// its options).
    #[command(disable_help_flag = true)]
    Serve(delegate::PassThrough),
    /// Run a FleetLock server over the etcd reboot semaphore (runs `keel-reboot-manager
    /// lockd`; `keel lockd --help` for its options).
    #[command(disable_help_flag = true)]
    Lockd(delegate::PassThrough),
    /// fleetctl's verbs for cluster-wide units on etcd (runs keel-fleet; `keel fleet --help`
    /// for its commands).
    #[command(disable_help_flag = true)]
    Fleet(delegate::PassThrough),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet = cli.quiet;
    exit::status(match &cli.command {
        Command::Build(a) => keel_builder::cli::build::run(a, quiet),
        Command::Inspect(a) => keel_builder::cli::inspect::run_inspect(a),
        Command::Verify(a) => keel_builder::cli::inspect::run_verify(a, quiet),
        Command::Keygen(a) => keel_builder::cli::keygen::run(a),
        Command::Apply(a) => keel_update::cli::run_disk_apply(a, quiet),
        Command::Boot(a) => keel_qemu::run(a),
        // On the build host the development key is the last resort after --key and the
        // system's keys (installer/README.md).
        Command::Install(a) => {
            keel_install::cli::run(a, quiet, keel_builder::keys::dev_public_key())
        }
        Command::ValidateConfig(a) => keel_cloudconfig::cli::run(a, "keel validate-config"),
        Command::UploadAmi(a) => delegate::run(&delegate::UPLOAD_AMI, a, quiet),
        Command::Serve(a) => delegate::run(&delegate::UPDATE_SERVER, a, quiet),
        Command::Lockd(a) => delegate::run(&delegate::LOCKD, a, quiet),
        Command::Fleet(a) => delegate::run(&delegate::FLEET, a, quiet),
    })
}
