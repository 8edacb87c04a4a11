//! `keel-validate-config FILE [--json]`: check a cloud-config before deploying it.
//! Exit 0: valid (warnings allowed); 1: errors found; 2: usage error or unreadable file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "keel-validate-config",
    about = "Validate a cloud-config (coreos-cloudinit's language) the way Keel will read it at boot",
    after_help = "Exit status: 0 valid (warnings allowed), 1 errors found, 2 usage error or unreadable file."
)]
struct Args {
    /// The user-data file (#cloud-config, or a #! script).
    file: PathBuf,
    /// Print the report as JSON instead of FILE:LINE: kind: message lines.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let report = match keel_cloudconfig::validate_file(&args.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel-validate-config: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
        let verdict = match (report.has_errors(), report.document) {
            (true, _) => "invalid",
            (false, keel_cloudconfig::Document::Script) => {
                "a #! script (run once at first boot; not validated)"
            }
            (false, keel_cloudconfig::Document::Ignition) => {
                "an Ignition config (not cloud-config; not validated)"
            }
            (false, keel_cloudconfig::Document::Empty) => "empty (nothing to apply)",
            (false, _) => "valid",
        };
        eprintln!("{}: {verdict}", report.file);
    }
    ExitCode::from(u8::from(report.has_errors()))
}
