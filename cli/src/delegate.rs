//! Commands whose work lives in another binary, so that building `keel` stays quick: the AWS
//! SDK (`upload-ami`), the update server's HTTP and database stack (`serve`), the etcd client
//! (`lockd`, `fleet`). Find the tool beside this executable, else on PATH, and become it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;

/// A binary `keel` hands a command over to.
pub struct Tool {
    pub name: &'static str,
    /// Arguments put before the user's (the tool's own subcommand).
    pub leading: &'static [&'static str],
    /// Whether the tool takes `--quiet`.
    pub quiet_flag: bool,
    /// How to build it, for the error when it is missing.
    pub build: &'static str,
}

pub const UPLOAD_AMI: Tool = Tool {
    name: "keel-upload-ami",
    leading: &[],
    quiet_flag: true,
    build: "cargo build --release -p keel-ami, as ci/build.sh does",
};

pub const UPDATE_SERVER: Tool = Tool {
    name: "keel-update-server",
    leading: &["serve"],
    quiet_flag: false,
    build: "cargo build --release -p keel-update-server, as ci/build.sh does",
};

pub const LOCKD: Tool = Tool {
    name: "keel-reboot-manager",
    leading: &["lockd"],
    quiet_flag: false,
    build: "cargo build --release -p keel-reboot-manager, as ci/build.sh does",
};

pub const FLEET: Tool = Tool {
    name: "keel-fleet",
    leading: &[],
    quiet_flag: false,
    build: "cargo build --release -p keel-fleet, as ci/build.sh does",
};

#[derive(Args)]
pub struct PassThrough {
    /// Passed to the tool as they are (`--help` shows the tool's own options).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Execs the tool (its exit code is then the process's); returns only on failure.
pub fn run(tool: &Tool, a: &PassThrough, quiet: bool) -> i32 {
    let Some(path) = find(tool.name) else {
        eprintln!(
            "keel: error: this command needs {}, which is neither next to keel nor on PATH \
             (build it with `{}`)",
            tool.name, tool.build
        );
        return exit::ENVIRONMENT;
    };
    let mut cmd = std::process::Command::new(&path);
    cmd.args(tool.leading);
    if quiet && tool.quiet_flag {
        cmd.arg("--quiet");
    }
    let err = cmd.args(&a.args).exec();
    eprintln!("keel: error: cannot run {}: {err}", path.display());
    exit::ENVIRONMENT
}

fn find(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}
