//! `keel upload-ami`: the AWS SDK lives in its own binary so that building `keel` stays quick;
//! find keel-upload-ami beside this executable, else on PATH, and become it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;

const TOOL: &str = "keel-upload-ami";

#[derive(Args)]
pub struct UploadAmiArgs {
    /// Passed to keel-upload-ami as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Execs keel-upload-ami (its exit code is then the process's); returns only on failure.
pub fn run(a: &UploadAmiArgs, quiet: bool) -> i32 {
    let Some(tool) = find() else {
        eprintln!(
            "keel: error: upload-ami needs {TOOL}, which is neither next to keel nor on PATH \
             (build it with `cargo build --release -p keel-ami`, as ci/build.sh does)"
        );
        return exit::ENVIRONMENT;
    };
    let mut cmd = std::process::Command::new(&tool);
    if quiet {
        cmd.arg("--quiet");
    }
    let err = cmd.args(&a.args).exec();
    eprintln!("keel: error: cannot run {}: {err}", tool.display());
    exit::ENVIRONMENT
}

fn find() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(TOOL)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(TOOL))
                .find(|p| p.is_file())
        })
    })
}
