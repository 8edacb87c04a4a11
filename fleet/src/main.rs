//! `keel-fleet` (`keel fleet`): fleetctl's verbs over etcd v3, and `agent`, the fleetd that
//! runs on every machine whose cloud-config has a `coreos.fleet` section.

#![forbid(unsafe_code)]

mod cmd;

use clap::Parser;
use keel_cli_support::exit;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel fleet: error: {e:#}");
            cmd::exit_code(&e)
        }
    };
    exit::status(code)
}
