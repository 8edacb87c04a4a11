//! Running the external tools the builder shells out to, with errors that say which Debian
//! package provides a missing one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The Debian package that ships each tool we run.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "mmdebstrap" => "mmdebstrap",
        "dpkg-deb" => "dpkg",
        "mkfs.erofs" | "fsck.erofs" => "erofs-utils",
        "mkfs.vfat" | "fsck.vfat" => "dosfstools",
        "mmd" | "mcopy" | "mdir" => "mtools",
        "mkfs.ext4" | "e2fsck" | "debugfs" => "e2fsprogs",
        "objcopy" | "objdump" => "binutils",
        "cp" => "coreutils",
        "qemu-img" => "qemu-utils",
        "grub-mkimage" => "grub-common",
        "xorriso" => "xorriso",
        _ => "?",
    }
}

/// Find `tool` on PATH (or accept an explicit path).
pub fn find(tool: &str) -> Result<PathBuf> {
    if tool.contains('/') {
        return Ok(PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Tools in sbin are often missing from a user's PATH.
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Environment(format!(
                "{tool} is not installed (Debian package {}; ci/install-deps.sh installs it)",
                package_of(tool)
            ))
        })
}

/// A command to run; collects stderr for the error message.
pub struct Tool {
    name: String,
    cmd: Command,
}

impl Tool {
    pub fn new(name: &str) -> Result<Tool> {
        let exe = find(name)?;
        let mut cmd = Command::new(exe);
        cmd.stdin(Stdio::null());
        Ok(Tool {
            name: name.to_string(),
            cmd,
        })
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, a: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(a);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn current_dir(mut self, d: &Path) -> Self {
        self.cmd.current_dir(d);
        self
    }

    /// Run to completion; stdout is returned, a failure carries the tail of stderr.
    pub fn run(mut self) -> Result<String> {
        let out = self
            .cmd
            .output()
            .map_err(|e| Error::Environment(format!("cannot run {}: {e}", self.name)))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            return Err(Error::Tool {
                tool: self.name,
                status: out.status.to_string(),
                stderr: tail,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
