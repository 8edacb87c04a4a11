//! `keel-validate-config FILE [--json]`: check a cloud-config before deploying it.
//! Exit 0: valid (warnings allowed); 1: errors found; 2: usage error or unreadable file.

use std::process::ExitCode;

use clap::Parser;
use keel_cloudconfig::cli::{exit, run, ValidateArgs};

#[derive(Parser)]
#[command(
    name = "keel-validate-config",
    about = "Validate a cloud-config (coreos-cloudinit's language) the way Keel will read it at boot",
    after_help = "Exit status: 0 valid (warnings allowed), 1 errors found, 2 usage error or unreadable file."
)]
struct Cli {
    #[command(flatten)]
    args: ValidateArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::CANNOT_READ as u8
            } else {
                0
            });
        }
    };
    ExitCode::from(run(&cli.args, "keel-validate-config") as u8)
}
