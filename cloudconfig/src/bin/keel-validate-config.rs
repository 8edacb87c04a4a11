//! `keel-validate-config FILE [--json]`: check a cloud-config before deploying it. Exit codes
//! are every Keel command's (`--help`): 0 valid (warnings allowed), 3 errors found, 2 usage
//! error or unreadable file.

use clap::Parser;
use keel_cli_support::exit;
use keel_cloudconfig::cli::{run, ValidateArgs};

#[derive(Parser)]
#[command(
    name = "keel-validate-config",
    about = "Validate a cloud-config (coreos-cloudinit's language) the way Keel will read it at boot",
    after_help = exit::HELP
)]
struct Cli {
    #[command(flatten)]
    args: ValidateArgs,
}

fn main() -> std::process::ExitCode {
    exit::status(run(&Cli::parse().args, "keel-validate-config"))
}
