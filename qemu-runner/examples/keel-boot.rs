//! `keel boot` on its own, for trying the runner before the `keel` CLI wraps it:
//! `cargo run -p keel-qemu --example keel-boot -- IMAGE [OPTIONS]`.

use clap::Parser;
use keel_qemu::BootArgs;

#[derive(Parser)]
#[command(name = "keel-boot")]
struct Cli {
    #[command(flatten)]
    boot: BootArgs,
}

fn main() -> std::process::ExitCode {
    keel_cli_support::exit::status(keel_qemu::run(&Cli::parse().boot))
}
