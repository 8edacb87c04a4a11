//! The default image as shipped is a container host (issue 11), proven in one QEMU guest:
//!
//! * the issue's cloud-config (the source document's example) arrives through fw_cfg, with a
//!   real SSH key pair for `core` and `root` and the docker drop-in also naming a registry
//!   mirror;
//! * the demo hello.service pulls `busybox` from a real registry on the host's loopback
//!   (Debian's docker-registry; the image made here from busybox-static with umoci, pushed with
//!   skopeo), reached through a QEMU guest forward (the guest's network is otherwise isolated),
//!   and the console shows the container's `Hello World`;
//! * `docker-tcp.socket` answers the Docker API on 2375 (forwarded to the host's loopback), the
//!   drop-in is in `systemctl show docker -p Environment`, `ssh core@` runs `docker ps` and sees
//!   `busybox1`, the host keys were made on this machine;
//! * after a reboot the container is back, the image is the one pulled before (not pulled again
//!   from scratch: /var/lib/docker persists, a file left there too) and the host key is
//!   unchanged; the full tier then checks the same after `keel-update apply` of 2.0.0 (the
//!   payload on /dev/vdb, a second build) and a reboot into USR-B.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_qemu::{BootOptions, NetOptions, Session};
use keel_testkit::registry::Registry;

const BOOT: Duration = Duration::from_secs(600);
/// Where the guest reaches the registry (a QEMU guest forward to the host's loopback).
const MIRROR_ADDR: [u8; 4] = [10, 0, 2, 100];
const MIRROR_PORT: u16 = 5000;

const ISSUE_EXAMPLE: &str = include_str!("../../cloudconfig/src/tests/issue10_example.yml");

/// The issue's example with a real key for `core` (and for root, to reboot the guest), and the
/// docker drop-in pointing Docker Hub pulls at the registry mirror.
fn cloud_config(pubkey: &str) -> String {
    let drop_in = "Environment=DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\"'";
    assert!(ISSUE_EXAMPLE.contains(drop_in));
    let mirror = format!(
        "Environment=DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\" --registry-mirror=http://{}.{}.{}.{}:{MIRROR_PORT}'",
        MIRROR_ADDR[0], MIRROR_ADDR[1], MIRROR_ADDR[2], MIRROR_ADDR[3]
    );
    let placeholder = "  - ssh-rsa 121313dqx1e123e12… user@my_mac\n";
    assert!(ISSUE_EXAMPLE.contains(placeholder));
    format!(
        "{}users:\n  - name: root\n    ssh_authorized_keys:\n      - {pubkey}\n",
        ISSUE_EXAMPLE
            .replace(drop_in, &mirror)
            .replace(placeholder, &format!("  - {pubkey}\n"))
    )
}

struct Ssh {
    key: PathBuf,
    known_hosts: PathBuf,
    port: u16,
}

impl Ssh {
    fn command(&self, user: &str, script: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg(format!("{user}@127.0.0.1"))
            .arg(script);
        c
    }

