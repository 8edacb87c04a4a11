//! fleetctl's reach beyond etcd: `status`, `journal` and `ssh` run a command on the unit's
//! machine (here when it is this machine, else over SSH as `core`), and `--tunnel` reaches a
//! cluster's etcd through an SSH port forward (then SSH hops through the same host).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub user: String,
    /// `--strict-host-key-checking` (fleetctl's default: true).
    pub strict: bool,
    pub known_hosts: Option<PathBuf>,
    /// `--tunnel host[:port]`.
    pub tunnel: Option<String>,
    pub forward_agent: bool,
    pub identity: Option<PathBuf>,
    pub timeout_secs: u64,
}

impl SshOptions {
    fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", &format!("ConnectTimeout={}", self.timeout_secs)]);
        c.args(["-o", "BatchMode=yes"]);
        if self.strict {
            c.args(["-o", "StrictHostKeyChecking=yes"]);
        } else {
            c.args(["-o", "StrictHostKeyChecking=no"]);
            c.args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]);
        }
        if let Some(k) = &self.known_hosts {
            c.arg("-o")
                .arg(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i);
        }
        if self.forward_agent {
            c.arg("-A");
        }
        c
    }

    /// `ssh [-J tunnel] user@host -- argv…`.
    pub fn command_on(&self, host: &str, argv: &[String]) -> Command {
        let mut c = self.ssh();
        if let Some(t) = &self.tunnel {
            let (h, p) = host_port(t);
            c.arg("-J").arg(format!("{}@{h}:{p}", self.user));
        }
        c.arg(format!("{}@{host}", self.user));
        c.arg("--");
        c.args(argv);
        c
    }
}

/// `host[:port]`, port 22 when absent (fleetctl adds `:22`).
pub fn host_port(s: &str) -> (&str, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            (h.trim_matches(['[', ']']), p.parse().unwrap_or(22))
        }
        _ => (s, 22),
    }
}

/// This machine's id (`/etc/machine-id`), if it has one.
pub fn local_machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Runs `argv` on `machine` (here, or over SSH to `ip`) with the terminal's stdio, and returns
/// its exit code (fleetctl passes the remote one through).
pub fn run_on(machine: &str, ip: &str, argv: &[String], ssh: &SshOptions) -> Result<i32, String> {
    let local = local_machine_id().is_some_and(|id| id == machine) && ssh.tunnel.is_none();
    let mut cmd = if local {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    } else {
        if ip.is_empty() {
            return Err(format!(
                "machine {machine} has published no address to reach it at (fleet's public_ip)"
            ));
        }
        ssh.command_on(ip, argv)
    };
    let status = cmd
        .status()
        .map_err(|e| format!("running {:?}: {e}", argv.join(" ")))?;
    Ok(status.code().unwrap_or(255))
}

/// An SSH port forward to the tunnel host's view of `target` (host:port), on a local port.
pub struct Tunnel {
    child: Child,
    pub local_port: u16,
}

impl Tunnel {
    pub fn open(ssh: &SshOptions, target: &str) -> Result<Self, String> {
        let tunnel = ssh.tunnel.as_deref().ok_or("no tunnel host given")?;
        let (host, port) = host_port(tunnel);
        let local_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free local port: {e}"))?
            .port();
        let mut c = ssh.ssh();
        c.args([
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-p",
            &port.to_string(),
        ])
        .arg("-L")
        .arg(format!("127.0.0.1:{local_port}:{target}"))
        .arg(format!("{}@{host}", ssh.user))
        .stdin(Stdio::null());
        let mut child = c
            .spawn()
            .map_err(|e| format!("starting ssh to {host}:{port}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(ssh.timeout_secs.max(1) + 5);
        loop {
            if TcpStream::connect(("127.0.0.1", local_port)).is_ok() {
                return Ok(Self { child, local_port });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("ssh tunnel to {host}:{port} ended: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ssh tunnel to {host}:{port}: no forward within {} s",
                    ssh.timeout_secs + 5
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_hosts() {
        assert_eq!(host_port("10.0.0.1"), ("10.0.0.1", 22));
        assert_eq!(host_port("10.0.0.1:2222"), ("10.0.0.1", 2222));
        assert_eq!(host_port("[::1]:2222"), ("::1", 2222));
    }
}
