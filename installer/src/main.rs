//! `keel-install`: the installer as a small static binary for Keel systems (live ISO/PXE and
//! installed ones). Also answers as `keel install ...` when invoked through a `keel` link.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use keel_install::cli::{self, InstallArgs};

#[derive(Parser)]
#[command(
    name = "keel-install",
    version,
    about = "Write a signed Keel disk image to a disk",
    after_help = keel_cli_support::exit::HELP
)]
struct Standalone {
    /// No progress bar and no summary (errors still go to stderr)
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    args: InstallArgs,
}

/// `keel` on a Keel system: the installer is the one subcommand it carries.
#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel on a running system (the full CLI runs on build hosts)",
    after_help = keel_cli_support::exit::HELP
)]
struct AsKeel {
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: KeelCommand,
}

#[derive(Subcommand)]
enum KeelCommand {
    /// Write a signed Keel disk image to a disk
    Install(InstallArgs),
}

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let called_keel = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "keel");
    let code = if called_keel {
        let c = AsKeel::parse();
        match c.command {
            KeelCommand::Install(a) => cli::run(&a, c.quiet, None),
        }
    } else {
        let c = Standalone::parse();
        cli::run(&c.args, c.quiet, None)
    };
    keel_cli_support::exit::status(code)
}
