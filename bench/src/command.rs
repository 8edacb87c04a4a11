//! Running the peer tools: a failure carries the command line and its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Run `cmd`, capturing its output; an exit other than 0 is an error.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd.output().with_context(|| format!("starting {line}"))?;
    if !out.status.success() {
        bail!(
            "{line}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Run `cmd` and return its standard output as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&run(cmd)?.stdout).into_owned())
}

/// Whether `tool` is on the PATH.
pub fn exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// An error naming the first of `tools` that is not on the PATH.
pub fn require(tools: &[&str]) -> Result<()> {
    match tools.iter().find(|t| !exists(t)) {
        Some(t) => bail!("{t} is not installed"),
        None => Ok(()),
    }
}

/// The `keel` binary: `explicit`, else `$KEEL_BIN`, else `keel` next to the running benchmark
/// (cargo puts both in the same profile directory).
pub fn keel_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let keel = match explicit {
        Some(k) => k.to_path_buf(),
        None => match std::env::var_os("KEEL_BIN") {
            Some(k) => PathBuf::from(k),
            None => std::env::current_exe()?
                .parent()
                .context("no directory of the benchmark binary")?
                .join("keel"),
        },
    };
    if !keel.is_file() {
        bail!(
            "{} is missing: cargo build --release -p keel (and the static keel-init, keel-update, keel-install and keel-cloudinit: ci/build.sh, see bench/README.md), or pass --keel",
            keel.display()
        );
    }
    Ok(keel)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
