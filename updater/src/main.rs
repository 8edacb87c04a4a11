//! `keel-update`: the updater inside every Keel USR slot (and usable on disk images); the
//! command line is the library's [`keel_update::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keel_cli_support::exit::status(keel_update::cli::run_standalone())
}
