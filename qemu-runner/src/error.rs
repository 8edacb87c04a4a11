//! Errors of the runner. Boot failures carry the console's tail and the log path so
//! a failing test explains itself.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A helper program (qemu-img, qemu-system-x86_64) could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{program} not found in PATH (install Debian's {package} package)")]
    NotFound {
        program: String,
        package: &'static str,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// QEMU could not be started: nothing ran, or QEMU died while setting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what} {path} not found{hint}", hint = hint_suffix(hint))]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("QEMU exited while starting ({status}): {stderr}")]
    QemuExited { status: ExitStatus, stderr: String },
    #[error("QEMU did not become ready within {timeout:?} (QMP: {reason})")]
    QemuNotReady { timeout: Duration, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}={value:?} is not an accelerator: use one of {}",
        crate::options::ACCEL_ENV,
        crate::options::ACCEL_ENV_VALUES
    )]
    BadAccelEnv { value: String },
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

/// What went wrong while waiting for the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("timed out after {timeout:?} waiting for {}\nconsole log: {}\n--- console tail ---\n{tail}{}", describe(pattern), log_path.display(), describe_cpus(cpus))]
    Timeout {
        pattern: Option<String>,
        timeout: Duration,
        log_path: PathBuf,
        tail: String,
        /// QEMU's `info cpus` at the timeout (QEMU 7.2 under TCG lists each vCPU's host
        /// thread, KVM adds its program counter): QEMU's main loop still answered. Empty if
        /// QMP did not answer.
        cpus: String,
    },
    #[error("the guest went silent: nothing on the console for {silent_for:?} after its kernel started (a hung guest: too little memory for what it boots is one cause), while waiting for {}\nconsole log: {}\n--- console tail ---\n{tail}", describe(pattern), log_path.display())]
    Silent {
        pattern: Option<String>,
        silent_for: Duration,
        log_path: PathBuf,
        tail: String,
    },
    #[error("KVM failed this boot ({reason}) and restarting it under TCG failed: {source}")]
    FallbackFailed {
        reason: String,
        #[source]
        source: Box<StartError>,
    },
    #[error("kernel panic while waiting for {}\nconsole log: {}\n--- console tail ---\n{tail}", describe(pattern), log_path.display())]
    KernelPanic {
        pattern: Option<String>,
        log_path: PathBuf,
        tail: String,
    },
    #[error("QEMU stopped the guest on a host disk error while waiting for {}: {}\nconsole log: {}\n--- console tail ---\n{tail}", describe(pattern), drives.join("; "), log_path.display())]
    HostIoError {
        pattern: Option<String>,
        /// Each failed drive: its name, file, the error and the space left there.
        drives: Vec<String>,
        log_path: PathBuf,
        tail: String,
    },
    #[error("QEMU exited ({}) before {} appeared\nconsole log: {}\n--- console tail ---\n{tail}{}", describe_status(status), describe(pattern), log_path.display(), describe_stderr(qemu_stderr))]
    Exited {
        pattern: Option<String>,
        status: Option<ExitStatus>,
        log_path: PathBuf,
        tail: String,
        qemu_stderr: String,
    },
}

fn describe(pattern: &Option<String>) -> String {
    match pattern {
        Some(text) => format!("{text:?}"),
        None => "QEMU to exit".to_string(),
    }
}

fn describe_status(status: &Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "status unknown".to_string(),
    }
}

fn describe_cpus(cpus: &str) -> String {
    if cpus.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- QEMU's vCPUs (info cpus) ---\n{}", cpus.trim_end())
    }
}

fn describe_stderr(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- QEMU stderr ---\n{}", stderr.trim_end())
    }
}

/// Failures of a running or stopped session outside of waiting.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP command {command}: {message}")]
    Qmp { command: String, message: String },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(
        "QEMU is still running; stop it (shutdown, kill or wait_exit) before reading the disk"
    )]
    StillRunning,
    #[error("power cycle ({why}): QEMU did not start again: {source}")]
    Restart {
        why: String,
        #[source]
        source: Box<StartError>,
    },
}