    /// Runs `script` as `user`, retrying while sshd is not up yet (bounded); its stdout.
    fn run(&self, g: &Session, user: &str, script: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = self.command(user, script).output().unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            // 255: ssh itself failed (no connection yet); anything else is the command's verdict.
            if out.status.code() != Some(255) || Instant::now() > deadline {
                panic!(
                    "ssh {user}@guest {script:?}: {}\n{err}\nconsole tail:\n{}",
                    out.status,
                    tail(g)
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

fn tail(g: &Session) -> String {
    let log = g.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `GET path` on the host's loopback `port`; the whole HTTP reply.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "keel-test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn wait(g: &mut Session, pattern: &str) {
    g.wait_for(pattern, BOOT)
        .unwrap_or_else(|e| panic!("waiting for {pattern:?}: {e}"));
}

#[test]
fn shipped_image_runs_hello_from_a_registry_with_ssh_and_the_docker_api() {
    let image = keel_testkit::build_image(&keel_testkit::shipped_opts());
    // The update's 2.0.0 (a second build of the shipped image) in the full tier only.
    let v2 = keel_testkit::tier::full().then(|| {
        keel_testkit::build_image(&keel_testkit::BuildOpts {
            name: "shipped-v2".into(),
            version: "2.0.0".into(),
            ..keel_testkit::shipped_opts()
        })
    });
    let registry = Registry::start();
    let busybox_id = registry.push_busybox();

    let dir = tempfile::tempdir().unwrap();
    let (key, pubkey) = keypair(dir.path());
    let cc = dir.path().join("user-data");
    fs::write(&cc, cloud_config(&pubkey)).unwrap();
    let ports = keel_testkit::etcd::free_ports(2);
    let (ssh_port, api_port) = (ports[0], ports[1]);

    let mut opts = BootOptions::new(&image.disk);
    opts.mem_mb = 2048;
    // The only guest of this file: both host cores are its.
    opts.smp = 2;
    opts.log_path = Some(dir.path().join("console.log"));
    opts.fw_cfg = vec![("opt/org.keel/user-data".into(), cc)];
    // /dev/vdb: the 2.0.0 payload, applied after the reboot.
    opts.extra_disks = v2.iter().map(|v2| v2.payload.clone()).collect();
    opts.net = Some(NetOptions {
        host_forwards: vec![(ssh_port, 22), (api_port, 2375)],
        guest_forwards: vec![(MIRROR_ADDR.into(), MIRROR_PORT, registry.port)],
        ..NetOptions::default()
    });
    let mut g = Session::start(&opts).unwrap();
    let ssh = Ssh {
        key,
        known_hosts: dir.path().join("known_hosts"),
        port: ssh_port,
    };

    wait(&mut g, "keel-cloudinit: user-data from fw_cfg");
    wait(&mut g, "Hello World");

    // The Docker API on the socket the config defined.
    let version = http_get(api_port, "/version").unwrap();
    assert!(
        version.contains(" 200 ") && version.contains("\"ApiVersion\""),
        "{version}"
    );

    let report = ssh.run(
        &g,
        "core",
        "echo host=$(hostname); echo groups=$(id -nG); \
         echo ps=$(docker ps --format '{{.Names}}:{{.Image}}'); \
         echo nfs=$(stat -c %a /etc/conf.d/nfs):$(cat /etc/conf.d/nfs); \
         echo image=$(docker image inspect -f '{{.Id}}' busybox); \
         echo hostkey=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)",
    );
    // systemctl of a user talks to systemd over D-Bus, which the image does not have: as root.
    let units = ssh.run(
        &g,
        "root",
        "echo env=$(systemctl show docker -p Environment); \
         echo tcp=$(systemctl is-enabled docker-tcp.socket):$(systemctl is-active docker-tcp.socket)",
    );
    let field = |report: &str, name: &str| -> String {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in\n{report}"))
            .to_string()
    };
    assert_eq!(field(&report, "host"), "core-01");
    assert!(
        field(&report, "groups").split(' ').any(|g| g == "docker"),
        "{report}"
    );
    assert_eq!(field(&report, "ps"), "busybox1:busybox", "{report}");
    let env = field(&units, "env");
    assert!(env.contains("--insecure-registry="), "{units}");
    assert!(env.contains("0.0.0.0/0"), "{units}");
    assert_eq!(field(&units, "tcp"), "enabled:active", "{units}");
    assert_eq!(field(&report, "nfs"), "644:OPTS_RPC_MOUNTD=\"\"");
    let image_id = field(&report, "image");
    assert_eq!(
        image_id, busybox_id,
        "busybox is not the image the test pushed to its registry"
    );
    let hostkey = field(&report, "hostkey");
    let known = fs::read_to_string(&ssh.known_hosts).unwrap();
    assert!(
        known.contains(&hostkey),
        "ssh saw another host key:\n{known}"
    );

    ssh.run(&g, "root", "touch /var/lib/docker/keel-test-kept");
    // After a reboot the container comes back from the same /var/lib/docker, with the same host
    // key: after a plain reboot, and in the full tier after an update's reboot too.
    let after_reboot = |g: &mut Session, slot_line: &str| -> String {
        let before = g.cursor();
        let _ = ssh.command("root", "systemctl reboot").output();
        // Power-cycled at the kernel's last line, as a cold start: OVMF under TCG wedged after
        // a warm reset in two CI runs (Session::power_cycle).
        wait(g, "reboot: machine restart");
        g.power_cycle("the guest restarted").unwrap();
        wait(g, slot_line);
        wait(g, "Hello World");
        assert!(g.output_since(before).contains("Hello World"));
        let again = ssh.run(
            g,
            "root",
            "echo version=$(. /usr/share/keel/release; echo $KEEL_VERSION); \
             echo ps=$(docker ps --format '{{.Names}}'); \
             echo kept=$(ls /var/lib/docker/keel-test-kept); \
             echo image=$(docker image inspect -f '{{.Id}}' busybox); \
             echo hostkey=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub)",
        );
        assert_eq!(field(&again, "ps"), "busybox1", "{again}");
        assert_eq!(field(&again, "kept"), "/var/lib/docker/keel-test-kept");
        assert_eq!(field(&again, "image"), image_id);
        assert_eq!(field(&again, "hostkey"), hostkey);
        field(&again, "version")
    };
    assert_eq!(
        after_reboot(&mut g, "] booting USR-A version 1.0.0"),
        "1.0.0"
    );
    if v2.is_none() {
        drop(registry);
        let _ = g.kill();
        return;
    }

    // An update to a new USR keeps /var/lib/docker: 2.0.0 into USR-B, reboot into it.
    let applied = ssh.run(
        &g,
        "root",
        "keel-update apply /dev/vdb >&2 && echo applied=ok",
    );
    assert_eq!(field(&applied, "applied"), "ok");
    assert_eq!(
        after_reboot(&mut g, "] booting USR-B version 2.0.0"),
        "2.0.0"
    );
    drop(registry);
    let _ = g.kill();
}
