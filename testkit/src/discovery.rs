//! The etcd discovery service for tests: Debian's `etcd-discovery` (coreos/discovery.etcd.io,
//! the server behind `https://discovery.etcd.io/new?size=3`) on the host's loopback, with a
//! one-member etcd ([`crate::etcd::Cluster`]) behind it. Token URLs start with the prefix the
//! guests reach it by (a QEMU guest forward), as the public service's start with its own name.
//!
//! ```no_run
//! let d = keel_testkit::discovery::Discovery::start("http://10.0.2.100:8087");
//! let url = d.new_token(3); // "http://10.0.2.100:8087/<token>", made with curl
//! ```

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::{free_port, Cluster};

pub const BINARY: &str = "/usr/bin/discovery.etcd.io";

pub struct Discovery {
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    child: Child,
    log: PathBuf,
    _etcd: Cluster,
}

impl Discovery {
    /// Starts etcd and the service; `prefix` begins every token URL it hands out.
    pub fn start(prefix: &str) -> Discovery {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} missing: install Debian's etcd-discovery (ci/install-deps.sh)"
        );
        let etcd = Cluster::start(1);
        let port = free_port();
        let log = etcd.dir().join("discovery.log");
        let out = std::fs::File::create(&log).expect("discovery log");
        let child = crate::spawn_tied(
            Command::new(BINARY)
                .args(["--addr", &format!("127.0.0.1:{port}")])
                .args(["--etcd", &etcd.client_url(0)])
                .args(["--host", prefix])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("discovery log"))
                .stderr(out),
        )
        .unwrap_or_else(|e| panic!("starting {BINARY}: {e}"));
        let d = Discovery {
            port,
            child,
            log,
            _etcd: etcd,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{BINARY} did not listen on 127.0.0.1:{port}; its log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    /// A new token for a cluster of `size`, as the source document makes one:
    /// `curl -w "\n" 'https://discovery.etcd.io/new?size=3'` (here against the local service).
    pub fn new_token(&self, size: usize) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "-w", "\n"])
            .arg(format!("http://127.0.0.1:{}/new?size={size}", self.port))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl /new?size={size}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The token's registrations as the service answers them (`GET <token URL>` on loopback).
    pub fn registrations(&self, token_url: &str) -> String {
        let path = token_url
            .splitn(4, '/')
            .nth(3)
            .unwrap_or_default()
            .to_string();
        let out = Command::new("curl")
            .args(["-sS"])
            .arg(format!("http://127.0.0.1:{}/{path}", self.port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
