//! The `validate-config` command line, shared by `keel validate-config` (the host CLI) and the
//! `keel-validate-config` binary an image can ship: check a cloud-config before deploying it.

use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;

use crate::Document;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The user-data file (#cloud-config, or a #! script).
    pub file: PathBuf,
    /// Print the report as JSON instead of FILE:LINE: kind: message lines.
    #[arg(long)]
    pub json: bool,
}

/// Validates the file, prints the report (stdout) and the verdict (stderr); returns the exit
/// code: 0 valid (warnings allowed), [`exit::VERIFICATION`] errors found, [`exit::USAGE`] an
/// unreadable file.
pub fn run(args: &ValidateArgs, program: &str) -> i32 {
    let report = match crate::validate_file(&args.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: {e}");
            return exit::USAGE;
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
        let verdict = match (report.has_errors(), report.document) {
            (true, _) => "invalid",
            (false, Document::Script) => "a #! script (run once at first boot; not validated)",
            (false, Document::Ignition) => "an Ignition config (not cloud-config; not validated)",
            (false, Document::Empty) => "empty (nothing to apply)",
            (false, _) => "valid",
        };
        eprintln!("{}: {verdict}", report.file);
    }
    if report.has_errors() {
        exit::VERIFICATION
    } else {
        exit::OK
    }
}
