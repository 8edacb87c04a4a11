//! Keel guests that form etcd clusters, for the cluster tests and the cluster benchmark: each
//! guest boots the given image with a second NIC on a private segment (`keel_qemu::Lan`), its
//! cloud-config through fw_cfg (a `.network` file with the segment's address `192.168.77.1N`,
//! `coreos.etcd2`, `etcd2.service` started) and its client port 2379 forwarded to the host's
//! loopback, where the host's own `etcdctl` looks at the cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_qemu::{BootOptions, Lan, LanPort, NetOptions, Session};

/// How long a cluster may take to form (or a write to go through) under TCG, four guests on
/// two cores.
pub const FORM: Duration = Duration::from_secs(900);
/// The static cluster's `initial-cluster-token`.
pub const TOKEN: &str = "keel-cluster-1";

pub fn address(n: u8) -> String {
    format!("192.168.77.1{n}")
}

/// The private link's address from a networkd file, etcd from `coreos.etcd2`, started as
/// etcd2.service (its CoreOS name).
pub fn cloud_config(n: u8, lan: &LanPort, etcd2: &str, network: &str) -> String {
    format!(
        "#cloud-config\n\
         hostname: core-0{n}\n\
         coreos:\n  \
           etcd2:\n{etcd2}  \
           units:\n    \
             - name: 10-cluster.network\n      \
               content: |\n        \
                 [Match]\n        \
                 MACAddress={mac}\n        \
                 [Network]\n        \
                 Address={addr}/24\n{network}    \
             - name: etcd2.service\n      \
               command: start\n",
        mac = lan.mac_string(),
        addr = address(n),
    )
}

/// Where guests reach the discovery service (a guest forward to the host's loopback).
pub const DISCOVERY: &str = "http://10.0.2.100:8087";

/// What every member says about itself.
pub fn member_urls(n: u8) -> String {
    format!(
        "    name: core-0{n}\n    \
         initial-advertise-peer-urls: http://$private_ipv4:2380\n    \
         listen-peer-urls: http://$private_ipv4:2380\n    \
         listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001\n    \
         advertise-client-urls: http://$private_ipv4:2379\n    \
         heartbeat-interval: 500\n    \
         election-timeout: 5000\n"
    )
}

/// The three members' `initial-cluster`.
pub fn static_cluster() -> String {
    let cluster: Vec<String> = (1..=3)
        .map(|m| format!("core-0{m}=http://{}:2380", address(m)))
        .collect();
    cluster.join(",")
}

/// Member `n` of the static cluster.
pub fn static_member(n: u8) -> String {
    format!(
        "{}    \
         initial-cluster-token: {TOKEN}\n    \
         initial-cluster: {}\n    \
         initial-cluster-state: new\n",
        member_urls(n),
        static_cluster()
    )
}

/// A worker: no member of its own, etcd's gateway on its client port to the static members.
pub fn static_proxy(_n: u8) -> String {
    format!(
        "    proxy: on\n    \
         listen-client-urls: http://0.0.0.0:2379\n    \
         initial-cluster: {}\n",
        static_cluster()
    )
}

/// What a guest's cloud-config and network hold beyond the cluster's basics.
#[derive(Default)]
pub struct Spec<'a> {
    /// `coreos.etcd2`'s lines (indented by 4 spaces).
    pub etcd2: &'a str,
    /// More `coreos.units` entries.
    pub units: &'a str,
    /// More lines for the private segment's `[Network]` (indented by 8 spaces).
    pub network: &'a str,
    /// Top-level cloud-config keys after `coreos` (`ssh_authorized_keys:`, `write_files:`).
    pub top: &'a str,
    /// (host loopback port, guest port) beyond etcd's client port.
    pub host_forwards: Vec<(u16, u16)>,
    /// (guest-side address, port, host loopback port): services the guest reaches on the host.
    pub guest_forwards: Vec<([u8; 4], u16, u16)>,
    pub memory_mib: Option<u32>,
}

pub struct Guest {
    pub name: String,
    pub client_port: u16,
    pub opts: BootOptions,
    pub sessions: Vec<Session>,
}

impl Guest {
    pub fn boot(
        image: &Path,
        dir: &Path,
        n: u8,
        lan: &Lan,
        etcd2: impl FnOnce(u8) -> String,
    ) -> Guest {
        Guest::boot_with(image, dir, n, lan, &etcd2(n), "", "", None)
    }

