//! Real etcd clusters on loopback for tests: Debian's `etcd-server` (3.4), one process per
//! member, each with its own data directory under a temporary directory, removed on drop.
//!
//! ```no_run
//! let mut cluster = keel_testkit::etcd::Cluster::start(3);
//! let endpoints = cluster.client_urls(); // "http://127.0.0.1:P1,http://127.0.0.1:P2,…"
//! cluster.kill(0);
//! ```

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster. Members are killed and the data removed when it is dropped.
pub struct Cluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// `etcd` from `$KEEL_ETCD`, else `/usr/bin/etcd` (Debian's etcd-server).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("KEEL_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports nothing listens on right now (all bound at once, so the kernel
/// cannot hand out the same one twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl Cluster {
    /// Starts `n` members as one new cluster and waits until every client port answers.
    pub fn start(n: usize) -> Self {
        assert!(n >= 1);
        let bin = etcd_binary();
        assert!(
            bin.exists(),
            "{} missing: install Debian's etcd-server (ci/install-deps.sh)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("keel-etcd-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let mut cluster = Self { members, dir };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready(Duration::from_secs(60));
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("etcd log");
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = crate::spawn_tied(
            Command::new(etcd_binary())
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "keel-test"])
                .args(["--initial-cluster-state", "new"])
                // The v2 API, off by default in 3.4: the discovery service (discovery.rs) keeps its
                // tokens there, as locksmith kept its lock.
                .arg("--enable-v2=true")
                // Members here share two cores with QEMU guests: be patient before elections.
                .args(["--heartbeat-interval", "200", "--election-timeout", "2000"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("etcd log"))
                .stderr(log),
        )
        .unwrap_or_else(|e| panic!("starting {}: {e}", etcd_binary().display()));
        m.child = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// The member's log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        for i in 0..self.members.len() {
            loop {
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    panic!(
                        "etcd member {} exited ({status}); its log:\n{}",
                        self.members[i].name,
                        self.log(i)
                    );
                }
                let ok = etcdctl(&self.client_url(i), &["endpoint", "health"]).is_ok();
                if ok {
                    break;
                }
                if start.elapsed() > limit {
                    panic!(
                        "etcd member {} not healthy after {limit:?}; its log:\n{}",
                        self.members[i].name,
                        self.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL, comma-separated (locksmith's `-endpoint` form).
    pub fn client_urls(&self) -> String {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` (SIGKILL, as a crash) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again on its data directory (it rejoins with what it had).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// Whether member `i`'s client port still accepts connections.
    pub fn is_listening(&self, i: usize) -> bool {
        TcpStream::connect(("127.0.0.1", self.members[i].client_port)).is_ok()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `etcdctl` (v3 API) against `endpoints`; stdout on success, stderr on failure.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
        .args(args)
        .output()
        .map_err(|e| format!("running etcdctl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
