use clap::Parser;

fn main() -> anyhow::Result<()> {
    keel_update_server::run(keel_update_server::Args::parse())
}
