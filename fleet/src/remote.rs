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
            // Not `-J`: the jump's own ssh would not get these `-o` options (host key
            // checking, identity), so the hop is a ProxyCommand built from the same ones.
            let (h, p) = host_port(t);
            let hop = self.ssh();
            let mut words: Vec<String> = std::iter::once(hop.get_program())
                .chain(hop.get_args())
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect();
            words.extend(["-p".into(), p.to_string(), "-W".into(), "%h:%p".into()]);
            words.push(shell_quote(&format!("{}@{h}", self.user)));
            c.arg("-o").arg(format!("ProxyCommand={}", words.join(" ")));
        }
        c.arg(format!("{}@{host}", self.user));
        c.arg("--");
        c.args(argv);
        c
    }
}

/// `s` as one word for /bin/sh (which runs a ProxyCommand).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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
        // Tied: a killed `keel-fleet` leaves no tunnel behind.
        let mut child = keel_blockdev::tied::spawn(&mut c)
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
    fn the_hop_through_the_tunnel_keeps_the_options() {
        let o = SshOptions {
            user: "core".into(),
            strict: false,
            known_hosts: None,
            tunnel: Some("127.0.0.1:2222".into()),
            forward_agent: false,
            identity: Some("/tmp/my key".into()),
            timeout_secs: 10,
        };
        let c = o.command_on("192.168.77.12", &["journalctl".into()]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let proxy = args
            .iter()
            .find(|a| a.starts_with("ProxyCommand="))
            .unwrap();
        assert!(proxy.contains("StrictHostKeyChecking=no"), "{proxy}");
        assert!(proxy.contains("-i '/tmp/my key'"), "{proxy}");
        assert!(
            proxy.ends_with("-p 2222 -W %h:%p core@127.0.0.1"),
            "{proxy}"
        );
        assert_eq!(
            args[args.len() - 3..],
            ["core@192.168.77.12", "--", "journalctl"]
        );
    }

    #[test]
    fn tunnel_hosts() {
        assert_eq!(host_port("10.0.0.1"), ("10.0.0.1", 22));
        assert_eq!(host_port("10.0.0.1:2222"), ("10.0.0.1", 2222));
        assert_eq!(host_port("[::1]:2222"), ("::1", 2222));
    }
}