    /// `units` more `coreos.units` entries; `network` more lines for the segment's `[Network]`
    /// (each indented by 8 spaces); `discovery`: the host port of the discovery service,
    /// reached at [`DISCOVERY`].
    #[allow(clippy::too_many_arguments)]
    pub fn boot_with(
        image: &Path,
        dir: &Path,
        n: u8,
        lan: &Lan,
        etcd2: &str,
        units: &str,
        network: &str,
        discovery: Option<u16>,
    ) -> Guest {
        let spec = Spec {
            etcd2,
            units,
            network,
            guest_forwards: discovery
                .map(|p| ([10, 0, 2, 100], 8087, p))
                .into_iter()
                .collect(),
            ..Spec::default()
        };
        Guest::boot_spec(image, dir, n, lan, &spec)
    }

    /// The general form: see [`Spec`].
    pub fn boot_spec(image: &Path, dir: &Path, n: u8, lan: &Lan, spec: &Spec) -> Guest {
        let port = lan.port(n).unwrap();
        let cc = dir.join(format!("core-0{n}.yml"));
        std::fs::write(
            &cc,
            format!(
                "{}{}{}",
                cloud_config(n, &port, spec.etcd2, spec.network),
                spec.units,
                spec.top
            ),
        )
        .unwrap();
        let client_port = crate::etcd::free_ports(1)[0];
        let mut opts = BootOptions::new(image);
        opts.smp = 1;
        opts.log_path = Some(dir.join(format!("console-0{n}.log")));
        opts.fw_cfg = vec![("opt/org.keel/user-data".into(), cc)];
        opts.lan = Some(port);
        let mut host_forwards = vec![(client_port, 2379)];
        host_forwards.extend(&spec.host_forwards);
        opts.net = Some(NetOptions {
            host_forwards,
            guest_forwards: spec
                .guest_forwards
                .iter()
                .map(|(a, p, h)| ((*a).into(), *p, *h))
                .collect(),
            ..NetOptions::default()
        });
        if let Some(m) = spec.memory_mib {
            opts.mem_mb = m;
        }
        let session = Session::start(&opts).unwrap();
        Guest {
            name: format!("core-0{n}"),
            client_port,
            opts,
            sessions: vec![session],
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn session(&mut self) -> &mut Session {
        self.sessions.last_mut().unwrap()
    }

    /// Power off (QEMU killed, as a pulled plug).
    pub fn power_off(&mut self) {
        self.session().kill().unwrap();
    }

    /// Power on from the disk as it was left (the last session's overlay backs the new one).
    pub fn power_on(&mut self) {
        let mut opts = self.opts.clone();
        opts.image = self.session().disk_path().to_path_buf();
        opts.log_path = Some(PathBuf::from(format!(
            "{}.{}",
            self.opts.log_path.as_ref().unwrap().display(),
            self.sessions.len()
        )));
        self.sessions.push(Session::start(&opts).unwrap());
    }

    pub fn console(&self) -> String {
        self.sessions
            .iter()
            .map(|s| s.log().replace('\r', ""))
            .collect::<Vec<_>>()
            .join("\n--- powered on again ---\n")
    }
}

/// `etcdctl ARGS` on the host against `endpoints`: (success, stdout + stderr).
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=3s", "--command-timeout=10s"])
        .args(args)
        .output()
        .expect("etcdctl (Debian's etcd-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn fail(guests: &[Guest], why: &str) -> ! {
    let mut logs = String::new();
    for g in guests {
        let console = g.console();
        let tail: Vec<&str> = console.lines().rev().take(80).collect();
        logs.push_str(&format!(
            "\n--- {} console ({}), last lines ---\n{}\n",
            g.name,
            g.opts.log_path.as_ref().unwrap().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    panic!("{why}{logs}");
}

/// Poll `etcdctl ARGS` until it succeeds.
pub fn until_ok(guests: &[Guest], endpoints: &[String], args: &[&str], within: Duration) -> String {
    let started = Instant::now();
    loop {
        let (ok, text) = etcdctl(endpoints, args);
        if ok {
            return text;
        }
        if started.elapsed() > within {
            fail(
                guests,
                &format!(
                    "etcdctl {} at {endpoints:?} never succeeded: {text}",
                    args.join(" ")
                ),
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// A `coreos.units` entry sending etcd-member's output to the console too (a drop-in), so a
/// failure's console tail shows etcd's own words.
pub const ETCD_ON_CONSOLE: &str = "    - name: etcd-member.service\n      \
                   drop-ins:\n        \
                     - name: 90-console.conf\n          \
                       content: |\n            \
                         [Service]\n            \
                         StandardOutput=journal+console\n            \
                         StandardError=journal+console\n";
