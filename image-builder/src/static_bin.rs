//! The static binaries `keel build` puts into images (keel-init, keel-update, keel-install,
//! keel-cloudinit): where to find them, and the check that they need no dynamic loader
//! (keel-init runs before any library exists; the others must run whatever the slot's
//! libraries are).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct StaticBin {
    pub name: &'static str,
    /// The `keel build` option naming it (empty: none, only the environment variable).
    pub flag: &'static str,
    /// The environment variable naming it.
    pub env: &'static str,
    /// The cargo profile ci/build.sh builds it with (`target/x86_64-unknown-linux-gnu/PROFILE`).
    pub profile: &'static str,
}

pub const INIT: StaticBin = StaticBin {
    name: "keel-init",
    flag: "--init",
    env: "KEEL_INIT",
    profile: "init",
};
pub const UPDATE: StaticBin = StaticBin {
    name: "keel-update",
    flag: "--update-bin",
    env: "KEEL_UPDATE",
    profile: "init",
};
pub const INSTALL: StaticBin = StaticBin {
    name: "keel-install",
    flag: "--install-bin",
    env: "KEEL_INSTALL",
    profile: "init",
};

/// keel-cloudinit (the cloud-config at boot, cloudconfig/): no `keel build` option yet, as
/// the CLI's arguments are being moved; `$KEEL_CLOUDINIT` or found beside `keel`.
pub const CLOUDINIT: StaticBin = StaticBin {
    name: "keel-cloudinit",
    flag: "",
    env: "KEEL_CLOUDINIT",
    profile: "init",
};

/// keel-reboot-manager (reboot-manager/): built with the release profile, since its tokio and
/// gRPC stack would take minutes more under the init profile's LTO; `$KEEL_REBOOT_MANAGER` or
/// found where ci/build.sh puts it.
pub const REBOOT_MANAGER: StaticBin = StaticBin {
    name: "keel-reboot-manager",
    flag: "",
    env: "KEEL_REBOOT_MANAGER",
    profile: "release",
};

/// keel-fleet (fleet/): the fleet agent and fleetctl's verbs; release profile and found like
/// keel-reboot-manager (same tokio and gRPC stack); `$KEEL_FLEET`.
pub const FLEET: StaticBin = StaticBin {
    name: "keel-fleet",
    flag: "",
    env: "KEEL_FLEET",
    profile: "release",
};

impl StaticBin {
    /// The option, else the environment variable, else a static `NAME` next to `keel`, else
    /// `../x86_64-unknown-linux-gnu/init/NAME` (where ci/build.sh puts it); checked with
    /// [`Self::check`]. A dynamic build next to `keel` (any plain workspace build leaves one
    /// there) is passed over; one named by the option or the variable is an error.
    pub fn find(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        let named = |p: PathBuf, by: String| {
            if !p.is_file() {
                return Err(Error::input(format!("{by}: no such file")));
            }
            let bytes = std::fs::read(&p).map_err(crate::error::io_at(&p))?;
            self.check(&p, &bytes)?;
            Ok(p)
        };
        if let Some(p) = explicit {
            return named(p.to_path_buf(), format!("{} {}", self.flag, p.display()));
        }
        if let Some(p) = std::env::var_os(self.env).map(PathBuf::from) {
            return named(p.clone(), format!("{}={}", self.env, p.display()));
        }
        let mut tried = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            for p in [
                dir.join(self.name),
                dir.join("../x86_64-unknown-linux-gnu")
                    .join(self.profile)
                    .join(self.name),
            ] {
                if std::fs::read(&p).is_ok_and(|bytes| self.check(&p, &bytes).is_ok()) {
                    return Ok(p);
                }
                tried.push(p.display().to_string());
            }
        }
        let pass = if self.flag.is_empty() {
            String::new()
        } else {
            format!("pass {} PATH or ", self.flag)
        };
        Err(Error::Environment(format!(
            "no static {} binary: {pass}set {}, or build it with ci/build.sh (looked at {})",
            self.name,
            self.env,
            tried.join(", ")
        )))
    }

    /// `bytes` (read from `path`) must be an ELF executable without an interpreter.
    pub fn check(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let elf = goblin::elf::Elf::parse(bytes).map_err(|e| {
            Error::input(format!(
                "{}: {} is not an ELF executable: {e}",
                path.display(),
                self.name
            ))
        })?;
        if let Some(interp) = elf.interpreter {
            return Err(Error::input(format!(
                "{}: {} is dynamically linked (interpreter {interp}); it must be static (ci/build.sh)",
                path.display(),
                self.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_refused_by_name() {
        let this = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&this).unwrap();
        let err = UPDATE.check(&this, &bytes).unwrap_err().to_string();
        assert!(err.contains("keel-update is dynamically linked"), "{err}");
        let err = INIT.check(&this, b"#!/bin/sh\n").unwrap_err().to_string();
        assert!(err.contains("keel-init is not an ELF executable"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist() {
        let err = INSTALL
            .find(Some(Path::new("/nonexistent/keel-install")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--install-bin /nonexistent/keel-install: no such file"),
            "{err}"
        );
    }
}
