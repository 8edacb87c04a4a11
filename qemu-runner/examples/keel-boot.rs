//! `keel boot` on its own, for trying the runner before the `keel` CLI wraps it:
//! `cargo run -p keel-qemu --example keel-boot -- IMAGE [OPTIONS]`.

use clap::Parser;
use keel_qemu::{boot_command, BootArgs};

#[derive(Parser)]
#[command(name = "keel-boot")]
struct Cli {
    #[command(flatten)]
    boot: BootArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::process::exit(boot_command(&cli.boot)?);
}
