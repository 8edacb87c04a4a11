use clap::Parser;
use keel_cli_support::exit;

#[global_allocator]
static ALLOCATOR: keel_update_server::Allocator = keel_update_server::Allocator;

fn main() -> std::process::ExitCode {
    match keel_update_server::run(keel_update_server::Args::parse()) {
        Ok(()) => exit::status(exit::OK),
        Err(e) => {
            eprintln!("keel-update-server: {e:#}");
            exit::status(keel_update_server::cli::exit_code(&e))
        }
    }
}
