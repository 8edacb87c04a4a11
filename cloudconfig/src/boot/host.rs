//! What keel-cloudinit asks of the running system: systemctl, a transient unit for a `#!`
//! user-data, the live hostname. A trait, so the boot logic is tested without a system.

use std::process::Command;

pub trait Host {
    /// `systemctl ARGS...`; `Err` carries systemctl's message.
    fn systemctl(&mut self, args: &[&str]) -> Result<(), String>;
    /// Start the stored script `path` in a transient unit (output on the console), not
    /// waiting for it.
    fn run_script(&mut self, path: &str) -> Result<(), String>;
    /// The running kernel's hostname.
    fn set_hostname(&mut self, name: &str) -> Result<(), String>;
}

/// The real system.
pub struct System;

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if msg.is_empty() {
            out.status.to_string()
        } else {
            msg
        })
    }
}

impl Host for System {
    fn systemctl(&mut self, args: &[&str]) -> Result<(), String> {
        run(Command::new("systemctl").args(args))
    }

    fn run_script(&mut self, path: &str) -> Result<(), String> {
        // coreos-cloudinit ran the script in a transient unit too; default dependencies put
        // it after basic.target.
        run(Command::new("systemd-run").args([
            "--no-block",
            "--unit",
            "keel-cloudinit-script",
            "--description",
            "#! user-data from keel-cloudinit (runs once)",
            "--property",
            "StandardOutput=journal+console",
            "--property",
            "StandardError=journal+console",
            path,
        ]))
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), String> {
        std::fs::write("/proc/sys/kernel/hostname", name).map_err(|e| e.to_string())
    }
}
