//! `keel-cloudinit --exec-etcd` (what etcd-member.service runs) on the host, with the `ETCD_*`
//! environment a cloud-config's drop-in gives it, against the real discovery service (Debian's
//! etcd-discovery, `keel_testkit::discovery`) and Debian's etcd: a discovery URL nobody answers
//! and a token that is already full are said naming `coreos.etcd2.discovery`. (In a guest the
//! same lines reach the console and `journalctl -u etcd-member`: `boot_qemu.rs` shows that path
//! with a malformed `initial-cluster`.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_testkit::discovery::Discovery;
use keel_testkit::etcd::free_ports;

/// `--exec-etcd` with what etcd-member.service sets itself.
fn etcd_member(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel-cloudinit"));
    c.arg("--exec-etcd")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("ETCD_LOGGER", "zap")
        .env("ETCD_LOG_OUTPUTS", "stderr")
        .env("ETCD_NAME", "core-04")
        .env("ETCD_DATA_DIR", data_dir);
    c
}

fn exec_etcd(data_dir: &std::path::Path, discovery: &str) -> Command {
    let ports = free_ports(2);
    let mut c = etcd_member(data_dir);
    c.env("ETCD_DISCOVERY", discovery)
        .env(
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            format!("http://127.0.0.1:{}", ports[0]),
        )
        .env(
            "ETCD_LISTEN_PEER_URLS",
            format!("http://127.0.0.1:{}", ports[0]),
        )
        .env(
            "ETCD_LISTEN_CLIENT_URLS",
            format!("http://127.0.0.1:{}", ports[1]),
        )
        .env(
            "ETCD_ADVERTISE_CLIENT_URLS",
            format!("http://127.0.0.1:{}", ports[1]),
        );
    c
}

#[test]
fn an_unreachable_discovery_url_is_named_and_etcd_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_ports(1)[0];
    let url = format!("http://127.0.0.1:{closed}/0123456789abcdef");
    let out = exec_etcd(dir.path(), &url).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 1: systemd restarts the unit (the service may come up), unlike a config error (78).
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("etcd-member: coreos.etcd2.discovery: ")
            && stderr.contains(&format!("127.0.0.1:{closed}"))
            && stderr.contains("systemd tries again"),
        "{stderr}"
    );
    assert!(!dir.path().join("member").exists(), "etcd ran: {stderr}");
}

#[test]
fn a_full_token_is_named_then_etcd_says_cluster_is_full() {
    // The service writes token URLs with this prefix; the host reaches it on its own port.
    let d = Discovery::start("http://discovery.keel.test");
    let token = d.new_token(1).replace(
        "http://discovery.keel.test",
        &format!("http://127.0.0.1:{}", d.port),
    );
    // Another machine took the one place (as etcd registers: PUT <token>/<member id>).
    let put = Command::new("curl")
        .args(["-sS", "--fail", "-X", "PUT"])
        .arg(format!("{token}/8e9e05c52164694d"))
        .args(["-d", "value=core-01=http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}\n{}", d.log());

    let dir = tempfile::tempdir().unwrap();
    let mut child = keel_testkit::spawn_tied(
        exec_etcd(dir.path(), &token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen_full = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                // capnslog says "discovery cluster full", zap "cluster is full".
                let full = line.contains("cluster is full") || line.contains("cluster full");
                lines.push(line);
                if full {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // etcd falls back to a proxy on a full token (its discovery-fallback): stop it here.
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(seen_full, "etcd never said the cluster is full:\n{log}");
    assert!(
        log.contains(
            "etcd-member: coreos.etcd2.discovery: the token is for a cluster of 1, 1 registered \
             so far: it is full, etcd will not let this machine in as a member"
        ),
        "{log}"
    );
}

/// `$private_ipv4` from the metadata source's `COREOS_EC2_IPV4_LOCAL` (the unit reads
/// `/run/metadata/flatcar`): loopback here, which no machine has as a global address, so etcd
/// answering there proves where the address came from.
#[test]
fn placeholders_take_the_metadata_sources_address() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let (peer, client) = (
        format!("http://$private_ipv4:{}", ports[0]),
        format!("http://$private_ipv4:{}", ports[1]),
    );
    let mut child = keel_testkit::spawn_tied(
        etcd_member(dir.path())
            .env("COREOS_EC2_IPV4_LOCAL", "127.0.0.1")
            .env("ETCD_LISTEN_PEER_URLS", &peer)
            .env("ETCD_INITIAL_ADVERTISE_PEER_URLS", &peer)
            .env("ETCD_INITIAL_CLUSTER", format!("core-04={peer}"))
            .env("ETCD_LISTEN_CLIENT_URLS", &client)
            .env("ETCD_ADVERTISE_CLIENT_URLS", &client)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", ports[1]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let out = Command::new("etcdctl")
            .args([
                "--endpoints",
                &endpoint,
                "--dial-timeout=2s",
                "endpoint",
                "health",
            ])
            .output()
            .expect("etcdctl (Debian's etcd-client)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        health.contains(&format!("{endpoint} is healthy")),
        "{health}"
    );
}
